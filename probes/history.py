"""Probe history: raw results, hourly and daily rollups, the score inputs, and the graph queries.

Raw rows (`probe_results`) are kept `[probes] keep_raw_days` (14); older ones become one
`probe_rollups` row per mirror and hour, and hourly rows older than `keep_hourly_days` (90) become one
row per day, kept `keep_daily_days` (400). A thousand mirrors probed every 5 minutes make 288,000 raw
rows a day, but a year of daily rows is 365,000 rows in all.

Raw and rolled-up rows never overlap in time (rolling up deletes what it summarised, in the same
transaction), so any window's uptime is the sum over all three kinds.

Everything here is a `thd(conn)` function for `pool.run` / `pool.run_readonly`, and returns plain data.
The buckets are computed in Python, not with date functions, so SQLite and PostgreSQL agree.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass

import sqlalchemy as sa

from dnsd.jobs import Job
from dnsd.models import mirror_health, probe_results, probe_rollups

HOUR = _dt.timedelta(hours=1)
DAY = _dt.timedelta(days=1)


def _floor_hour(t: _dt.datetime) -> _dt.datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _floor_day(t: _dt.datetime) -> _dt.datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


# --- rolling up ----------------------------------------------------------------------------------

class _Agg:
    __slots__ = ("age_max", "passes", "probes", "rtt_max", "rtt_n", "rtt_sum")

    def __init__(self):
        self.probes = self.passes = self.rtt_n = 0
        self.rtt_sum = 0.0
        self.rtt_max = None
        self.age_max = None

    def add(self, probes, passes, rtt_avg, rtt_n, rtt_max, age_max):
        self.probes += probes
        self.passes += passes
        if rtt_avg is not None and rtt_n:
            self.rtt_sum += rtt_avg * rtt_n
            self.rtt_n += rtt_n
        if rtt_max is not None:
            self.rtt_max = rtt_max if self.rtt_max is None else max(self.rtt_max, rtt_max)
        if age_max is not None:
            self.age_max = age_max if self.age_max is None else max(self.age_max, age_max)

    def values(self):
        return {"probes": self.probes, "passes": self.passes,
                    "rtt_avg_ms": self.rtt_sum / self.rtt_n if self.rtt_n else None,
                    "rtt_max_ms": self.rtt_max, "sync_age_max": self.age_max}


def _store(conn, period: str, aggs: dict) -> None:
    """Insert rollup rows, merging into a row that already exists for the same bucket."""
    for (mid, start), a in aggs.items():
        key = ((probe_rollups.c.mirror_id == mid) & (probe_rollups.c.period == period)
               & (probe_rollups.c.start == start))
        old = conn.execute(sa.select(probe_rollups).where(key)).mappings().first()
        if old:
            a.add(old["probes"], old["passes"], old["rtt_avg_ms"], old["passes"],
                  old["rtt_max_ms"], old["sync_age_max"])
            conn.execute(probe_rollups.update().where(key).values(**a.values()))
        else:
            conn.execute(probe_rollups.insert().values(mirror_id=mid, period=period, start=start,
                                                       **a.values()))


def rollup(conn: sa.Connection, cfg, now: _dt.datetime, max_hours: int = 48) -> dict:
    """Roll raw rows older than keep_raw_days into hours (at most `max_hours` hours per call, so
    one transaction stays small after a long stop), hours older than keep_hourly_days into days,
    and drop days older than keep_daily_days. Idempotent; safe to run at any time."""
    p = cfg.probes
    done = {"hours": 0, "days": 0, "raw_deleted": 0, "hourly_deleted": 0, "daily_deleted": 0}
    raw_cut = _floor_hour(now - _dt.timedelta(days=p.keep_raw_days))
    first = conn.execute(sa.select(sa.func.min(probe_results.c.at))
                         .where(probe_results.c.at < raw_cut)).scalar()
    if first is not None:
        end = min(raw_cut, _floor_hour(first) + max_hours * HOUR)
        aggs: dict = {}
        rows = conn.execute(sa.select(probe_results.c.mirror_id, probe_results.c.at,
                                      probe_results.c.ok, probe_results.c.total_ms,
                                      probe_results.c.sync_age)
                            .where(probe_results.c.at < end))
        for r in rows:
            a = aggs.setdefault((r.mirror_id, _floor_hour(r.at)), _Agg())
            rtt = r.total_ms if r.ok else None
            a.add(1, 1 if r.ok else 0, rtt, 1 if rtt is not None else 0, rtt, r.sync_age)
        _store(conn, "hour", aggs)
        done["hours"] = len(aggs)
        done["raw_deleted"] = conn.execute(
            probe_results.delete().where(probe_results.c.at < end)).rowcount
    hour_cut = _floor_day(now - _dt.timedelta(days=p.keep_hourly_days))
    hourly = conn.execute(sa.select(probe_rollups).where(probe_rollups.c.period == "hour",
                                                         probe_rollups.c.start < hour_cut)).mappings()
    aggs = {}
    for r in hourly:
        a = aggs.setdefault((r["mirror_id"], _floor_day(r["start"])), _Agg())
        a.add(r["probes"], r["passes"], r["rtt_avg_ms"], r["passes"], r["rtt_max_ms"],
              r["sync_age_max"])
    if aggs:
        _store(conn, "day", aggs)
        done["days"] = len(aggs)
        done["hourly_deleted"] = conn.execute(probe_rollups.delete().where(
            probe_rollups.c.period == "hour", probe_rollups.c.start < hour_cut)).rowcount
    day_cut = _floor_day(now - _dt.timedelta(days=p.keep_daily_days))
    done["daily_deleted"] = conn.execute(probe_rollups.delete().where(
        probe_rollups.c.period == "day", probe_rollups.c.start < day_cut)).rowcount
    return done


def maintenance_job(cfg) -> Job:
    """Roll-ups and score inputs run once per `[probes] stats_interval` across all probe nodes:
    two vantages rolling up the same raw rows at once would count them twice."""
    return Job("probe-history", _dt.timedelta(seconds=cfg.probes.stats_interval))


def maintain(conn: sa.Connection, cfg, now: _dt.datetime) -> dict:
    """One maintenance run (dnsd.jobs.run_once calls it): roll up, then refresh the score inputs."""
    done = rollup(conn, cfg, now)
    refresh_stats(conn, now)
    return done


# --- score inputs --------------------------------------------------------------------------------

def _counts_since(conn, since: _dt.datetime,
                  until: _dt.datetime | None = None) -> dict[int, list[int]]:
    """{mirror_id: [probes, passes]} over raw and rolled-up rows since `since` (and before
    `until`, when given)."""
    out: dict[int, list[int]] = {}
    raw_when = [probe_results.c.at >= since]
    rolled_when = [probe_rollups.c.start >= since]
    if until is not None:
        raw_when.append(probe_results.c.at < until)
        rolled_when.append(probe_rollups.c.start < until)
    raw = conn.execute(
        sa.select(probe_results.c.mirror_id, sa.func.count(),
                  sa.func.sum(sa.case((probe_results.c.ok, 1), else_=0)))
        .where(*raw_when).group_by(probe_results.c.mirror_id))
    for mid, n, ok in raw:
        out.setdefault(mid, [0, 0])
        out[mid][0] += int(n)
        out[mid][1] += int(ok or 0)
    rolled = conn.execute(
        sa.select(probe_rollups.c.mirror_id, sa.func.sum(probe_rollups.c.probes),
                  sa.func.sum(probe_rollups.c.passes))
        .where(*rolled_when).group_by(probe_rollups.c.mirror_id))
    for mid, n, ok in rolled:
        out.setdefault(mid, [0, 0])
        out[mid][0] += int(n or 0)
        out[mid][1] += int(ok or 0)
    return out


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def refresh_stats(conn: sa.Connection, now: _dt.datetime) -> int:
    """Recompute the score inputs in mirror_health: uptime over 24 h / 7 d / 30 d (share of passed
    probes) and the 50th/95th percentile of the total time of passed probes over 24 h.

    Called every few minutes by the history service, not on every probe: these numbers move slowly,
    and the DNS plan picks them up on its periodic rebuild (no version bump needed)."""
    windows = {"uptime_24h": DAY, "uptime_7d": 7 * DAY, "uptime_30d": 30 * DAY}
    counts = {col: _counts_since(conn, now - w) for col, w in windows.items()}
    rtts: dict[int, list[float]] = {}
    for mid, ms in conn.execute(
            sa.select(probe_results.c.mirror_id, probe_results.c.total_ms)
            .where(probe_results.c.at >= now - DAY, probe_results.c.ok,
                   probe_results.c.total_ms.is_not(None))):
        rtts.setdefault(mid, []).append(ms)
    ids = [r[0] for r in conn.execute(sa.select(mirror_health.c.mirror_id))]
    for mid in ids:
        vals = {}
        for col, c in counts.items():
            n, ok = c.get(mid, (0, 0))
            vals[col] = ok / n if n else None
        r = sorted(rtts.get(mid, []))
        vals["rtt_p50_ms"] = percentile(r, 0.50)
        vals["rtt_p95_ms"] = percentile(r, 0.95)
        conn.execute(mirror_health.update().where(mirror_health.c.mirror_id == mid).values(**vals))
    return len(ids)


# --- graph queries (the admin web calls these through pool.run_readonly) -----------------------

@dataclass(frozen=True)
class DayUptime:
    day: _dt.date
    probes: int
    passes: int

    @property
    def uptime(self) -> float | None:
        return self.passes / self.probes if self.probes else None


@dataclass(frozen=True)
class HourRtt:
    start: _dt.datetime
    probes: int
    passes: int
    rtt_avg_ms: float | None
    rtt_max_ms: float | None


def uptime_per_day(conn: sa.Connection, mirror_id: int, days: int = 90,
                   now: _dt.datetime | None = None) -> list[DayUptime]:
    """One entry per UTC day for the last `days` days (oldest first, today last); days without
    probes have probes=0 and uptime None."""
    from dnsd.models import utcnow

    now = now or utcnow()
    first = _floor_day(now) - (days - 1) * DAY
    buckets: dict[_dt.datetime, list[int]] = {first + i * DAY: [0, 0] for i in range(days)}
    for at, ok in conn.execute(sa.select(probe_results.c.at, probe_results.c.ok).where(
            probe_results.c.mirror_id == mirror_id, probe_results.c.at >= first)):
        b = buckets.get(_floor_day(at))
        if b is not None:
            b[0] += 1
            b[1] += 1 if ok else 0
    for start, n, ok in conn.execute(
            sa.select(probe_rollups.c.start, probe_rollups.c.probes, probe_rollups.c.passes).where(
                probe_rollups.c.mirror_id == mirror_id, probe_rollups.c.start >= first)):
        b = buckets.get(_floor_day(start))
        if b is not None:
            b[0] += n
            b[1] += ok
    return [DayUptime(d.date(), n, ok) for d, (n, ok) in buckets.items()]


def rtt_per_hour(conn: sa.Connection, mirror_id: int, hours: int = 168,
                 now: _dt.datetime | None = None) -> list[HourRtt]:
    """One entry per UTC hour for the last `hours` hours (oldest first): probes, passes, and the
    average and maximum total time of the passed probes (None when none passed)."""
    from dnsd.models import utcnow

    now = now or utcnow()
    first = _floor_hour(now) - (hours - 1) * HOUR
    aggs = {first + i * HOUR: _Agg() for i in range(hours)}
    for at, ok, ms in conn.execute(
            sa.select(probe_results.c.at, probe_results.c.ok, probe_results.c.total_ms).where(
                probe_results.c.mirror_id == mirror_id, probe_results.c.at >= first)):
        a = aggs.get(_floor_hour(at))
        if a is not None:
            rtt = ms if ok else None
            a.add(1, 1 if ok else 0, rtt, 1 if rtt is not None else 0, rtt, None)
    for r in conn.execute(sa.select(probe_rollups).where(
            probe_rollups.c.mirror_id == mirror_id, probe_rollups.c.period == "hour",
            probe_rollups.c.start >= first)).mappings():
        a = aggs.get(r["start"])
        if a is not None:
            a.add(r["probes"], r["passes"], r["rtt_avg_ms"], r["passes"], r["rtt_max_ms"], None)
    out = []
    for start, a in aggs.items():
        v = a.values()
        out.append(HourRtt(start, v["probes"], v["passes"], v["rtt_avg_ms"], v["rtt_max_ms"]))
    return out


def recent_results(conn: sa.Connection, mirror_id: int, limit: int = 20) -> list[dict]:
    """The latest raw results, newest first, as plain dicts (for the mirror page and `show`)."""
    rows = conn.execute(sa.select(probe_results).where(probe_results.c.mirror_id == mirror_id)
                        .order_by(probe_results.c.at.desc(), probe_results.c.id.desc())
                        .limit(limit)).mappings().all()
    return [dict(r) for r in rows]


def recent_by_vantage(conn: sa.Connection, mirror_id: int,
                      per_vantage: int = 10) -> dict[str, list[dict]]:
    """{vantage: its latest raw results, newest first}, vantages by name: what each probe node
    saw of the mirror lately (the maintainer's page)."""
    c = probe_results.c
    names = conn.execute(sa.select(c.vantage).distinct().where(c.mirror_id == mirror_id)
                         .order_by(c.vantage)).scalars().all()
    return {v: [dict(r) for r in conn.execute(
                sa.select(probe_results).where(c.mirror_id == mirror_id, c.vantage == v)
                .order_by(c.at.desc(), c.id.desc()).limit(per_vantage)).mappings()]
            for v in names}


# --- the network as a whole (the status page, the admin's network overview) --------------------

@dataclass(frozen=True)
class RecentProbe:
    at: _dt.datetime
    ok: bool
    sync_age: int | None
    error_class: str


def recent_by_mirror(conn: sa.Connection, since: _dt.datetime,
                     per_mirror: int) -> dict[int, list[RecentProbe]]:
    """{mirror_id: the latest `per_mirror` raw results since `since`, oldest first} for every
    mirror at once: one query, bounded by the time window and the count per mirror (a window
    function, which SQLite and PostgreSQL both have), for the status page's history bars."""
    r = probe_results.c
    rn = sa.func.row_number().over(partition_by=r.mirror_id,
                                   order_by=(r.at.desc(), r.id.desc())).label("rn")
    inner = (sa.select(r.mirror_id, r.at, r.ok, r.sync_age, r.error_class, rn)
             .where(r.at >= since).subquery())
    out: dict[int, list[RecentProbe]] = {}
    for row in conn.execute(sa.select(inner).where(inner.c.rn <= per_mirror)
                            .order_by(inner.c.mirror_id, inner.c.at, inner.c.rn.desc())):
        out.setdefault(row.mirror_id, []).append(
            RecentProbe(row.at, bool(row.ok), row.sync_age, row.error_class or ""))
    return out


@dataclass(frozen=True)
class NetworkDay:
    """One UTC day of the whole network: each probed mirror's (probes, passes) that day."""

    day: _dt.date
    per_mirror: tuple[tuple[int, int, int], ...]     # (mirror_id, probes, passes)

    @property
    def probes(self) -> int:
        return sum(n for _m, n, _ok in self.per_mirror)

    @property
    def passes(self) -> int:
        return sum(ok for _m, _n, ok in self.per_mirror)


def network_day(conn: sa.Connection, day: _dt.date) -> NetworkDay:
    """Raw and rolled-up results of one day together (they never overlap), grouped per mirror
    by the database, one indexed time range per day."""
    start = _dt.datetime.combine(day, _dt.time())
    counts = _counts_since(conn, start, start + DAY)
    return NetworkDay(day, tuple(sorted((mid, n, ok) for mid, (n, ok) in counts.items() if n)))
