"""Static zone data (SOA, NS, apex records, MX, TXT, static names) from an RFC 1035 master file,
and what an authoritative server answers from it (`Zone.lookup`).

Records are parsed with `dnslib.RR.fromZone`, one logical record at a time, so an error names the
file and line ("zones/m.zone:12: bad record 'foo IN MX mail': ..."); dnslib alone gives neither.
`$ORIGIN`, `$TTL`, `@`, relative names, owners inherited from the previous record and parenthesised
multi-line records are handled here; `$INCLUDE` and `$GENERATE` are refused. After parsing, the
apex must have exactly one SOA and at least one NS, and every name must lie inside the zone.

NS records below the apex are zone cuts (delegations to child zones). The checks that keep them
meaningful: at a cut only NS, DS and glue addresses; below a cut only glue addresses (A/AAAA of the
child's name servers); no cut below another; DS only at a cut (RFC 4035 2.4); an NS target below
its cut must have glue (RFC 9471); no NS at a wildcard (RFC 4592 4.2); no DNAME (not implemented).

`Zone.lookup` is RFC 1034 4.3.2 over these records: referrals at cuts (RFC 1034 4.3.2 3b,
RFC 2181 6.1), DS at a cut answered by the parent (RFC 4035 3.1.4.1), in-zone CNAME chains
followed (RFC 1034 3.6.2, 4.3.2 3a; the rcode of the last name, RFC 6604 2.1), wildcards by the
closest-encloser rule (RFC 4592 3.3), NXDOMAIN and NODATA with the SOA (RFC 2308). Names the
server generates from the mirror table are leaves of it: a chain that reaches one stops there
and says so (`Lookup.dynamic`), and the answer path adds the plan's records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dnslib import QTYPE, RR

SOA, NS, CNAME, A, AAAA, DS, DNAME, ANY = (QTYPE.SOA, QTYPE.NS, QTYPE.CNAME, QTYPE.A,
                                          QTYPE.AAAA, QTYPE.DS, 39, QTYPE.ANY)
MAX_CHAIN = 8                  # CNAMEs followed in one answer (loops end here too)
_GLUE = frozenset((A, AAAA))
_AT_CUT = frozenset((NS, DS, A, AAAA))


class ZoneError(Exception):
    """A problem in a zone file, worded with the file and line."""


def norm(name) -> str:
    """'WWW.Example.ORG.' -> 'www.example.org' (the form names are compared in)."""
    return str(name).rstrip(".").lower()


@dataclass
class Zone:
    origin: str                                        # normalised, no trailing dot
    soa: RR
    records: dict[str, dict[int, list[RR]]]            # name -> qtype -> RRs
    names: set[str] = field(default_factory=set)       # every name that exists, with ancestors
    path: str = ""

    @property
    def serial(self) -> int:
        return int(self.soa.rdata.times[0])

    @property
    def negative_ttl(self) -> int:
        """RFC 2308: the smaller of the SOA's TTL and its MINIMUM field."""
        return min(int(self.soa.ttl), int(self.soa.rdata.times[4]))

    cuts: frozenset = frozenset()                      # delegation points (NS below the apex)

    def rrset(self, name: str, qtype: int) -> list[RR]:
        return self.records.get(name, {}).get(qtype, [])

    def contains(self, name: str) -> bool:
        return name == self.origin or name.endswith("." + self.origin)

    def cut_for(self, name: str) -> str | None:
        """The delegation point at or above `name` (inside this zone), else None."""
        if not self.cuts:
            return None
        n = name
        while n != self.origin and "." in n:
            if n in self.cuts:
                return n
            n = n.split(".", 1)[1]
        return None

    def closest_encloser(self, name: str) -> str:
        """The longest existing ancestor of `name` (names and empty non-terminals, RFC 4592 3.3.1)."""
        n = name
        while n not in self.names and n != self.origin:
            n = n.split(".", 1)[1]
        return n

    def occupant(self, name: str) -> str | None:
        """What this zone file holds that keeps `name` from being answered from the mirror table,
        in words naming the record (for a message: "<name> is the country name of DE and
        <occupant>"), or None when the name is free. The zone file's name wins in the answers,
        so a generated name (dnsd.answer) or a mirror's name (dnsd.validation) that has one is
        an error, and this is the one place that says which names have one."""
        where = self.path or "the zone file"
        cut = self.cut_for(name)
        if cut is not None:
            ns = _text(self.rrset(cut, NS)[0])
            if cut == name:
                return f"is delegated (NS) in {where}: {ns}"
            return f"lies below the delegation {cut} in {where}: {ns}"
        by_type = self.records.get(name)
        if by_type:
            return f"is also a name in {where}: {_text(next(iter(by_type.values()))[0])}"
        if name in self.names:                          # an empty non-terminal
            below = sorted(n for n in self.records if n.endswith("." + name))[0]
            rr = next(iter(self.records[below].values()))[0]
            return f"is also a name in {where}, above {below}: {_text(rr)}"
        return None

    def glue(self, cut: str) -> list[RR]:
        """Addresses for the NS targets of a cut that this zone holds: the glue below the cut,
        and the addresses of in-zone targets elsewhere (RFC 9471: in-domain and sibling glue)."""
        out = []
        for ns in self.rrset(cut, NS):
            target = norm(ns.rdata.label)
            if self.contains(target):
                out += self.rrset(target, A) + self.rrset(target, AAAA)
        return out

    def lookup(self, qname: str, qtype: int, dynamic=lambda name, qtype: False) -> Lookup:
        """RFC 1034 4.3.2 step 3 for `qname` (normalised, inside the zone) and `qtype`.

        `dynamic(name, qtype)` tells which names the server answers from the mirror table; a chain
        that reaches one ends with `Lookup.dynamic` set. Owners of records synthesised from a
        wildcard are the name asked for (RFC 4592 3.3.1), which may be `qname` itself.
        """
        answer: list[tuple[str, RR]] = []
        name, seen = qname, set()
        while True:
            cut = self.cut_for(name)
            if cut is not None and not (name == cut and qtype == DS):
                return Lookup(bool(answer), NOERROR, tuple(answer), referral=cut)
            if name in self.names:
                rrsets = self.records.get(name, {})
            else:
                ce = self.closest_encloser(name)
                rrsets = self.records.get("*." + ce)
                if rrsets is None:
                    return Lookup(True, NXDOMAIN, tuple(answer), negative=True)
            cname = rrsets.get(CNAME)
            if cname and qtype not in (CNAME, ANY):
                answer.append((name, cname[0]))
                seen.add(name)
                target = norm(cname[0].rdata.label)
                if target in seen or len(seen) >= MAX_CHAIN or not self.contains(target):
                    return Lookup(True, NOERROR, tuple(answer))
                if dynamic(target, qtype):
                    return Lookup(True, NOERROR, tuple(answer), dynamic=target)
                name = target
                continue
            if qtype == ANY:                   # RFC 8482: the CNAME, or one synthesised record
                return Lookup(True, NOERROR, tuple(answer) + tuple((name, r) for r in cname or ()),
                              minimal_any=not cname)
            rrs = rrsets.get(qtype)
            if rrs:
                return Lookup(True, NOERROR, tuple(answer) + tuple((name, r) for r in rrs))
            return Lookup(True, NOERROR, tuple(answer), negative=True)


