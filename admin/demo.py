"""Set up the demo `make run` starts: schema, demo mirrors, a demo login, and where to look.

    python -m admin.demo --config demo/mirrordns.toml

Idempotent: the schema is upgraded, demo mirrors (source "demo:<host>") and the `admin` user are
added only when missing, so running it before every start changes nothing the second time, and
whatever was changed by hand in the demo table stays.

The demo mirrors are the real php.net mirror list of 2013-09-19 (tests/fixtures copy: names,
countries, providers, URLs and statuses as they were) with documentation addresses instead of real
ones, one range per part of the world so answers are easy to tell apart:
Europe 192.0.2.0/24, the Americas 198.51.100.0/24, elsewhere 203.0.113.0/24, and for two mirrors in
three an IPv6 address in 2001:db8::/32. Declared specs are made up (stable per name) so the scores
differ. The demo config turns probes off (see demo/mirrordns.toml for why).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import sqlalchemy as sa

from admin import importers, store
from dnsd import countries
from dnsd.config import ConfigError, load_config, split_hostport
from dnsd.db import make_engine, upgrade
from dnsd.models import mirrors

PHPNET_LIST = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / \
    "php-net-mirrors-2013-09-19.tsv"
DEMO_USER = "admin"
DEMO_PASSWORD = "demo"
ACTOR = "demo"

_V4_BY_CONTINENT = {"EU": "192.0.2", "NA": "198.51.100", "SA": "198.51.100"}
_V4_ELSEWHERE = "203.0.113"
_V6_PREFIX = {"192.0.2": "2001:db8:e0", "198.51.100": "2001:db8:a0", "203.0.113": "2001:db8:c0"}


def _stable(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")


def demo_entries(tsv_path: Path = PHPNET_LIST) -> list[dict]:
    """The demo mirrors as keyword arguments for store.add_mirror (pure: no table needed)."""
    parsed = importers.parse_phpnet_tsv(tsv_path.read_text(encoding="utf-8"), str(tsv_path))
    next_host: dict[str, int] = {}
    out = []
    for e in parsed.entries:
        c = countries.get(e.country)
        net = _V4_BY_CONTINENT.get(c.continent if c else "", _V4_ELSEWHERE)
        next_host[net] = next_host.get(net, 0) + 1
        n = next_host[net]
        h = _stable(e.name or e.hostname)
        has_v6 = h % 3 != 0
        out.append(dict(
            name=e.name, hostname=e.hostname, country=e.country, status=e.status,
            status_reason=e.status_reason, source=f"demo:{e.hostname}",
            ipv4=f"{net}.{n}", ipv6=f"{_V6_PREFIX[net]}::{n:x}" if has_v6 else None,
            bandwidth_mbit=(100, 250, 1000, 1000, 10000)[h % 5],
            cores=(2, 4, 8, 16)[(h >> 3) % 4], memory_gb=(4, 8, 16, 64)[(h >> 5) % 4],
            disk_gb=(500, 1000, 4000)[(h >> 7) % 3], has_ipv6=has_v6,
            has_https=bool((h >> 9) % 2), **e.fields,
        ))
    return out


def load_demo(conn: sa.Connection, entries: list[dict], rules=None) -> int:
    """Add the demo mirrors that are missing (matched by source); returns how many were added.
    Their documentation addresses are not public ones: the demo config allows them
    ([probes] allow_private), and so must `rules`."""
    from dnsd.validation import Rules

    rules = rules or Rules(allow_private=True)
    have = set(conn.execute(sa.select(mirrors.c.source)
                            .where(mirrors.c.source.like("demo:%"))).scalars())
    added = 0
    for kw in entries:
        if kw["source"] in have:
            continue
        kw = dict(kw)
        if kw["name"] and conn.execute(sa.select(mirrors.c.id)
                                       .where(mirrors.c.name == kw["name"])).first():
            kw["name"] = None                  # taken by a mirror added by hand: next free one
        store.add_mirror(conn, actor=ACTOR, mail=None, action="demo-add", rules=rules, **kw)
        added += 1
    return added


def ensure_demo_user(conn: sa.Connection) -> bool:
    if store.get_user(conn, DEMO_USER):
        return False
    from admin.passwords import hash_password

    store.add_user(conn, DEMO_USER, hash_password(DEMO_PASSWORD), "admin", actor=ACTOR)
    return True


def main(argv: list[str] | None = None) -> int:
    from dnsd.validation import Rules

    ap = argparse.ArgumentParser(prog="python -m admin.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--config", metavar="FILE", default=None)
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 1
    engine = make_engine(cfg.database.url, cfg.base_dir)
    try:
        upgrade(engine)
        entries = demo_entries()
        with engine.begin() as conn:
            added = load_demo(conn, entries, Rules.from_config(cfg))
            new_user = ensure_demo_user(conn)
            total = conn.execute(sa.select(sa.func.count()).select_from(mirrors)).scalar()
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    if engine.dialect.name == "sqlite" and engine.url.database:
        where = str(Path(engine.url.database).resolve())
    print(f"demo table: {where}")
    print(f"  {added} demo mirrors added, {total} mirrors in the table"
          + ("" if added else " (demo data was loaded before)"))
    host, port = split_hostport(cfg.dns.listen[0])
    ahost, aport = split_hostport(cfg.admin.listen)
    zone = cfg.dns.zone
    print("Where to look, once twistd is up:")
    # 194.25.2.0/24 is a German network in the bundled GeoLite2 file: the answer comes from DE.
    print(f"  DNS     dig @{host} -p {port} {cfg.dns.geo_name}.{zone} A +subnet=194.25.2.0/24")
    print(f"          dig @{host} -p {port} de.{zone} AAAA")
    print(f"          dig @{host} -p {port} de2.{zone} A")
    # 8.8.8.8 is in the US in that file (the documentation ranges the demo mirrors use are in none)
    print(f"          .venv/bin/mirrorctl --config {args.config or 'mirrordns.toml'} resolve "
          f"{cfg.dns.geo_name}.{zone} --client 8.8.8.8")
    print(f"  admin   http://{ahost}:{aport}/admin/  login {DEMO_USER} / {DEMO_PASSWORD}"
          + ("  (created now)" if new_user else ""))
    print(f"  public  http://{ahost}:{aport}/")
    print(f"  probes  {'on' if cfg.probes.enabled else 'off (demo addresses are not reachable)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
