# The composition root: `twistd -n -y twistd.tac`, config from $MIRRORDNS_CONFIG (else ./mirrordns.toml).
#
# Each part builds its own service tree with makeService and gets handed what it needs from the
# others here, so imports run one way (dnsd <- probes <- admin) and no part reaches for another.
# `[node] roles` says which parts this node runs: a DNS-only node, a probe vantage point and the
# admin node are this same file with different configs (docs/deployment.md).
#
# Every part is a child of the pool's service: the pool opens first and closes only after every
# part has stopped (the probes' last batch and the outbox's last mark are written first).
import os

from twisted.application import service
from twisted.internet import reactor

import admin
import dnsd
import probes
from dnsd.config import load_config
from dnsd.db import DBPoolService, open_pool

cfg = load_config(os.environ.get("MIRRORDNS_CONFIG") or None)
roles = set(cfg.node.roles)
pool = open_pool(cfg, reactor)

application = service.Application("mirrordns")
node = DBPoolService(pool)
node.setServiceParent(application)
dns = None
if roles & {"dns", "admin"}:     # the admin's closer and pages read the live plan too
    dns = dnsd.makeService(cfg, pool, reactor, serve="dns" in roles)
    dns.setServiceParent(node)
if "probes" in roles and cfg.probes.enabled:
    geo = dns.geo if dns is not None else dnsd.makeGeo(cfg)
    probes.makeService(cfg, pool, reactor, geo=geo).setServiceParent(node)
if "admin" in roles:
    admin.makeService(cfg, pool, reactor, plan=dns.plan, geo=dns.geo).setServiceParent(node)
