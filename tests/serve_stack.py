"""Run DNS and the admin web tree in one process, composed as twistd.tac does, for browser tests.

    python -m tests.serve_stack CONFIG.toml

The web listens on 127.0.0.1 on a port the kernel picks and this prints ``PORT <n>`` once it
accepts connections; DNS listens where [dns] listen says (the test picks free ports). The web gets
dnsd's live plan holder and geo locator, exactly as admin.makeService will from the tac, so a
change made in the browser can be seen leaving a DNS answer. Stops on SIGTERM.
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.web.server import Site

import dnsd
from admin.web import build_root
from admin.web.framework import WebContext
from dnsd.config import load_config
from dnsd.db import open_pool


def main(path: str) -> None:
    cfg = load_config(path)
    pool = open_pool(cfg, reactor)
    pool.start()
    dns = dnsd.makeService(cfg, pool, reactor)
    dns.startService()
    ctx = WebContext(cfg=cfg, pool=pool, reactor=reactor, plan=dns.plan, geo=dns.geo)
    port = reactor.listenTCP(0, Site(build_root(ctx)), interface="127.0.0.1")
    reactor.addSystemEventTrigger("before", "shutdown", dns.stopService)
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1])
