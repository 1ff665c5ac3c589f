"""`mirrorctl resolve NAME [--client IP] [--type A|AAAA]`: the server's answer, explained.

The answer is produced by the real answer path (a wire table compiled from the plan, the Answerer,
the client address as the query's source), so it is what the server would say; the explanation
(tier, candidates with their share, and for every mirror not chosen, why) comes from the picker on
the same plan, like Mirrorbits' `?mirrorlist`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from dnslib import QTYPE, RCODE, DNSRecord

from dnsd.answer import CONTINENT_LABELS, KNOWN_KEYS, Answerer, compile_table
from dnsd.picker import Location, candidates, exclusion_reason


@dataclass
class Resolution:
    name: str
    qtype: str
    client: str | None
    location: Location | None
    kind: str                              # static | mirror | country | continent | geo | none
    rcode: str
    answers: list[str]                     # "de1.zone. 150 IN A 192.0.2.1"
    tier: str = ""
    candidates: list[tuple] = field(default_factory=list)     # (entry, share 0..1)
    not_chosen: list[tuple] = field(default_factory=list)     # (entry, why)
    note: str = ""


def _kind(plan, zone, cfg, name: str) -> tuple[str, Location | None, str]:
    z = plan.zone
    rel = name[: -len(z) - 1] if name.endswith("." + z) else ("" if name == z else None)
    if rel is None:
        return "none", None, "outside the zone"
    cut = zone.cut_for(name)
    if cut is not None:
        return "static", None, f"delegated: {cut} is a child zone (a referral)"
    if (name in zone.records or name in zone.names) and not (rel == "" and cfg.dns.apex_geo):
        return "static", None, "static record from the zone file"
    if rel == "" and cfg.dns.apex_geo:
        return "geo", None, "the apex, answered by client location"
    if rel in plan.by_name:
        return "mirror", None, f"the mirror {rel}'s own name"
    if rel == cfg.dns.geo_name:
        return "geo", None, "the geo name, answered by client location"
    if rel.upper() in KNOWN_KEYS:
        return "country", Location.of_country(rel), f"country name for {rel.upper()}"
    if cfg.dns.continent_names:
        for code, labels in CONTINENT_LABELS.items():
            if rel in labels:
                return "continent", Location.of_continent(code), f"continent name for {code}"
    ce = zone.closest_encloser(name)
    if "*." + ce in zone.records:
        return "static", None, f"matched by the wildcard *.{ce}"
    return "none", None, "no such name"


def resolve(plan, zone, cfg, geo, name: str, client: str | None = None,
            qtype: str = "A", rng=None) -> Resolution:
    name = name.rstrip(".").lower()
    if name != plan.zone and not name.endswith("." + plan.zone):
        name = f"{name}.{plan.zone}"           # "de" means de.<zone>
    table = compile_table(plan, zone, cfg, rng or random.Random())
    ans = Answerer(geo, table)
    q = DNSRecord.question(name, qtype)
    wire = ans.answer(bytes(q.pack()), client or "0.0.0.0", udp=False)
    reply = DNSRecord.parse(wire)
    kind, loc, note = _kind(plan, zone, cfg, name)
    if kind == "geo":
        loc = geo.location(client) if (client and geo is not None) else Location()
    res = Resolution(name, qtype, client, loc, kind, RCODE.get(reply.header.rcode),
                     [str(rr) for rr in reply.rr], note=note)
    if kind == "mirror":
        e = plan.by_name[name.split(".")[0]]
        res.note += "; " + ("serving" if e.serving else f"not serving: {e.reason}") + \
            " (its own name answers regardless)"
    if kind not in ("country", "continent", "geo"):
        return res
    family = qtype if qtype in ("A", "AAAA") else "A"
    tier, tkey, cands = candidates(plan, loc, family=family)
    res.tier = f"{tier} {tkey}" if tkey else tier
    total = sum(w for _e, w in cands) or 1.0
    res.candidates = [(e, w / total) for e, w in cands]
    answered = {str(rr.rdata) for rr in reply.rr}
    shares = {c.id: s for c, s in res.candidates}
    ranked = []
    for e in plan.mirrors:
        if e.id in shares:
            ip = e.ipv4 if family == "A" else e.ipv6
            if ip not in answered:
                why = f"candidate ({shares[e.id]:.0%} of the tier), not drawn this time"
                ranked.append((0, e, why))
        else:
            # what an admin looks for first: mirrors that do not serve, then the merely far away
            far = e.serving and not e.family_problem(family) and not e.backup
            ranked.append((2 if far else 1, e, exclusion_reason(e, family, None, tier, tkey)))
    ranked.sort(key=lambda t: (t[0], t[1].country, t[1].label))
    res.not_chosen = [(e, why) for _rank, e, why in ranked]
    return res


def format_resolution(r: Resolution) -> list[str]:
    out = [f"{r.name} {r.qtype}" + (f" for client {r.client}" if r.client else "")
           + (f" at {r.location.describe()}" if r.location is not None else "")]
    out.append(f"  {r.note}")
    if r.tier:
        out.append(f"  tier: {r.tier} ({len(r.candidates)} candidates)")
    out.append(f"answer: {r.rcode}")
    for a in r.answers:
        out.append(f"  {a}")
    if r.rcode == "NOERROR" and not r.answers:
        out.append("  (no records of this type: NODATA)")
    if r.candidates:
        out.append("candidates:")
        for e, share in r.candidates:
            out.append(f"  {e.label:<12} {e.country}  {share:6.1%}  score {e.score:.3f}")
    if r.not_chosen:
        out.append("not chosen:")
        for e, why in r.not_chosen:
            out.append(f"  {e.label:<12} {e.country}  {why}")
    return out


def qtype_ok(t: str) -> bool:
    return QTYPE.reverse.get(t.upper()) is not None


def run_resolve(cfg, engine, name: str, client: str | None, qtype: str) -> list[str]:
    """For the CLI: plan from the table (one read transaction), zone file, geo DB -> lines.

    Raises ValueError (bad client or type) and dnsd.zonefile.ZoneError with a clear message."""
    import ipaddress

    from dnsd import models
    from dnsd.geo import GeoLocator
    from dnsd.plan import build_plan, load_rows
    from dnsd.zonefile import zone_for

    if client is not None:
        try:
            ipaddress.ip_address(client)
        except ValueError:
            raise ValueError(f"--client: '{client}' is not an IP address") from None
    if not qtype_ok(qtype):
        raise ValueError(f"--type: unknown record type '{qtype}'")
    with engine.connect() as conn:
        rows = load_rows(conn)
    plan = build_plan(rows, cfg, models.utcnow())
    zone, _path = zone_for(cfg)
    geo = GeoLocator(str(cfg.resolve_path(cfg.geoip.database)) if cfg.geoip.database else "",
                     cfg.geoip.cache_size)
    try:
        return format_resolution(resolve(plan, zone, cfg, geo, name, client, qtype.upper()))
    finally:
        geo.close()
