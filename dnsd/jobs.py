"""Periodic jobs that run once per period across every node sharing the table.

The weekly report, the reminders, the waiting-list mails and the probe-history roll-ups may be
scheduled on several nodes at once (two admin nodes, three probe vantages). Each run happens
inside `run_once(conn, job, now, fn)`, in one transaction with the job's `job_runs` row locked
(`SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's single writer serialises the
transactions by itself): a node that finds the row locked leaves the job to the node holding it,
and one that gets the row runs the job only if its period has passed since `last_run_at`, then
moves it, in the same transaction as the job's own writes. So a job runs once per period however
many nodes tick, a node that dies mid-job leaves nothing behind (the transaction rolls back and
the next tick runs it), and a restart never repeats one.

A job seen for the first time in a table either runs at once or, with `wait_first_period`,
is scheduled one period out: a fresh install sends its first weekly report a week after it
starts, not at its first start.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa

from dnsd.models import job_runs
from dnsd.records._base import insert_if_missing

T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    name: str                              # its row in job_runs
    period: _dt.timedelta
    wait_first_period: bool = False        # first seen: schedule it a period out, do not run it


def run_once(conn: sa.Connection, job: Job, now: _dt.datetime,
             fn: Callable[[sa.Connection], T]) -> T | None:
    """fn(conn) if `job` is due and no other node is running it; None when it did not run."""
    row = job_runs.c.job == job.name
    last = conn.execute(sa.select(job_runs.c.last_run_at).where(row)
                        .with_for_update(skip_locked=True)).scalar()
    if last is None:
        if conn.execute(sa.select(job_runs.c.job).where(row)).first() is not None:
            return None                                # another node holds it and runs it
        if not insert_if_missing(conn, job_runs, job=job.name, last_run_at=now):
            return None                                # another node saw it first, just now
        return None if job.wait_first_period else fn(conn)
    if now - last < job.period:
        return None
    result = fn(conn)
    conn.execute(job_runs.update().where(row).values(last_run_at=now))
    return result
