"""The outbox sender: a real SMTP server on loopback (aiosmtpd), an outage, retries and backoff."""

from __future__ import annotations

import datetime as _dt
import email
import itertools

import pytest_twisted
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from admin.outbox import OutboxSender, backoff
from dnsd.config import Config, MailConfig
from dnsd.db import DBPool
from dnsd.models import outbox
from dnsd.outbox import queue_mail
from tests.dns_support import until
from tests.helpers import free_port
from tests.probe_support import SyncPool, mails


class Recorder:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def smtp_server(port):
    rec = Recorder()
    ctl = Controller(rec, hostname="127.0.0.1", port=port)
    ctl.start()
    return ctl, rec


def cfg_for(port, **kw):
    m = {"smtp": f"127.0.0.1:{port}", "from_": "mirrors@example.org", "retry_base": 0.2,
             "poll_interval": 0.1, "retry_max": 20}
    m.update(kw)
    return Config(mail=MailConfig(**m))


def queue(engine, n=1, to=("ops@example.net",)):
    with engine.begin() as c:
        for i in range(n):
            queue_mail(c, kind="test", sender="mirrors@example.org", to=list(to),
                       subject=f"hello {i}", body=f"body {i}\n")


def test_backoff_doubles_and_is_capped():
    import random
    r = random.Random(0)
    assert 60 <= backoff(1, 60, r) <= 66
    assert 120 <= backoff(2, 60, r) <= 132
    assert 6 * 3600 <= backoff(30, 60, r) <= 6.6 * 3600


@pytest_twisted.ensureDeferred
async def test_mail_delivered_once_with_headers(sqlite_engine):
    port = free_port()
    ctl, rec = smtp_server(port)
    pool = DBPool(sqlite_engine, reactor, 1)
    try:
        queue(sqlite_engine, 2)
        s = OutboxSender(cfg_for(port), pool, reactor)
        sent = await s.send_due()
        assert sent == 2
        await until(lambda: len(rec.messages) == 2, timeout=10)
        frm, to, raw = rec.messages[0]
        msg = email.message_from_bytes(raw)
        assert frm == "mirrors@example.org" and to == ["ops@example.net"]
        assert msg["Auto-Submitted"] == "auto-generated" and msg["Subject"] == "hello 0"
        assert await s.send_due() == 0                  # sent rows are not sent again
        rows = mails(sqlite_engine)
        assert all(r["sent_at"] is not None and r["attempts"] == 1 for r in rows)
    finally:
        ctl.stop()
        pool.stop()


