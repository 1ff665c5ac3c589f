"""The pure Answerer (bytes in, bytes out) over a compiled wire table, without sockets."""

from __future__ import annotations

import collections
import datetime as dt
import ipaddress
import random
import shutil
import socket
import struct

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from dnsd.answer import Answerer, compile_table
from dnsd.config import parse_config
from dnsd.geo import GeoLocator
from dnsd.plan import build_plan, row
from dnsd.server import UDPAnswerThread, udp_socket
from dnsd.zonefile import parse_zone
from tests.helpers import geo_record

NOW = dt.datetime(2026, 11, 21, 12, 0)
Z = "m.test"
ZONE = "@ SOA ns1 hostmaster 7 3600 600 604800 300\n@ NS ns1\nns1 A 192.0.2.53\n"


def make(test_mmdb, rows=None, seed=1, **dns_kw):
    extra = "".join(f"{k} = {v}\n" for k, v in dns_kw.items())
    cfg = parse_config(f'[dns]\nzone = "{Z}"\n{extra}[probes]\nenabled = false\n')
    rows = rows if rows is not None else [
        row(id=1, name="de1", country="DE", ipv4="192.0.2.1", weight=3.0),
        row(id=2, name="de2", country="DE", ipv4="192.0.2.2"),
        row(id=3, name="de3", country="DE", ipv4="192.0.2.3"),
        row(id=4, name="us1", country="US", ipv4="198.51.100.1"),
    ]
    plan = build_plan({"version": 5, "mirrors": rows}, cfg, NOW)
    table = compile_table(plan, parse_zone(ZONE, Z), cfg, random.Random(seed))
    return Answerer(GeoLocator(test_mmdb), table)


def ask(a, name, t="A", src="127.0.0.1", udp=True, **kw):
    q = dns.message.make_query(name, t, **kw)
    out = a.answer(q.to_wire(), src, udp)
    return dns.message.from_wire(out) if out is not None else None


def addrs(r):
    return [rd.address for rrset in r.answer for rd in rrset]


def test_ring_follows_weights(test_mmdb):
    # de1 weighs 3, de2 and de3 1 each: de1 comes first in about 60% of the answers
    a = make(test_mmdb, answers=1, ring_size=1000)
    first = collections.Counter(addrs(ask(a, f"de.{Z}"))[0] for _ in range(1000))
    assert abs(first["192.0.2.1"] / 1000 - 0.6) < 0.06
    assert abs(first["192.0.2.2"] / 1000 - 0.2) < 0.05


def test_answers_per_reply_without_repeats(test_mmdb):
    a = make(test_mmdb, answers=2)
    for _ in range(100):
        got = addrs(ask(a, f"de.{Z}"))
        assert len(got) == 2 and len(set(got)) == 2


def test_servfail_before_the_first_plan(test_mmdb):
    a = Answerer(GeoLocator(test_mmdb), None)
    r = ask(a, f"de.{Z}")
    assert r.rcode() == dns.rcode.SERVFAIL


def test_do_bit_copied_and_opt_cached(test_mmdb):
    a = make(test_mmdb)
    r = ask(a, f"de.{Z}", use_edns=0, want_dnssec=True)
    assert r.ednsflags & dns.flags.DO
    r = ask(a, f"de.{Z}", use_edns=0, want_dnssec=True)        # second time from the cache
    assert r.ednsflags & dns.flags.DO
    r = ask(a, f"de.{Z}", use_edns=0)
    assert not r.ednsflags & dns.flags.DO


@pytest.mark.parametrize("opt", [
    struct.pack("!HBB", 1, 33, 0) + bytes(5),      # /33 for IPv4
    struct.pack("!HBB", 1, 24, 5) + bytes(3),      # scope must be 0 in queries
    struct.pack("!HBB", 1, 24, 0) + bytes(4),      # address longer than the prefix
    struct.pack("!HBB", 3, 8, 0) + bytes(1),       # unknown family
    struct.pack("!HBB", 1, 20, 0) + b"\xc0\x00\x0f",  # bits set beyond the prefix
])
def test_bad_ecs_is_formerr(test_mmdb, opt):
    a = make(test_mmdb)
    r = ask(a, f"www.{Z}", use_edns=0, options=[dns.edns.GenericOption(8, opt)])
    assert r.rcode() == dns.rcode.FORMERR


