"""Support for the DNS tests: a small mirror table, a zone, a config, a running DNSService."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import dns.message
import dns.query
from prometheus_client import CollectorRegistry
from twisted.internet import reactor, task, threads

from dnsd import models
from dnsd.config import load_config
from dnsd.db import DBPool, make_engine, upgrade
from dnsd.service import DNSService
from tests.helpers import free_port

ZONE = "mirrors.test"
ZONE_TEXT = """; test zone
$ORIGIN mirrors.test.
$TTL 3600
@       SOA ns1 hostmaster ( 100 3600 600 604800 60 )
@       NS  ns1
@       MX  10 mail.example.org.
@       TXT "v=spf1 -all"
ns1     A   192.0.2.53
static  300 A 192.0.2.80
        300 AAAA 2001:db8::80
a.deep  TXT "empty non-terminal above me"
big     TXT "{chunk}" "{chunk}" "{chunk}" "{chunk}" "{chunk}" "{chunk}"
""".replace("{chunk}", "x" * 250)

# name, country, ipv4, ipv6, extra columns
MIRRORS = [
    ("de1", "DE", "192.0.2.11", "2001:db8:de::11", {}),
    ("de2", "DE", "192.0.2.12", None, {}),
    ("fr1", "FR", "203.0.113.31", "2001:db8:f::31", {}),
    ("us1", "US", "198.51.100.1", None, {}),
    ("us2", "US", "198.51.100.2", None, {}),
    ("jp1", "JP", None, None, {"hostname": "mirror.jp.example"}),
    ("at1", "AT", "192.0.2.41", None, {"status": models.DISABLED_ADMIN,
                                       "status_reason": "hardware move"}),
]
ADDR = {m[0]: m[2] for m in MIRRORS}


def write_table(url: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        for i, (name, cc, v4, v6, extra) in enumerate(MIRRORS, 1):
            vals = {"id": i, "name": name, "hostname": f"{name}.example.net", "country": cc,
                    "ipv4": v4, "ipv6": v6, "status": models.ACTIVE,
                    "http_url": f"http://{name}.example.net/"}
            vals.update(extra)
            conn.execute(models.mirrors.insert().values(**vals))
        conn.execute(models.mirror_health.insert().values(
            mirror_id=1, ipv4_up=True, ipv6_up=True, last_probe_at=models.utcnow(),
            last_sync_at=models.utcnow() - dt.timedelta(hours=1)))
        models.bump_version(conn)
    engine.dispose()


def make_env(tmp_path: Path, mmdb: str, dns_extra: str = "", *, zone: str = ZONE,
             zone_text: str = ZONE_TEXT, db_url: str | None = None, listen=None,
             table: bool = True) -> tuple:
    """(config, port): a SQLite table (or `db_url`'s), a zone file and a config file in tmp_path."""
    db = tmp_path / "mirrors.sqlite"
    url = db_url or f"sqlite:///{db}"
    if table:
        write_table(url)
    (tmp_path / "zone").write_text(zone_text)
    port = free_port()
    listen = listen or [f"127.0.0.1:{port}"]
    listen_toml = ", ".join(f'"{hp}"'.replace("{port}", str(port)) for hp in listen)
    cfgpath = tmp_path / "mirrordns.toml"
    given = {line.split("=")[0].strip() for line in dns_extra.splitlines() if "=" in line}
    defaults = "\n".join(f"{k} = {v}" for k, v in (("poll_interval", 0.2),
                                                    ("tcp_idle_timeout", 0.5)) if k not in given)
    cfgpath.write_text(f"""
[database]
url = "{url}"
[dns]
zone = "{zone}"
zone_file = "zone"
listen = [{listen_toml}]
{defaults}
{dns_extra}
[geoip]
database = "{mmdb}"
[probes]
enabled = false
""")
    return load_config(str(cfgpath)), port


async def until(pred, timeout: float = 5.0, step: float = 0.05):
    waited = 0.0
    while not pred():
        if waited >= timeout:
            raise AssertionError("condition not met in time")
        await task.deferLater(reactor, step, lambda: None)
        waited += step


class Running:
    """A started DNSService on 127.0.0.1 with its pool; `await stop()` when done."""

    def __init__(self, cfg, port, **kw):
        self.cfg, self.port = cfg, port
        self.pool = DBPool(make_engine(cfg.database.url), reactor)
        self.pool.start()
        self.registry = CollectorRegistry()
        self.svc = DNSService(cfg, self.pool, reactor, registry=self.registry, **kw)

    async def start(self):
        self.svc.startService()
        await until(lambda: self.svc.plan.table is not None)
        return self

    async def stop(self):
        await self.svc.stopService()
        self.pool.stop()

    def udp(self, msg, source="127.0.0.1", timeout=3.0):
        return threads.deferToThread(dns.query.udp, msg, "127.0.0.1", timeout=timeout,
                                     port=self.port, source=source)

    def tcp(self, msg, timeout=3.0):
        return threads.deferToThread(dns.query.tcp, msg, "127.0.0.1", timeout=timeout,
                                     port=self.port)


def query(name, rdtype="A", **kw):
    return dns.message.make_query(name, rdtype, **kw)


def addresses(reply) -> set[str]:
    return {rd.address for rrset in reply.answer for rd in rrset if hasattr(rd, "address")}


def mirrorctl(cfg, *args):
    import subprocess

    return subprocess.run([sys.executable, "-m", "admin.cli", "--config", cfg.path,
                           "--actor", "tester", *args], capture_output=True, text=True,
                          timeout=60, check=False)
