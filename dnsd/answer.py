"""The DNS answer path: a pure `Answerer` (bytes in, bytes out) over a pre-encoded `WireTable`.

Speed comes from doing the work when the plan changes, not per query:

* `compile_table(plan, zone, cfg)` (off the reactor thread) encodes every reply body the zone can
  give: static records, mirror names, and for each (family, location key) a short *ring* of answer
  sections drawn by the picker with the plan's weights. Location keys are country codes, `@EU`-style
  continent keys and `""` (unknown). Country names, continent names and the geo name share rings.
* Answer records name their owner with a compression pointer to offset 12, the question, which the
  reply copies from the query byte for byte: the client's letter case is kept and nothing is
  re-encoded. Negative answers point the SOA owner into the question's zone suffix.
* `Answerer.answer` takes the common query (one question, no answer/authority records, at most an
  OPT) without building objects: header check, one `find` for the name's end, one dict lookup for
  the name, one for the OPT record bytes (payload size, DO bit and ECS option decoded once and
  cached), one for the client location (per source address or per ECS option), then `next()` on
  the ring and a join. Everything else (odd counts, EDNS errors, NXDOMAIN, REFUSED, FORMERR,
  NOTIMP) goes through `_full`, a careful decoder of the whole message.

Names, first match wins: the zone file's records (static); the mirrors' own names `ccN` (any status
but retired: the table's A/AAAA, a CNAME to the hostname when the mirror has no address); the geo
name and, with `apex_geo`, the apex's A/AAAA (the apex's other types stay static); `cc` for every
ISO country; continent names (`eu`, `oc`, `an` and the long forms `europe`, `north-america`, ...;
the two-letter AF AS NA SA are countries). Types a generated name has no data for get NODATA.

Rules implemented (RFC 1035, 2308, 6891, 7871, 8482): AA set and RA clear on every answer from the
zone; RD copied; OPT in replies when the query had one (payload 1232, DO copied), BADVERS for EDNS
versions above 0; TC over UDP when the reply exceeds the client's payload size (512 without EDNS);
NXDOMAIN and NODATA carry the SOA with the negative TTL; REFUSED outside the zone or for classes other
than IN; FORMERR for malformed messages or QDCOUNT != 1; NOTIMP for opcodes other than QUERY;
responses (QR set) and messages shorter than a header are dropped; ANY gets one synthesized HINFO
"RFC8482". With ECS, the option is echoed with the scope the answer holds for (0 when the answer does
not depend on location).
"""

from __future__ import annotations

import itertools
import random
import socket
import struct

from dnslib import QTYPE, RR, DNSHeader, DNSQuestion, DNSRecord
from dnslib import SOA as SOA_RD

from dnsd import countries
from dnsd.picker import Drawer, Location, select_tier, weights_for
from dnsd.zonefile import Zone

T_A, T_NS, T_CNAME, T_SOA, T_AAAA, T_OPT, T_ANY, T_HINFO = 1, 2, 5, 6, 28, 41, 255, 13
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, BADVERS = 0, 1, 2, 3, 4, 5, 16
EDNS_PAYLOAD = 1232              # what we advertise (the DNS flag day 2020 value)
ANY_KEY = -1                     # acts[ANY_KEY]: the answer for any qtype without its own entry
OPT_CACHE = 4096                 # decoded OPT records kept (emptied when full)

CONTINENT_LABELS = {
    "EU": ("eu", "europe"), "OC": ("oc", "oceania"), "AN": ("an", "antarctica"),
    "AS": ("asia",), "AF": ("africa",), "NA": ("north-america",), "SA": ("south-america",),
}
# Two-letter continent labels that are also country codes (AS, AF, NA, SA) are left to the
# countries, so xx.<zone> always means the country; those continents get their long label only.

_COUNTS = struct.Struct("!HHHH")
_RRHEAD = struct.Struct("!HHHIH")       # pointer, type, class, ttl, rdlength
_OPT = struct.Struct("!BHHBBHH")        # root, type, payload, ext-rcode, version, flags, rdlen
_FLAGS_OK = (b"\x84\x00", b"\x85\x00")  # QR AA (+RD), rcode 0, indexed by the query's RD bit
_C_NOOPT = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_C_OPT = b"\x00\x01\x00\x00\x00\x00\x00\x01"
KNOWN_KEYS = frozenset(c.alpha2 for c in countries.all_countries())