@pytest.mark.parametrize("compiled", [False, True], ids=["geoip2", "index"])
def test_answers_follow_a_reloaded_geo_database(tmp_path, test_mmdb, compiled):
    # 192.0.2.0/24 and 127.0.1.0/24 are DE in the test database; the new file makes them US.
    # Cached locations (OPT records, source addresses) must not outlive the file they came from.
    path = tmp_path / "geo.mmdb"
    shutil.copy(test_mmdb, path)
    cfg = parse_config(f'[dns]\nzone = "{Z}"\nmin_candidates = 1\n')
    plan = build_plan({"version": 1, "mirrors": [
        row(id=1, name="de1", country="DE", ipv4="192.0.2.1"),
        row(id=2, name="us1", country="US", ipv4="198.51.100.1")]}, cfg, NOW)
    geo = GeoLocator(str(path))
    if compiled:
        assert geo.load_index() and geo.index is not None
    a = Answerer(geo, compile_table(plan, parse_zone(ZONE, Z), cfg))
    ecs = [dns.edns.ECSOption("192.0.2.0", 24)]
    for _ in range(3):                                      # then from every cache there is
        assert addrs(ask(a, f"www.{Z}", use_edns=0, options=ecs))[0] == "192.0.2.1"
        assert addrs(ask(a, f"www.{Z}", src="127.0.1.1"))[0] == "192.0.2.1"
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
    w.insert_network(IPSet(["192.0.2.0/24", "127.0.1.0/24"]), geo_record("US"))
    w.to_db_file(str(tmp_path / "new.mmdb"))
    shutil.move(tmp_path / "new.mmdb", path)
    assert geo._install(geo._changes())                     # what check_reload does
    assert (geo.index is not None) == compiled
    assert addrs(ask(a, f"www.{Z}", use_edns=0, options=ecs))[0] == "198.51.100.1"
    assert addrs(ask(a, f"www.{Z}", src="127.0.1.1"))[0] == "198.51.100.1"


def test_response_and_short_messages_are_dropped(test_mmdb):
    a = make(test_mmdb)
    q = dns.message.make_query(f"de.{Z}", "A").to_wire()
    resp = q[:2] + bytes([q[2] | 0x80]) + q[3:]
    assert a.answer(resp, "127.0.0.1") is None
    assert a.answer(q[:11], "127.0.0.1") is None
    assert a.stats.dropped == 2


def test_udp_answer_thread_answers_drops_and_stops():
    class A:
        def answer(self, data, src, udp):
            assert src == "127.0.0.1" and udp
            return None if data == b"drop" else data[::-1]

    srv = udp_socket("127.0.0.1", 0)
    t = UDPAnswerThread(srv, A())
    t.start()
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(3)
    try:
        c.sendto(b"drop", srv.getsockname())
        c.sendto(b"abc", srv.getsockname())
        assert c.recvfrom(100) == (b"cba", srv.getsockname())    # and nothing for "drop"
    finally:
        c.close()
        t.stop()
    assert not t.alive and srv.fileno() == -1


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600), st.booleans())
def test_random_bytes_never_raise(test_mmdb, data, udp):
    a = _shared(test_mmdb)
    out = a.answer(data, "127.0.1.1", udp)
    if out is not None:
        assert out[:2] == data[:2] and out[2] & 0x80         # a response with the query's ID


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 60), st.integers(0, 255))
def test_one_flipped_byte_never_raises(test_mmdb, pos, val):
    a = _shared(test_mmdb)
    q = bytearray(dns.message.make_query(f"www.{Z}", "A", use_edns=0,
                                         options=[dns.edns.ECSOption("192.0.2.0", 24)]).to_wire())
    q[pos % len(q)] = val
    out = a.answer(bytes(q), "127.0.1.1", True)
    assert out is None or out[:2] == bytes(q[:2])


_SHARED = {}


