"""The waiting list's rules: form validation, the confirmation mail, and the quarterly reminders
(due after [admin] application_reminder_days since the last confirmation or reminder, never twice
in one period, never to closed applications). Runs on SQLite and, when configured, PostgreSQL."""

from __future__ import annotations

import datetime as _dt
from email import message_from_bytes

import sqlalchemy as sa

from admin import waitinglist as wl
from dnsd.config import parse_config
from dnsd.models import applications, outbox

T0 = _dt.datetime(2026, 1, 1, 12, 0, 0)
GOOD = {"name": "Jane", "email": "jane@example.org", "country": "de",
        "hostname": "Mirror.Example.DE.", "http_url": "http://mirror.example.de/",
        "provider_url": "", "bandwidth_mbit": " 100 "}


def test_validate_cleans_values():
    v = wl.validate(GOOD)
    assert v.ok, v.errors
    assert v.values["country"] == "DE" and v.values["hostname"] == "mirror.example.de"
    assert v.values["bandwidth_mbit"] == 100 and v.values["cores"] is None
    assert v.values["has_ipv6"] is False


def test_validate_messages():
    v = wl.validate({"name": "x\ny", "email": "a@b", "country": "ZZ", "hostname": "-bad-.example",
                     "provider_url": "ftp://example.org/", "cores": "1.5", "disk_gb": "9" * 12,
                     "comments": "c" * 4001})
    assert set(v.errors) == {"name", "email", "country", "hostname", "provider_url", "cores",
                             "disk_gb", "comments", "http_url"}
    assert "line breaks" in v.errors["name"]
    assert v.errors["cores"] == "The number of cores must be a whole number (or empty)."
    assert v.errors["disk_gb"] == "The disk (GB) must be between 0 and 100,000,000."
    assert v.errors["http_url"].startswith("An http:// or https:// URL is needed")
    assert not wl.is_web_url("javascript:alert(1)") and wl.is_web_url("https://example.org/x")


def _create(conn, email="jane@example.org", now=T0, **kw):
    v = wl.validate({**GOOD, "email": email, **kw})
    assert v.ok, v.errors
    return wl.create(conn, v, source_ip="192.0.2.1", base_url="https://m.example/",
                     sender="mirrors@example.org", title="Example", now=now)


def _mails(conn, kind):
    rows = conn.execute(sa.select(outbox).where(outbox.c.kind == kind).order_by(outbox.c.id))
    return [dict(r._mapping) for r in rows]


def test_create_queues_confirmation_in_same_transaction(engine):
    try:
        with engine.begin() as conn:
            _create(conn)
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(applications)).scalar() == 0
    with engine.begin() as conn:
        app = _create(conn)
    with engine.connect() as conn:
        (mail,) = _mails(conn, "application")
    body = message_from_bytes(mail["message"]).get_payload(decode=True).decode()
    assert f"https://m.example/apply/{app.token}" in body
    assert len(app.token) >= 40


def test_reminders(engine):
    cfg = parse_config('[admin]\napplication_reminder_days = 90\nbase_url = "https://m.example"\n'
                       'public_title = "Example"\n[mail]\nfrom = "mirrors@example.org"\n')
    with engine.begin() as conn:
        a = _create(conn, "a@example.org")
        b = _create(conn, "b@example.org")
        c = _create(conn, "c@example.org")
        _create(conn, "d@example.org", now=T0 + _dt.timedelta(days=60))
        wl.withdraw(conn, c.token, now=T0)
        conn.execute(applications.update().where(applications.c.id == b.id)
                     .values(status="contacted"))

    def run(days_after):
        with engine.begin() as conn:
            return wl.application_reminders(conn, cfg, T0 + _dt.timedelta(days=days_after))

    assert run(89) == 0                                  # nobody is due yet
    assert run(90) == 2                                  # a (new) and b (contacted), not c, not d
    assert run(91) == 0                                  # never twice in one period
    with engine.begin() as conn:                         # a confirms through the link on day 100
        wl.confirm(conn, a.token, now=T0 + _dt.timedelta(days=100))
    assert run(150) == 1                                 # d (60 + 90)
    assert run(180) == 1                                 # b again; a confirmed on day 100
    assert run(190) == 1                                 # a: 90 days after its confirmation
    with engine.connect() as conn:
        mails = _mails(conn, "application-reminder")
    assert [m["recipients"] for m in mails] == ["a@example.org", "b@example.org", "d@example.org",
                                               "b@example.org", "a@example.org"]
    body = message_from_bytes(mails[0]["message"]).get_payload(decode=True).decode()
    assert f"https://m.example/apply/{a.token}" in body and "every 90 days" in body


def test_reminders_off_with_zero_days(sqlite_engine):
    with sqlite_engine.begin() as conn:
        _create(conn)
        assert wl.send_reminders(conn, days=0, base_url="", sender="x@example.org", title="X",
                                 now=T0 + _dt.timedelta(days=999)) == 0


def test_update_and_closed_applications(sqlite_engine):
    with sqlite_engine.begin() as conn:
        app = _create(conn)
        v = wl.validate({**GOOD, "hostname": "other.example.de"})
        new = wl.update(conn, app.token, v, now=T0 + _dt.timedelta(days=1))
        assert new.hostname == "other.example.de"
        assert new.confirmed_at == T0 + _dt.timedelta(days=1)
        assert wl.withdraw(conn, app.token).status == "withdrawn"
        assert wl.update(conn, app.token, v) is None
        assert wl.confirm(conn, app.token) is None
        assert wl.by_token(conn, "nope") is None and wl.by_token(conn, "x" * 65) is None
        assert wl.waiting_counts(conn) == {}


def test_runs_as_a_reports_job(sqlite_engine):
    """The job fits dnsd.jobs.run_once (job_runs bookkeeping) as admin.reports calls it."""
    from admin import reports
    from dnsd.jobs import run_once

    cfg = parse_config('[admin]\napplication_reminder_days = 30\n')
    with sqlite_engine.begin() as conn:
        _create(conn)
    day = _dt.timedelta(days=1)

    def tick(at):
        with sqlite_engine.begin() as conn:
            return run_once(conn, reports.WAITING_LIST, at,
                            lambda c: wl.application_reminders(c, cfg, at))

    assert reports.WAITING_LIST.period == day
    assert tick(T0 + 30 * day) == 1
    assert tick(T0 + 30 * day + _dt.timedelta(hours=1)) is None      # not due: ran today
    assert tick(T0 + 31 * day) == 0
