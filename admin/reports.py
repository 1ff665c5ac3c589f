"""Scheduled mails: the weekly status report to the list, the daily reminders to maintainers and
the periodic "are you still willing?" mails to the waiting list (admin.waitinglist).

Each job runs through `dnsd.jobs.run_once`: one transaction that holds the job's `job_runs` row,
queues its mails and moves `last_run_at`, so a restart or a second admin node never sends a
report twice and a crash mid-job sends nothing rather than half. A fresh install sends its first
weekly report a week after it starts. The reminder job runs hourly and each mirror carries
its own `reminder_mailed_at`, so a maintainer gets one reminder a day counted from the outage, not
from whenever the job happened to run.

The same loop deletes old reports from downloaders (admin.mirror_reports.expire, hourly).

Templates are the probe mail templates (probes/templates/*.txt), rendered by probes.mails.
"""

from __future__ import annotations

import datetime as _dt

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from admin import mirror_reports, waitinglist
from dnsd import maintenance, serving
from dnsd.jobs import Job, run_once
from dnsd.models import mirror_health
from dnsd.records import health as _health
from dnsd.records import maintenance as _windows
from dnsd.records import mirrors as _mirrors
from dnsd.serving import fmt_age
from dnsd.statuses import ACTIVE, DISABLED_ADMIN, DISABLED_PROBES, PENDING
from probes import mails

WEEKLY = Job("weekly-report", _dt.timedelta(days=7), wait_first_period=True)
REMINDERS = Job("daily-reminders", _dt.timedelta(hours=1))
WAITING_LIST = Job(waitinglist.JOB, _dt.timedelta(days=1))  # each applicant is due on its own
EXPIRE_REPORTS = Job("expire-reports", _dt.timedelta(hours=1))


def _now(reactor) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(reactor.seconds(), _dt.UTC).replace(tzinfo=None)


def _mirrors_with_health(conn):
    ms = _mirrors.select(conn)
    health = _health.of(conn)
    return [(m, health.get(m.id, _health.NEVER), m.id in health) for m in ms]


def _addresses(m, h) -> tuple:
    a = serving.addresses(m, h)
    return a.ipv4, a.ipv6


def weekly_report(conn: sa.Connection, cfg, now: _dt.datetime) -> int | None:
    """Queue the weekly status of all mirrors to the list, each with its mirmon freshness class
    (fresh/oldish/old/unknown, dnsd.serving.freshness); returns the outbox id."""
    groups: dict[str, list] = {ACTIVE: [], DISABLED_PROBES: [], DISABLED_ADMIN: [], PENDING: []}
    for m, h, _has_row in _mirrors_with_health(conn):
        if m.status not in groups:
            continue
        age = serving.sync_age(h.last_sync_at, now)
        groups[m.status].append({
            "display": mails.display_name(m), "country": m.country,
            "since": m.status_since.strftime("%Y-%m-%d %H:%M") if m.status_since else "?",
            "status_reason": m.status_reason, "last_error": h.last_error or "",
            "sync_text": fmt_age(age) + (" ago" if age is not None else "")
            + f" ({serving.freshness(age, cfg)})",
            "uptime_text": f"{h.uptime_7d * 100:.1f} %" if h.uptime_7d is not None else "",
            "geo_check": h.geo_check or "",
        })
    return mails.queue(conn, cfg, "weekly", "weekly.txt",
                       now=now.strftime("%Y-%m-%d %H:%M"), working=groups[ACTIVE],
                       by_probes=groups[DISABLED_PROBES], by_admin=groups[DISABLED_ADMIN],
                       pending=groups[PENDING])