def _shared(test_mmdb):
    if test_mmdb not in _SHARED:
        _SHARED[test_mmdb] = make(test_mmdb)
    return _SHARED[test_mmdb]


NAMES = [f"de1.{Z}", f"DE2.{Z}", Z, f"ns1.{Z}", f"nx.{Z}", f"a.b.nX.{Z}", "example.com", f"x.de1.{Z}"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(NAMES), st.sampled_from(["A", "AAAA", "SOA", "NS", "MX", "ANY", "TXT"]),
       st.sampled_from([None, 0]), st.booleans(), st.sampled_from([None, ("192.0.2.0", 24),
                                                                   ("2001:db8:de::", 56)]))
def test_fast_path_equals_full_decoder(test_mmdb, name, rdtype, edns, do, subnet):
    """For location-independent names the lean path and the full decoder give the same bytes."""
    a = _shared(test_mmdb)
    opts = [dns.edns.ECSOption(*subnet)] if (subnet and edns is not None) else []
    q = dns.message.make_query(name, rdtype, use_edns=edns, want_dnssec=do and edns is not None,
                               options=opts).to_wire()
    a.answer(q, "127.0.1.1", True)                  # fills the OPT cache
    fast = a.answer(q, "127.0.1.1", True)           # ... and makes the hot entry
    hot = a.answer(q, "127.0.1.1", True)
    full = a._full(q, "127.0.1.1", True)
    assert fast == full == hot


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.booleans(), st.integers(0, 128), st.binary(min_size=16, max_size=16), st.booleans(),
       st.integers(0, 65535))
def test_ecs_fast_path_decodes_like_the_full_parser(test_mmdb, v4, srcp, raw, do, payload):
    """The fast path's OPT tuple (ring key, scope, both reply OPTs, size limit) is the one the
    careful decoder makes, for any family, prefix, address, DO bit and payload size."""
    a = _indexed(test_mmdb)
    bits = 32 if v4 else 128
    srcp = srcp % (bits + 1)
    addr = raw[:bits // 8]
    a_int = int.from_bytes(addr, "big") >> (bits - srcp) << (bits - srcp) if srcp else 0
    ip = str(ipaddress.ip_address(a_int) if v4 else ipaddress.IPv6Address(a_int))
    q = dns.message.make_query(f"www.{Z}", "A", use_edns=0, want_dnssec=do,
                               payload=max(payload, 1), options=[dns.edns.ECSOption(ip, srcp)])
    wire = q.to_wire()
    qe = wire.index(b"\x00", 12) + 5                      # end of the question: the OPT record
    rest = wire[qe:]
    full = a._parse_opt(wire, qe, len(wire), "127.0.0.1")
    fast = a._ecs_opt(rest)
    if srcp == 0:
        assert fast is None                                  # left to _full (scope 0, no key)
    else:
        assert fast == full
        assert fast[1] <= srcp and fast[0] == a.index.ecs(1 if v4 else 2, srcp, rest[19:])[0]


_INDEXED = {}


def _indexed(test_mmdb):
    if test_mmdb not in _INDEXED:
        a = make(test_mmdb)
        a.geo.load_index()
        assert a.index is a.geo.index is not None
        _INDEXED[test_mmdb] = a
    return _INDEXED[test_mmdb]


_COOKIED = {}
COOKIE_KEY = bytes(range(16))
COOKIE_NOW = 1_800_000_000


def _cookied(test_mmdb):
    """An Answerer with cookies (on a fixed clock), NSID and one answer per ring, so that the
    fast path and the full decoder must give the same bytes for every name."""
    if test_mmdb not in _COOKIED:
        from dnsd.cookies import CookieJar

        a = make(test_mmdb, ring_size=1, min_candidates=1)
        a.cookies = CookieJar([COOKIE_KEY], clock=lambda: COOKIE_NOW)
        a.nsid = b"ns-test"
        a.geo.load_index()
        a.clear_caches()
        _COOKIED[test_mmdb] = a
    return _COOKIED[test_mmdb]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([*NAMES, f"www.{Z}", f"de.{Z}"]), st.sampled_from(["A", "AAAA", "TXT"]),
       st.sampled_from([None, ("192.0.2.0", 24), ("2001:db8:de::", 56), ("0.0.0.0", 0),
                        ("203.0.113.128", 25)]),
       st.sampled_from(["client", "valid", "old", "bad", "short", "long"]),
       st.booleans(), st.booleans(), st.booleans(), st.sampled_from(["127.0.1.1", "2001:db8::1"]))
