"""dnsd end to end: a DNSService on 127.0.0.1 (free port), the test mmdb, a SQLite table, and
dnspython as the independent client over UDP and TCP.

Clients choose their location by their source address: 127.0.1.x is DE in the test database,
127.0.2.x US, 127.0.4.x JP; 127.0.0.1 is not in it (unknown location).
"""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import struct
import time

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.logger import globalLogPublisher

from tests.dns_support import ADDR, ZONE, Running, addresses, make_env, mirrorctl, query, until

Z = ZONE


@pytest.fixture
def env(tmp_path, test_mmdb):
    return make_env(tmp_path, test_mmdb)


async def started(env, **kw):
    cfg, port = env
    return await Running(cfg, port, **kw).start()


def ecs(addr, prefix):
    return [dns.edns.ECSOption(addr, prefix)]


@pytest_twisted.ensureDeferred
async def test_authoritative_flags_ttl_and_case(env):
    s = await started(env)
    try:
        q = query("De2.MIRRORS.test", "A")
        q.flags |= dns.flags.RD
        r = await s.udp(q)
        assert r.rcode() == dns.rcode.NOERROR
        assert r.flags & dns.flags.AA and not r.flags & dns.flags.RA and r.flags & dns.flags.RD
        assert r.question[0].name.to_text() == "De2.MIRRORS.test."       # case preserved
        assert r.answer[0].name.to_text() == "De2.MIRRORS.test."
        assert addresses(r) == {ADDR["de2"]} and r.answer[0].ttl == 150
        assert r.edns == -1                                             # no OPT asked, none sent
        r = await s.udp(query(f"de1.{Z}", "AAAA", use_edns=0))
        assert addresses(r) == {"2001:db8:de::11"}
        assert r.edns == 0 and r.payload == 1232                        # OPT in the reply
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_hostname_only_mirror_is_a_cname(env):
    s = await started(env)
    try:
        for t in ("A", "AAAA", "MX"):
            r = await s.udp(query(f"jp1.{Z}", t))
            assert r.answer[0].rdtype == dns.rdatatype.CNAME
            assert r.answer[0][0].target.to_text() == "mirror.jp.example."
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_negative_answers_carry_the_soa(env):
    s = await started(env)
    try:
        r = await s.udp(query(f"nothing-here.{Z}", "A"))
        assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA
        soa = r.authority[0]
        assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == f"{Z}."
        assert soa.ttl == 60                                  # min(SOA TTL 3600, MINIMUM 60)
        assert soa[0].serial == 100 + s.svc.plan.version      # serial follows the plan
        r = await s.udp(query(f"x.de2.{Z}", "A"))             # below a mirror name
        assert r.rcode() == dns.rcode.NXDOMAIN
        # NODATA: the name exists, the type does not
        for name, t in ((f"de2.{Z}", "AAAA"), (f"www.{Z}", "MX"), (f"static.{Z}", "TXT"),
                        (f"deep.{Z}", "A")):                  # deep.Z: empty non-terminal
            r = await s.udp(query(name, t))
            assert r.rcode() == dns.rcode.NOERROR and not r.answer, name
            assert r.authority[0].rdtype == dns.rdatatype.SOA, name
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_refused_formerr_notimp(env):
    s = await started(env)
    try:
        r = await s.udp(query("www.example.com", "A"))
        assert r.rcode() == dns.rcode.REFUSED and not r.flags & dns.flags.AA
        raw = await _raw_udp(s.port, _with_class(query(f"www.{Z}", "A").to_wire(), 3))  # CH
        assert raw[3] & 0xF == dns.rcode.REFUSED
        q = query(f"www.{Z}", "A")
        q.set_opcode(dns.opcode.NOTIFY)
        raw = await _raw_udp(s.port, q.to_wire())
        assert raw[:2] == q.to_wire()[:2] and raw[3] & 0xF == dns.rcode.NOTIMP
        assert (raw[2] >> 3) & 0xF == dns.opcode.NOTIFY
        # QDCOUNT 2
        w = bytearray(query(f"www.{Z}", "A").to_wire())
        w[5] = 2
        raw = await _raw_udp(s.port, bytes(w))
        assert raw[3] & 0xF == dns.rcode.FORMERR
        # a question that runs off the end of the message
        raw = await _raw_udp(s.port, query(f"www.{Z}", "A").to_wire()[:20])
        assert raw[3] & 0xF == dns.rcode.FORMERR
        # EDNS version 1 -> BADVERS (extended rcode 16)
        r = await s.udp(query(f"www.{Z}", "A", use_edns=1))
        assert r.rcode() == dns.rcode.BADVERS and r.edns == 0
    finally:
        await s.stop()


