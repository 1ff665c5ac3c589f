"""The compiled geo lookup (dnsd.geoindex) against geoip2 on databases written with mmdb-writer.

The oracle is geoip2 reading the same file: for random addresses in every network (both families,
nested networks, records without a country or without anything), the index must give the ring key
geoip2's answer leads to, and an ECS scope no longer than geoip2's network (capped by the source
prefix) whose whole block has one answer.
"""

from __future__ import annotations

import bisect
import ipaddress
import os
import random
import threading
import time
from array import array

import geoip2.database
import geoip2.errors
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPNetwork, IPSet

from dnsd import countries
from dnsd.geoindex import (
    GeoIndex,
    GeoIndexError,
    build,
    cache_file,
    client_country,
    load_or_build,
    stamp_of,
)
from dnsd.mmdbtree import MMDBError

CONT = {"EU": {"code": "EU", "names": {"en": "Europe"}},
        "NA": {"code": "NA", "names": {"en": "North America"}},
        "AS": {"code": "AS", "names": {"en": "Asia"}}}


def record(kind: str, cc: str = "DE", cont: str = "EU") -> dict:
    """The record shapes a geo database has: full, without `country` (registered only), continent
    only, a code we do not know, a lower-case code, nothing we use."""
    if kind == "full":
        return {"continent": CONT[cont], "country": {"iso_code": cc},
                "registered_country": {"iso_code": cc}, "city": {"names": {"en": "X"}}}
    if kind == "registered":
        return {"continent": CONT[cont], "registered_country": {"iso_code": cc}}
    if kind == "continent":
        return {"continent": CONT[cont], "location": {"latitude": 1.5, "longitude": 2.5}}
    if kind == "unknown-code":
        return {"continent": CONT[cont], "country": {"iso_code": "ZZ"}}
    if kind == "lower":
        return {"country": {"iso_code": cc.lower()}}
    return {"city": {"names": {"en": "Nowhere"}}, "postal": {"code": "1"}}


KINDS = ("full", "registered", "continent", "unknown-code", "lower", "nothing")
CCS = (("DE", "EU"), ("FR", "EU"), ("US", "NA"), ("JP", "AS"))


def random_networks(rng: random.Random, n4: int = 120, n6: int = 120) -> list[tuple[str, dict]]:
    """Random networks of both families, in insertion order (later ones nest in and override
    earlier ones), each with a random record shape."""
    out = []
    for i in range(n4 + n6):
        v4 = i < n4
        bits = 32 if v4 else 128
        # wide ones first so that later, narrower ones nest inside them
        lo, hi = (4, 12) if v4 else (8, 24)
        if i % (n4 if v4 else n6) > (n4 if v4 else n6) // 3:
            lo, hi = (12, 30) if v4 else (24, 124)
        prefix = rng.randint(lo, hi)
        if v4:
            a = rng.getrandbits(32)
        else:
            a = (0x2000 | rng.getrandbits(13)) << 112 | rng.getrandbits(112)
        a = a >> (bits - prefix) << (bits - prefix)
        net = f"{ipaddress.ip_address(a)}/{prefix}"
        cc, cont = rng.choice(CCS)
        out.append((net, record(rng.choice(KINDS), cc, cont)))
    # nested by construction as well: a /16 in a /8 in another country, a /24 without a country
    out += [("10.0.0.0/8", record("full", "US", "NA")), ("10.1.0.0/16", record("full", "DE")),
            ("10.1.2.0/24", record("continent", "DE")), ("10.1.2.128/25", record("nothing")),
            ("2001:db8::/32", record("full", "FR")), ("2001:db8:1::/48", record("registered", "JP",
                                                                                  "AS")),
            ("2001:db8:1:2::/64", record("lower", "DE")),
            ("2001:db8:1:2:3::/80", record("full", "US", "NA"))]
    return out


def write_mmdb(path, nets, ip_version=6) -> None:
    w = MMDBWriter(ip_version=ip_version, ipv4_compatible=ip_version == 6,
                   database_type="GeoIP2-City")
    for net, rec in nets:
        if ip_version == 4 and ":" in net:
            continue
        w.insert_network(IPSet([net]), rec)
    w.to_db_file(str(path))


def expected(reader, ip: str) -> tuple[str, int]:
    """(ring key, network prefix) as geoip2 sees the address: what GeoLocator would answer."""
    try:
        r = reader.city(ip)
    except geoip2.errors.AddressNotFoundError as e:
        return "", e.network.prefixlen
    except ValueError:                      # an IPv6 address in an IPv4 database
        return "", 0
    cc = client_country(r.country.iso_code, r.registered_country.iso_code)
    return countries.ring_key(cc, r.continent.code), r.traits.network.prefixlen