NOERROR, NXDOMAIN = 0, 3


def _text(rr: RR) -> str:
    """One record as a line of a zone file: 'de1.example.org. 300 IN A 192.0.2.1'."""
    return f"{rr.rname} {rr.ttl} IN {QTYPE.get(rr.rtype)} {rr.rdata.toZone()}"


@dataclass(frozen=True)
class Lookup:
    """What the zone answers for one (name, type), before encoding.

    `answer` holds (owner, record) pairs: the owner is the name the record is served under (the
    asked name for a wildcard match). `negative`: the SOA goes in the authority section (NXDOMAIN
    or NODATA). `referral`: the cut whose NS records go in the authority section, their glue in
    the additional one. `dynamic`: the generated name a CNAME chain ends at. `minimal_any`: the
    one record RFC 8482 lets an ANY query get.
    """

    aa: bool
    rcode: int
    answer: tuple = ()
    negative: bool = False
    referral: str | None = None
    dynamic: str | None = None
    minimal_any: bool = False


def _logical_records(text: str):
    """Yield (line number, text) per logical record: comments dropped, parentheses joined.

    The text keeps its leading whitespace (an owner inherited from the previous record).
    """
    buf: list[str] = []
    start = 0
    depth = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        out = []
        quoted = False
        i = 0
        while i < len(line):
            ch = line[i]
            if ch == "\\" and quoted and i + 1 < len(line):
                out.append(line[i:i + 2])
                i += 2
                continue
            if ch == '"':
                quoted = not quoted
            elif not quoted and ch == ";":
                break
            elif not quoted and ch == "(":
                depth += 1
                ch = " "
            elif not quoted and ch == ")":
                depth -= 1
                if depth < 0:
                    raise ZoneError(f"{lineno}: ')' without '('")
                ch = " "
            out.append(ch)
            i += 1
        piece = "".join(out)
        if not buf:
            if not piece.strip():
                continue
            start = lineno
        buf.append(piece if not buf else " " + piece.strip())
        if depth == 0:
            yield start, "".join(buf).rstrip()
            buf = []
    if buf:
        raise ZoneError(f"{start}: '(' not closed")