def test_cookie_fast_path_equals_full_decoder(test_mmdb, name, rdtype, subnet, kind, first,
                                              nsid, do, src):
    """A query with a COOKIE (and ECS, NSID, in either order) is answered on the fast path, with
    the bytes the careful decoder makes (the cookie checked per query); one with a COOKIE of a
    wrong length is left to the careful decoder (FORMERR)."""
    from dnsd.cookies import CookieJar

    a = _cookied(test_mmdb)
    client = b"\x5a" * 8
    if kind == "client":
        cookie = client
    elif kind == "valid":
        cookie = client + CookieJar.make(COOKIE_KEY, client, socket.inet_pton(
            socket.AF_INET6 if ":" in src else socket.AF_INET, src), COOKIE_NOW - 60)
    elif kind == "old":                         # valid but past REFRESH_AGE: a new one is made
        cookie = client + CookieJar.make(COOKIE_KEY, client, socket.inet_pton(
            socket.AF_INET6 if ":" in src else socket.AF_INET, src), COOKIE_NOW - 2000)
    elif kind == "bad":                         # a server cookie that is not ours
        cookie = client + b"\x01\x00\x00\x00" + bytes(12)
    elif kind == "short":
        cookie = client + b"\x01\x02\x03\x04"       # 12 bytes: FORMERR (RFC 7873 5.2.2)
    else:
        cookie = client + bytes(33)                 # 41 bytes: FORMERR
    opts = [dns.edns.GenericOption(10, cookie)]
    if subnet:
        opts.append(dns.edns.ECSOption(*subnet))
    if nsid:
        opts.append(dns.edns.GenericOption(3, b""))
    if first:
        opts.reverse()
    q = dns.message.make_query(name, rdtype, use_edns=0, want_dnssec=do, options=opts).to_wire()
    calls = []
    full = a._full

    def counted(*args, **kw):
        calls.append(args)
        return full(*args, **kw)

    a._full = counted
    try:
        a.answer(q, src, True)                  # the cookie-less rest is now cached
        del calls[:]
        fast = a.answer(q, src, True)
    finally:
        del a._full
    assert fast == a._full(q, src, True)
    r = dns.message.from_wire(fast)
    if kind in ("short", "long"):
        assert r.rcode() == dns.rcode.FORMERR and calls
        return
    in_zone = name.lower().endswith(Z)
    assert not calls or not in_zone, "a well-formed query with a COOKIE left the fast path"
    [mine] = [o for o in r.options if o.otype == 10]
    assert mine.client == client and len(mine.server) == 16
    assert (mine.server == cookie[8:]) == (kind == "valid")     # kept only when valid and young


def _hot_query(name, rdtype="A", subnet=None, qid=7):
    opts = [dns.edns.ECSOption(*subnet)] if subnet else []
    q = dns.message.make_query(name, rdtype, use_edns=0 if subnet else None, options=opts)
    q.id = qid
    q.flags = 0
    return q.to_wire()


def test_hot_answers_are_the_answers_they_repeat(test_mmdb):
    """A query seen before is answered from the hot cache with the bytes the full path makes,
    rings turning as before, the counters counting it; its ID and RD bit are the new query's."""
    a = make(test_mmdb, ring_size=1, min_candidates=1)
    b = make(test_mmdb, ring_size=1, min_candidates=1)    # the same table, never hot
    queries = [_hot_query(f"www.{Z}", "A", ("192.0.2.0", 24)),
               _hot_query(f"www.{Z}", "AAAA", ("2001:db8:5::", 56)),
               _hot_query(f"de.{Z}"), _hot_query(f"DE.{Z}", "A", ("198.51.100.0", 24)),
               _hot_query(f"ns1.{Z}"), _hot_query(f"nx.{Z}", "A", ("192.0.2.0", 24)),
               _hot_query(Z, "SOA"), _hot_query(f"de1.{Z}", "TXT")]
    for q in queries:
        for i in range(4):
            q2 = struct.pack("!H", 100 + i) + bytes([q[2] | (i & 1)]) + q[3:]   # ID, RD
            assert a.answer(q2, "127.0.2.1", True) == b._full(q2, "127.0.2.1", True)
            r = dns.message.from_wire(a.answer(q2, "127.0.2.1", False))
            assert r.id == 100 + i and bool(r.flags & dns.flags.RD) == bool(i & 1)
    assert len(a._hot.answers) == len(queries)
    assert a.stats.by_type_rcode == {(1, 0): 32, (28, 0): 8, (1, 3): 8, (6, 0): 8, (16, 0): 8}
    assert a.stats.by_country == {"DE": 24, "US": 8}