def daily_reminders(conn: sa.Connection, cfg, now: _dt.datetime) -> list[int]:
    """Queue a reminder to the maintainers of every mirror disabled by probes for more than
    `[mail] reminder_hours`, or active but stale (dnsd.serving's one freshness rule), unless it
    got one within `reminder_hours` (an hour's slack). A mirror in a maintenance window gets
    none: its probes count for nothing then, so what they last said is not news
    (dnsd.maintenance.probes_paused)."""
    hours = _dt.timedelta(hours=cfg.mail.reminder_hours)
    again = hours - _dt.timedelta(hours=1)
    out = []
    windows = _windows.relevant(conn, now)
    for m, h, has_row in _mirrors_with_health(conn):
        if maintenance.probes_paused(windows.get(m.id, ()), now) is not None:
            continue
        age = serving.sync_age(h.last_sync_at, now)
        disabled = m.status == DISABLED_PROBES and m.status_since <= now - hours
        out_of_sync = m.status == ACTIVE and serving.is_stale(age, cfg)
        if not (disabled or out_of_sync):
            continue
        if h.reminder_mailed_at is not None and now - h.reminder_mailed_at < again:
            continue
        if disabled:
            short = "is still out of the DNS rotation"
            problem = (f"has been out of the DNS rotation for "
                       f"{fmt_age((now - m.status_since).total_seconds())}"
                       " because it fails its checks")
            since = m.status_since
        else:
            short = "is out of sync"
            problem = f"has not synced for {fmt_age(age)}"
            since = h.last_sync_at
        cls = (h.last_error or "").split(":", 1)[0]
        mid = mails.queue(
            conn, cfg, "reminder", "reminder.txt", mirror_id=m.id,
            mirror={"display": mails.display_name(m), "hostname": m.hostname,
                    "status": m.status, "status_reason": m.status_reason},
            problem_short=short, problem=problem,
            since=since.strftime("%Y-%m-%d %H:%M"), last_error=h.last_error or "",
            last_sync=(h.last_sync_at.strftime("%Y-%m-%d %H:%M UTC") + f" ({fmt_age(age)} ago)")
            if h.last_sync_at else "never seen",
            hints=mails.hints_for([cls] if cls else ["stale"], cfg.dns.zone,
                                 addresses=_addresses(m, h)))
        if mid is None:
            continue
        if not has_row:        # never probed; a probe node may be inserting the row right now
            _health.ensure_row(conn, m.id, now)
        conn.execute(mirror_health.update().where(mirror_health.c.mirror_id == m.id)
                     .values(reminder_mailed_at=now))
        out.append(mid)
    return out


class ReportsService(service.Service):
    name = "reports"
    _log = Logger()

    def __init__(self, cfg, pool, reactor, check_interval: float = 300.0):
        self.cfg, self.pool, self.reactor = cfg, pool, reactor
        self.check_interval = check_interval
        self._loop = self._loop_done = None

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = self.reactor
        self._loop_done = self._loop.start(self.check_interval, now=True).addErrback(
            lambda f: self._log.failure("reports loop stopped", f))

    def stopService(self):
        """Fires when the job in flight (one transaction) has ended."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
            return self._loop_done
        return None

    def tick(self) -> defer.Deferred:
        return defer.ensureDeferred(self._tick())

    async def _tick(self) -> dict:
        done = {}
        for job, fn in ((WEEKLY, weekly_report), (REMINDERS, daily_reminders),
                        (WAITING_LIST, waitinglist.application_reminders),
                        (EXPIRE_REPORTS, mirror_reports.expire)):
            now = _now(self.reactor)
            try:
                res = await self.pool.run(
                    lambda conn, job=job, fn=fn, now=now: run_once(
                        conn, job, now, lambda c: fn(c, self.cfg, now)))
            except Exception:
                self._log.failure("scheduled job {job} failed", job=job.name)
                continue
            done[job.name] = res
            if res:
                self._log.info("scheduled job {job} queued {result}", job=job.name, result=res)
        self._log.debug("scheduled jobs checked: {done}", done=done)
        return done


def makeService(cfg, pool, reactor) -> ReportsService:
    return ReportsService(cfg, pool, reactor)
