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
  the ring and a join. A query seen before (the same bytes after the header, and an answer that
  does not depend on the source address) skips even that: one lookup of `data[12:]` in the hot
  cache gives its ring, question and reply OPT (`_Hot`). Everything else (odd counts, EDNS errors, NXDOMAIN, REFUSED, FORMERR,
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

import dataclasses
import itertools
import random
import socket
import struct

from dnslib import QTYPE, RR, DNSLabel
from dnslib import SOA as SOA_RD

from dnsd import countries
from dnsd.picker import Drawer, Location, select_tier, weights_for
from dnsd.plan import empty_plan
from dnsd.rrl import ALLOW, DROP
from dnsd.wire import (
    FLAGS_OK,
    answer_count,
    encode_lookup,
    flags,
    rcode_of,
    relocate,
    stand_in,
    triple,
)
from dnsd.zonefile import Zone, ZoneError

T_A, T_NS, T_CNAME, T_SOA, T_AAAA, T_OPT, T_ANY, T_HINFO = 1, 2, 5, 6, 28, 41, 255, 13
T_DS = 43
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, BADVERS = 0, 1, 2, 3, 4, 5, 16
BADCOOKIE = 23
EDNS_PAYLOAD = 1232              # what we advertise (the DNS flag day 2020 value)
ANY_KEY = -1                     # acts[ANY_KEY]: the answer for any qtype without its own entry
DELEG_KEY = -2                   # acts[DELEG_KEY]: the cut a name is at or below
WILD_KEY = -3                    # acts[WILD_KEY]: this name, when "*.<name>" exists (RFC 4592)
OPT_CACHE = 4096                 # decoded OPT records kept (emptied when full)
OPT_CACHE_KEY_MAX = 64           # ... of at most this many bytes (ECS /128 and NSID: 39)
HOT_CACHE = 4096                 # queries (all after the header) whose answer is kept ready
HOT_CACHE_KEY_MAX = 320          # ... of at most this many bytes (a 255-octet name + ECS /128)
FIXED = "fixed"                  # Answerer._choose's ring of a fixed reply (kind 0)
MISS_CACHE_MAX = 20_000          # answers cached per question length for referrals, wildcards
# Types 128-254 are Q-TYPEs and Meta-TYPEs (RFC 6895 3.1), not data a name can own: AXFR 252,
# IXFR 251, MAILB 253, MAILA 254 (see docs/dns.md, "Zone transfers"), TSIG 250 and TKEY 249 (only
# meaningful in the additional section) and the unassigned rest get NOTIMP, as gdnsd does; ANY
# 255 is answered (RFC 8482).
NOTIMP_TYPES = frozenset(range(128, 255))

CONTINENT_LABELS = {
    "EU": ("eu", "europe"), "OC": ("oc", "oceania"), "AN": ("an", "antarctica"),
    "AS": ("asia",), "AF": ("africa",), "NA": ("north-america",), "SA": ("south-america",),
}
# Two-letter continent labels that are also country codes (AS, AF, NA, SA) are left to the
# countries, so xx.<zone> always means the country; those continents get their long label only.

_COUNTS = struct.Struct("!HHHH")
_RRHEAD = struct.Struct("!HHHIH")       # pointer, type, class, ttl, rdlength
_OPT = struct.Struct("!BHHBBHH")        # root, type, payload, ext-rcode, version, flags, rdlen
_FLAGS_OK = FLAGS_OK                   # QR AA (+RD), rcode 0, indexed by the query's RD bit
_SERVFAIL_ACT = (0, triple(0, 0, b"", 0, flags(False, SERVFAIL)), None, None)
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
    """Everything the answer path reads, built once per plan (immutable by convention, apart from
    the caches of answers for names the zone answers whatever is asked below them)."""

    def __init__(self, zone_wire, names, neg_soa_tail, version, serial, *, zone=None,
                 neg_soa=None, dynamic=None, no_plan=False, any_ttl=0, collisions=(),
                 qtypes=frozenset()):
        self.zone_wire = zone_wire          # lower-case wire form of the zone apex
        self.names = names                  # wire name -> {qtype | ANY_KEY | ...: action}
        self.neg_soa_tail = neg_soa_tail    # SOA type..rdata for negative answers
        self.version = version
        self.serial = serial
        self.zone = zone                    # the Zone (its lookup builds the cached answers)
        self.neg_soa = neg_soa              # the SOA record negative answers carry
        self.dynamic = dynamic or (lambda name, qtype: False)
        self.no_plan = no_plan              # no plan yet: names that need one get SERVFAIL
        self.any_ttl = any_ttl
        self.collisions = tuple(collisions)  # generated names the zone file shadows, in words
        self.qtypes = qtypes                # types whose answers differ; any other is type 0
        self._miss: dict = {}

    def miss_act(self, key: bytes, qtype: int):
        """The action for a name not in `names`: a referral below a cut, a wildcard match, NXDOMAIN
        (SERVFAIL for a possible mirror name while there is no plan); None when the name is not
        in the zone or not a well-formed name of at most 255 octets."""
        zw = self.zone_wire
        n = len(key)
        if n > 255:
            return None
        i = 0
        first = -1
        while i < n:                            # label-aligned suffix test
            if key[i:] == zw:
                break
            ln = key[i]
            if ln == 0 or ln > 63:
                return None
            i += ln + 1
            if first < 0:
                first = i
        else:
            return None
        if first == i and self.no_plan:
            return _SERVFAIL_ACT
        names = self.names
        s = first
        acts = None
        while s < i:                            # the closest encloser (RFC 4592 3.3.1)
            acts = names.get(key[s:])
            if acts is not None:
                break
            s += key[s] + 1
        if acts is None:
            acts = names[zw]
        cut = acts.get(DELEG_KEY)
        if cut is not None:
            return self._cached(("ref", cut, n), cut, 0, n)
        wild = acts.get(WILD_KEY)
        if wild is not None:
            # a type no record of the zone has is answered as type 0 (as `names` does): keyed by
            # it, a client cycling through 65,536 types would only empty the cache
            qt = qtype if qtype in self.qtypes else 0
            return self._cached(("wild", wild, qt, n), wild, qt, n)
        act = self._miss.get(n)
        if act is None:
            off = 12 + n - len(zw)
            act = (0, _triple(0, 1, struct.pack("!H", 0xC000 | off) + self.neg_soa_tail,
                              fl=flags(True, NXDOMAIN)), None, None)
            self._remember(n, act)
        return act

    def _cached(self, ck, suffix: str, qtype: int, n: int):
        act = self._miss.get(ck)
        if act is None:
            stand = "\x00." + suffix               # a name below `suffix` that cannot exist
            lk = self.zone.lookup(stand, qtype, self.dynamic)
            act = _action(lk, self.zone, stand_in(n, suffix), stand, qtype, self.neg_soa,
                          self.any_ttl)
            self._remember(ck, act)
        return act

    def _remember(self, ck, act) -> None:
        if len(self._miss) > MISS_CACHE_MAX:
            self._miss = {}
        self._miss[ck] = act


def _triple(an: int, ns: int, body: bytes, ar: int = 0, fl=FLAGS_OK):
    """(counts without OPT, counts with OPT, body, header flags) of one reply (dnsd.wire)."""
    return triple(an, ns, body, ar, fl)


def _action(lk, zone: Zone, qlabel, qname: str, qtype: int, neg_soa, any_ttl: int):
    """The answer path's action for a zone Lookup: a fixed reply (kind 0), or a CNAME chain that
    ends at a name answered from the plan (kind 3: the chain's records, where the target's name
    sits in them, and the target's wire name)."""
    trip, target_at = encode_lookup(lk, zone, qlabel, qname, qtype, neg_soa, any_ttl)
    if lk.dynamic is None:
        return (0, trip, None, None)
    return (3, (answer_count(trip), trip[2], struct.pack("!H", 0xC000 | target_at)),
            wire_name(lk.dynamic), None)


def _rr(rtype: int, ttl: int, rdata: bytes) -> bytes:
    return _RRHEAD.pack(0xC00C, rtype, 1, ttl, len(rdata)) + rdata


def _addr_rr(entry, family: str, ttl: int) -> bytes:
    if family == "A":
        return _rr(T_A, ttl, socket.inet_pton(socket.AF_INET, entry.ipv4))
    return _rr(T_AAAA, ttl, socket.inet_pton(socket.AF_INET6, entry.ipv6))


def compile_table(plan, zone: Zone, cfg, rng: random.Random | None = None) -> WireTable:
    """Encode every answer of the zone for this plan. Pure CPU work: run it off the reactor.

    `plan` None: no plan yet; the static zone is answered, names that need the plan get SERVFAIL.
    """
    rng = rng or random.Random()
    d = cfg.dns
    no_plan = plan is None
    if no_plan:
        plan = empty_plan(cfg)
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
    neg_soa = RR(z + ".", T_SOA, ttl=zone.negative_ttl,
                 rdata=SOA_RD(soa.rdata.mname, soa.rdata.rname, t))

    def nodata(name):
        # the SOA's owner is the zone suffix of the question: a pointer into it
        off = 12 + len(wire_name(name)) - zlen
        return _triple(0, 1, struct.pack("!H", 0xC000 | off) + neg_soa_tail)

    def any_answer(name):
        return any_trip

    names: dict[bytes, dict] = {}

    # the names answered from the plan; the zone file's names win (and are a load-time error for
    # everything but mirror names, see check_generated_names)
    generated = dict(generated_names(cfg))
    for mname in plan.by_name:
        generated.setdefault(f"{mname}.{z}", f"the name of mirror {mname}")
    collisions = _collisions(zone, generated, cfg)
    dyn = {n for n in generated if n not in zone.names and zone.cut_for(n) is None}

    def dynamic(name, qtype):
        if name == z:
            return d.apex_geo and qtype in (T_A, T_AAAA)
        if name in dyn:
            return True
        # without a plan any one-label name may be a mirror's: the chain ends there (SERVFAIL)
        return no_plan and name.endswith("." + z) and "." not in name[:-len(z) - 1] \
            and name not in zone.names

    # 1. static records from the zone file (RFC 1034 4.3.2 via Zone.lookup; the apex SOA carries
    #    the plan's serial)
    view = dataclasses.replace(zone, records={**zone.records, z: {**zone.records[z],
                                                                   T_SOA: [soa_rr]}})
    qtypes = sorted({qt for by_type in zone.records.values() for qt in by_type}
                    | {T_A, T_AAAA, T_ANY, T_DS, T_CNAME})
    for name in zone.names:
        qlabel = DNSLabel(name + ".")

        def act_for(qt, name=name, qlabel=qlabel):
            return _action(view.lookup(name, qt, dynamic), view, qlabel, name, qt, neg_soa, ttl)

        base = act_for(0)                       # type 0: any type the name has no records of
        acts: dict = {ANY_KEY: base}
        for qt in qtypes:
            a = act_for(qt)
            if a != base:
                acts[qt] = a
        cut = zone.cut_for(name)
        if cut is not None:
            acts[DELEG_KEY] = cut
        if "*." + name in zone.records:
            acts[WILD_KEY] = name
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

    if no_plan:                                 # nothing below can be answered without the plan
        for name in generated:
            key = wire_name(name)
            if key not in names:
                names[key] = {ANY_KEY: _SERVFAIL_ACT}
        if d.apex_geo:
            apex = names[wire_name(z)]
            apex[T_A] = apex[T_AAAA] = _SERVFAIL_ACT
        return WireTable(wire_name(z), names, neg_soa_tail, 0, serial, zone=view,
                         neg_soa=neg_soa, dynamic=dynamic, no_plan=True, any_ttl=ttl,
                         qtypes=frozenset(qtypes))

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

    return WireTable(wire_name(z), names, neg_soa_tail, plan.version, serial, zone=view,
                     neg_soa=neg_soa, dynamic=dynamic, any_ttl=ttl, collisions=collisions,
                     qtypes=frozenset(qtypes))


def generated_names(cfg) -> dict[str, str]:
    """The names answered from the plan whatever the table holds (geo, country and continent
    names), each with what it is, in the words a collision message uses."""
    d = cfg.dns
    z = d.zone.rstrip(".").lower()
    out = {}
    if d.geo_name:
        out[f"{d.geo_name.lower()}.{z}"] = "the geo name"
    for cc in sorted(KNOWN_KEYS):
        out[f"{cc.lower()}.{z}"] = f"the country name of {cc}"
    if d.continent_names:
        for code, labels in CONTINENT_LABELS.items():
            for lab in labels:
                out.setdefault(f"{lab}.{z}", f"the continent name of {code}")
    return out


def _collisions(zone: Zone, generated: dict[str, str], cfg) -> list[str]:
    out = [f"{name} is {what} and {occ}" for name, what in generated.items()
           if (occ := zone.occupant(name)) is not None]
    if cfg.dns.apex_geo:
        apex = zone.records.get(zone.origin, {})
        if apex.get(T_A) or apex.get(T_AAAA):
            where = zone.path or "the zone file"
            out.append(f"{zone.origin}: [dns] apex_geo = true answers the apex's A/AAAA by client "
                       f"location, but {where} has A/AAAA records at the apex")
    return out


def check_generated_names(zone: Zone, cfg) -> None:
    """A geo, country or continent name that the zone file also holds or delegates is a
    configuration error (raised as ZoneError naming both). Mirror names come from the table
    and are checked when a plan is compiled (WireTable.collisions)."""
    problems = _collisions(zone, generated_names(cfg), cfg)
    if problems:
        raise ZoneError("; ".join(problems))


# -- the answerer --------------------------------------------------------------------------------


class FormErr(Exception):
    pass


class OptFormErr(FormErr):
    """A malformed option inside a well-formed OPT record: FORMERR, with an OPT (RFC 6891 7)."""

    def __init__(self, opt: bytes):
        super().__init__()
        self.opt = opt


class Stats:
    """Plain counters the hot path bumps; dnsd.metrics exports them to Prometheus."""

    def __init__(self):
        self.by_type_rcode: dict[tuple[int, int], int] = {}
        self.by_country: dict[str, int] = {}
        self.dropped = 0
        self.rrl_dropped = 0            # responses response rate limiting did not send
        self.rrl_slipped = 0            # ... sent truncated (or BADCOOKIE) instead
        self.rrl_cookie_exempt = 0      # limited clients answered because of a valid cookie

    def reset(self):
        self.__init__()


def _opt_rr(do: bool, options: bytes = b"", ext_rcode: int = 0) -> bytes:
    return _OPT.pack(0, T_OPT, EDNS_PAYLOAD, ext_rcode, 0, 0x8000 if do else 0,
                     len(options)) + options


def _opt_plus(opt: bytes, extra: bytes = b"", ext_rcode: int | None = None) -> bytes:
    """An OPT record we built, with more options appended and/or its extended rcode set."""
    if not opt:
        return opt
    rdlen = (opt[9] << 8 | opt[10]) + len(extra)
    ext = opt[5:6] if ext_rcode is None else _BYTE[ext_rcode]
    return b"".join((opt[:5], ext, opt[6:9], _BYTE[rdlen >> 8], _BYTE[rdlen & 0xFF], opt[11:],
                     extra))


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


def _question_end(data: bytes) -> int:
    """The end of the one question of a query of class IN whose name is plain labels of at most
    255 octets; 0 when it is not that."""
    z = data.find(0, 12)
    p = 12
    while p < z:
        ln = data[p]
        if ln > 63:
            return 0
        p += ln + 1
    if p == z and z - 12 < 255 and data[z + 3:z + 5] == b"\x00\x01":
        return z + 5
    return 0


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


def _find_cookie(rest: bytes) -> tuple[int, int] | None:
    """Where the COOKIE option of the OPT RR `rest` (to its last byte) lies, as (start, end);
    (-1, -1) when the record is sound and has none; None when it is not an OPT RR with a sound
    option list and at most one COOKIE of a valid length (RFC 7873 5.2.2): the careful decoder
    (Answerer._parse_opt, whose framing rules these are) has the word on those."""
    n = len(rest)
    if n < 11 or rest[:3] != b"\x00\x00\x29" or 11 + (rest[9] << 8 | rest[10]) != n:
        return None
    q = 11
    at = end = -1
    while q < n:
        if q + 4 > n:
            return None
        olen = rest[q + 2] << 8 | rest[q + 3]
        if rest[q] == 0 and rest[q + 1] == 10:
            if at >= 0 or olen not in _COOKIE_LENGTHS:
                return None
            at, end = q, q + 4 + olen
        q += 4 + olen
    return (at, end) if q == n else None


_COOKIE_LENGTHS = frozenset((8, *range(16, 41)))     # RFC 7873 5.2.2


def _without(rest: bytes, at: int, end: int) -> bytes:
    """The OPT RR `rest` without its option at rest[at:end] (its rdlen made to match)."""
    rdlen = len(rest) - 11 - (end - at)
    return b"".join((rest[:9], _BYTE[rdlen >> 8], _BYTE[rdlen & 0xFF], rest[11:at], rest[end:]))


def _with_option(opt: bytes, extra: bytes) -> bytes:
    """An OPT RR we built (no extended rcode to set) with the option `extra` appended."""
    rdlen = (opt[9] << 8 | opt[10]) + len(extra)
    return b"".join((opt[:9], _BYTE[rdlen >> 8], _BYTE[rdlen & 0xFF], opt[11:], extra))


def _remember(v: _GeoView, opt: bytes, o: tuple) -> None:
    """Cache the decoded OPT record `opt` (from the end of the question to the end of the
    message) in the view it was decoded with. Bounded: records longer than any a resolver sends
    are not kept (their bytes would be the cache's size), and the dict is emptied in place when
    full: under spread traffic entries are rarely hit again, and a small dict costs little to
    fill; repeated subnets stay fast."""
    if len(opt) <= OPT_CACHE_KEY_MAX:
        c = v.opts
        if len(c) >= OPT_CACHE:
            c.clear()
        c[opt] = o


class _GeoView:
    """The compiled geo index and the OPT records decoded with it, swapped as one object when the
    geo database changes: a decoded OPT (its ring key and scope) is only ever found beside the
    index that made it, whichever thread decoded it while the swap happened."""

    __slots__ = ("index", "opts")

    def __init__(self, index):
        self.index = index
        self.opts: dict[bytes, tuple] = {}


class _Hot:
    """Queries seen before, each mapped to what its reply is made of, valid for one table and one
    geo view: replaced (never emptied for another) when either changes, and filled only by a
    query that was answered from this very pair, so an entry never outlives what made it.

    An entry (`data[12:]` -> (ring, question, reply OPT, max UDP size, counted qtype, counted
    ring key)) is made when a query is answered the second time while the first is still
    remembered in `once` (a doorkeeper of the last HOT_CACHE distinct queries): a flood of
    one-off names (random subdomains, 0x20 letter case) churns `once`, not the hot set. A
    query whose OPT record is new (a fresh ECS subnet) is not even counted: traffic from ever
    new subnets pays one failed lookup here and fills nothing."""

    __slots__ = ("table", "view", "answers", "once")

    def __init__(self, table, view):
        self.table = table
        self.view = view
        self.answers: dict[bytes, tuple] = {}
        self.once: set[bytes] = set()

    def remember(self, t, v, data: bytes, qe: int, ring, trip, ropt: bytes, maxsize: int,
                 qtype: int, rk) -> None:
        """Count the query `data`, answered with `trip` drawn from `ring` (Answerer._choose);
        make it hot on its second count."""
        if t is not self.table or v is not self.view or len(data) - 12 > HOT_CACHE_KEY_MAX:
            return                              # answered from what was current before a swap
        key = data[12:]
        once = self.once
        if key not in once:
            if len(once) >= HOT_CACHE:
                once.clear()
            once.add(key)
            return
        once.discard(key)
        c = self.answers
        if len(c) >= HOT_CACHE:
            c.clear()
        c[key] = (itertools.repeat(trip) if ring is FIXED else ring, data[12:qe], ropt, maxsize,
                  min(256, qtype), rk)


class Answerer:
    """answer(data, src, udp) -> reply bytes, or None to stay silent. Never raises.

    `cookies` (dnsd.cookies.CookieJar) answers DNS Cookies (RFC 7873, RFC 9018), `nsid` is the
    NSID (RFC 5001) sent to clients that ask, `rrl` (dnsd.rrl.RateLimiter) limits UDP responses
    per client prefix; all three are optional.

    Threads: UDP is answered on a thread per socket, TCP and every swap on the reactor thread
    (dnsd.server). What they share is either replaced whole by one assignment of an object
    nobody changes afterwards (the table, the geo view, the cookie secrets), or a cache dict
    that is only read, filled and emptied in place by single dict operations (the OPT records,
    the ECS shapes, the zone's cached misses, the hot answers). The counters are plain dict and int updates: two
    threads bumping one at the same instant may lose a count, never raise. Nothing on the query
    path takes a lock.
    """

    def __init__(self, geo, table: WireTable | None = None, *, cookies=None, nsid: bytes = b"",
                 rrl=None):
        self.geo = geo
        self.stats = Stats()
        self._cookies = cookies
        self._nsid = nsid
        self.rrl = rrl
        self._table = table
        self._view = _GeoView(getattr(geo, "index", None))
        self._hot = _Hot(table, self._view)
        self._ecs_heads: dict[bytes, tuple | bool] = {}
        if geo is not None and hasattr(geo, "on_reload"):
            geo.on_reload(self.clear_caches)
        if rrl is not None:
            self.answer = self._answer_limited        # the plain path stays free of the check

    @property
    def index(self):
        """The compiled geo index the answers use (None: geoip2 until it is there)."""
        return self._view.index

    def clear_caches(self):
        """The geo database changed: take its new compiled index, with an empty OPT cache."""
        self._view = v = _GeoView(getattr(self.geo, "index", None))
        self._hot = _Hot(self._table, v)          # after the view: see _Hot.remember

    def set_table(self, table: WireTable) -> None:
        self._table = table
        self._hot = _Hot(table, self._view)       # after the table: see _Hot.remember

    @property
    def cookies(self):
        return self._cookies

    @cookies.setter
    def cookies(self, jar) -> None:
        """Cookies on or off changes how OPT records decode: nothing cached may outlive that."""
        self._cookies = jar
        self.clear_caches()

    @property
    def nsid(self) -> bytes:
        return self._nsid

    @nsid.setter
    def nsid(self, nsid: bytes) -> None:
        self._nsid = nsid
        self.clear_caches()

    @property
    def table(self) -> WireTable | None:
        return self._table

    @table.setter
    def table(self, table: WireTable | None) -> None:
        self.set_table(table)

    # the location of a client ------------------------------------------------------------------

    def _src_key(self, src: str) -> str:
        """Ring key of the resolver's address: the compiled index (a bisect, no cache needed), or
        geoip2 through GeoLocator's cache until the index is ready."""
        ix = self._view.index
        if ix is not None:
            return ix.key_of(src)
        return ring_key(self.geo.location(src)) if self.geo is not None else ""

    def _ecs_locate(self, fam: int, srcp: int, addr: bytes, ix) -> tuple[str, int]:
        """(ring key, scope) of an ECS subnet (family 1 or 2, source prefix, address bytes),
        from the index `ix`, or geoip2 when there is none."""
        if ix is not None:
            return ix.ecs(fam, srcp, addr)
        if self.geo is None:
            return "", 0
        full = addr + bytes((4 if fam == 1 else 16) - len(addr))
        ip = socket.inet_ntop(socket.AF_INET if fam == 1 else socket.AF_INET6, full)
        loc, scope = self.geo.locate(ip, srcp)
        return ring_key(loc), max(0, min(scope, srcp))

    def _ecs_opt(self, rest: bytes, v: _GeoView | None = None):
        """The OPT tuple (see _parse_opt) of an OPT RR that is exactly one ECS option, the form
        resolvers send, decoded here rather than by _full: under traffic from many client
        subnets the OPT cache mostly misses, so a miss must be cheap. Per distinct head (the 19
        bytes before the address: payload size, flags, family, prefix) the checks and the
        reply's OPT head are worked out once; then the address goes to the index. None: not
        that form (a cookie or NSID too, or no index yet), let _full decode it."""
        v = v or self._view
        ix = v.index
        if ix is None:
            return None
        head = rest[:19]
        heads = self._ecs_heads
        shape = heads.get(head)
        if shape is None:
            if len(heads) > 256:
                heads.clear()
            shape = heads[head] = _ecs_shape(head)
        if not shape:
            return None
        v4, srcp, n, shift, mask, ohead, maxsize = shape
        addr = rest[19:]
        if len(addr) != n or addr[-1] & mask:
            return None
        a = int.from_bytes(addr, "big") << shift
        rk, scope = ix.ecs4(a, srcp) if v4 else ix.ecs6(a, srcp)
        o = (rk, scope, ohead + _BYTE[scope] + addr, ohead + b"\x00" + addr, maxsize, None)
        _remember(v, rest, o)
        return o

    def _cookie_opt(self, rest: bytes, src: str, v: _GeoView):
        """The OPT tuple of an OPT RR holding one COOKIE option beside anything else, the form
        BIND and Unbound send (with ECS, often): the record without its COOKIE is decoded (and
        cached) as any other, the cookie is checked for this query and its reply option joined
        to both reply OPTs. None when the record is not that (no cookie, two, a malformed
        option list, an unsupported version): _full decides what to say.

        The COOKIE is looked for where resolvers put it first: last (a client and a server
        cookie, or a client cookie alone) or first. Found there, the record without it is sound
        if the cache knows it (the cache holds only sound records, none with a COOKIE); else
        the option list is walked."""
        n = len(rest)
        o = None
        if n >= 23 and 11 + (rest[9] << 8 | rest[10]) == n:
            if n >= 39 and rest[n - 28:n - 24] == b"\x00\x0a\x00\x18":
                at, end = n - 28, n
            elif rest[n - 12:n - 8] == b"\x00\x0a\x00\x08":
                at, end = n - 12, n
            elif rest[11:14] == b"\x00\x0a\x00" and rest[14] in _COOKIE_LENGTHS:
                at, end = 11, 15 + rest[14]
            else:
                at = end = 0
            if end and end <= n:
                bare = _without(rest, at, end)
                o = v.opts.get(bare) or self._ecs_opt(bare, v)
        if o is None:
            found = _find_cookie(rest)
            if found is None or found[0] < 0:
                return None
            at, end = found
            bare = _without(rest, at, end)
            o = v.opts.get(bare) or self._ecs_opt(bare, v)
            if o is None:
                try:
                    o = self._parse_opt(bare, 0, len(bare), src, v)
                except FormErr:
                    return None
                if o[0] == "BADVERS":
                    return None
                _remember(v, bare, o)
        extra = self._cookie_option(rest[at + 4:end], src)
        flat = _opt_plus(o[3], extra)
        return (o[0], o[1], _opt_plus(o[2], extra) if o[0] is not None else flat, flat, o[4],
                None)

    def _choose(self, act, o, src: str):
        """(reply triple, ring key counted in the metrics, OPT bytes, ring) for one name's
        action: a fixed reply (kind 0), a ring (1), or a ring per client location (2), the ECS
        option's location winning over the source address's. `ring` is what the triple was
        drawn from when nothing but the query's bytes decided it (FIXED for a fixed reply), None
        when the source address did: what a hot entry (_Hot) may keep."""
        kind = act[0]
        if kind == 2:
            if o and o[0] is not None:
                ring = act[1].get(o[0]) or act[2]
                return next(ring), o[0], o[2], ring
            rk = self._src_key(src)
            return next(act[1].get(rk) or act[2]), rk, (o[3] if o else b""), None
        if kind == 1:
            return next(act[1]), act[3], (o[3] if o else b""), act[1]
        return act[1], act[3], (o[3] if o else b""), FIXED

    # the hot path --------------------------------------------------------------------------------

    def answer(self, data: bytes, src: str, udp: bool = True) -> bytes | None:
        try:
            hot = self._hot
            h = hot.answers.get(data[12:])
            if h is not None and not data[2] & 0xF8 and data[4:12] == (_C_OPT if h[2]
                                                                      else _C_NOOPT):
                ring, question, ropt, maxsize, qt, rk = h
                trip = next(ring)
                fl = trip[3][data[2] & 1]
                out = b"".join((data[:2], fl, trip[1] if ropt else trip[0], question, trip[2],
                                ropt))
                if udp and len(out) > maxsize:
                    return self._truncated(data, 12 + len(question), ropt, fl)
                st = self.stats
                k = (qt, fl[1])
                st.by_type_rcode[k] = st.by_type_rcode.get(k, 0) + 1
                if rk is not None:
                    st.by_country[rk] = st.by_country.get(rk, 0) + 1
                return out
            t = self._table
            counts = data[4:12]
            if t is not None and not data[2] & 0xF8 and (counts == _C_OPT or counts == _C_NOOPT):
                z = data.find(0, 12)
                key = data[12:z + 1].lower()
                if data[z + 3:z + 5] == b"\x00\x01":
                    qe = z + 5
                    v = self._view
                    if counts[7]:
                        rest = data[qe:]
                        o = v.opts.get(rest)
                        seen = o is not None        # decoded before: worth a hot entry
                        if not seen:
                            # not cached: exactly one ECS option (_ecs_opt), else, with cookies
                            # on, one COOKIE beside anything else (_cookie_opt), else _full
                            o = self._ecs_opt(rest, v)
                            if o is None and self._cookies is not None:
                                o = self._cookie_opt(rest, src, v)
                    else:
                        o = None if len(data) != qe else False
                        seen = True
                    if o is not None:
                        qtype = data[z + 1] << 8 | data[z + 2]
                        acts = t.names.get(key)
                        act = (acts.get(qtype) or acts[ANY_KEY]) if acts is not None \
                            else t.miss_act(key, qtype)
                        if act is not None and qtype not in NOTIMP_TYPES:
                            if act[0] == 3:
                                return self._chain(t, data, key, qe, act, o, src, udp, qtype, b"")
                            trip, rk, ropt, ring = self._choose(act, o, src)
                            fl = trip[3][data[2] & 1]
                            if o:
                                out = b"".join((data[:2], fl, trip[1], data[12:qe], trip[2],
                                                ropt))
                                maxsize = o[4]
                            else:
                                out = b"".join((data[:2], fl, trip[0], data[12:qe], trip[2]))
                                maxsize = 512
                            if seen and ring is not None:
                                # the same bytes get this answer again, whoever sends them
                                hot.remember(t, v, data, qe, ring, trip, ropt, maxsize, qtype, rk)
                            if udp and len(out) > maxsize:
                                return self._truncated(data, qe, ropt, fl)
                            st = self.stats
                            k = (min(256, qtype), fl[1])
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

    def _answer_limited(self, data: bytes, src: str, udp: bool = True) -> bytes | None:
        """`answer` with response rate limiting (dnsd.rrl) in front, for UDP only: a limited
        client gets nothing, or every `slip`-th time a truncated reply (BADCOOKIE when it sent
        a cookie), unless it shows a valid server cookie (it is not spoofed, RFC 7873 5.2.5).
        A limited query costs its bucket and, when it carries a cookie, that cookie's check:
        no answer is made to be thrown away."""
        if not udp:
            return Answerer.answer(self, data, src, False)
        try:
            verdict = self.rrl.check(src)
            if verdict == ALLOW:
                return Answerer.answer(self, data, src, True)
            if self._cookies is not None and b"\x00\x0a" in data[12:] and \
                    self._valid_cookie(data, src):
                self.stats.rrl_cookie_exempt += 1
                return Answerer.answer(self, data, src, True)
            if verdict == DROP:
                self.stats.rrl_dropped += 1
                return None
            self.stats.rrl_slipped += 1
            counts = data[4:12]
            if not data[2] & 0xF8 and (counts == _C_OPT or counts == _C_NOOPT):
                # the common query, as on the fast path: its TC reply without a full decode
                qe = _question_end(data)
                o = None
                if qe:
                    o = (self._view.opts.get(data[qe:]) or self._ecs_opt(data[qe:])) \
                        if counts[7] else (False if len(data) == qe else None)
                if o is not None:
                    return self._truncated(data, qe, o[3] if o else b"", _FLAGS_OK[0])
            return self._full(data, src, True, slip=True)
        except Exception:
            self.stats.dropped += 1             # never raise: see answer()
            return None

    def _valid_cookie(self, data: bytes, src: str) -> bool:
        """Whether the query carries a valid server cookie for `src` (dnsd.cookies)."""
        if not data[2] & 0xF8 and data[4:12] == _C_OPT:
            qe = _question_end(data)
            found = _find_cookie(data[qe:]) if qe else None
            if found is not None:
                at, end = found
                if at < 0:
                    return False
                cookie = data[qe + at + 4:qe + end]
                return self.cookies.respond(cookie[:8], cookie[8:], src)[1]
        valid: list[bool] = []                   # any other form: the careful decoder's word
        self._full(data, src, True, cookie_valid=valid)
        return bool(valid and valid[0])

    def _chain(self, t: WireTable, data: bytes, key: bytes, qe: int, act, o, src: str,
               udp: bool, qtype: int, extra: bytes) -> bytes | None:
        """A CNAME chain of the zone that ends at a name answered from the plan (RFC 1034
        4.3.2 3a): the chain's records, then the target's records re-owned by its name."""
        an, body, ptr = act[1]
        rd = data[2] & 1
        tacts = t.names.get(act[2])
        tact = (tacts.get(qtype) or tacts[ANY_KEY]) if tacts is not None else _SERVFAIL_ACT
        trip, rk, ropt, _ring = self._choose(tact, o, src)
        if extra:
            ropt = _opt_plus(ropt, extra)
        if rcode_of(trip) == SERVFAIL:
            return self._error(data, SERVFAIL, data[12:qe], ropt, qtype=qtype)
        tan = answer_count(trip)
        if tan:
            sections = body + relocate(trip[2], ptr)
            ns = 0
        else:                                   # NODATA at the target: the SOA
            off = 12 + len(key) - len(t.zone_wire)
            sections = body + struct.pack("!H", 0xC000 | off) + t.neg_soa_tail
            ns = 1
        fl = _FLAGS_OK[rd]
        out = b"".join((data[:2], fl, _COUNTS.pack(1, an + tan, ns, 1 if o else 0),
                        data[12:qe], sections, ropt))
        if udp and len(out) > (o[4] if o else 512):
            return self._truncated(data, qe, ropt, fl)
        self._count(qtype, NOERROR)
        if rk is not None:
            self.stats.by_country[rk] = self.stats.by_country.get(rk, 0) + 1
        return out

    def _truncated(self, data: bytes, qe: int, ropt: bytes, fl: bytes = b"\x84\x00") -> bytes:
        flags = bytes((fl[0] | 0x02 | (data[2] & 1), fl[1]))
        return b"".join((data[:2], flags, _COUNTS.pack(1, 0, 0, 1 if ropt else 0),
                         data[12:qe], ropt))

    def _count(self, qtype: int, rcode: int) -> None:
        k = (qtype if 0 <= qtype < 256 else 256, rcode)
        self.stats.by_type_rcode[k] = self.stats.by_type_rcode.get(k, 0) + 1

    def _error(self, data: bytes, rcode: int, question: bytes = b"", opt: bytes = b"",
               aa: bool = False, qtype: int = -1) -> bytes | None:
        """A reply without answers: header (+ question) (+ OPT, whose extended rcode the caller
        set for rcodes above 15)."""
        if len(data) < 12 or data[2] & 0x80:
            self.stats.dropped += 1
            return None
        f1 = data[2] & 0x78                                     # the opcode copied
        f1 |= 0x80 | (0x04 if aa else 0) | (0 if f1 else data[2] & 1)   # RD: QUERY's only
        self._count(qtype, rcode)
        return b"".join((data[:2], bytes((f1, rcode & 0xF)),
                         _COUNTS.pack(1 if question else 0, 0, 0, 1 if opt else 0),
                         question, opt))

    # everything else -----------------------------------------------------------------------------

    def _parse_opt(self, data: bytes, p: int, end: int, src: str, v: _GeoView | None = None):
        """Decode one OPT RR's rdata; return the cache tuple or raise FormErr / return 'BADVERS'.
        An ECS option is located with the index of `v` (the current view by default).

        Cache tuple: (ring key or None, scope, OPT bytes for location answers, OPT bytes for
        location-independent answers, max UDP reply size, COOKIE option data or None).
        A broken option list raises FormErr; a malformed option in a sound list raises
        OptFormErr, whose reply keeps an OPT.
        """
        payload, _ext, version, flags, rdlen = struct.unpack_from("!HBBHH", data, p + 3)
        do = bool(flags & 0x8000)
        if version != 0:
            return "BADVERS", do
        q = p + 11
        if q + rdlen != end:
            raise FormErr
        ecs = cookie = None
        nsid = False
        bad = False
        while q < end:
            if q + 4 > end:
                raise FormErr
            code, olen = struct.unpack_from("!HH", data, q)
            q += 4
            if q + olen > end:
                raise FormErr
            if code == 8:
                if ecs is not None or olen < 4:
                    bad = True
                else:
                    ecs = _ecs(data, q, olen)
                    bad = bad or ecs is None
            elif code == 10 and cookie is None:          # only the first COOKIE counts
                if olen not in _COOKIE_LENGTHS:
                    bad = True                          # RFC 7873 5.2.2
                cookie = data[q:q + olen]
            elif code == 3:
                nsid = True
            q += olen
        mine = b""
        if nsid and self.nsid:                          # RFC 5001 2.3
            mine = struct.pack("!HH", 3, len(self.nsid)) + self.nsid
        plain = _opt_rr(do, mine)
        if bad:
            raise OptFormErr(plain)
        if self.cookies is None:
            cookie = None
        maxsize = max(512, min(payload, EDNS_PAYLOAD))
        if ecs is None:
            return (None, 0, plain, plain, maxsize, cookie)
        fam, srcp, addr = ecs
        head = struct.pack("!HBB", fam, srcp, 0)
        flat = _opt_rr(do, struct.pack("!HH", 8, len(addr) + 4) + head + addr + mine)
        if srcp == 0:
            return (None, 0, flat, flat, maxsize, cookie)
        rk, scope = self._ecs_locate(fam, srcp, addr, (v or self._view).index)
        geo = _opt_rr(do, struct.pack("!HH", 8, len(addr) + 4) + struct.pack("!HBB", fam, srcp,
                                                                             scope) + addr + mine)
        return (rk, scope, geo, flat, maxsize, cookie)

    def _cookie_option(self, cookie: bytes, src: str, note: list | None = None) -> bytes:
        """The COOKIE option of our reply (client cookie + a server cookie); whether the query's
        server cookie was valid is appended to `note` (a list of the caller's: nothing here is
        shared between queries, which may be answered on several threads)."""
        server, valid = self.cookies.respond(cookie[:8], cookie[8:], src)
        if note is not None:
            note.append(valid)
        return struct.pack("!HH", 10, 8 + len(server)) + cookie[:8] + server

    def _full(self, data: bytes, src: str, udp: bool, slip: bool = False,
              cookie_valid: list | None = None) -> bytes | None:
        n = len(data)
        if n < 12:
            self.stats.dropped += 1
            return None
        f1 = data[2]
        if f1 & 0x80:
            self.stats.dropped += 1            # a response: never answer it (no loops)
            return None
        opcode = (f1 >> 3) & 0xF
        # other opcodes (NOTIFY, UPDATE, ...) get NOTIMP without their first section, whose
        # meaning depends on the opcode (UPDATE's is a zone, RFC 2136 2.3)
        qd, an, ns, ar = _COUNTS.unpack_from(data, 4)
        question = b""
        qtype = qclass = -1
        qe = 12
        o = False
        v = self._view                          # decoded and cached with one geo index
        ropt = b""                              # the reply's OPT, once the query's parsed
        opt_start = None
        try:
            p = 12
            for i in range(qd):
                if i == 0:                      # the question name: plain labels only
                    while True:
                        ln = data[p]
                        if ln == 0:
                            break
                        if ln > 63:
                            raise FormErr
                        p += ln + 1
                    if p - 12 + 1 > 255:        # RFC 1035 2.3.4: at most 255 octets
                        raise FormErr
                    qe = p + 5
                    if qe > n:
                        raise FormErr
                    qtype, qclass = struct.unpack_from("!HH", data, p + 1)
                    question = data[12:qe]
                    p = qe
                else:
                    p = _skip_name(data, p) + 4
                    if p > n:
                        raise FormErr
            for _ in range(an + ns):
                p = _skip_name(data, p)
                if p + 10 > n:
                    raise FormErr
                (rdlen,) = struct.unpack_from("!H", data, p + 8)
                p += 10 + rdlen
                if p > n:
                    raise FormErr
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
                    o = self._parse_opt(data, start, p + 10 + rdlen, src, v)
                    ropt = o[3] if o[0] != "BADVERS" else _opt_rr(o[1], ext_rcode=BADVERS >> 4)
                p += 10 + rdlen
                if p > n:
                    raise FormErr
            if p != n:
                raise FormErr                  # trailing bytes
        except OptFormErr as e:
            if opcode:
                return self._error(data, NOTIMP, b"", e.opt, qtype=qtype)
            return self._error(data, FORMERR, question, e.opt, qtype=qtype)
        except (FormErr, IndexError, struct.error, ValueError):
            # RFC 6891 7: an OPT that could be read is answered with one, even in an error
            if opcode:
                return self._error(data, NOTIMP, b"", ropt, qtype=qtype)
            return self._error(data, FORMERR, question if qe <= n else b"", ropt, qtype=qtype)
        if opcode:
            question = b""
        if o and o[0] == "BADVERS":
            # the header keeps BADVERS's low 4 bits (0), the OPT its high bits; counted as 16
            return self._error(data, BADVERS, question, ropt, qtype=qtype)
        cookie = o[5] if o else None
        extra = self._cookie_option(cookie, src, cookie_valid) if cookie is not None else b""
        if opcode != 0:
            return self._error(data, NOTIMP, b"", _opt_plus(ropt, extra), qtype=qtype)
        if qd != 1:
            if qd == 0 and cookie is not None and an == ns == 0:
                # RFC 7873 5.4: a query for a server cookie alone
                return self._error(data, NOERROR, b"", _opt_plus(ropt, extra))
            return self._error(data, FORMERR, b"", _opt_plus(ropt, extra))
        if o and cookie is None and opt_start is not None and an == ns == 0 and ar == 1:
            _remember(v, data[opt_start:], o)
        if slip:                                # rate limited: make the client come back
            if cookie is not None:              # ... with the cookie it now has (RFC 7873 5.2.3)
                return self._error(data, BADCOOKIE, question,
                                   _opt_plus(ropt, extra, BADCOOKIE >> 4), qtype=qtype)
            return self._truncated(data, qe, ropt, _FLAGS_OK[0])
        ropt_flat = _opt_plus(ropt, extra)
        t = self.table
        if t is None:
            return self._error(data, SERVFAIL, question, ropt_flat, qtype=qtype)
        if qclass != 1:
            return self._error(data, REFUSED, question, ropt_flat, qtype=qtype)
        if qtype in NOTIMP_TYPES:
            # zone transfers and MAILA/MAILB are not served (docs/dns.md, "Zone transfers")
            return self._error(data, NOTIMP, question, ropt_flat, qtype=qtype)
        key = question[:-4].lower()
        acts = t.names.get(key)
        act = (acts.get(qtype) or acts[ANY_KEY]) if acts is not None else t.miss_act(key, qtype)
        if act is None:
            return self._error(data, REFUSED, question, ropt_flat, qtype=qtype)
        if act[0] == 3:
            return self._chain(t, data, key, qe, act, o, src, udp, qtype, extra)
        trip, rk, ropt, _ring = self._choose(act, o, src)
        if extra:
            ropt = _opt_plus(ropt, extra)
        fl = trip[3][f1 & 1]
        out = b"".join((data[:2], fl, trip[1] if o else trip[0], question, trip[2], ropt))
        if udp and len(out) > (o[4] if o else 512):
            return self._truncated(data, qe, ropt, fl)
        self._count(qtype, fl[1])
        if rk is not None:
            self.stats.by_country[rk] = self.stats.by_country.get(rk, 0) + 1
        return out


def _ecs(data: bytes, q: int, olen: int):
    """(family, source prefix, address bytes) of a well-formed ECS option (RFC 7871 6), or None."""
    fam, srcp, scope = struct.unpack_from("!HBB", data, q)
    addr = data[q + 4:q + olen]
    if fam == 1:
        bits = 32
    elif fam == 2:
        bits = 128
    else:
        return None
    if srcp > bits or scope != 0 or len(addr) != (srcp + 7) // 8:
        return None
    if srcp % 8 and addr[-1] & (0xFF >> (srcp % 8)):
        return None                             # bits beyond the source prefix must be zero
    return fam, srcp, addr


def qtype_name(qtype: int) -> str:
    return "other" if qtype >= 256 else QTYPE.get(qtype, str(qtype))