@pytest_twisted.ensureDeferred
async def test_an_outage_is_one_log_line_per_attempt_and_loses_nothing(sqlite_engine):
    """SMTP down, then up: each failed attempt is one line (server, error, mails waiting, the
    next try), nothing from Twisted's own sender (no 'retrying server' x5, no factory noise),
    the wait doubles, one line when the server is back, and every mail arrives once."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    port = free_port()                                  # nobody listens yet
    pool = DBPool(sqlite_engine, reactor, 1)
    s = OutboxSender(cfg_for(port), pool, reactor)
    queue(sqlite_engine, 3)
    s.startService()
    ctl = None
    try:
        await until(lambda: s.outage is not None and s.outage.attempts >= 3, timeout=15)
        outage = [e for e in events if "outage_attempt" in e]
        assert [e["outage_attempt"] for e in outage] == list(range(1, len(outage) + 1))
        rows = mails(sqlite_engine)
        assert sum(r["attempts"] for r in rows) == len(outage)   # one line per attempt
        assert all(r["sent_at"] is None and not r["failed"] for r in rows)
        assert all("refused" in r["last_error"] for r in rows if r["attempts"])
        for e in outage:
            text = formatEvent(e)
            assert text.startswith(f"SMTP server 127.0.0.1:{port} unreachable (ConnectionRefusedError: ")
            assert "3 mails wait, none lost; next try 20" in text and " UTC (in " in text
            assert e["log_level"].name == "warn"
        delays = [e["delay"] for e in outage]
        assert all(b >= 1.8 * a for a, b in itertools.pairwise(delays))    # doubling
        ctl, rec = smtp_server(port)                    # the server comes back
        await until(lambda: len(rec.messages) == 3, timeout=20)
        await until(lambda: all(r["sent_at"] for r in mails(sqlite_engine)), timeout=10)
        assert sorted(email.message_from_bytes(m[2])["Subject"] for m in rec.messages) == \
            ["hello 0", "hello 1", "hello 2"]
        back = [formatEvent(e) for e in events if "reachable again" in e.get("log_format", "")]
        assert len(back) == 1 and back[0].startswith(
            f"SMTP server 127.0.0.1:{port} reachable again after {len(outage)} failed attempts")
        assert s.outage is None
        texts = [formatEvent(e) for e in events]
        assert not [t for t in texts if "retrying server" in t or "factory" in t.lower()]
        assert not [e for e in events if e.get("log_namespace", "").startswith("twisted.mail")]
        assert len([e for e in events if e.get("log_namespace") == "admin.outbox.OutboxSender"
                    and e["log_level"].name in ("warn", "error")]) == len(outage)
    finally:
        globalLogPublisher.removeObserver(events.append)
        s.stopService()
        if ctl:
            ctl.stop()
        pool.stop()


def test_a_refused_mail_fails_alone_and_holds_nothing_back(sqlite_engine):
    """A server that answers but refuses one mail: that mail backs off, the others go."""
    from twisted.mail import smtp

    clock = Clock()
    clock.advance(_dt.datetime.now(_dt.UTC).timestamp() + 1)
    sent = []

    def picky(host, frm, to, msg, **kw):
        if b"hello 0" in msg:
            return defer.fail(smtp.SMTPDeliveryError(550, b"no such user"))
        sent.append(msg)
        return defer.succeed((1, []))

    s = OutboxSender(cfg_for(25, retry_base=60), SyncPool(sqlite_engine), clock, sendmail=picky)
    queue(sqlite_engine, 3)
    for _ in range(3):                                  # the failure ends a round; next poll
        s.send_due()
        clock.advance(1)
    assert len(sent) == 2 and s.outage is None
    failed = [r for r in mails(sqlite_engine) if r["sent_at"] is None]
    assert len(failed) == 1 and "550" in failed[0]["last_error"]


def test_backoff_and_parking_with_a_clock(sqlite_engine):
    clock = Clock()
    clock.advance(_dt.datetime.now(_dt.UTC).timestamp() + 1)
    attempts = []

    def down(host, frm, to, msg, **kw):
        attempts.append(clock.seconds())
        return defer.fail(ConnectionRefusedError("down"))

    cfg = cfg_for(25, retry_base=60, retry_max=4)
    s = OutboxSender(cfg, SyncPool(sqlite_engine), clock, sendmail=down)
    queue(sqlite_engine, 1)
    for _ in range(2000):                               # 2000 s, ticking every 1 s
        s.send_due()
        clock.advance(1)
    gaps = [round(b - a) for a, b in itertools.pairwise(attempts)]
    assert len(attempts) == 4                           # then parked
    assert 60 <= gaps[0] <= 67 and 120 <= gaps[1] <= 133 and 240 <= gaps[2] <= 265
    (row,) = mails(sqlite_engine)
    assert row["failed"] and row["attempts"] == 4 and row["sent_at"] is None
    assert "down" in row["last_error"]


def test_marked_sent_only_after_the_server_accepted(sqlite_engine):
    clock = Clock()
    clock.advance(_dt.datetime.now(_dt.UTC).timestamp() + 1)
    pending = defer.Deferred()
    s = OutboxSender(cfg_for(25), SyncPool(sqlite_engine), clock,
                     sendmail=lambda *a, **kw: pending)
    queue(sqlite_engine, 1)
    s.send_due()
    assert mails(sqlite_engine)[0]["sent_at"] is None   # in flight: not marked
    pending.callback((1, []))
    assert mails(sqlite_engine)[0]["sent_at"] is not None


def test_parked_rows_are_left_alone(sqlite_engine):
    calls = []
    clock = Clock()
    clock.advance(_dt.datetime.now(_dt.UTC).timestamp() + 1)
    s = OutboxSender(cfg_for(25), SyncPool(sqlite_engine), clock,
                     sendmail=lambda *a, **kw: calls.append(a) or defer.succeed((1, [])))
    queue(sqlite_engine, 1)
    with sqlite_engine.begin() as c:
        c.execute(sa.update(outbox).values(failed=True))
    s.send_due()
    assert calls == []
