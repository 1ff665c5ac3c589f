"""Static zone data (SOA, NS, apex records, MX, TXT, static names) from an RFC 1035 master file.

Records are parsed with `dnslib.RR.fromZone`, one logical record at a time, so an error names the
file and line ("zones/m.zone:12: bad record 'foo IN MX mail': ..."); dnslib alone gives neither.
`$ORIGIN`, `$TTL`, `@`, relative names, owners inherited from the previous record and parenthesised
multi-line records are handled here; `$INCLUDE` and `$GENERATE` are refused. After parsing, the
apex must have exactly one SOA and at least one NS, and every name must lie inside the zone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dnslib import QTYPE, RR

SOA, NS, CNAME = QTYPE.SOA, QTYPE.NS, QTYPE.CNAME


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

    def rrset(self, name: str, qtype: int) -> list[RR]:
        return self.records.get(name, {}).get(qtype, [])


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
    names = set()
    for name in records:
        n = name
        while True:
            names.add(n)
            if n == zone:
                break
            n = n.split(".", 1)[1]
    return Zone(zone, apex[SOA][0], records, names, fname)


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