def parse_zone(text: str, origin: str, fname: str = "<zone>", default_ttl: int = 3600) -> Zone:
    zone = norm(origin)
    cur_origin = zone + "."
    ttl = default_ttl
    last_owner: str | None = None
    records: dict[str, dict[int, list[RR]]] = {}
    try:
        entries = list(_logical_records(text))
    except ZoneError as e:
        raise ZoneError(f"{fname}:{e}") from None
    for lineno, rec in entries:
        where = f"{fname}:{lineno}"
        stripped = rec.strip()
        if stripped.startswith("$"):
            parts = stripped.split()
            d = parts[0].upper()
            if d == "$ORIGIN" and len(parts) == 2:
                o = parts[1]
                cur_origin = o if o.endswith(".") else f"{o}.{cur_origin}"
                continue
            if d == "$TTL" and len(parts) == 2 and parts[1].isdigit():
                ttl = int(parts[1])
                continue
            raise ZoneError(f"{where}: unsupported or malformed directive '{stripped}'")
        if rec[0] in " \t":
            if last_owner is None:
                raise ZoneError(f"{where}: record without an owner name: '{stripped}'")
            rec = last_owner + " " + stripped
        else:
            last_owner = rec.split()[0]
            if not last_owner.endswith(".") and last_owner != "@":
                last_owner = f"{last_owner}.{cur_origin}"     # inherit the absolute name
            elif last_owner == "@":
                last_owner = cur_origin
        try:
            rrs = RR.fromZone(rec, origin=cur_origin, ttl=ttl)
        except Exception as e:
            msg = str(e) or type(e).__name__
            raise ZoneError(f"{where}: bad record '{stripped}': {msg}") from None
        if len(rrs) != 1:
            raise ZoneError(f"{where}: could not read one record from '{stripped}'")
        rr = rrs[0]
        name = norm(rr.rname)
        if name != zone and not name.endswith("." + zone):
            raise ZoneError(f"{where}: '{name}' is outside the zone {zone}")
        if rr.rclass != 1:
            raise ZoneError(f"{where}: only class IN is served")
        records.setdefault(name, {}).setdefault(rr.rtype, []).append(rr)
        if rr.rtype == SOA and name != zone:
            raise ZoneError(f"{where}: SOA must be at the apex {zone}, not {name}")
    apex = records.get(zone, {})
    if len(apex.get(SOA, [])) != 1:
        raise ZoneError(f"{fname}: the apex {zone} needs exactly one SOA record "
                        f"(found {len(apex.get(SOA, []))})")
    if not apex.get(NS):
        raise ZoneError(f"{fname}: the apex {zone} needs at least one NS record")
    for name, by_type in records.items():
        if CNAME in by_type and (len(by_type) > 1 or len(by_type[CNAME]) > 1):
            raise ZoneError(f"{fname}: {name} has a CNAME and other data")
    cuts = _check_cuts(records, zone, fname)
    names = set()
    for name in records:
        n = name
        while True:
            names.add(n)
            if n == zone:
                break
            n = n.split(".", 1)[1]
    return Zone(zone, apex[SOA][0], records, names, fname, cuts)