def test_hot_answers_depend_on_nothing_but_the_bytes(test_mmdb):
    """The same bytes from two resolvers in two countries are two answers when the query does
    not say where its client is (no ECS, or ECS /0): those are never made hot. Nor is a query
    whose header differs from the hot one's, or one with a cookie (checked per source)."""
    from dnsd.cookies import CookieJar

    a = make(test_mmdb, min_candidates=1)
    for q in (_hot_query(f"www.{Z}"), _hot_query(f"www.{Z}", "A", ("0.0.0.0", 0))):
        for _ in range(3):
            de = dns.message.from_wire(a.answer(q, "127.0.1.9", True))
            us = dns.message.from_wire(a.answer(q, "127.0.2.9", True))
            assert addrs(de)[0].startswith("192.0.2.") and addrs(us) == ["198.51.100.1"]
    assert not a._hot.answers
    q = _hot_query(f"de1.{Z}", "A", ("192.0.2.0", 24))
    for _ in range(3):                  # decoded, counted once, made hot
        a.answer(q, "127.0.1.9", True)
    assert len(a._hot.answers) == 1
    two = q[:4] + b"\x00\x02" + q[6:]                    # QDCOUNT 2, the same bytes after it
    assert dns.message.from_wire(a.answer(two, "127.0.1.9", True)).rcode() == dns.rcode.FORMERR
    a.cookies = CookieJar([COOKIE_KEY], clock=lambda: COOKIE_NOW)
    c = dns.message.make_query(f"de1.{Z}", "A", use_edns=0,
                               options=[dns.edns.GenericOption(10, b"\x5a" * 8)]).to_wire()
    for _ in range(3):
        r = dns.message.from_wire(a.answer(c, "127.0.1.9", True))
        assert [len(o.server) for o in r.options if o.otype == 10] == [16]
    assert not a._hot.answers            # (turning cookies on replaced the cache, too)


def test_hot_answers_end_with_the_table_and_the_geo_view(test_mmdb):
    """A new plan or a new geo database replaces the hot cache, and an answer worked out from
    the table or view before a swap is not remembered beside the new ones."""
    a = make(test_mmdb, min_candidates=1)
    q = _hot_query(f"www.{Z}", "A", ("198.51.100.0", 24))
    for _ in range(3):
        assert addrs(dns.message.from_wire(a.answer(q, "127.0.0.1", True))) == ["198.51.100.1"]
    old_table, old_view = a.table, a._view
    a.set_table(make(test_mmdb, rows=[row(id=9, name="us9", country="US",
                                          ipv4="198.51.100.9")]).table)
    assert not a._hot.answers
    for _ in range(3):
        assert addrs(dns.message.from_wire(a.answer(q, "127.0.0.1", True))) == ["198.51.100.9"]
    a.clear_caches()
    assert not a._hot.answers and a._hot.view is a._view is not old_view
    qe = q.index(b"\x00", 12) + 5
    for _ in range(2):                              # twice: past the doorkeeper, were it allowed
        a._hot.remember(old_table, a._view, q, qe, iter(()), None, b"", 512, 1, None)
        a._hot.remember(a.table, old_view, q, qe, iter(()), None, b"", 512, 1, None)
    assert not a._hot.answers and not a._hot.once