def wire_name(name: str) -> bytes:
    """'www.example.org' -> b'\\x03www\\x07example\\x03org\\x00' (lower case)."""
    out = bytearray()
    for part in name.rstrip(".").lower().split("."):
        if part:
            b = part.encode("ascii")
            out.append(len(b))
            out += b
    out.append(0)
    return bytes(out)


def ring_key(loc: Location) -> str:
    """The rings a client at `loc` is answered from (see module docstring)."""
    return countries.ring_key(loc.country, loc.continent)


def _location_of_key(key: str) -> Location:
    if not key:
        return Location()
    if key.startswith("@"):
        return Location.of_continent(key[1:])
    return Location.of_country(key)


# -- compiling a plan into wire bytes ------------------------------------------------------------


class WireTable:
    """Everything the answer path reads, built once per plan (immutable by convention)."""

    def __init__(self, zone_wire, names, neg_soa_tail, version, serial):
        self.zone_wire = zone_wire          # lower-case wire form of the zone apex
        self.names = names                  # wire name -> {qtype | ANY_KEY: action}
        self.neg_soa_tail = neg_soa_tail    # SOA type..rdata for negative answers
        self.version = version
        self.serial = serial


def _triple(an: int, ns: int, body: bytes, ar: int = 0):
    """(counts without OPT, counts with OPT, body) of one reply."""
    return (_COUNTS.pack(1, an, ns, ar), _COUNTS.pack(1, an, ns, ar + 1), bytes(body))


def _encode_with_dnslib(qname: str, qtype: int, answers=(), auth=()):
    """Sections after the question, compressed against a lower-case question at offset 12."""
    rec = DNSRecord(DNSHeader(id=0, qr=1, aa=1, ra=0), q=DNSQuestion(qname + ".", qtype))
    for rr in answers:
        rec.add_answer(rr)
    for rr in auth:
        rec.add_auth(rr)
    wire = bytes(rec.pack())
    start = 12 + len(wire_name(qname)) + 4
    return _triple(len(answers), len(auth), wire[start:])


def _rr(rtype: int, ttl: int, rdata: bytes) -> bytes:
    return _RRHEAD.pack(0xC00C, rtype, 1, ttl, len(rdata)) + rdata


def _addr_rr(entry, family: str, ttl: int) -> bytes:
    if family == "A":
        return _rr(T_A, ttl, socket.inet_pton(socket.AF_INET, entry.ipv4))
    return _rr(T_AAAA, ttl, socket.inet_pton(socket.AF_INET6, entry.ipv6))