def addresses_in(rng, net: str, k: int = 6):
    n = IPNetwork(net)
    first, last = int(n.first), int(n.last)
    yield first
    yield last
    for _ in range(k):
        yield rng.randint(first, last)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rng = random.Random(11)
    nets = random_networks(rng)
    path = tmp_path_factory.mktemp("geoindex") / "random.mmdb"
    write_mmdb(path, nets)
    reader = geoip2.database.Reader(str(path))
    yield nets, path, build(path), reader
    reader.close()


def test_every_network_gets_geoip2s_key(world):
    nets, _path, ix, reader = world
    rng = random.Random(3)
    checked = 0
    for net, _rec in nets:
        v6 = ":" in net
        for a in addresses_in(rng, net):
            ip = str(ipaddress.ip_address(a) if not v6 else ipaddress.IPv6Address(a))
            want = expected(reader, ip)[0]
            assert (ix.key6(a) if v6 else ix.key4(a)) == want, ip
            assert ix.key_of(ip) == want, ip
            checked += 1
    # and the space between the networks: random addresses anywhere
    for _ in range(2000):
        a4, a6 = rng.getrandbits(32), rng.getrandbits(128)
        assert ix.key4(a4) == expected(reader, str(ipaddress.IPv4Address(a4)))[0]
        ip6 = str(ipaddress.IPv6Address(a6))
        assert ix.key6(a6) == expected(reader, ip6)[0], ip6
    assert checked > 1500
    # every record shape occurs, so every branch of the key rule was compared
    keys = {ix.key_of(ip) for ip in ("10.0.0.1", "10.1.0.1", "10.1.2.1", "10.1.2.200",
                                     "2001:db8:1::1", "2001:db8:1:2::1")}
    assert keys == {"US", "DE", "@EU", "", "JP"}


def test_ipv4_mapped_addresses_are_looked_up_as_ipv4(world):
    _nets, _path, ix, reader = world
    for ip4 in ("10.1.0.9", "10.1.2.130", "10.200.0.1", "1.2.3.4"):
        a = int(ipaddress.IPv4Address(ip4))
        assert ix.key_of(f"::ffff:{ip4}") == ix.key4(a) == expected(reader, ip4)[0]
        key, scope = ix.ecs(2, 120, ipaddress.IPv6Address(f"::ffff:{ip4}").packed[:15])
        assert key == ix.ecs4(a >> 8 << 8, 24)[0] and scope == 96 + ix.ecs4(a >> 8 << 8, 24)[1]


def test_runs_are_merged_and_each_holds_one_key(world):
    _nets, _path, ix, reader = world
    rng = random.Random(5)
    for family, bits in ((4, 32), (6, 128)):
        runs = ix.runs(family)
        assert runs[0][0] == 0
        ends = [s - 1 for s, _k in runs[1:]] + [(1 << bits) - 1]
        for (start, key), end in zip(runs, ends, strict=True):
            if isinstance(key, int):           # an alias to the IPv4 runs (not in this file)
                continue
            fmt = ipaddress.IPv4Address if bits == 32 else ipaddress.IPv6Address
            for a in (start, end, rng.randint(start, end)):
                assert expected(reader, str(fmt(a)))[0] == key
        # merged: no two neighbours share a key
        assert all(a[1] != b[1] for a, b in zip(runs, runs[1:]))


@pytest.mark.parametrize("family,source", [(1, 24), (1, 16), (1, 32), (1, 7), (2, 56), (2, 48),
                                           (2, 64), (2, 128), (2, 20)])