def _check_cuts(records: dict, zone: str, fname: str) -> frozenset:
    """The delegation points, after the checks listed in the module docstring."""
    cuts = {n for n, by_type in records.items() if NS in by_type and n != zone}
    for name, by_type in records.items():
        if DNAME in by_type:
            raise ZoneError(f"{fname}: {name}: DNAME records are not supported")
        if name.startswith("*.") and NS in by_type:
            raise ZoneError(f"{fname}: {name}: a wildcard cannot own NS records (RFC 4592 4.2)")
        if DS in by_type and name not in cuts:
            raise ZoneError(f"{fname}: {name}: DS records belong at a delegation point "
                            f"(a name with NS records below the apex)")
        above = name.split(".", 1)[1] if "." in name else zone
        parent_cut = None
        while above != zone and "." in above:
            if above in cuts:
                parent_cut = above
                break
            above = above.split(".", 1)[1]
        if parent_cut is not None:
            if name in cuts:
                raise ZoneError(f"{fname}: {name}: a delegation below the delegation {parent_cut}")
            extra = set(by_type) - _GLUE
            if extra:
                types = ", ".join(sorted(QTYPE.get(t) for t in extra))
                raise ZoneError(f"{fname}: {name}: only glue (A, AAAA) may be below the "
                                f"delegation {parent_cut}, not {types}")
        elif name in cuts:
            extra = set(by_type) - _AT_CUT
            if extra:
                types = ", ".join(sorted(QTYPE.get(t) for t in extra))
                raise ZoneError(f"{fname}: {name} is delegated (NS): only NS, DS and glue may be "
                                f"there, not {types}")
    for cut in sorted(cuts):
        for ns in records[cut][NS]:
            target = norm(ns.rdata.label)
            if (target == cut or target.endswith("." + cut)) and not (
                    set(records.get(target, {})) & _GLUE):
                raise ZoneError(f"{fname}: {cut} is delegated to {target}, which is below the "
                                f"delegation and has no glue (A or AAAA records)")
    return frozenset(cuts)


def load_zone(path: str | Path, origin: str) -> Zone:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ZoneError(f"{p}: zone file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ZoneError(f"{p}: cannot read zone file: {e}") from None
    return parse_zone(text, origin, str(p))


def default_zone(origin: str) -> Zone:
    """The zone when `[dns] zone_file` is empty: SOA and NS at the apex, nothing else."""
    z = norm(origin)
    return parse_zone(
        "$TTL 3600\n@ SOA ns1 hostmaster ( 1 3600 600 604800 60 )\n@ NS ns1\n",
        z, "<built-in zone>")


def zone_for(cfg):
    """(Zone, path or None) as configured: `[dns] zone_file` resolved against the config file's
    folder, or the built-in SOA/NS when it is empty. Raises ZoneError."""
    if not cfg.dns.zone_file:
        return default_zone(cfg.dns.zone), None
    path = cfg.resolve_path(cfg.dns.zone_file)
    return load_zone(path, cfg.dns.zone), path
