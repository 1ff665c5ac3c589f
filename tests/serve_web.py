"""Run the admin listener's whole web tree (admin.web.build_root) for tests in another process.

    python -m tests.serve_web CONFIG.toml

Listens on 127.0.0.1 on a free port chosen by the kernel and prints `PORT <n>` on stdout once it
accepts connections; logs to stderr; stops on SIGTERM. The table is the config's [database] url (already migrated
and seeded by the test); there is no DNS or probe service, so ctx.plan is None and the pages build
their own plan from the table.
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver

from admin.web import build_site
from admin.web.framework import WebContext
from dnsd.config import load_config
from dnsd.db import open_pool


def main(path: str) -> None:
    # failures -> stderr; stdout stays ours for the PORT line
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    cfg = load_config(path)
    pool = open_pool(cfg, reactor)
    pool.start()
    ctx = WebContext(cfg=cfg, pool=pool, reactor=reactor)
    port = reactor.listenTCP(0, build_site(ctx), interface="127.0.0.1")
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1])
