"""Scheduled mails (weekly report, daily reminders) with a Clock, and the mail templates."""

from __future__ import annotations

import datetime as _dt

import pytest
import sqlalchemy as sa
from twisted.internet.task import Clock

from admin.reports import ReportsService
from dnsd.config import Config, MailConfig
from dnsd.models import ACTIVE, DISABLED_ADMIN, DISABLED_PROBES, PENDING, job_runs, mirror_health
from probes import mails as probe_mails
from tests.probe_support import SyncPool, add_mirror, body_of, mails

T0 = _dt.datetime(2026, 11, 2, 8, 0)          # a Monday
HOUR = 3600
DAY = _dt.timedelta(days=1)


def clock_at(t: _dt.datetime) -> Clock:
    c = Clock()
    c.advance(t.replace(tzinfo=_dt.UTC).timestamp())
    return c


def set_health(engine, mid, **vals):
    with engine.begin() as c:
        if c.execute(sa.select(mirror_health.c.mirror_id).where(mirror_health.c.mirror_id == mid)).first():
            c.execute(mirror_health.update().where(mirror_health.c.mirror_id == mid).values(**vals))
        else:
            c.execute(mirror_health.insert().values(mirror_id=mid, **vals))


@pytest.fixture
def network(sqlite_engine):
    e = sqlite_engine
    with e.begin() as c:
        ids = {
            "ok": add_mirror(c, name="de1", status=ACTIVE),
            "probes": add_mirror(c, name="de2", status=DISABLED_PROBES,
                                 status_reason="3 failed probes in a row: timeout: no answer",
                                 status_since=T0 - _dt.timedelta(hours=30)),
            "admin": add_mirror(c, name="fr1", country="FR", status=DISABLED_ADMIN,
                                status_reason="hardware move", status_since=T0 - _dt.timedelta(days=3)),
            "stale": add_mirror(c, name="us1", country="US", status=ACTIVE),
            "fresh_out": add_mirror(c, name="at1", country="AT", status=DISABLED_PROBES,
                                    status_since=T0 - _dt.timedelta(hours=2)),
            "pending": add_mirror(c, name=None, hostname="new.example.net", status=PENDING),
        }
    set_health(e, ids["ok"], last_sync_at=T0 - _dt.timedelta(hours=1), uptime_7d=0.995)
    set_health(e, ids["probes"], last_error="timeout: no complete answer in time",
               last_sync_at=T0 - _dt.timedelta(hours=31))
    set_health(e, ids["stale"], last_sync_at=T0 - _dt.timedelta(hours=40))
    return e, ids


def test_a_fresh_install_sends_its_first_weekly_report_a_week_after_it_starts(sqlite_engine):
    e = sqlite_engine
    with e.begin() as c:
        add_mirror(c, name="de1", status=ACTIVE)
    clock = clock_at(T0)
    svc = ReportsService(Config(), SyncPool(e), clock, check_interval=300)
    svc.startService()
    assert mails(e, "weekly") == []
    clock.pump([300, 7 * 24 * 3600 - 900, 300])             # ticks up to a week less one tick
    assert mails(e, "weekly") == []
    clock.advance(300)
    (weekly,) = mails(e, "weekly")
    assert weekly["created_at"] >= T0 + _dt.timedelta(days=7) - _dt.timedelta(minutes=5)
    svc.stopService()


def test_weekly_report_lists_every_group_and_is_not_resent_after_restart(network):
    e, _ids = network
    cfg = Config()
    with e.begin() as c:                                    # installed a week ago
        c.execute(job_runs.insert().values(job="weekly-report", last_run_at=T0 - 7 * DAY))
    clock = clock_at(T0)
    svc = ReportsService(cfg, SyncPool(e), clock, check_interval=300)
    svc.startService()
    weekly = mails(e, "weekly")
    assert len(weekly) == 1 and weekly[0]["recipients"] == cfg.mail.list
    body = body_of(weekly[0])
    assert "2 working, 2 disabled by probes, 1 disabled by admins" in weekly[0]["subject"]
    assert "de2" in body and "timeout: no complete answer in time" in body
    assert "fr1" in body and "hardware move" in body
    assert "up 99.5 %" in body
    assert "sync 60 min ago (fresh)" in body and "sync 40 h ago (old)" in body   # mirmon classes
    lines = body.splitlines()                              # one mirror per line, under its group
    assert lines.index("Working: 2, pending: 1") < next(i for i, x in enumerate(lines)
                                                        if x.startswith("  de1 "))
    assert any(x.startswith("  us1 ") for x in lines) and any(x.startswith("  de2 ") for x in lines)
    svc.stopService()
    again = ReportsService(cfg, SyncPool(e), clock, check_interval=300)   # a restart
    again.startService()
    clock.pump([300] * 12 * 24)                                  # a day of ticks
    assert len(mails(e, "weekly")) == 1
    clock.pump([300] * 12 * 24 * 6)                              # the rest of the week
    assert len(mails(e, "weekly")) == 2
    again.stopService()