def test_ecs_scope(world, family, source):
    nets, _path, ix, reader = world
    rng = random.Random(source)
    bits = 32 if family == 1 else 128
    fmt = ipaddress.IPv4Address if family == 1 else ipaddress.IPv6Address
    nets = [n for n, _r in nets if (":" in n) == (family == 2)]
    starts = {1: [r[0] for r in ix.runs(4)], 2: [r[0] for r in ix.runs(6)]}
    for _ in range(300):
        a = rng.randint(*(lambda n: (int(n.first), int(n.last)))(IPNetwork(rng.choice(nets))))
        a = a >> (bits - source) << (bits - source)
        addr = a.to_bytes(bits // 8, "big")[:(source + 7) // 8]
        key, scope = ix.ecs(family, source, addr)
        want, prefix = expected(reader, str(fmt(a)))
        assert key == want
        assert 0 <= scope <= min(source, prefix)
        if scope == source and prefix > source:
            continue                           # the database may split the client's subnet
        # the block the scope names gets one answer everywhere (sampled) ...
        size = 1 << (bits - scope)
        lo = a >> (bits - scope) << (bits - scope) if scope else 0
        for b in (lo, lo + size - 1, *(rng.randrange(lo, lo + size) for _ in range(8))):
            assert expected(reader, str(fmt(b)))[0] == key, (fmt(a), scope)
        # ... and it is the widest such block: the one twice its size crosses into another run
        if 0 < scope < source:
            i = bisect.bisect_right(starts[family], a) - 1
            run_lo = starts[family][i]
            run_hi = starts[family][i + 1] - 1 if i + 1 < len(starts[family]) else (1 << bits) - 1
            plo = a >> (bits - scope + 1) << (bits - scope + 1)
            assert plo < run_lo or plo + 2 * size - 1 > run_hi


def test_ipv4_only_database(tmp_path):
    path = tmp_path / "v4.mmdb"
    write_mmdb(path, [("192.0.2.0/24", record("full", "DE")), ("198.51.100.0/24",
                                                               record("continent", "US", "NA"))],
               ip_version=4)
    ix = build(path)
    assert ix.key_of("192.0.2.7") == "DE" and ix.key_of("198.51.100.1") == "@NA"
    assert ix.key_of("::ffff:192.0.2.7") == "DE"          # mapped: still IPv4
    assert ix.key_of("2001:db8::1") == "" and ix.ecs(2, 56, bytes(7)) == ("", 0)
    assert ix.ecs(1, 24, bytes((192, 0, 2))) == ("DE", 24)
    assert ix.key_of("not an address") == "" and ix.key_of("") == ""


def test_save_and_load(tmp_path, world):
    _nets, path, ix, _reader = world
    f = tmp_path / "x.idx"
    ix.save(f)
    assert [p.name for p in tmp_path.iterdir()] == ["x.idx"]      # no temporary file left
    back = GeoIndex.load(f, stamp_of(path))
    assert back.runs(4) == ix.runs(4) and back.runs(6) == ix.runs(6)
    assert back.keys == ix.keys and back.stamp == ix.stamp
    with pytest.raises(GeoIndexError, match="another version of the database"):
        GeoIndex.load(f, (1, 2))
    data = f.read_bytes()
    for bad, why in ((data[:-5], "truncated"), (data + b"x", "trailing"),
                     (b"junk" + data, "not a geo index"), (data[:30] + b"\xff" + data[31:], "damaged")):
        f.write_bytes(bad)
        with pytest.raises(GeoIndexError, match=why):
            GeoIndex.load(f)


def test_load_or_build_keeps_one_file_per_database_version(tmp_path, world):
    nets, src, ix, _reader = world
    path = tmp_path / "geo.mmdb"
    path.write_bytes(src.read_bytes())
    cache = tmp_path / "cache"
    got, how = load_or_build(path, cache)
    assert how == "built" and got.runs(4) == ix.runs(4)
    got, how = load_or_build(path, cache)
    assert how == "cache" and got.runs(6) == ix.runs(6)
    old = cache_file(cache, path, stamp_of(path))
    # a new version of the file: a new index, the old one's file removed
    write_mmdb(path, [("192.0.2.0/24", record("full", "JP", "AS"))])
    os.utime(path, ns=(1, 10**18))
    got, how = load_or_build(path, cache)
    assert how == "built" and got.key_of("192.0.2.1") == "JP" and not old.exists()
    assert [p.name for p in cache.glob("*.idx")] == [cache_file(cache, path, stamp_of(path)).name]
    # a damaged cache file is rebuilt, not trusted
    cache_file(cache, path, stamp_of(path)).write_bytes(b"mirrordns-geoindex\n\x00\x00\x00\x02{}")
    assert load_or_build(path, cache)[1] == "built"


def test_build_in_a_child_process(tmp_path, world):
    _nets, path, ix, _reader = world
    got, how = load_or_build(path, None, in_child=True)
    assert how == "built" and got.runs(4) == ix.runs(4) and got.stamp == stamp_of(path)
    got, how = load_or_build(path, tmp_path / "c", in_child=True)
    assert how == "built" and got.runs(6) == ix.runs(6)
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(MMDBError):
        load_or_build(bad, None, in_child=True)
    with pytest.raises(MMDBError):
        build(bad)


def test_bundled_geolite2_city_agrees_with_geoip2(tmp_path):
    """The real thing, once: GeoLite2 City (built in a child process, as the server does), whose
    IPv6 tree points ::ffff:0:0/96, Teredo and 6to4 at its IPv4 tree (aliases). A few seconds."""
    from dnsd.geo import bundled_database

    path = bundled_database()
    ix, how = load_or_build(path, tmp_path, in_child=True)
    assert how == "built"
    reader = geoip2.database.Reader(path)
    rng = random.Random(7)
    try:
        for _ in range(3000):
            a4 = rng.getrandbits(32)
            ip4 = str(ipaddress.IPv4Address(a4))
            want4 = expected(reader, ip4)[0]
            assert ix.key4(a4) == want4, ip4
            key, scope = ix.ecs4(a4 >> 8 << 8, 24)
            want, prefix = expected(reader, str(ipaddress.IPv4Address(a4 >> 8 << 8)))
            assert key == want and scope <= min(24, prefix)
            top = rng.choice((0x2001, 0x2002, 0x2400, 0x2600, 0x2800, 0x2A00, 0x2C00))
            a6 = top << 112 | rng.getrandbits(112)
            for a in (a6, 0xFFFF << 32 | a4, a4):          # RIR space or an alias, mapped, ::/96
                ip6 = str(ipaddress.IPv6Address(a))
                assert ix.key6(a) == expected(reader, ip6)[0], ip6
    finally:
        reader.close()


def test_a_build_in_a_child_stops_when_cancelled(tmp_path):
    """A stopping server does not wait for the seconds a GeoLite2 City build takes: the child is
    killed, and a build waiting for another process's lock gives up too."""
    from dnsd.geo import bundled_database
    from dnsd.geoindex import BuildCancelled, _locked

    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    t0 = time.monotonic()
    with pytest.raises(BuildCancelled):
        load_or_build(bundled_database(), tmp_path / "c", in_child=True, cancel=cancel)
    assert time.monotonic() - t0 < 3.0               # the full build takes 6 s or more
    assert not list((tmp_path / "c").glob("*.idx"))  # nothing half-written left
    # another builder holds the cache folder's lock: waiting ends with the cancel too
    (tmp_path / "d").mkdir()
    cancel2 = threading.Event()
    with _locked(tmp_path / "d"):
        threading.Timer(0.2, cancel2.set).start()
        with pytest.raises(BuildCancelled):
            with _locked(tmp_path / "d", cancel2):
                pass


def _ref_scope(starts: list[int], end: int, a: int, bits: int) -> tuple[int, int]:
    """(run, shortest prefix whose aligned block around `a` lies in that run), the slow way."""
    i = bisect.bisect_right(starts, a) - 1
    lo, hi = starts[i], starts[i + 1] if i + 1 < len(starts) else end
    for p in range(bits + 1):
        size = 1 << (bits - p)
        first = a & ~(size - 1)
        if first >= lo and first + size <= hi:
            return i, p
    raise AssertionError("unreachable: a /bits block always fits")


@pytest.mark.parametrize("seed", range(4))
def test_lookups_match_a_plain_search_at_block_edges(seed):
    """Runs crowded around the edges lookups start from (IPv4 and IPv6 /16s, IPv6 /64s, the
    last /16 of each family) and addresses on and beside them: the key and scope the /16
    tables find are those of a plain search over every run."""
    rng = random.Random(seed)
    keys = ["", "DE", "FR", "@EU", "US"]

    def near(edge_bits: int, bits: int) -> int:
        edge = rng.getrandbits(bits - edge_bits) << edge_bits
        if rng.random() < 0.2:
            edge = ((1 << (bits - edge_bits)) - 1) << edge_bits       # the last block
        return max(0, min((1 << bits) - 1, edge + rng.choice((-1, 0, 1, 2, 255, 256))))

    s4 = sorted({0} | {near(16, 32) for _ in range(300)} | {rng.getrandbits(32) for _ in range(50)})
    s6 = sorted({0} | {near(rng.choice((64, 112)), 128) for _ in range(300)}
                | {rng.getrandbits(128) for _ in range(50)})
    k4 = [rng.randrange(len(keys)) for _ in s4]
    k6 = [rng.randrange(len(keys)) for _ in s6]
    ix = GeoIndex(keys, [], array("Q", s4 + [1 << 32]), array("H", k4),
                  array("Q", [a >> 64 for a in s6]), array("Q", [a & (2**64 - 1) for a in s6]),
                  array("H", k6))
    probes4 = [max(0, min(2**32 - 1, s + d)) for s in s4 for d in (-1, 0, 1)]
    probes4 += [t << 16 for t in range(0, 1 << 16, 97)] + [2**32 - 1]
    for a in probes4:
        i, scope = _ref_scope(s4, 1 << 32, a, 32)
        assert ix.key4(a) == keys[k4[i]], hex(a)
        assert ix.ecs4(a, 32) == (keys[k4[i]], scope), hex(a)
    probes6 = [max(0, min(2**128 - 1, s + d)) for s in s6 for d in (-1, 0, 1)]
    probes6 += [t << 112 for t in range(0, 1 << 16, 97)] + [2**128 - 1]
    for a in probes6:
        if a >> 32 == 0xFFFF:
            continue                                    # IPv4-mapped: looked up as IPv4
        i, scope = _ref_scope(s6, 1 << 128, a, 128)
        assert ix.key6(a) == keys[k6[i]], hex(a)
        assert ix.ecs6(a, 128) == (keys[k6[i]], scope), hex(a)