def compile_table(plan, zone: Zone, cfg, rng: random.Random | None = None) -> WireTable:
    """Encode every answer of the zone for this plan. Pure CPU work: run it off the reactor."""
    rng = rng or random.Random()
    d = cfg.dns
    z = zone.origin
    ttl = d.ttl
    serial = (zone.serial + plan.version) % (1 << 32)
    soa = zone.soa
    t = list(soa.rdata.times)
    t[0] = serial
    soa_rr = RR(soa.rname, T_SOA, ttl=soa.ttl, rdata=SOA_RD(soa.rdata.mname, soa.rdata.rname, t))
    soa_rdata = (wire_name(str(soa.rdata.mname)) + wire_name(str(soa.rdata.rname))
                 + struct.pack("!IIIII", *t))
    # everything after the owner name; the owner is a pointer into the question, set per query
    neg_soa_tail = struct.pack("!HHIH", T_SOA, 1, zone.negative_ttl, len(soa_rdata)) + soa_rdata
    zlen = len(wire_name(z))
    any_trip = _triple(1, 0, _rr(T_HINFO, ttl, b"\x07RFC8482\x00"))

    def nodata(name):
        # the SOA's owner is the zone suffix of the question: a pointer into it
        off = 12 + len(wire_name(name)) - zlen
        return _triple(0, 1, struct.pack("!H", 0xC000 | off) + neg_soa_tail)

    def any_answer(name):
        return any_trip

    names: dict[bytes, dict] = {}

    # 1. static records from the zone file (the apex SOA carries the plan's serial)
    for name in zone.names:
        acts: dict = {ANY_KEY: (0, nodata(name), None, None)}
        for qtype, rrs in zone.records.get(name, {}).items():
            if qtype == T_SOA:
                rrs = [soa_rr]
            trip = _encode_with_dnslib(name, qtype, answers=rrs)
            if qtype == T_CNAME:
                acts = {ANY_KEY: (0, trip, None, None)}
                break
            acts[qtype] = (0, trip, None, None)
        else:
            acts[T_ANY] = (0, any_answer(name), None, None)
        names[wire_name(name)] = acts

    # 2. the mirrors' own names
    for mname, e in plan.by_name.items():
        name = f"{mname}.{z}"
        key = wire_name(name)
        if key in names:
            continue
        if e.ipv4 or e.ipv6:
            acts = {ANY_KEY: (0, nodata(name), None, None),
                    T_ANY: (0, any_answer(name), None, None)}
            if e.ipv4:
                acts[T_A] = (0, _triple(1, 0, _addr_rr(e, "A", ttl)), None, None)
            if e.ipv6:
                acts[T_AAAA] = (0, _triple(1, 0, _addr_rr(e, "AAAA", ttl)), None, None)
        else:
            target = wire_name(e.hostname)
            acts = {ANY_KEY: (0, _triple(1, 0, _rr(T_CNAME, ttl, target)), None, None)}
        names[key] = acts

    # 3. rings per (family, location key), shared between names
    memo: dict[tuple, object] = {}

    def ring(family: str, key: str):
        loc = _location_of_key(key)
        tier, tkey, entries = select_tier(plan, loc, family)
        # without distance weighting, every location with the same tier shares one ring
        mk = (family, tier, tkey) if not plan.distance_weighting else (family, key)
        if mk in memo:
            return memo[mk]
        if not entries:
            items = [None]
        else:
            drawer = Drawer(entries, weights_for(plan, entries, loc))
            n = max(1, min(d.ring_size, 4096))
            if len(entries) == 1:
                n = 1
            items = [drawer.draw(plan.answers, rng) for _ in range(n)]
        memo[mk] = items
        return items

    keys = sorted(KNOWN_KEYS) + ["@" + c for c in countries.CONTINENTS] + [""]
    rings = {"A": {}, "AAAA": {}}
    encoded: dict[int, object] = {}
    nodata_cache: dict[str, tuple] = {}

    def cycle_for(family, key, name):
        items = ring(family, key)
        ident = id(items)
        if ident not in encoded:
            if items == [None]:
                encoded[ident] = None          # nothing serves: NODATA, filled per name below
            else:
                out = []
                for chosen in items:
                    body = b"".join(_addr_rr(e, family, ttl) for e in chosen)
                    out.append(_triple(len(chosen), 0, body))
                encoded[ident] = itertools.cycle(out)
        return encoded[ident]

    for fam in ("A", "AAAA"):
        for key in keys:
            rings[fam][key] = cycle_for(fam, key, "")

    def loc_acts(name: str, key: str | None, base: dict | None = None):
        """Actions for a name answered from rings: fixed key, or by client location (None)."""
        if name not in nodata_cache:
            nodata_cache[name] = nodata(name)
        nd = nodata_cache[name]
        acts = dict(base) if base else {ANY_KEY: (0, nd, None, None), T_ANY: (0, any_answer(name),
                                                                              None, "")}
        for fam, qt in (("A", T_A), ("AAAA", T_AAAA)):
            if key is None:
                per = {k: (c if c is not None else itertools.repeat(nd))
                       for k, c in rings[fam].items()}
                acts[qt] = (2, per, per[""], None)
            else:
                c = rings[fam][key]
                acts[qt] = (1, c if c is not None else itertools.repeat(nd), None, key)
        return acts

    # 4. the geo name and (optionally) the apex, by client location
    geo_names = [f"{d.geo_name}.{z}"] if d.geo_name else []
    for name in geo_names:
        key = wire_name(name)
        if key not in names:
            names[key] = loc_acts(name, None)
    if d.apex_geo:
        key = wire_name(z)
        names[key] = loc_acts(z, None, base=names.get(key))

    # 5. country names and 6. continent names (never over a static or mirror name)
    for cc in sorted(KNOWN_KEYS):
        name = f"{cc.lower()}.{z}"
        key = wire_name(name)
        if key not in names:
            names[key] = loc_acts(name, cc)
    if d.continent_names:
        for code, labels in CONTINENT_LABELS.items():
            for lab in labels:
                name = f"{lab}.{z}"
                key = wire_name(name)
                if key not in names:
                    names[key] = loc_acts(name, "@" + code)

    return WireTable(wire_name(z), names, neg_soa_tail, plan.version, serial)


