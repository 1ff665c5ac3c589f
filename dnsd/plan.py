"""The resolution plan: an immutable snapshot of who may serve, built from the mirror table.

`load_rows(conn)` reads everything in one read transaction and returns the mirrors as records
(dnsd.records: a Mirror and its Health each); `build_plan(rows, cfg, now)` is pure (no DB, no
clock, no files), so the DNS server, the closer, the pages and `mirrorctl` all decide from the same
data, and tests build plans from hand-written rows (`row(...)`).

Whether a mirror serves, and why not, is dnsd.serving's rule; the plan records the verdict of every
mirror (`MirrorEntry.serving`, `.reason`) and groups the serving ones into the picker's pools.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa

from dnsd import countries, maintenance, models, serving
from dnsd.records import health as _health
from dnsd.records import maintenance as _maint
from dnsd.records import mirrors as _mirrors
from dnsd.records.health import Health
from dnsd.records.mirrors import Mirror
from dnsd.score import Score, compute, inputs
from dnsd.serving import fmt_age as fmt_age  # the wording's old home; kept importable


@dataclass(frozen=True)
class MirrorState:
    """One mirror as the plan reads it: the table's record, what the probes know, and its
    maintenance windows with a say from the time the rows were read (dnsd.records.maintenance)."""

    mirror: Mirror
    health: Health
    windows: tuple = ()

    def __getitem__(self, name: str):
        """st["name"], st["last_sync_at"]: a field of the mirror or of its health."""
        return getattr(self.mirror if name in Mirror.__dataclass_fields__ else self.health, name)

    def replace(self, **kw) -> MirrorState:
        """A copy with some mirror or health fields (or `windows`) changed (tests, tools)."""
        windows = tuple(kw.pop("windows", self.windows))
        m = {k: v for k, v in kw.items() if k in Mirror.__dataclass_fields__}
        h = {k: v for k, v in kw.items() if k not in m}
        return MirrorState(dataclasses.replace(self.mirror, **m),
                           dataclasses.replace(self.health, **h), windows)


def load_rows(conn: sa.Connection, now: _dt.datetime | None = None) -> dict:
    """Everything the plan needs, as records, from one read transaction. `now` (naive UTC,
    default the wall clock) only chooses which maintenance windows are still of interest: a plan
    built from these rows at `now` or later decides the same as one read then."""
    m, h = models.mirrors, models.mirror_health
    q = (
        sa.select(*_mirrors.COLUMNS, h.c.mirror_id.label("health_id"),
                  *[c for c in _health.COLUMNS])
        .select_from(m.outerjoin(h, h.c.mirror_id == m.c.id))
        .order_by(m.c.id)
    )
    windows = _maint.relevant(conn, now or models.utcnow())
    out = []
    for r in conn.execute(q):
        mr = _mirrors.from_row(r)
        out.append(MirrorState(mr, _health.from_join(r), windows.get(mr.id, ())))
    return {"version": models.current_version(conn), "mirrors": out}


def load_version(conn: sa.Connection) -> int:
    return models.current_version(conn)


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
    ipv4: str | None                 # what the DNS answers with: pinned, else resolved by a probe
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
    pinned: bool = True              # the addresses are the table's (else the probes resolved them)
    maintenance: str = ""            # dnsd.maintenance's phase now ("" when no window has a say)
    windows: tuple = ()              # its windows not ended yet (dnsd.records.maintenance.Window)

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
            return serving.family_problem(self.ipv4, self.ipv4_up, self.pinned, "A")
        if family == "AAAA":
            return serving.family_problem(self.ipv6, self.ipv6_up, self.pinned, "AAAA")
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
    # the next time a maintenance window changes a verdict (dnsd.maintenance.next_edge): the
    # plan must be rebuilt then, although nothing in the table changed
    next_change: _dt.datetime | None = None

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


def _entry(st: MirrorState, cfg, now: _dt.datetime) -> MirrorEntry:
    m, h = st.mirror, st.health
    cc = (m.country or "").upper()
    c = countries.get(cc) if cc else None
    v = serving.decide(m, h, cfg, now, st.windows)
    a = v.addresses
    sc = compute(inputs(m, h, v.sync_age), serving.max_sync_age(cfg))
    return MirrorEntry(
        id=int(m.id), name=m.name.lower() if m.name else None, hostname=m.hostname,
        country=cc, continent=c.continent if c else None, subregion=c.subregion if c else None,
        lat=c.lat if c else None, lon=c.lon if c else None,
        ipv4=a.ipv4, ipv6=a.ipv6, ipv4_up=a.ipv4_up, ipv6_up=a.ipv6_up,
        http=m.http_url or None, https=m.https_url or None,
        ftp=m.ftp_url or None, rsync=m.rsync_url or None,
        backup=bool(m.backup), status=m.status, serving=v.serving, reason=v.reason,
        score=sc.total, score_detail=sc, sync_age=v.sync_age,
        provider_name=m.provider_name or "", provider_url=m.provider_url or "",
        provider_logo=m.provider_logo or "", pinned=a.pinned,
        maintenance=v.maintenance.phase, windows=maintenance.upcoming(st.windows, now),
    )


def build_plan(rows: dict, cfg, now: _dt.datetime) -> ResolutionPlan:
    """Pure: rows from load_rows (MirrorState records, or `row(...)` in a test), the Config,
    naive-UTC now -> ResolutionPlan."""
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
        next_change=min(filter(None, (maintenance.next_edge(r.windows, now, d.ttl)
                                      for r in rows["mirrors"] if r.windows)), default=None),
    )


def empty_plan(cfg, now: _dt.datetime | None = None) -> ResolutionPlan:
    return build_plan({"version": 0, "mirrors": []}, cfg, now or models.utcnow())


_MIRROR_DEFAULTS = {
    "id": 1, "name": None, "hostname": "mirror.example", "country": "DE", "ipv4": None,
    "ipv6": None, "http_url": None, "https_url": None, "ftp_url": None, "rsync_url": None,
    "provider_name": "", "provider_url": "", "provider_logo": "", "status": models.ACTIVE,
    "status_reason": "", "status_since": _dt.datetime(2026, 1, 1), "backup": False, "weight": 1.0,
    "bandwidth_mbit": None, "cores": None, "memory_gb": None, "disk_gb": None, "has_ipv6": False,
    "has_https": False, "source": "", "created_at": _dt.datetime(2026, 1, 1),
    "updated_at": _dt.datetime(2026, 1, 1),
}
_HEALTH_FIELDS = {f.name for f in dataclasses.fields(Health)}


PROBED_AT = _dt.datetime(2026, 1, 1)


def row(**kw: Any) -> MirrorState:
    """A mirror and its health from flat keyword arguments, for tests and tools that build plans
    without a table. The defaults describe a mirror that works: active, an http URL of its host
    name, probed and passed (at PROBED_AT, sync time unknown); say `last_probe_at=None,
    last_ok_at=None` for one never probed. It has only the addresses given."""
    windows = tuple(kw.pop("windows", ()))
    unknown = set(kw) - set(_MIRROR_DEFAULTS) - _HEALTH_FIELDS
    if unknown:
        raise TypeError(f"unknown mirror row keys: {sorted(unknown)}")
    m = {**_MIRROR_DEFAULTS, **{k: v for k, v in kw.items() if k in _MIRROR_DEFAULTS}}
    if m["http_url"] is None and m["hostname"] and "http_url" not in kw:
        m["http_url"] = f"http://{m['hostname']}/"
    h = {"last_probe_at": PROBED_AT, "last_ok_at": PROBED_AT,
         **{k: v for k, v in kw.items() if k in _HEALTH_FIELDS}}
    return MirrorState(Mirror(**m), Health(**h), windows)