def test_hot_cache_stays_small(test_mmdb):
    """Bounded in entries and in key size, whatever clients send."""
    from dnsd.answer import HOT_CACHE, HOT_CACHE_KEY_MAX

    a = make(test_mmdb)
    for i in range(HOT_CACHE + 50):
        q = _hot_query(f"x{i}.{Z}")
        a.answer(q, "127.0.0.1", True)
        a.answer(q, "127.0.0.1", True)
        assert len(a._hot.answers) <= HOT_CACHE
    long = _hot_query(".".join(["a" * 60] * 3) + f".{Z}")
    pad = dns.message.make_query(f"de1.{Z}", "A", use_edns=0, options=[
        dns.edns.GenericOption(65001, bytes(200))]).to_wire()
    a._hot.answers.clear()
    for q in (long, pad):
        for _ in range(3):
            a.answer(q, "127.0.0.1", False)
    assert all(len(k) <= HOT_CACHE_KEY_MAX for k in a._hot.answers) and len(long) - 12 < 320


def test_hot_answers_keep_every_header_rule(test_mmdb):
    """The hot bytes after the header with another header: a response is dropped, another opcode
    is NOTIMP, another ARCOUNT makes the OPT trailing bytes (FORMERR); a reply too large for UDP
    is truncated there and whole over TCP; each as the careful decoder says."""
    cfg = parse_config(f'[dns]\nzone = "{Z}"\n[probes]\nenabled = false\n')
    plan = build_plan({"version": 1, "mirrors": [
        row(id=1, name="de1", country="DE", ipv4="192.0.2.1")]}, cfg, NOW)
    big = " ".join(f'"{c * 200}"' for c in "abc")                 # a TXT of 600 bytes
    a = Answerer(GeoLocator(test_mmdb), compile_table(plan, parse_zone(ZONE + f"big TXT {big}\n",
                                                                       Z), cfg))
    ecs = _hot_query(f"de1.{Z}", "A", ("192.0.2.0", 24))
    for _ in range(3):
        a.answer(ecs, "127.0.0.1", True)
    assert list(a._hot.answers) == [ecs[12:]]
    resp = ecs[:2] + bytes([ecs[2] | 0x80]) + ecs[3:]
    notify = ecs[:2] + bytes([ecs[2] | 0x20]) + ecs[3:]              # opcode 4
    no_ar = ecs[:10] + b"\x00\x00" + ecs[12:]
    assert a.answer(resp, "127.0.0.1", True) is None
    for q, rcode in ((notify, dns.rcode.NOTIMP), (no_ar, dns.rcode.FORMERR)):
        out = a.answer(q, "127.0.0.1", True)
        assert out == a._full(q, "127.0.0.1", True)
        assert dns.message.from_wire(out).rcode() == rcode
    txt = dns.message.make_query(f"big.{Z}", "TXT", use_edns=False).to_wire()   # 512 bytes
    for _ in range(3):
        udp = a.answer(txt, "127.0.0.1", True)
        assert udp == a._full(txt, "127.0.0.1", True)
        assert dns.message.from_wire(udp).flags & dns.flags.TC
        tcp = dns.message.from_wire(a.answer(txt, "127.0.0.1", False))
        assert not tcp.flags & dns.flags.TC and len(tcp.answer[0][0].strings) == 3
    assert txt[12:] in a._hot.answers


def test_hot_answers_are_rate_limited_like_any(test_mmdb):
    """Rate limiting comes before the hot cache: a limited client gets nothing or a truncated
    reply for a hot query too, counted as such."""
    from dnsd.rrl import RateLimiter

    now = [100.0]
    a = make(test_mmdb)
    a.rrl = RateLimiter(3, slip=2, clock=lambda: now[0])
    a.answer = a._answer_limited
    q = _hot_query(f"de1.{Z}", "A", ("192.0.2.0", 24))
    got = [a.answer(q, "127.0.0.1", True) for _ in range(3)]         # the bucket's 3, made hot
    assert all(got) and q[12:] in a._hot.answers
    limited = [a.answer(q, "127.0.0.1", True) for _ in range(4)]
    assert [x is None for x in limited] == [True, False, True, False]
    assert all(dns.message.from_wire(x).flags & dns.flags.TC for x in limited if x)
    assert (a.stats.rrl_dropped, a.stats.rrl_slipped) == (2, 2)
    now[0] += 1.0
    assert addrs(dns.message.from_wire(a.answer(q, "127.0.0.1", True))) == ["192.0.2.1"]