# -- the answerer --------------------------------------------------------------------------------


class FormErr(Exception):
    pass


class Stats:
    """Plain counters the hot path bumps; dnsd.metrics exports them to Prometheus."""

    def __init__(self):
        self.by_type_rcode: dict[tuple[int, int], int] = {}
        self.by_country: dict[str, int] = {}
        self.dropped = 0

    def reset(self):
        self.__init__()


def _opt_rr(do: bool, options: bytes = b"", ext_rcode: int = 0) -> bytes:
    return _OPT.pack(0, T_OPT, EDNS_PAYLOAD, ext_rcode, 0, 0x8000 if do else 0,
                     len(options)) + options


_ECS_HEAD = struct.Struct("!BHHBBHHHHHBB")   # OPT RR head, then one option: code, length, ECS head
_BYTE = [bytes((i,)) for i in range(256)]


def _ecs_shape(head: bytes):
    """For the first 19 bytes of an OPT RR holding one ECS option: (IPv4?, source prefix, address
    length, shift to a full address, mask of the bits that must be 0 in the last byte, reply OPT
    bytes up to the scope, max UDP reply size); False if the record is anything else."""
    if len(head) != 19:
        return False
    (root, rtype, payload, _ext, version, flags, rdlen, code, olen, fam, srcp,
     scope) = _ECS_HEAD.unpack(head)
    bits = 32 if fam == 1 else 128 if fam == 2 else 0
    n = (srcp + 7) // 8
    if (root or rtype != T_OPT or version or code != 8 or rdlen != olen + 4 or olen != 4 + n
            or not bits or not 0 < srcp <= bits or scope):
        return False
    ohead = _OPT.pack(0, T_OPT, EDNS_PAYLOAD, 0, 0, flags & 0x8000, rdlen) + struct.pack(
        "!HHHB", 8, olen, fam, srcp)
    return (fam == 1, srcp, n, bits - 8 * n, 0xFF >> (srcp % 8) if srcp % 8 else 0, ohead,
            max(512, min(payload, EDNS_PAYLOAD)))


def _skip_name(data: bytes, p: int) -> int:
    """Offset after a (possibly compressed) name; FormErr if it runs off the end."""
    while True:
        ln = data[p]
        if ln == 0:
            return p + 1
        if ln & 0xC0 == 0xC0:
            if p + 2 > len(data):
                raise FormErr
            return p + 2
        if ln > 63:
            raise FormErr
        p += ln + 1
        if p >= len(data):
            raise FormErr


