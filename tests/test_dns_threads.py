"""The Answerer shared between threads: two UDP answer threads (dnsd.server.UDPAnswerThread) and
the swaps the reactor thread makes while they answer (plan tables, geo database and index, cookie
secrets), with rate limiting forgetting and re-adding buckets all the time. Every query must get
its answer, and nothing may raise, be logged as a failure or be counted as dropped."""

from __future__ import annotations

import datetime as dt
import random
import shutil
import socket
import sys
import threading
import time

import dns.edns
import dns.message
import dns.rcode
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet
from twisted.logger import globalLogPublisher

from dnsd.answer import Answerer, compile_table
from dnsd.config import parse_config
from dnsd.cookies import CookieJar
from dnsd.geo import GeoLocator
from dnsd.plan import build_plan, row
from dnsd.rrl import RateLimiter
from dnsd.server import UDPAnswerThread, udp_socket
from dnsd.zonefile import parse_zone
from tests.helpers import geo_record

Z = "m.test"
ZONE = """@ SOA ns1 hostmaster 7 3600 600 604800 300
@ NS ns1
ns1 A 192.0.2.53
*.wild A 192.0.2.99
child NS ns.child
ns.child A 192.0.2.77
"""
K1, K2 = bytes(range(16)), bytes(range(16, 32))
CLIENT_COOKIE = b"\x42" * 8


def _plan(cfg, version, us_ip):
    return build_plan({"version": version, "mirrors": [
        row(id=1, name="de1", country="DE", ipv4="192.0.2.1"),
        row(id=2, name="us1", country="US", ipv4=us_ip)]}, cfg,
        dt.datetime(2026, 12, 1, 12, 0))


def _queries(jar: CookieJar, src: str) -> list[tuple[bytes, set[int]]]:
    """(wire, rcodes it may get) for each kind of query the answer path has a way for."""
    server, _ = jar.respond(CLIENT_COOKIE, b"", src)
    cookie = dns.edns.GenericOption(10, CLIENT_COOKIE + server)
    ecs4 = dns.edns.ECSOption("192.0.2.0", 24)
    ecs6 = dns.edns.ECSOption("2001:db8:de::", 56)
    ok, nx = {dns.rcode.NOERROR}, {dns.rcode.NXDOMAIN}
    kinds = [
        (f"www.{Z}", "A", [ecs4, cookie], ok), (f"www.{Z}", "AAAA", [cookie, ecs6], ok),
        (f"www.{Z}", "A", [ecs4], ok), (f"de.{Z}", "A", [cookie], ok), (f"www.{Z}", "A", None, ok),
        (f"nx{random.randrange(10**6)}.{Z}", "A", [cookie], nx), (f"x.wild.{Z}", "TXT", [ecs4], ok),
        (f"a.b.child.{Z}", "A", [cookie, ecs4], ok),
        (f"www.{Z}", "A", [dns.edns.ECSOption(f"10.{random.randrange(256)}.0.0", 16), cookie], ok),
    ]
    out = []
    for name, rdtype, opts, rcodes in kinds:
        q = dns.message.make_query(name, rdtype, use_edns=None if opts is None else 0,
                                   options=opts or [])
        out.append((q.to_wire(), rcodes))
    return out


def _client(port: int, sources: list[str], jar: CookieJar, n: int, failures: list):
    socks = []
    try:
        for s in sources:
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            c.bind((s, 0))
            c.settimeout(3.0)
            socks.append((c, _queries(jar, s)))
        for i in range(n):
            c, qs = socks[i % len(socks)]
            wire, rcodes = qs[i % len(qs)]
            wire = (i & 0xFFFF).to_bytes(2, "big") + wire[2:]
            c.sendto(wire, ("127.0.0.1", port))
            try:
                out = c.recv(4096)
            except TimeoutError:
                failures.append(f"no answer to query {i} from {c.getsockname()[0]}")
                continue
            r = dns.message.from_wire(out)
            if r.id != i & 0xFFFF or r.rcode() not in rcodes:
                failures.append(f"query {i}: {dns.rcode.to_text(r.rcode())} {r.question}")
    except Exception as e:
        failures.append(f"client crashed: {e!r}")
    finally:
        for c, _ in socks:
            c.close()


@pytest.mark.parametrize("native", [True, False], ids=["c-loop", "python-loop"])
def test_two_udp_threads_and_every_swap_at_once(tmp_path, test_mmdb, native):
    cfg = parse_config(f'[dns]\nzone = "{Z}"\nmin_candidates = 1\nring_size = 3\n'
                       f'[probes]\nenabled = false\n')
    zone = parse_zone(ZONE, Z)
    tables = [compile_table(_plan(cfg, v, ip), zone, cfg)
              for v, ip in ((1, "198.51.100.1"), (2, "198.51.100.2"))]
    # two versions of the geo database: 192.0.2.0/24 and 127.0.1.0/24 DE, then US
    path = tmp_path / "geo.mmdb"
    other = tmp_path / "other.mmdb"
    shutil.copy(test_mmdb, path)
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
    w.insert_network(IPSet(["192.0.2.0/24", "127.0.1.0/24"]), geo_record("US"))
    w.to_db_file(str(other))
    geo = GeoLocator(str(path))
    assert geo.load_index()
    jar = CookieJar([K1])
    rrl = RateLimiter(1e6, max_tracked=4)                  # never limits; forgets all the time
    a = Answerer(geo, tables[0], cookies=jar, nsid=b"t1", rrl=rrl)

    failures: list[str] = []
    logged = []

    def observer(event):
        if event.get("log_failure") is not None or event.get("log_level").name in ("error",
                                                                                   "critical"):
            logged.append(event)

    globalLogPublisher.addObserver(observer)
    socks = [udp_socket("127.0.0.1", 0), udp_socket("127.0.0.1", 0)]
    servers = [UDPAnswerThread(s, a, f"dns-udp-test-{i}", native=native)
               for i, s in enumerate(socks)]
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)                             # switch threads as often as can be
    clients = []
    try:
        for t in servers:
            t.start()
        for k in range(4):
            port = socks[k % 2].getsockname()[1]
            sources = [f"127.0.{k * 16 + j}.{j + 1}" for j in range(12)]
            clients.append(threading.Thread(target=_client, args=(port, sources, jar, 900,
                                                                  failures)))
        for c in clients:
            c.start()
        swaps = 0
        srcs = [path, other]
        while any(c.is_alive() for c in clients):
            a.set_table(tables[swaps % 2])
            jar.set_keys([K2, K1] if swaps % 2 else [K1, K2])
            if swaps % 5 == 0:                              # the geo file changes: reader + index
                shutil.copy(srcs[(swaps // 5) % 2], tmp_path / "next.mmdb")
                (tmp_path / "next.mmdb").replace(path)
                geo._install(geo._changes())
            swaps += 1
            time.sleep(0.002)
        for c in clients:
            c.join()
    finally:
        sys.setswitchinterval(old_switch)
        for t in servers:
            t.stop()
        globalLogPublisher.removeObserver(observer)
    assert not failures, failures[:10]
    assert not logged, logged[:3]
    assert a.stats.dropped == 0
    assert swaps > 20                                       # the swaps happened while they ran
    answered = sum(a.stats.by_type_rcode.values())
    assert answered >= 4 * 900 * 0.99                       # (two threads may lose a count)
