"""The resolution plan: an immutable snapshot of who may serve, built from the mirror table.

`load_rows(conn)` reads everything in one read transaction and returns plain dicts; `build_plan(rows,
cfg, now)` is pure (no DB, no clock, no files), so the DNS server, the closer and `mirrorctl resolve`
all decide from the same data, and tests build plans from hand-written rows.

Serving = status active AND probes do not call it failing AND in sync AND (per family, at pick time)
an address of that family that is not known to be down. Every mirror that does not serve keeps the
reason in words ("out of sync 31 h", "3 failed probes", "disabled by admin: hardware move").

A mirror never probed yet (no `mirror_health` row, or no probe recorded) serves: an admin who
activates a mirror has vouched for it, and the probes will disable it within `fail_after` rounds if
it is broken. Once probed, it needs a readable timestamp (`last_sync_at`) within `max_sync_age`;
with probes enabled, a mirror whose probes have failed and never once succeeded does not serve.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa

from dnsd import countries, models
from dnsd.score import Score, ScoreInputs, compute

_MIRROR_COLS = (
    "id", "name", "hostname", "country", "ipv4", "ipv6", "http_url", "https_url", "ftp_url",
    "rsync_url", "status", "status_reason", "backup", "weight", "bandwidth_mbit", "cores",
    "memory_gb", "disk_gb", "has_ipv6", "has_https", "provider_name", "provider_url",
    "provider_logo",
)
_HEALTH_COLS = (
    "failures_in_row", "passes_in_row", "last_probe_at", "last_ok_at", "last_error",
    "last_sync_at", "ipv4_up", "ipv6_up", "https_ok", "uptime_7d", "rtt_p95_ms",
)


def load_rows(conn: sa.Connection) -> dict:
    """Everything the plan needs, as plain data, from one read transaction."""
    m, h = models.mirrors, models.mirror_health
    q = (
        sa.select(*[m.c[c] for c in _MIRROR_COLS], *[h.c[c] for c in _HEALTH_COLS])
        .select_from(m.outerjoin(h, h.c.mirror_id == m.c.id))
        .order_by(m.c.id)
    )
    rows = [dict(r._mapping) for r in conn.execute(q)]
    return {"version": models.current_version(conn), "mirrors": rows}


def load_version(conn: sa.Connection) -> int:
    return models.current_version(conn)


def fmt_age(seconds: float | None) -> str:
    """'90 s', '45 min', '31 h', '5 days': the way an admin says how old something is.

    One wording for plan reasons, probe output and mails (probes and admin import it from here)."""
    if seconds is None:
        return "unknown"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 2 * 3600:
        return f"{s // 60} min"
    if s < 72 * 3600:
        return f"{s // 3600} h"
    return f"{s // 86400} days"


@dataclass(frozen=True)
class MirrorEntry:
    """One mirror as the picker sees it (plain, immutable, cheap to compare)."""

    id: int
    name: str | None
    hostname: str
    country: str
    continent: str | None
    subregion: str | None
    lat: float | None
    lon: float | None
    ipv4: str | None
    ipv6: str | None
    ipv4_up: bool | None
    ipv6_up: bool | None
    http: str | None
    https: str | None
    ftp: str | None
    rsync: str | None
    backup: bool
    status: str
    serving: bool
    reason: str                      # why it does not serve ("" when serving)
    score: float
    score_detail: Score = field(compare=False, repr=False)   # the factors, for explanations
    sync_age: float | None = None    # seconds, None = unknown
    provider_name: str = ""          # display only (closer's [link]/[logo], public list)
    provider_url: str = ""
    provider_logo: str = ""

    @property
    def score_explain(self) -> str:
        return self.score_detail.explain()

    @property
    def urls(self) -> dict[str, str]:
        return {p: u for p in ("http", "https", "ftp", "rsync") if (u := getattr(self, p))}

    def url(self, protocol: str) -> str | None:
        return getattr(self, protocol, None)

    def family_problem(self, family: str | None) -> str:
        """'' when the mirror can be named in an answer of this family, else why not."""
        if family == "A":
            if not self.ipv4:
                return "no IPv4 address"
            if self.ipv4_up is False:
                return "IPv4 down"
        elif family == "AAAA":
            if not self.ipv6:
                return "no IPv6 address"
            if self.ipv6_up is False:
                return "IPv6 down"
        return ""

    @property
    def label(self) -> str:
        return self.name or self.hostname


@dataclass(frozen=True)
class ResolutionPlan:
    version: int
    built_at: _dt.datetime
    zone: str
    ttl: int
    answers: int
    min_candidates: int
    share_cap: float
    distance_weighting: bool
    mirrors: tuple[MirrorEntry, ...]
    by_name: Mapping[str, MirrorEntry] = field(repr=False)
    by_id: Mapping[int, MirrorEntry] = field(repr=False)
    pools: Mapping[tuple, tuple[MirrorEntry, ...]] = field(repr=False)
    countries_served: frozenset = field(repr=False, default=frozenset())

    def pool(self, family, level, key) -> tuple[MirrorEntry, ...]:
        """Serving, family-reachable mirrors of one tier (backups only in level 'backup')."""
        return self.pools.get((family, level, key), ())

    @property
    def serving(self) -> tuple[MirrorEntry, ...]:
        return tuple(e for e in self.mirrors if e.serving)

    @property
    def excluded(self) -> tuple[tuple[MirrorEntry, str], ...]:
        return tuple((e, e.reason) for e in self.mirrors if not e.serving)

    def mirror(self, name: str) -> MirrorEntry | None:
        return self.by_name.get(name.lower())


def _serving(row: dict, cfg, now: _dt.datetime) -> tuple[bool, str, float | None]:
    """(serving, reason, sync_age seconds) for one joined mirror/health row."""
    status = row["status"]
    sync_at = row.get("last_sync_at")
    age = None if sync_at is None else max(0.0, (now - sync_at).total_seconds())
    why = (row.get("status_reason") or "").strip()
    if status == models.DISABLED_ADMIN:
        return False, "disabled by admin" + (f": {why}" if why else ""), age
    if status == models.DISABLED_PROBES:
        return False, "disabled by probes" + (f": {why}" if why else ""), age
    if status == models.PENDING:
        return False, "pending, not active yet", age
    if status == models.RETIRED:
        return False, "retired", age
    if status != models.ACTIVE:
        return False, f"status {status}", age
    probes_on = cfg.probes.enabled
    fails = row.get("failures_in_row") or 0
    if probes_on and fails >= cfg.probes.fail_after:
        err = (row.get("last_error") or "").strip()
        return False, f"{fails} failed probes" + (f" ({err})" if err else ""), age
    if (row.get("weight") or 0) <= 0:
        return False, "admin weight 0", age
    if age is None:
        probed = row.get("last_probe_at") is not None
        if probes_on and probed and fails > 0 and row.get("last_ok_at") is None:
            return False, "no successful probe yet", age
        return True, "", age                      # never probed: serves (see module docstring)
    if age > cfg.dns.max_sync_age:
        return False, f"out of sync {fmt_age(age)}", age
    return True, "", age


def _entry(row: dict, cfg, now: _dt.datetime) -> MirrorEntry:
    cc = (row["country"] or "").upper()
    c = countries.get(cc) if cc else None
    serving, reason, age = _serving(row, cfg, now)
    sc = compute(
        ScoreInputs(
            bandwidth_mbit=row.get("bandwidth_mbit"), cores=row.get("cores"),
            memory_gb=row.get("memory_gb"), has_https=bool(row.get("has_https")),
            has_ipv6=bool(row.get("has_ipv6")), uptime_7d=row.get("uptime_7d"),
            rtt_p95_ms=row.get("rtt_p95_ms"), sync_age=age,
            weight=float(row.get("weight") if row.get("weight") is not None else 1.0),
        ),
        cfg.dns.max_sync_age,
    )
    name = row.get("name")
    return MirrorEntry(
        id=int(row["id"]), name=name.lower() if name else None, hostname=row["hostname"],
        country=cc, continent=c.continent if c else None, subregion=c.subregion if c else None,
        lat=c.lat if c else None, lon=c.lon if c else None,
        ipv4=row.get("ipv4") or None, ipv6=row.get("ipv6") or None,
        ipv4_up=row.get("ipv4_up"), ipv6_up=row.get("ipv6_up"),
        http=row.get("http_url") or None, https=row.get("https_url") or None,
        ftp=row.get("ftp_url") or None, rsync=row.get("rsync_url") or None,
        backup=bool(row.get("backup")), status=row["status"], serving=serving, reason=reason,
        score=sc.total, score_detail=sc, sync_age=age,
        provider_name=row.get("provider_name") or "", provider_url=row.get("provider_url") or "",
        provider_logo=row.get("provider_logo") or "",
    )


def build_plan(rows: dict, cfg, now: _dt.datetime) -> ResolutionPlan:
    """Pure: rows from load_rows (or a test), the Config, naive-UTC now -> ResolutionPlan."""
    entries = tuple(_entry(r, cfg, now) for r in rows["mirrors"])
    pools: dict[tuple, list[MirrorEntry]] = {}
    for e in entries:
        if not e.serving:
            continue
        for fam in (None, "A", "AAAA"):
            if e.family_problem(fam):
                continue
            if e.backup:
                pools.setdefault((fam, "backup", None), []).append(e)
                continue
            pools.setdefault((fam, "world", None), []).append(e)
            pools.setdefault((fam, "country", e.country), []).append(e)
            if e.subregion:
                pools.setdefault((fam, "subregion", e.subregion), []).append(e)
            if e.continent:
                pools.setdefault((fam, "continent", e.continent), []).append(e)
    by_name = {e.name: e for e in entries if e.name and e.status != models.RETIRED}
    d = cfg.dns
    return ResolutionPlan(
        version=int(rows.get("version", 0)),
        built_at=now,
        zone=d.zone.lower().rstrip("."),
        ttl=d.ttl,
        answers=d.answers,
        min_candidates=d.min_candidates,
        share_cap=d.share_cap,
        distance_weighting=d.distance_weighting,
        mirrors=entries,
        by_name=MappingProxyType(by_name),
        by_id=MappingProxyType({e.id: e for e in entries}),
        pools=MappingProxyType({k: tuple(v) for k, v in pools.items()}),
        countries_served=frozenset(e.country for e in entries if e.serving),
    )


def empty_plan(cfg, now: _dt.datetime | None = None) -> ResolutionPlan:
    return build_plan({"version": 0, "mirrors": []}, cfg, now or models.utcnow())


def row(**kw: Any) -> dict:
    """A mirror row with defaults, for tests and tools that build plans without a table."""
    base = {
        "id": 1, "name": None, "hostname": "mirror.example", "country": "DE", "ipv4": None,
        "ipv6": None, "http_url": None, "https_url": None, "ftp_url": None, "rsync_url": None,
        "status": models.ACTIVE, "status_reason": "", "backup": False, "weight": 1.0,
        "bandwidth_mbit": None, "cores": None, "memory_gb": None, "disk_gb": None,
        "has_ipv6": False, "has_https": False, "failures_in_row": 0, "passes_in_row": 0,
        "last_probe_at": None, "last_ok_at": None, "last_error": "", "last_sync_at": None,
        "ipv4_up": None, "ipv6_up": None, "https_ok": None, "uptime_7d": None, "rtt_p95_ms": None,
        "provider_name": "", "provider_url": "", "provider_logo": "",
    }
    unknown = set(kw) - set(base)
    if unknown:
        raise TypeError(f"unknown mirror row keys: {sorted(unknown)}")
    base.update(kw)
    if base["http_url"] is None and base["hostname"]:
        base["http_url"] = f"http://{base['hostname']}/"
    return base