def _with_class(wire: bytes, qclass: int) -> bytes:
    return wire[:-2] + struct.pack("!H", qclass)


def _raw_udp_blocking(port, data, timeout=3.0):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(timeout)
        c.sendto(data, ("127.0.0.1", port))
        return c.recv(65535)


def _raw_udp(port, data):
    return threads.deferToThread(_raw_udp_blocking, port, data)


@pytest_twisted.ensureDeferred
async def test_any_is_answered_minimally(env):
    s = await started(env)
    try:
        for name in (f"www.{Z}", Z, f"de1.{Z}", f"de.{Z}"):
            r = await s.udp(query(name, "ANY"))
            assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.HINFO], name
            assert r.answer[0][0].cpu == b"RFC8482"
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_truncation_over_udp_and_full_answer_over_tcp(env):
    s = await started(env)
    try:
        q = query(f"big.{Z}", "TXT")
        r = await s.udp(q)
        assert r.flags & dns.flags.TC and not r.answer
        r = await s.udp(query(f"big.{Z}", "TXT", use_edns=0, payload=4096))
        assert r.flags & dns.flags.TC and r.edns == 0        # 1.5 kB > our 1232
        r = await s.tcp(q)
        assert not r.flags & dns.flags.TC and len(r.answer[0][0].strings) == 6
        # payload size honoured: a 700-byte answer fits 1232 but not 512
        r = await s.udp(query(f"{Z}", "SOA", use_edns=0, payload=512))
        assert not r.flags & dns.flags.TC
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_tcp_several_queries_per_connection_and_idle_timeout(env):
    s = await started(env)
    try:
        def talk():
            qs = [query(f"de2.{Z}", "A"), query(f"static.{Z}", "A"), query(f"nx.{Z}", "A")]
            ids = [q.id for q in qs]
            with socket.create_connection(("127.0.0.1", s.port), timeout=3) as c:
                c.sendall(b"".join(struct.pack("!H", len(w)) + w
                                   for w in (q.to_wire() for q in qs)))
                out = []
                buf = b""
                while len(out) < 3:
                    buf += c.recv(4096)
                    while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                        n = struct.unpack("!H", buf[:2])[0]
                        out.append(dns.message.from_wire(buf[2:2 + n]))
                        buf = buf[2 + n:]
                t0 = time.monotonic()
                closed = c.recv(10) == b""          # the idle timeout (0.5 s) closes it
                return ids, out, closed, time.monotonic() - t0
        ids, replies, closed, waited = await threads.deferToThread(talk)
        assert [r.id for r in replies] == ids                  # answered in order
        assert addresses(replies[0]) == {ADDR["de2"]}
        assert addresses(replies[1]) == {"192.0.2.80"}
        assert replies[2].rcode() == dns.rcode.NXDOMAIN
        assert closed and waited < 3
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_country_names_borrow_and_never_go_dark(env):
    s = await started(env)
    try:
        r = await s.udp(query(f"de.{Z}", "A"))
        assert addresses(r) == {ADDR["de1"], ADDR["de2"]}
        # AAAA: only de1 has IPv6 in DE -> borrows Western Europe (de1, fr1)
        r = await s.udp(query(f"de.{Z}", "AAAA"))
        assert addresses(r) == {"2001:db8:de::11", "2001:db8:f::31"}
        # France has one mirror: borrows the sub-region (DE, FR; AT is disabled)
        seen = set()
        for _ in range(20):
            seen |= addresses(await s.udp(query(f"fr.{Z}", "A")))
        assert seen == {ADDR["fr1"], ADDR["de1"], ADDR["de2"]}
        # Italy (Southern Europe, no mirrors) -> Europe; Brazil -> the world
        seen = set()
        for _ in range(20):
            seen |= addresses(await s.udp(query(f"it.{Z}", "A")))
        assert seen == {ADDR["fr1"], ADDR["de1"], ADDR["de2"]}
        seen = set()
        for _ in range(40):
            seen |= addresses(await s.udp(query(f"br.{Z}", "A")))
        assert seen == {ADDR[m] for m in ("de1", "de2", "fr1", "us1", "us2")}
        assert len(addresses(await s.udp(query(f"br.{Z}", "A")))) == 2      # `answers` = 2
        # continent names
        r = await s.udp(query(f"eu.{Z}", "A"))
        assert addresses(r) <= {ADDR["fr1"], ADDR["de1"], ADDR["de2"]} and len(addresses(r)) == 2
        r = await s.udp(query(f"north-america.{Z}", "A"))
        assert addresses(r) == {ADDR["us1"], ADDR["us2"]}
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_ecs_per_family_from_the_compiled_index(env):
    """Over real UDP, once the compiled geo index is in: the client subnet of each family picks
    the answer, and the scope is the block the answer holds for (capped by the source prefix)."""
    s = await started(env)
    try:
        await until(lambda: s.svc.geo.index is not None and s.svc.answerer.index is not None)
        assert s.svc.answerer.index is s.svc.geo.index
        de = {ADDR["de1"], ADDR["de2"]}
        us = {ADDR["us1"], ADDR["us2"]}
        # (subnet, source prefix, mirrors, scope): 127.0.1.0/24 is DE with unknown and US
        # neighbours; 2001:db8:de::/48 is DE; a /25 holds for its whole /24; a /16 spanning
        # several countries answers for its first address (unknown: the world), scope 16
        for subnet, srcp, want, scope in (("127.0.1.0", 24, de, 24), ("192.0.2.128", 25, de, 24),
                                          ("127.0.2.0", 24, us, 24), ("127.0.0.0", 16, None, 16),
                                          ("::ffff:127.0.2.0", 120, us, 120)):
            for _ in range(2):                   # the second time from the OPT cache
                r = await s.udp(query(f"www.{Z}", "A", use_edns=0, options=ecs(subnet, srcp)),
                                source="127.0.2.9")
                (opt,) = r.options
                assert (opt.srclen, opt.scopelen) == (srcp, scope), subnet
                if want is not None:
                    assert addresses(r) == want, subnet
                else:
                    assert len(addresses(r)) == 2
        for subnet, want in (("2001:db8:de::", {"2001:db8:de::11", "2001:db8:f::31"}),
                             ("2001:db8:de:ff00::", {"2001:db8:de::11", "2001:db8:f::31"})):
            r = await s.udp(query(f"www.{Z}", "AAAA", use_edns=0, options=ecs(subnet, 56)))
            assert addresses(r) == want and r.options[0].scopelen == 48
        r = await s.udp(query(f"www.{Z}", "A", use_edns=0, options=ecs("2001:db8:5:100::", 56)),
                        source="127.0.1.1")
        assert addresses(r) == us and r.options[0].scopelen == 48
        # no ECS: the resolver's address, through the same index
        r = await s.udp(query(f"www.{Z}", "A"), source="127.0.1.7")
        assert addresses(r) == de
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_geo_name_by_source_address_and_by_ecs(env):
    s = await started(env)
    try:
        # no ECS: the source address decides (127.0.1.x = DE, 127.0.2.x = US)
        r = await s.udp(query(f"www.{Z}", "A"), source="127.0.1.7")
        assert addresses(r) == {ADDR["de1"], ADDR["de2"]}
        r = await s.udp(query(f"WWW.{Z}", "A"), source="127.0.2.7")
        assert addresses(r) == {ADDR["us1"], ADDR["us2"]}
        # ECS wins over the source address; the scope says how far the answer holds
        r = await s.udp(query(f"www.{Z}", "A", use_edns=0, options=ecs("198.51.100.0", 24)),
                        source="127.0.1.7")
        assert addresses(r) == {ADDR["us1"], ADDR["us2"]}
        (opt,) = r.options
        assert (opt.address, opt.srclen, opt.scopelen) == ("198.51.100.0", 24, 24)
        r = await s.udp(query(f"www.{Z}", "AAAA", use_edns=0, options=ecs("2001:db8:de::", 56)))
        assert addresses(r) == {"2001:db8:de::11", "2001:db8:f::31"}
        assert r.options[0].scopelen == 48                 # the database's network is a /48
        # location-independent names echo ECS with scope 0
        for name in (f"de.{Z}", f"static.{Z}", f"de1.{Z}"):
            r = await s.udp(query(name, "A", use_edns=0, options=ecs("198.51.100.0", 24)))
            assert r.options[0].scopelen == 0, name
        # source prefix 0: the client opted out; the resolver's address decides, scope 0
        r = await s.udp(query(f"www.{Z}", "A", use_edns=0, options=ecs("0.0.0.0", 0)),
                        source="127.0.2.9")
        assert addresses(r) == {ADDR["us1"], ADDR["us2"]} and r.options[0].scopelen == 0
        # unknown location (127.0.0.1): the world
        seen = set()
        for _ in range(30):
            seen |= addresses(await s.udp(query(f"www.{Z}", "A")))
        assert len(seen) >= 4
        # JP client: Japan has only a hostname mirror (no address) -> Asia empty -> world
        r = await s.udp(query(f"www.{Z}", "A"), source="127.0.4.1")
        assert len(addresses(r)) == 2
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_apex_geo_when_configured(tmp_path, test_mmdb):
    s = await started(make_env(tmp_path, test_mmdb, 'apex_geo = true\ngeo_name = "go"'))
    try:
        r = await s.udp(query(Z, "A"), source="127.0.2.1")
        assert addresses(r) == {ADDR["us1"], ADDR["us2"]}
        r = await s.udp(query(Z, "MX"))                       # the rest of the apex is static
        assert r.answer[0][0].exchange.to_text() == "mail.example.org."
        r = await s.udp(query(f"go.{Z}", "A"), source="127.0.1.1")
        assert addresses(r) == {ADDR["de1"], ADDR["de2"]}
        r = await s.udp(query(f"www.{Z}", "A"))
        assert r.rcode() == dns.rcode.NXDOMAIN
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_garbage_never_stops_the_server(env):
    s = await started(env)
    try:
        def burst():
            rnd = random.Random(4242)
            good = query(f"de2.{Z}", "A").to_wire()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                for i in range(3000):
                    n = rnd.choice([0, 1, 11, 12, 13, 17, 30, 64, 300, 1400])
                    data = bytes(rnd.getrandbits(8) for _ in range(n))
                    if i % 3 == 0 and n >= 12:         # valid-looking header, random rest
                        data = good[:12] + data[12:]
                    if i % 7 == 0:                     # a good query with random flips
                        b = bytearray(good)
                        b[rnd.randrange(len(b))] = rnd.getrandbits(8)
                        data = bytes(b)
                    c.sendto(data, ("127.0.0.1", s.port))
            # and over TCP: random frames, then a good one on a fresh connection
            # (the server hangs up on frames it drops unanswered: reconnect then)
            t = socket.create_connection(("127.0.0.1", s.port), timeout=3)
            for _ in range(50):
                d = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 200)))
                try:
                    t.sendall(struct.pack("!H", len(d)) + d)
                except OSError:
                    t.close()
                    t = socket.create_connection(("127.0.0.1", s.port), timeout=3)
            t.close()
        await threads.deferToThread(burst)
        r = await s.udp(query(f"de2.{Z}", "A"))
        assert addresses(r) == {ADDR["de2"]}
        r = await s.tcp(query(f"static.{Z}", "A"))
        assert addresses(r) == {"192.0.2.80"}
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_mirror_disabled_with_mirrorctl_leaves_answers_within_two_seconds(env):
    s = await started(env)
    cfg, _port = env
    try:
        r = await s.udp(query(f"de.{Z}", "A"))
        assert ADDR["de1"] in addresses(r)
        res = await threads.deferToThread(mirrorctl, cfg, "disable", "de1", "--reason", "test")
        assert res.returncode == 0, res.stderr
        t0 = time.monotonic()

        async def gone():
            for _ in range(10):
                if ADDR["de1"] in addresses(await s.udp(query(f"de.{Z}", "A"))):
                    return False
            return True

        while not await gone():
            assert time.monotonic() - t0 < 2.0, "de1 still answered 2 s after mirrorctl disable"
        # DE now has one mirror: it borrows from Western Europe
        seen = set()
        for _ in range(20):
            seen |= addresses(await s.udp(query(f"de.{Z}", "A")))
        assert seen == {ADDR["de2"], ADDR["fr1"]}
        # its own name still answers (the mirror's address did not change)
        assert addresses(await s.udp(query(f"de1.{Z}", "A"))) == {ADDR["de1"]}
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_keeps_answering_when_the_database_is_unreachable(env):
    """The table's file is moved away and a directory put in its place; the pool's pooled
    connections are dropped (as a PostgreSQL restart would), so every new connection fails --
    proven below by sqlite3 itself. (chmod 000 would not do: tests run as root.)"""
    s = await started(env)
    cfg, _port = env
    events = []
    globalLogPublisher.addObserver(events.append)
    db = cfg.database.url.split("sqlite:///", 1)[1]
    moved = []
    try:
        before = addresses(await s.udp(query(f"de.{Z}", "A")))
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.replace(db + suffix, db + suffix + ".away")
                moved.append(suffix)
        os.mkdir(db)
        s.pool.engine.dispose()
        with pytest.raises(sqlite3.OperationalError):
            sqlite3.connect(db).execute("select 1")
        await until(lambda: not s.svc.plan.db_ok, timeout=5)
        assert any("dns_db_unreachable" in str(e.get("log_format", "")) for e in events)
        for _ in range(5):
            r = await s.udp(query(f"de.{Z}", "A"))
            assert addresses(r) == before
        r = await s.tcp(query(f"www.{Z}", "A"))
        assert r.rcode() == dns.rcode.NOERROR and len(addresses(r)) == 2
        # back again: the refresher notices
        os.rmdir(db)
        for suffix in moved:
            os.replace(db + suffix + ".away", db + suffix)
        moved = []
        await until(lambda: s.svc.plan.db_ok, timeout=5)
        assert any("dns_db_back" in str(e.get("log_format", "")) for e in events)
    finally:
        globalLogPublisher.removeObserver(events.append)
        if os.path.isdir(db):
            os.rmdir(db)
        for suffix in moved:
            os.replace(db + suffix + ".away", db + suffix)
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_metrics_count_queries(env):
    s = await started(env)
    try:
        await s.udp(query(f"de.{Z}", "A"))
        await s.udp(query(f"www.{Z}", "A"), source="127.0.2.3")
        await s.udp(query(f"nx.{Z}", "A"))
        await s.udp(query("www.example.com", "A"))
        await s.udp(query(f"static.{Z}", "AAAA"))
        await s.udp(query(f"www.{Z}", "AAAA"))                    # from 127.0.0.1: unknown
        await s.udp(query(f"www.{Z}", "A", use_edns=1))           # BADVERS, not NOERROR
        reg = s.registry
        assert reg.get_sample_value("dnsd_queries_total", {"qtype": "A", "rcode": "BADVERS"}) == 1
        assert reg.get_sample_value("dnsd_queries_total", {"qtype": "A", "rcode": "NOERROR"}) == 2
        assert reg.get_sample_value("dnsd_queries_total",
                                    {"qtype": "AAAA", "rcode": "NOERROR"}) == 2
        assert reg.get_sample_value("dnsd_answers_by_country_total", {"country": "unknown"}) == 1
        assert reg.get_sample_value("dnsd_queries_total", {"qtype": "A", "rcode": "NXDOMAIN"}) == 1
        assert reg.get_sample_value("dnsd_queries_total", {"qtype": "A", "rcode": "REFUSED"}) == 1
        assert reg.get_sample_value("dnsd_answers_by_country_total", {"country": "US"}) == 1
        assert reg.get_sample_value("dnsd_answers_by_country_total", {"country": "DE"}) == 1
        assert reg.get_sample_value("dnsd_plan_version") == s.svc.plan.version > 0
        assert reg.get_sample_value("dnsd_plan_mirrors_serving") == 5   # jp1 has no address
        assert reg.get_sample_value("dnsd_db_reachable") == 1
    finally:
        await s.stop()


def test_bad_zone_file_fails_at_startup_naming_file_and_line(tmp_path, test_mmdb):
    from dnsd.zonefile import ZoneError

    cfg, port = make_env(tmp_path, test_mmdb)
    (tmp_path / "zone").write_text("@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nmail IN MX mail\n")
    with pytest.raises(ZoneError, match=r"zone:3: bad record 'mail IN MX mail'"):
        Running(cfg, port)
