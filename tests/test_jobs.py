"""dnsd.jobs.run_once: a periodic job runs once per period however many nodes tick (SQLite and
PostgreSQL); the two-scheduler test with real processes is in tests/test_cluster.py."""

from __future__ import annotations

import datetime as _dt

import pytest
import sqlalchemy as sa

from dnsd.jobs import Job, run_once
from dnsd.models import job_runs

T0 = _dt.datetime(2026, 11, 2, 8, 0)
H = _dt.timedelta(hours=1)
HOURLY = Job("test-hourly", H)
WEEKLY = Job("test-weekly", 7 * 24 * H, wait_first_period=True)


def tick(engine, job, at, runs):
    with engine.begin() as conn:
        return run_once(conn, job, at, lambda c: runs.append(at) or len(runs))


def test_once_per_period_and_the_first_run(engine):
    runs = []
    assert tick(engine, HOURLY, T0, runs) == 1                 # first seen: runs at once
    assert tick(engine, HOURLY, T0 + H / 2, runs) is None
    assert tick(engine, HOURLY, T0 + H, runs) == 2
    weekly = []
    assert tick(engine, WEEKLY, T0, weekly) is None            # first seen: a week out
    assert tick(engine, WEEKLY, T0 + 7 * 24 * H - H, weekly) is None
    assert tick(engine, WEEKLY, T0 + 7 * 24 * H, weekly) == 1
    with engine.connect() as c:
        assert dict(c.execute(sa.select(job_runs.c.job, job_runs.c.last_run_at)).all()) == {
            "test-hourly": T0 + H, "test-weekly": T0 + 7 * 24 * H}


def test_a_failed_run_leaves_the_job_due(engine):
    tick(engine, HOURLY, T0, [])

    def boom(conn):
        raise RuntimeError("smtp template broken")

    with pytest.raises(RuntimeError), engine.begin() as conn:
        run_once(conn, HOURLY, T0 + H, boom)
    assert tick(engine, HOURLY, T0 + H, []) == 1               # rolled back: still due


def test_a_job_held_by_another_node_is_left_to_it(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite runs one writing transaction at a time")
    tick(engine, HOURLY, T0, [])
    mine, theirs = [], []
    with engine.begin() as first:               # node A is running the job (not committed) ...
        assert run_once(first, HOURLY, T0 + H, lambda c: mine.append(1) or "a") == "a"
        assert tick(engine, HOURLY, T0 + H, theirs) is None    # ... so node B does not wait
    assert tick(engine, HOURLY, T0 + H, theirs) is None        # and after A: not due any more
    assert mine == [1] and theirs == []
