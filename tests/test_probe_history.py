"""Probe history: rollups keep totals, stats feed the score, graph queries see all three kinds."""

from __future__ import annotations

import datetime as _dt

import sqlalchemy as sa

from dnsd.config import Config, ProbesConfig
from dnsd.models import mirror_health, probe_results, probe_rollups
from dnsd.score import ScoreInputs, compute
from probes import history
from tests.probe_support import add_mirror

NOW = _dt.datetime(2026, 11, 21, 12, 30)
CFG = Config(probes=ProbesConfig(keep_raw_days=14, keep_hourly_days=90, keep_daily_days=400))


def fill(engine, mid, days, every_min=60, fail_every=4, rtt=100.0):
    """One probe every `every_min` minutes for `days` days back from NOW; every 4th one fails."""
    rows = []
    t = NOW - _dt.timedelta(days=days)
    i = 0
    while t < NOW:
        ok = i % fail_every != 0
        rows.append({"mirror_id": mid, "at": t, "url": "http://x/TIME", "ok": ok,
                         "total_ms": rtt + i % 10 if ok else None, "sync_age": 600,
                         "error_class": "" if ok else "timeout"})
        t += _dt.timedelta(minutes=every_min)
        i += 1
    with engine.begin() as c:
        c.execute(probe_results.insert(), rows)
        c.execute(mirror_health.insert().values(mirror_id=mid))
    return rows


def totals(engine, mid):
    with engine.connect() as c:
        raw = c.execute(sa.select(sa.func.count(), sa.func.sum(sa.case((probe_results.c.ok, 1),
                                                                       else_=0)))
                        .where(probe_results.c.mirror_id == mid)).one()
        rolled = c.execute(sa.select(sa.func.sum(probe_rollups.c.probes),
                                     sa.func.sum(probe_rollups.c.passes))
                           .where(probe_rollups.c.mirror_id == mid)).one()
    return (raw[0] + (rolled[0] or 0), (raw[1] or 0) + (rolled[1] or 0))


def test_rollup_keeps_totals_and_shrinks_the_table(engine):
    with engine.begin() as c:
        mid = add_mirror(c)
    rows = fill(engine, mid, days=120)
    before = (len(rows), sum(r["ok"] for r in rows))
    done = {"hours": 1}
    with engine.begin() as c:
        while done["hours"]:
            done = history.rollup(c, CFG, NOW, max_hours=24 * 200)
    assert totals(engine, mid) == before
    with engine.connect() as c:
        oldest_raw = c.execute(sa.select(sa.func.min(probe_results.c.at))).scalar()
        kinds = dict(c.execute(sa.select(probe_rollups.c.period, sa.func.count())
                               .group_by(probe_rollups.c.period)).all())
    assert oldest_raw >= NOW - _dt.timedelta(days=14, hours=1)
    assert kinds["day"] <= 31 and kinds["hour"] <= 77 * 24
    with engine.begin() as c:                 # idempotent
        again = history.rollup(c, CFG, NOW)
    assert again == {"hours": 0, "days": 0, "raw_deleted": 0, "hourly_deleted": 0,
                     "daily_deleted": 0}


def test_rollup_in_small_steps_after_a_long_stop(sqlite_engine):
    with sqlite_engine.begin() as c:
        mid = add_mirror(c)
    rows = fill(sqlite_engine, mid, days=20, every_min=30)
    steps = 0
    while True:
        with sqlite_engine.begin() as c:
            d = history.rollup(c, CFG, NOW, max_hours=48)
        if not d["hours"]:
            break
        steps += 1
    assert steps == 3                          # 6 days of backlog, 2 days a step
    assert totals(sqlite_engine, mid) == (len(rows), sum(r["ok"] for r in rows))


def test_stats_and_graphs_span_raw_and_rollups(engine):
    with engine.begin() as c:
        mid = add_mirror(c)
        quiet = add_mirror(c, name="de2")
    fill(engine, mid, days=40)
    with engine.begin() as c:
        c.execute(mirror_health.insert().values(mirror_id=quiet))
        history.rollup(c, CFG, NOW, max_hours=24 * 60)
        assert history.refresh_stats(c, NOW) == 2
    with engine.connect() as c:
        h = c.execute(sa.select(mirror_health).where(mirror_health.c.mirror_id == mid)).mappings().one()
        q = c.execute(sa.select(mirror_health).where(mirror_health.c.mirror_id == quiet)).mappings().one()
        days = history.uptime_per_day(c, mid, days=90, now=NOW)
        hours = history.rtt_per_hour(c, mid, hours=168, now=NOW)
        hours_old = history.rtt_per_hour(c, mid, hours=24, now=NOW - _dt.timedelta(days=20))
    for col in ("uptime_24h", "uptime_7d", "uptime_30d"):
        assert abs(h[col] - 0.75) < 0.03, (col, h[col])
    assert 100 <= h["rtt_p50_ms"] <= h["rtt_p95_ms"] <= 109
    assert q["uptime_7d"] is None and q["rtt_p95_ms"] is None
    assert len(days) == 90 and days[-1].day == NOW.date()
    assert all(d.probes == 0 and d.uptime is None for d in days[:49])
    assert all(abs(d.uptime - 0.75) < 0.05 for d in days[51:])
    assert len(hours) == 168 and hours[-1].start == NOW.replace(minute=0)
    assert all(x.probes == 1 for x in hours[:-1])
    assert all(100 <= x.rtt_avg_ms <= 109 for x in hours if x.passes)
    assert all(x.probes == 1 for x in hours_old)   # served from hourly rollups
    s = compute(ScoreInputs(uptime_7d=h["uptime_7d"], rtt_p95_ms=h["rtt_p95_ms"]))
    assert abs(s.uptime - 0.5625) < 0.05


def test_percentile():
    assert history.percentile([], 0.5) is None
    assert history.percentile([1, 2, 3, 4], 0.5) == 2
    assert history.percentile(list(range(1, 101)), 0.95) == 95
