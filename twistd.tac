# The composition root: `twistd -n -y twistd.tac`, config from $MIRRORDNS_CONFIG (else ./mirrordns.toml).
#
# Each part builds its own service tree with makeService and gets handed what it needs from the
# others here, so imports run one way (dnsd <- probes <- admin) and no part reaches for another.
# Shutdown order is the reverse of startup: web and probes stop first, the DB pool last.
import os

from twisted.application import service
from twisted.internet import reactor

import admin
import dnsd
import probes
from dnsd.config import load_config
from dnsd.db import DBPoolService, open_pool

cfg = load_config(os.environ.get("MIRRORDNS_CONFIG") or None)
pool = open_pool(cfg, reactor)

application = service.Application("mirrordns")
DBPoolService(pool).setServiceParent(application)     # first in, last out
dns = dnsd.makeService(cfg, pool, reactor)
dns.setServiceParent(application)
if cfg.probes.enabled:
    probes.makeService(cfg, pool, reactor, geo=dns.geo).setServiceParent(application)
admin.makeService(cfg, pool, reactor, plan=dns.plan, geo=dns.geo).setServiceParent(application)
