"""Serve the admin listener's web tree alone, for development and browser tests.

    python -m admin.web.devserver --config demo/mirrordns.toml [--port 0] [--create-user NAME:ROLE]

It opens the table from the config (migrating it to head), builds the same root as
admin.makeService (admin.web.build_root) and listens on 127.0.0.1; with --port 0 the kernel picks
a free port. Once it accepts connections it prints ``PORT <n>`` on stdout, so a test can start it
as a subprocess and read the port. No DNS and no probes run here: ctx.plan is None, and ctx.geo is
a locator on [geoip] database when that file exists. The real thing is `twistd -n -y twistd.tac`.

--create-user adds a user whose password is read from the environment variable
MIRRORDNS_DEV_PASSWORD (never from the command line, where `ps` would show it).
"""

from __future__ import annotations

import argparse
import os
import sys

from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver

from admin.web import build_site
from admin.web.framework import WebContext
from dnsd.config import load_config
from dnsd.db import open_pool, upgrade


def _geo(cfg):
    path = cfg.geoip.database
    if not path or not cfg.resolve_path(path).exists():
        return None
    from dnsd.geo import GeoLocator  # a pure lookup class; the tac hands in dnsd's own one

    return GeoLocator(str(cfg.resolve_path(path)), cfg.geoip.cache_size)


def _create_user(pool, spec: str):
    from admin import store
    from admin.passwords import hash_password

    name, _, role = spec.partition(":")
    password = os.environ.get("MIRRORDNS_DEV_PASSWORD", "")
    if not password:
        raise SystemExit("--create-user needs MIRRORDNS_DEV_PASSWORD in the environment")
    h = hash_password(password)
    with pool.engine.begin() as conn:
        if store.get_user(conn, name) is None:
            store.add_user(conn, name, h, role or "admin", actor="devserver")
        else:
            store.set_password(conn, name, h, actor="devserver")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m admin.web.devserver", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = a free port chosen by the kernel")
    ap.add_argument("--create-user", action="append", default=[], metavar="NAME:ROLE")
    ap.add_argument("--quiet", action="store_true", help="no request log on stderr")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    pool = open_pool(cfg, reactor)
    upgrade(pool.engine)
    for spec in args.create_user:
        _create_user(pool, spec)
    pool.start()
    if not args.quiet:
        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    ctx = WebContext(cfg=cfg, pool=pool, reactor=reactor, geo=_geo(cfg))
    port = reactor.listenTCP(args.port, build_site(ctx), interface=args.host)
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