def test_one_off_queries_do_not_evict_the_hot_ones(test_mmdb):
    """A flood of names asked once each (random subdomains) passes the doorkeeper only."""
    from dnsd.answer import HOT_CACHE

    a = make(test_mmdb)
    q = _hot_query(f"de1.{Z}")
    for _ in range(3):
        a.answer(q, "127.0.0.1", True)
    for i in range(3 * HOT_CACHE):
        a.answer(_hot_query(f"r{i}.{Z}"), "127.0.0.1", True)
    assert list(a._hot.answers) == [q[12:]] and len(a._hot.once) <= HOT_CACHE


def test_turning_cookies_on_forgets_what_was_decoded_without(test_mmdb):
    from dnsd.cookies import CookieJar

    a = make(test_mmdb)
    q = dns.message.make_query(f"de1.{Z}", "A", use_edns=0,
                               options=[dns.edns.GenericOption(10, b"\x5a" * 8)]).to_wire()
    for _ in range(3):                                  # cookies off: the option is ignored
        r = dns.message.from_wire(a.answer(q, "127.0.0.1", True))
        assert not [o for o in r.options if o.otype == 10]
    a.cookies = CookieJar([COOKIE_KEY], clock=lambda: COOKIE_NOW)
    r = dns.message.from_wire(a.answer(q, "127.0.0.1", True))
    assert [len(o.server) for o in r.options if o.otype == 10] == [16]
    a.nsid = b"ns-x"
    r = dns.message.from_wire(a.answer(dns.message.make_query(
        f"de1.{Z}", "A", use_edns=0, options=[dns.edns.GenericOption(3, b"")]).to_wire(),
        "127.0.0.1", True))
    assert [o.nsid for o in r.options if o.otype == 3] == [b"ns-x"]


def test_caches_keyed_by_client_bytes_stay_small(test_mmdb):
    """What a client chooses (option bytes, query types) cannot fill the caches: an OPT record
    longer than any resolver sends is decoded but not kept (over TCP one could be 64 KB, times
    4,096 entries), and a wildcard's answers are kept per type the zone has, not per type asked."""
    from dnsd.answer import OPT_CACHE_KEY_MAX

    cfg = parse_config(f'[dns]\nzone = "{Z}"\n[probes]\nenabled = false\n')
    plan = build_plan({"version": 1, "mirrors": [
        row(id=1, name="de1", country="DE", ipv4="192.0.2.1")]}, cfg, NOW)
    zone = parse_zone(ZONE + "*.wild TXT \"w\"\nchild NS ns.other.example.\n", Z)
    a = Answerer(GeoLocator(test_mmdb), compile_table(plan, zone, cfg))
    for i in range(300):
        pad = dns.edns.GenericOption(65001, i.to_bytes(2, "big") * 500)    # 1 KB of option
        r = ask(a, f"de1.{Z}", use_edns=0, udp=False, options=[pad])
        assert r.rcode() == dns.rcode.NOERROR and addrs(r) == ["192.0.2.1"]
    assert not a._view.opts
    ask(a, f"de1.{Z}", use_edns=0)                      # an OPT record as resolvers send it
    assert [len(k) for k in a._view.opts] == [11] and OPT_CACHE_KEY_MAX >= 11 + 28
    for qtype in random.Random(5).sample(range(1000, 65000), 400):
        r = ask(a, f"x{qtype % 7}.wild.{Z}", qtype)
        assert r.rcode() == dns.rcode.NOERROR and not r.answer and r.authority   # NODATA
    r = ask(a, f"x.wild.{Z}", "TXT")
    assert [str(rd) for rs in r.answer for rd in rs] == ['"w"']
    # at most one entry per (kind, type the zone has or "any other", question length)
    assert len(a.table._miss) <= 2 * len(a.table.qtypes) + 8
