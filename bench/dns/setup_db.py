#!/usr/bin/env python3
"""Fill a fresh mirror table with the same five mirrors the peers' zones name, all serving.

bench/dns.sh runs this with the project's venv before starting dnsd, so the project's server answers
the same addresses as gdnsd and PowerDNS: de1 127.10.1.1, de2 127.10.1.2 (DE), fr1 127.10.3.1 (FR),
us1 127.10.2.1, us2 127.10.2.2 (US, weighted 3:1 like the peers' 30:10). Every mirror is active with a
fresh, healthy mirror_health row, so the picker keeps them all (the benchmark runs without probes).

Usage: setup_db.py CONFIG.toml
"""
import sys

from dnsd import models as m
from dnsd.config import load_config
from dnsd.db import make_engine, upgrade

MIRRORS = [
    # name, country, ipv4, admin weight
    ("de1", "DE", "127.10.1.1", 1.0),
    ("de2", "DE", "127.10.1.2", 1.0),
    ("fr1", "FR", "127.10.3.1", 1.0),
    ("us1", "US", "127.10.2.1", 3.0),
    ("us2", "US", "127.10.2.2", 1.0),
]


def main(config_path: str) -> None:
    cfg = load_config(config_path)
    engine = make_engine(cfg.database.url, cfg.base_dir)
    upgrade(engine)
    now = m.utcnow()
    with engine.begin() as conn:
        for name, cc, ip, weight in MIRRORS:
            host = f"{name}.bench.invalid"
            mid = conn.execute(m.mirrors.insert().values(
                name=name, hostname=host, country=cc, ipv4=ip,
                http_url=f"http://{host}/", https_url=f"https://{host}/",
                status=m.ACTIVE, status_since=now, weight=weight,
                bandwidth_mbit=1000, cores=4, memory_gb=8, disk_gb=1000, has_https=True,
                source="bench",
            )).inserted_primary_key[0]
            conn.execute(m.mirror_health.insert().values(
                mirror_id=mid, failures_in_row=0, passes_in_row=10,
                last_probe_at=now, last_ok_at=now, last_sync_at=now,
                ipv4_up=True, ipv6_up=None, https_ok=True,
                uptime_24h=1.0, uptime_7d=1.0, uptime_30d=1.0, rtt_p50_ms=20.0, rtt_p95_ms=40.0,
            ))
        m.bump_version(conn)
    engine.dispose()
    print(f"setup_db: {len(MIRRORS)} serving mirrors in {cfg.database.url}")


if __name__ == "__main__":
    main(sys.argv[1])