class Answerer:
    """answer(data, src, udp) -> reply bytes, or None to stay silent. Never raises."""

    def __init__(self, geo, table: WireTable | None = None):
        self.geo = geo
        self.table = table
        self.stats = Stats()
        self._opt_cache: dict[bytes, tuple] = {}
        self._ecs_heads: dict[bytes, tuple | bool] = {}
        self._index = getattr(geo, "index", None)
        if geo is not None and hasattr(geo, "on_reload"):
            geo.on_reload(self.clear_caches)

    def clear_caches(self):
        """The geo database changed: forget locations, take its new compiled index."""
        self._opt_cache = {}
        self._index = getattr(self.geo, "index", None)

    def set_table(self, table: WireTable) -> None:
        self.table = table

    # the location of a client ------------------------------------------------------------------

    def _src_key(self, src: str) -> str:
        """Ring key of the resolver's address: the compiled index (a bisect, no cache needed), or
        geoip2 through GeoLocator's cache until the index is ready."""
        ix = self._index
        if ix is not None:
            return ix.key_of(src)
        return ring_key(self.geo.location(src)) if self.geo is not None else ""

    def _ecs_locate(self, fam: int, srcp: int, addr: bytes) -> tuple[str, int]:
        """(ring key, scope) of an ECS subnet (family 1 or 2, source prefix, address bytes)."""
        ix = self._index
        if ix is not None:
            return ix.ecs(fam, srcp, addr)
        if self.geo is None:
            return "", 0
        full = addr + bytes((4 if fam == 1 else 16) - len(addr))
        ip = socket.inet_ntop(socket.AF_INET if fam == 1 else socket.AF_INET6, full)
        loc, scope = self.geo.locate(ip, srcp)
        return ring_key(loc), max(0, min(scope, srcp))

    def _ecs_opt(self, rest: bytes):
        """The OPT tuple (see _parse_opt) of an OPT RR that is exactly one ECS option, the form
        resolvers send, decoded here rather than by _full: under traffic from many client
        subnets the OPT cache mostly misses, so a miss must be cheap. Per distinct head (the 19
        bytes before the address: payload size, flags, family, prefix) the checks and the
        reply's OPT head are worked out once; then the address goes to the index. None: not
        that form (or no index yet), let _full decode it."""
        ix = self._index
        if ix is None:
            return None
        head = rest[:19]
        shape = self._ecs_heads.get(head)
        if shape is None:
            if len(self._ecs_heads) > 256:
                self._ecs_heads = {}
            shape = self._ecs_heads[head] = _ecs_shape(head)
        if not shape:
            return None
        v4, srcp, n, shift, mask, ohead, maxsize = shape
        addr = rest[19:]
        if len(addr) != n or addr[-1] & mask:
            return None
        a = int.from_bytes(addr, "big") << shift
        rk, scope = ix.ecs4(a, srcp) if v4 else ix.ecs6(a, srcp)
        o = (rk, scope, ohead + _BYTE[scope] + addr, ohead + b"\x00" + addr, maxsize)
        self._remember(rest, o)
        return o

    def _remember(self, opt: bytes, o: tuple) -> None:
        """Cache the decoded OPT record `opt` (from the end of the question to the end of the
        message). Bounded and emptied when full: under spread traffic entries are rarely hit
        again, and a small dict costs little to fill; repeated subnets stay fast."""
        c = self._opt_cache
        if len(c) >= OPT_CACHE:
            c = self._opt_cache = {}
        c[opt] = o

    def _choose(self, act, o, src: str):
        """(reply triple, ring key counted in the metrics, OPT bytes) for one name's action:
        a fixed reply (kind 0), a ring (1), or a ring per client location (2), the ECS option's
        location winning over the source address's."""
        kind = act[0]
        if kind == 2:
            if o and o[0] is not None:
                return next(act[1].get(o[0]) or act[2]), o[0], o[2]
            rk = self._src_key(src)
            return next(act[1].get(rk) or act[2]), rk, (o[3] if o else b"")
        return (next(act[1]) if kind == 1 else act[1]), act[3], (o[3] if o else b"")

    # the hot path --------------------------------------------------------------------------------

    def answer(self, data: bytes, src: str, udp: bool = True) -> bytes | None:
        try:
            t = self.table
            counts = data[4:12]
            if t is not None and not data[2] & 0xF8 and (counts == _C_OPT or counts == _C_NOOPT):
                z = data.find(0, 12)
                key = data[12:z + 1].lower()
                acts = t.names.get(key)
                if data[z + 3:z + 5] == b"\x00\x01":
                    qe = z + 5
                    if counts[7]:
                        rest = data[qe:]
                        o = self._opt_cache.get(rest) or self._ecs_opt(rest)
                    else:
                        o = None if len(data) != qe else False
                    if o is not None and acts is None:
                        out = self._nxdomain(t, data, key, qe, o, udp)
                        if out is not None:
                            return out
                    elif o is not None:
                        qtype = data[z + 1] << 8 | data[z + 2]
                        trip, rk, ropt = self._choose(acts.get(qtype) or acts[ANY_KEY], o, src)
                        if o:
                            out = b"".join((data[:2], _FLAGS_OK[data[2] & 1], trip[1],
                                            data[12:qe], trip[2], ropt))
                            if udp and len(out) > o[4]:
                                return self._truncated(data, qe, ropt)
                        else:
                            out = b"".join((data[:2], _FLAGS_OK[data[2] & 1], trip[0],
                                            data[12:qe], trip[2]))
                            if udp and len(out) > 512:
                                return self._truncated(data, qe, b"")
                        st = self.stats
                        k = (min(256, qtype), 0)
                        st.by_type_rcode[k] = st.by_type_rcode.get(k, 0) + 1
                        if rk is not None:
                            st.by_country[rk] = st.by_country.get(rk, 0) + 1
                        return out
            return self._full(data, src, udp)
        except Exception:
            # garbage must never crash the server: answer FORMERR if there is a header at all
            try:
                return self._error(data, FORMERR)
            except Exception:
                self.stats.dropped += 1
                return None

    def _nxdomain(self, t: WireTable, data: bytes, key: bytes, qe: int, o, udp: bool):
        """NXDOMAIN with the SOA for a well-formed name below the zone, else None."""
        zw = t.zone_wire
        i = 0
        n = len(key)
        if n > 255:
            return None
        while i < n:                            # label-aligned suffix test
            if key[i:] == zw:
                break
            ln = key[i]
            if ln == 0 or ln > 63:
                return None
            i += ln + 1
        else:
            return None
        ropt = o[3] if o else b""
        out = b"".join((data[:2], bytes((0x84 | (data[2] & 1), NXDOMAIN)),
                        _COUNTS.pack(1, 0, 1, 1 if o else 0), data[12:qe],
                        struct.pack("!H", 0xC000 | (12 + i)), t.neg_soa_tail, ropt))
        if udp and len(out) > (o[4] if o else 512):
            return self._truncated(data, qe, ropt)
        qtype = data[qe - 4] << 8 | data[qe - 3]
        self._count(qtype, NXDOMAIN)
        return out

    def _truncated(self, data: bytes, qe: int, ropt: bytes) -> bytes:
        flags = bytes((0x86 | (data[2] & 1), 0))
        return b"".join((data[:2], flags, _COUNTS.pack(1, 0, 0, 1 if ropt else 0),
                         data[12:qe], ropt))

    def _count(self, qtype: int, rcode: int) -> None:
        k = (qtype if 0 <= qtype < 256 else 256, rcode)
        self.stats.by_type_rcode[k] = self.stats.by_type_rcode.get(k, 0) + 1

    def _error(self, data: bytes, rcode: int, question: bytes = b"", opt: bytes = b"",
               aa: bool = False, qtype: int = -1) -> bytes | None:
        """A reply without answers: header (+ question) (+ OPT)."""
        if len(data) < 12 or data[2] & 0x80:
            self.stats.dropped += 1
            return None
        f1 = 0x80 | (data[2] & 0x79) | (0x04 if aa else 0)     # QR, opcode and RD copied
        self._count(qtype, rcode)
        return b"".join((data[:2], bytes((f1, rcode & 0xF)),
                         _COUNTS.pack(1 if question else 0, 0, 0, 1 if opt else 0),
                         question, opt))

    # everything else -----------------------------------------------------------------------------

    def _parse_opt(self, data: bytes, p: int, end: int, src: str):
        """Decode one OPT RR's rdata; return the cache tuple or raise FormErr / return 'BADVERS'.

        Cache tuple: (ring key or None, scope, OPT bytes for location answers, OPT bytes for
        location-independent answers, max UDP reply size).
        """
        payload, _ext, version, flags, rdlen = struct.unpack_from("!HBBHH", data, p + 3)
        do = bool(flags & 0x8000)
        if version != 0:
            return "BADVERS", do
        q = p + 11
        if q + rdlen != end:
            raise FormErr
        ecs = None
        while q < end:
            if q + 4 > end:
                raise FormErr
            code, olen = struct.unpack_from("!HH", data, q)
            q += 4
            if q + olen > end:
                raise FormErr
            if code == 8:
                if ecs is not None or olen < 4:
                    raise FormErr
                fam, srcp, scope = struct.unpack_from("!HBB", data, q)
                addr = data[q + 4:q + olen]
                if fam == 1:
                    bits = 32
                elif fam == 2:
                    bits = 128
                else:
                    raise FormErr
                if srcp > bits or scope != 0 or len(addr) != (srcp + 7) // 8:
                    raise FormErr
                if srcp % 8 and addr[-1] & (0xFF >> (srcp % 8)):
                    raise FormErr              # bits beyond the source prefix must be zero
                ecs = (fam, srcp, addr)
            q += olen
        maxsize = max(512, min(payload, EDNS_PAYLOAD))
        plain = _opt_rr(do)
        if ecs is None:
            return (None, 0, plain, plain, maxsize)
        fam, srcp, addr = ecs
        head = struct.pack("!HBB", fam, srcp, 0)
        flat = _opt_rr(do, struct.pack("!HH", 8, len(addr) + 4) + head + addr)
        if srcp == 0:
            return (None, 0, flat, flat, maxsize)
        rk, scope = self._ecs_locate(fam, srcp, addr)
        geo = _opt_rr(do, struct.pack("!HH", 8, len(addr) + 4) + struct.pack("!HBB", fam, srcp,
                                                                             scope) + addr)
        return (rk, scope, geo, flat, maxsize)

    def _full(self, data: bytes, src: str, udp: bool) -> bytes | None:
        n = len(data)
        if n < 12:
            self.stats.dropped += 1
            return None
        f1 = data[2]
        if f1 & 0x80:
            self.stats.dropped += 1            # a response: never answer it (no loops)
            return None
        opcode = (f1 >> 3) & 0xF
        if opcode != 0:
            return self._error(data, NOTIMP)
        qd, an, ns, ar = _COUNTS.unpack_from(data, 4)
        if qd != 1:
            return self._error(data, FORMERR)
        try:
            p = 12
            while True:                         # the question name: plain labels only
                ln = data[p]
                if ln == 0:
                    break
                if ln > 63:
                    raise FormErr
                p += ln + 1
            if p - 12 > 255:
                raise FormErr
            qe = p + 5
            if qe > n:
                raise FormErr
            qtype, qclass = struct.unpack_from("!HH", data, p + 1)
            question = data[12:qe]
            p = qe
            for _ in range(an + ns):
                p = _skip_name(data, p)
                if p + 10 > n:
                    raise FormErr
                (rdlen,) = struct.unpack_from("!H", data, p + 8)
                p += 10 + rdlen
                if p > n:
                    raise FormErr
            o = False
            opt_start = None
            for _ in range(ar):
                start = p
                p = _skip_name(data, p)
                if p + 10 > n:
                    raise FormErr
                rtype, _c, _t, rdlen = struct.unpack_from("!HHIH", data, p)
                if rtype == T_OPT:
                    if opt_start is not None or p != start + 1:
                        raise FormErr          # a second OPT, or one not owned by the root
                    opt_start = start
                    o = self._parse_opt(data, start, p + 10 + rdlen, src)
                p += 10 + rdlen
                if p > n:
                    raise FormErr
            if p != n:
                raise FormErr                  # trailing bytes
        except (FormErr, IndexError, struct.error, ValueError):
            return self._error(data, FORMERR)
        if isinstance(o, tuple) and o and o[0] == "BADVERS":
            # the header keeps BADVERS's low 4 bits (0), the OPT its high bits; counted as 16
            return self._error(data, BADVERS, question, _opt_rr(o[1], ext_rcode=BADVERS >> 4),
                               qtype=qtype)
        if o and opt_start is not None and an == ns == 0 and ar == 1:
            self._remember(data[opt_start:], o)
        ropt_flat = o[3] if o else b""
        t = self.table
        if t is None:
            return self._error(data, SERVFAIL, question, ropt_flat, qtype=qtype)
        if qclass != 1:
            return self._error(data, REFUSED, question, ropt_flat, qtype=qtype)
        key = question[:-4].lower()
        acts = t.names.get(key)
        if acts is None:
            out = self._nxdomain(t, data, key, qe, o, udp)
            if out is None:
                return self._error(data, REFUSED, question, ropt_flat, qtype=qtype)
            return out
        trip, rk, ropt = self._choose(acts.get(qtype) or acts[ANY_KEY], o, src)
        out = b"".join((data[:2], _FLAGS_OK[f1 & 1], trip[1] if o else trip[0], question,
                        trip[2], ropt))
        if udp and len(out) > (o[4] if o else 512):
            return self._truncated(data, qe, ropt)
        self._count(qtype, NOERROR)
        if rk is not None:
            self.stats.by_country[rk] = self.stats.by_country.get(rk, 0) + 1
        return out


def qtype_name(qtype: int) -> str:
    return "other" if qtype >= 256 else QTYPE.get(qtype, str(qtype))
