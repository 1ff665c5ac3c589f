"""The import-to-zone scenario, run by tests/test_import_to_zone.py inside a network namespace of
its own (there port 80 on every 127.x address is ours). Prints one JSON line of what it saw.

1. `mirrorctl db upgrade` and `mirrorctl import phpnet-tsv` of the php.net list (88 mirrors, no
   addresses), exactly as an operator types them;
2. a resolver on 127.0.0.1 (tests/fake_resolver.py) that knows every php.net host name, and a
   fake mirror on port 80 of every 127.x address, serving a fresh timestamp file;
3. the DNS service on the table: before any probe, country names answer nothing;
4. one probe cycle (probes.service.ProbeService.run_cycle): the probes resolve every host name,
   probe over what they found, and store it;
5. every country name asked over UDP and TCP (dnspython), and every mirror's own name.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
from twisted.internet import defer, task, threads
from twisted.web import resource, server

ROOT = Path(__file__).resolve().parent.parent
PHPNET = ROOT / "tests" / "fixtures" / "php-net-mirrors-2013-09-19.tsv"
ZONE = "mirrors.example.org"


class TimeFile(resource.Resource):
    """Every mirror at once: any Host, any path ending in /TIME gets a fresh mirmon timestamp."""

    isLeaf = True
    stamp = int(time.time()) - 60          # a timestamp file is static between two syncs

    def render_GET(self, request):
        if not request.path.endswith(b"/TIME"):
            request.setResponseCode(404)
            return b"not found\n"
        return f"{self.stamp}\n".encode()


def addresses(hosts: list[str]) -> dict[str, list[str]]:
    """Each host name its own loopback address: 127.0.1.1, 127.0.1.2, ..."""
    return {h: [f"127.0.{1 + i // 250}.{1 + i % 250}"] for i, h in enumerate(hosts)}


def ask(port: int, name: str, qtype: str = "A", tcp: bool = False) -> list[str]:
    q = dns.message.make_query(name, qtype)
    r = (dns.query.tcp if tcp else dns.query.udp)(q, "127.0.0.1", port=port, timeout=3)
    want = dns.rdatatype.from_text(qtype)
    return sorted(rr.to_text() for rrset in r.answer if rrset.rdtype == want for rr in rrset)


async def main(reactor, tmp: str):
    from admin import cli
    from dnsd.config import load_config
    from dnsd.db import DBPoolService, open_pool
    from dnsd.models import utcnow
    from dnsd.plan import build_plan, load_rows
    from dnsd.service import DNSService
    from probes.service import ProbeService
    from tests import fake_resolver
    from tests.helpers import free_port

    d = Path(tmp)
    dns_port, ns_port = free_port(), free_port()
    (d / "mirrordns.toml").write_text(f"""
[database]
url = "sqlite:///{d}/mirrors.sqlite"
[dns]
zone = "{ZONE}"
zone_file = "{ROOT}/zones/mirrors.example.org.zone"
listen = ["127.0.0.1:{dns_port}"]
poll_interval = 0.2
[probes]
interval = 2
timeout = 5.0
connect_timeout = 2.0
allow_private = true
nameservers = ["127.0.0.1:{ns_port}"]
stats_interval = 3600
[mail]
smtp = "127.0.0.1:1"
""")
    conf = str(d / "mirrordns.toml")

    def ctl(*args):
        rc = cli.main(["--config", conf, "--actor", "operator", *args])
        assert rc == 0, args

    # 1. as an operator types it (mirrorctl is synchronous: off the reactor thread)
    await threads.deferToThread(ctl, "db", "upgrade")
    await threads.deferToThread(ctl, "import", "phpnet-tsv", str(PHPNET))
    rows = list(csv.DictReader(PHPNET.open(), delimiter="\t"))
    hosts = [r["hostname"] for r in rows if r["mirror_type"] == "MIRROR_STANDARD"]
    table = addresses(hosts)

    # 2. the world the probes see
    _names, ns = fake_resolver.listen(reactor, table, ns_port)
    site = server.Site(TimeFile())
    site.log = lambda request: None
    web = reactor.listenTCP(80, site, interface="0.0.0.0")

    cfg = load_config(conf)
    pool = open_pool(cfg, reactor)
    pool_svc = DBPoolService(pool)
    pool_svc.startService()
    dnssvc = DNSService(cfg, pool, reactor, spawn_workers=False)
    dnssvc.startService()
    await dnssvc.refresh()
    out: dict = {"mirrors": len(hosts)}
    countries = sorted({m.country for m in dnssvc.plan.current.mirrors})
    out["before"] = await threads.deferToThread(       # the reactor answers meanwhile
        lambda: {cc: ask(dns_port, f"{cc.lower()}.{ZONE}") for cc in countries})
    out["serving_before"] = len(dnssvc.plan.current.serving)

    # 4. one probe cycle
    probes = ProbeService(cfg, pool, reactor, batch_delay=0.2)
    await probes.run_cycle()

    def plan_now(conn):
        return build_plan(load_rows(conn), cfg, utcnow())
    plan = await pool.run_readonly(plan_now)
    await dnssvc.plan.wait_for(plan.version, reactor, 10.0)
    live = dnssvc.plan.current
    out["serving_after"] = len(live.serving)
    out["not_serving"] = {e.name: e.reason for e in live.mirrors if not e.serving}
    out["pinned"] = sum(1 for e in live.mirrors if e.pinned)

    # 5. every country, over UDP and TCP; every mirror's own name
    def every_answer():
        res = {}
        for cc in countries:
            name = f"{cc.lower()}.{ZONE}"
            res[cc] = {"udp": ask(dns_port, name), "tcp": ask(dns_port, name, tcp=True)}
        own = {e.name: ask(dns_port, f"{e.name}.{ZONE}") for e in live.mirrors if e.name}
        return res, own
    out["after"], out["own"] = await threads.deferToThread(every_answer)
    out["resolver_addresses"] = sorted({a for v in table.values() for a in v})
    out["expected_own"] = {h.split(".")[0]: table[h] for h in hosts}

    await probes.stopService() if probes.running else None
    await dnssvc.stopService()
    pool_svc.stopService()
    for p in (web, *ns):
        await p.stopListening()
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    task.react(lambda r: defer.ensureDeferred(main(r, sys.argv[1])))
