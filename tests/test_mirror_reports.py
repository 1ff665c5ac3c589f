"""Reports from downloaders (admin.mirror_reports) on the real table, SQLite and PostgreSQL, with
time from a Clock: what is stored (never an address), one report per network, mirror and day,
the probe each new report asks for, the threshold and window, one mail however many nodes take
reports at once, expiry; and the mail received by a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import datetime as _dt
import threading

import pytest
import pytest_twisted
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from twisted.internet import reactor
from twisted.internet.task import Clock

from admin import mirror_reports
from admin.outbox import OutboxSender
from dnsd.config import Config, MailConfig, ReportsConfig
from dnsd.db import DBPool
from dnsd.errors import Invalid, NotFound
from dnsd.models import (
    PENDING,
    RETIRED,
    outbox,
    probe_requests,
    report_keys,
)
from dnsd.models import (
    mirror_reports as reports_table,
)
from tests.dns_support import until
from tests.helpers import MailRecorder, free_port
from tests.probe_support import add_mirror

T0 = _dt.datetime(2026, 12, 1, 12, 0, 0)


def cfg_with(**kw) -> Config:
    return Config(reports=ReportsConfig(**kw),
                  mail=MailConfig(list="mirrors@lists.example.org", from_="mirrors@example.org"))


class At:
    """Naive UTC from a Clock started at T0 (as the web's ctx.now() is)."""

    def __init__(self):
        self.clock = Clock()

    def now(self) -> _dt.datetime:
        return T0 + _dt.timedelta(seconds=self.clock.seconds())

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


def report(engine, cfg, at: At, ip: str, ref="de1", reason="unreachable", text=""):
    with engine.begin() as c:
        return mirror_reports.add_report(c, cfg, ref, reason, text, ip, at.now())


def rows(engine):
    with engine.connect() as c:
        return c.execute(sa.select(reports_table).order_by(reports_table.c.id)).mappings().all()


def report_mails(engine) -> list:
    with engine.connect() as c:
        return c.execute(sa.select(outbox.c.kind, outbox.c.recipients, outbox.c.subject)
                         .where(outbox.c.kind == "reports")).all()


@pytest.fixture
def de1(engine):
    with engine.begin() as c:
        return add_mirror(c, emails=("ops@de1.example.net", "jane@de1.example.net"))


def test_no_address_is_stored_and_a_network_counts_once_a_day(engine, de1):
    cfg, at = cfg_with(), At()
    first = report(engine, cfg, at, "192.0.2.10", text="TIME is a week old")
    assert (first.new, first.label, first.probe.requests) == (True, "de1", 1)
    again = report(engine, cfg, at, "192.0.2.77", reason="outdated", text="still old")  # same /24
    assert (again.new, again.probe, again.mail_id) == (False, None, None)
    v6a = report(engine, cfg, at, "2001:db8:1:100::1")
    v6b = report(engine, cfg, at, "2001:db8:1:1ff::2")                  # the same /56
    v4mapped = report(engine, cfg, at, "::ffff:192.0.2.99", reason="slow",
                      text="and slow")                                  # the first /24 again
    assert (v6a.new, v6b.new, v4mapped.new) == (True, False, False)
    stored = rows(engine)
    assert len(stored) == 2
    assert (stored[0]["reason"], stored[0]["text"], stored[0]["repeats"]) == (
        "slow", "and slow", 2)                                          # the latest word
    for r in stored:
        blob = " ".join(str(v) for v in r.values())
        for leak in ("192.0.2", "2001:db8", "/24", "/56"):
            assert leak not in blob
        assert len(r["visitor"]) == 32 and int(r["visitor"], 16) >= 0
    assert stored[0]["visitor"] != stored[1]["visitor"]
    at.advance(86400)                                                   # a new day, a new key
    assert report(engine, cfg, at, "192.0.2.10").new is True
    assert len({r["visitor"] for r in rows(engine)}) == 3
    with engine.connect() as c:
        assert c.execute(sa.select(probe_requests.c.requests)
                         .where(probe_requests.c.mirror_id == de1)).scalar() == 3


def test_threshold_within_the_window_mails_once(engine, de1):
    cfg, at = cfg_with(threshold=3, window=3600), At()
    assert report(engine, cfg, at, "192.0.2.1").mail_id is None
    at.advance(1200)
    assert report(engine, cfg, at, "198.51.100.1").mail_id is None
    at.advance(1200)
    assert report(engine, cfg, at, "192.0.2.1").mail_id is None         # a repeat: not a third
    third = report(engine, cfg, at, "203.0.113.1", reason="corrupt", text="sha512 mismatch")
    assert third.mail_id is not None
    ((kind, rcpts, subject),) = report_mails(engine)
    assert (kind, rcpts) == ("reports", "ops@de1.example.net,jane@de1.example.net")
    assert subject == "Downloaders report problems with de1"
    at.advance(600)
    assert report(engine, cfg, at, "192.0.3.1").mail_id is None         # 4 in the window: no 2nd
    assert len(report_mails(engine)) == 1
    at.advance(3600)                 # a window after the mail, three new networks: a second one
    for i, ip in enumerate(("10.1.0.1", "10.2.0.1", "10.3.0.1")):
        out = report(engine, cfg, at, ip)
        assert (out.mail_id is not None) == (i == 2)
        at.advance(10)
    assert len(report_mails(engine)) == 2


def test_reports_spread_wider_than_the_window_mail_nobody(engine, de1):
    cfg, at = cfg_with(threshold=3, window=3600), At()
    for ip in ("192.0.2.1", "198.51.100.1", "203.0.113.1", "10.0.0.1"):
        assert report(engine, cfg, at, ip).mail_id is None
        at.advance(2000)                           # never three within one hour
    assert report_mails(engine) == []


def test_bad_input_names_its_field_and_unknown_mirrors_are_not_found(engine, de1):
    cfg, at = cfg_with(), At()
    with pytest.raises(Invalid) as e:
        report(engine, cfg, at, "192.0.2.1", reason="broken")
    assert e.value.field == "reason" and "is not one of the reasons" in e.value.message
    with pytest.raises(Invalid) as e:
        report(engine, cfg, at, "192.0.2.1", text="x" * 1001)
    assert e.value.field == "text" and "longer than 1,000 characters" in e.value.message
    with pytest.raises(Invalid) as e:
        report(engine, cfg, at, "192.0.2.1", reason="other")
    assert e.value.field == "text" and "empty" in e.value.message
    with engine.begin() as c:
        add_mirror(c, name="de2", status=PENDING)
        add_mirror(c, name="de3", status=RETIRED)
    for ref in ("de2", "de3", "de9", "#1", "", "x" * 300):
        with pytest.raises(NotFound):
            report(engine, cfg, at, "192.0.2.1", ref=ref)
    assert report(engine, cfg, at, "192.0.2.1", ref="de1.example.net").label == "de1"  # by host
    assert len(rows(engine)) == 1


def test_old_reports_and_keys_expire(engine, de1):
    cfg, at = cfg_with(keep_days=30), At()
    report(engine, cfg, at, "192.0.2.1")
    at.advance(29 * 86400)
    report(engine, cfg, at, "198.51.100.1")
    at.advance(2 * 86400)
    with engine.begin() as c:
        gone = mirror_reports.expire(c, cfg, at.now())
        assert gone == {"reports": 1, "keys": 2}
        assert c.execute(sa.select(sa.func.count()).select_from(report_keys)).scalar() == 0
        assert mirror_reports.expire(c, cfg, at.now()) == {}
    assert len(rows(engine)) == 1


def test_summaries_group_per_mirror(engine, de1):
    cfg, at = cfg_with(window=3600), At()
    with engine.begin() as c:
        add_mirror(c, name="de2")
    report(engine, cfg, at, "192.0.2.1", text="<b>old</b>")
    at.advance(7200)
    report(engine, cfg, at, "198.51.100.1", reason="slow")
    report(engine, cfg, at, "192.0.2.1", ref="de2", reason="slow")
    report(engine, cfg, at, "198.51.100.1", ref="de2", reason="slow")
    with engine.connect() as c:
        (two, one) = mirror_reports.summaries(c, cfg, at.now())
        page = mirror_reports.of_mirror(c, cfg, de1, at.now())
    assert (two.label, two.recent, two.total, two.reasons) == ("de2", 2, 2, (("slow", 2),))
    assert (one.label, one.recent, one.total) == ("de1", 1, 2)
    assert page.latest[-1].text == "<b>old</b>" and page.latest[0].reason == "slow"


def test_many_nodes_reporting_at_once_queue_one_mail(engine, de1):
    """Eight reports from eight networks in eight threads (eight connections, as eight admin
    nodes would have) released together: the mirror's lock makes the counts exact, the
    compare-and-set makes the mail one."""
    cfg, now = cfg_with(threshold=3, window=3600), T0
    start = threading.Barrier(8)
    outs, errors = [], []

    def one(i):
        try:
            start.wait()
            with engine.begin() as c:
                outs.append(mirror_reports.add_report(c, cfg, "de1", "slow", "", f"10.{i}.0.1",
                                                      now))
        except Exception as e:                  # pragma: no cover - shown by the assert below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(1 for o in outs if o.mail_id is not None) == 1
    assert len(report_mails(engine)) == 1
    assert len(rows(engine)) == 8




@pytest_twisted.ensureDeferred
async def test_the_mail_reaches_the_maintainers_over_smtp(sqlite_engine):
    e = sqlite_engine
    with e.begin() as c:
        add_mirror(c, emails=("ops@de1.example.net",))
    port = free_port()
    rec = MailRecorder()
    ctl = Controller(rec, hostname="127.0.0.1", port=port)
    ctl.start()
    cfg = Config(reports=ReportsConfig(threshold=2, window=3600),
                 mail=MailConfig(smtp=f"127.0.0.1:{port}", poll_interval=0.1,
                                 reply_to="admins@example.org"))
    pool = DBPool(e, reactor, 2)
    sender = OutboxSender(cfg, pool, reactor)
    sender.startService()
    try:
        for ip, text in (("192.0.2.1", "TIME says last week"),
                         ("198.51.100.1", "Downloads stop at 40 %\nthen fail")):
            await pool.run(lambda c, ip=ip, text=text: mirror_reports.add_report(
                c, cfg, "de1", "outdated", text, ip, T0))
        await until(lambda: rec.messages, timeout=10)
        ((rcpts, msg),) = rec.messages
        assert rcpts == ["ops@de1.example.net"]
        assert msg["Subject"] == "Downloaders report problems with de1"
        assert msg["Auto-Submitted"] == "auto-generated"
        body = msg.get_content().replace("\r\n", "\n")
        assert "2 downloaders (from 2 different networks)" in body
        assert "within 1 hour:" in body
        assert "2 x Its files are out of date" in body
        assert "  > Downloads stop at 40 %\n  > then fail\n\n  > TIME says" in body
        assert "192.0.2" not in body and "198.51.100" not in body
    finally:
        await sender.stopService()
        ctl.stop()
        pool.stop()