def test_daily_reminders_once_a_day_while_the_problem_lasts(network):
    e, ids = network
    clock = clock_at(T0)
    svc = ReportsService(Config(mail=MailConfig(reply_to="admins@example.org")), SyncPool(e),
                         clock, check_interval=300)
    svc.startService()
    rem = mails(e, "reminder")
    assert {r["mirror_id"] for r in rem} == {ids["probes"], ids["stale"]}   # not at1 (2 h), fr1, de1
    by = {r["mirror_id"]: r for r in rem}
    assert "still out of the DNS rotation" in by[ids["probes"]]["subject"]
    assert "out of sync" in by[ids["stale"]]["subject"]
    assert b"Reply-To: admins@example.org" in by[ids["stale"]]["message"]
    clock.pump([300] * 12 * 20)                                  # 20 hours: nothing new
    assert len(mails(e, "reminder")) == 2
    clock.pump([300] * 12 * 4)                                   # a day after: again, and at1 too
    # a day later: the two again, at1 (disabled 24 h by now), and de1, whose last sync is now
    # over the 24 h limit (dnsd.serving's stale) because nothing probed it in this test: it
    # crossed the limit five minutes after the others were due again
    got = [r["mirror_id"] for r in mails(e, "reminder")]
    assert got == [ids["probes"], ids["stale"], ids["fresh_out"], ids["probes"], ids["stale"],
                   ids["ok"]]
    svc.stopService()


def test_every_template_renders():
    ctx_mirror = {"display": "de1", "hostname": "m.example.net", "status": ACTIVE,
                  "status_reason": ""}
    common = {"zone": "mirrors.example.org", "reply_to": "", "list": "l@example.org",
                  "maintainer_names": "Ops", "mirror": ctx_mirror}
    s, b = probe_mails.render("disabled.txt", **common, failures=3, since="2026-11-02 08:00",
                              reason="3 failed probes", log_lines=["a", "b"], hints=["fix it"],
                              interval_text="5 min", pass_after=2, max_age_text="24 h",
                              user_agent="ua")
    assert s == "de1 was taken out of the DNS rotation" and "  a\n  b\n" in b and "- fix it" in b
    s, b = probe_mails.render("recovered.txt", **common, passes=2, since="x", outage_text="3 h",
                              log_lines=["ok"])
    assert "back in the DNS rotation" in s and "out for 3 h" in b
    s, b = probe_mails.render("vantage_broken.txt", zone="z", vantage="probe-eu", passed=1,
                              total=4, share=0.25, min_share=0.5, now="n", others=["probe-us"],
                              classes=[("timeout", 3)])
    assert s == "Probe vantage probe-eu is broken: only 1 of 4 mirrors pass from it"
    assert "25 %" in b and "(probe-us) decide without it" in b and "timeout" in b
    _s, b = probe_mails.render("vantage_broken.txt", zone="z", vantage="p", passed=0, total=4,
                               share=0.0, min_share=0.5, now="n", others=[], classes=[])
    assert "no mirror is disabled at all meanwhile" in b


def test_hints_name_the_fix():
    h = probe_mails.hints_for(["wrong-host"], "z", ["de1.z", "de.z"])
    assert any("ServerAlias" in x for x in h) and "names to serve: de1.z, de.z" in h


def test_the_scheduler_sends_waiting_list_reminders(sqlite_engine):
    """admin.waitinglist's job runs from the same service as the probe mails."""
    from admin import waitinglist
    from dnsd.config import AdminConfig

    with sqlite_engine.begin() as c:
        v = waitinglist.validate({
            "name": "Jane", "email": "jane@example.org", "country": "DE",
            "hostname": "mirror.example.de", "http_url": "http://mirror.example.de/",
            "provider_name": "Example", "bandwidth_mbit": "1000",
        })
        assert v.ok, v.errors
        waitinglist.create(c, v, source_ip="192.0.2.1", base_url="https://m.example",
                           sender="mirrors@example.org", title="Mirrors", now=T0)
    cfg = Config(admin=AdminConfig(application_reminder_days=90, base_url="https://m.example"))
    clock = clock_at(T0 + _dt.timedelta(days=90, hours=1))
    svc = ReportsService(cfg, SyncPool(sqlite_engine), clock, check_interval=300)
    svc.startService()
    clock.pump([300] * 12)
    svc.stopService()
    sent = mails(sqlite_engine, "application-reminder")
    assert [m["recipients"] for m in sent] == ["jane@example.org"]
