"""Run the admin listener's whole web tree (admin.web.build_site) for tests in another process.

    python -m tests.serve_web CONFIG.toml [--plan]

Listens on 127.0.0.1 on a free port chosen by the kernel and prints `PORT <n>` on stdout once it
accepts connections; logs to stderr; stops on SIGTERM. The table is the config's [database] url
(already migrated and seeded by the test); there is no DNS or probe service. Without --plan
ctx.plan is None and the pages build their own plan from the table; with --plan a plan is built
from the table once at start and handed in as the live one (what the closer needs to answer).
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver

from admin.web import build_site
from admin.web.framework import WebContext
from dnsd.config import load_config
from dnsd.db import open_pool


class _Holder:
    def __init__(self, plan):
        self.current = plan


def _plan(cfg, pool):
    from dnsd import models
    from dnsd.plan import build_plan, load_rows

    with pool.engine.connect() as conn:
        return _Holder(build_plan(load_rows(conn), cfg, models.utcnow()))


def main(path: str, with_plan: bool = False) -> None:
    # failures -> stderr; stdout stays ours for the PORT line
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    cfg = load_config(path)
    pool = open_pool(cfg, reactor)
    pool.start()
    geo = None
    if cfg.geoip.database:
        from dnsd.geo import GeoLocator

        geo = GeoLocator(str(cfg.resolve_path(cfg.geoip.database)), cfg.geoip.cache_size)
    ctx = WebContext(cfg=cfg, pool=pool, reactor=reactor, geo=geo,
                     plan=_plan(cfg, pool) if with_plan else None)
    site = build_site(ctx)
    from admin import closer

    dist = closer.refresher(site.resource)        # the dist index, as admin.makeService runs it
    dist.startService()
    reactor.addSystemEventTrigger("before", "shutdown", dist.stopService)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1], "--plan" in sys.argv[2:])
