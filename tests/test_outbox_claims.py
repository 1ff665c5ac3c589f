"""Outbox claims: each due row goes to one sender; a dead sender's rows go to another after the
lease; a stopping sender gives its rows back. On SQLite and PostgreSQL; the multi-process test
with a real SMTP server is in tests/test_cluster.py."""

from __future__ import annotations

import datetime as _dt

import pytest
import sqlalchemy as sa
from twisted.internet import defer

from admin.outbox import STOP_GRACE, OutboxSender, claim_due, release_claims, renew_claim
from dnsd.config import Config, MailConfig, NodeConfig
from dnsd.models import outbox
from dnsd.outbox import queue_mail
from tests.probe_support import SyncPool, mails
from tests.webfakes import make_clock

NOW = _dt.datetime(2026, 11, 21, 9, 0, 0)
S = _dt.timedelta(seconds=1)


def queue(engine, n):
    with engine.begin() as c:
        for i in range(n):
            queue_mail(c, kind="test", sender="mirrors@example.org", to=["ops@example.net"],
                       subject=f"hello {i}", body=f"body {i}\n")
        c.execute(outbox.update().values(next_attempt_at=NOW - S))


def claim(engine, me, now=NOW, limit=10, lease=60):
    with engine.begin() as c:
        return [r["id"] for r in claim_due(c, now, limit, me, lease)]


def test_a_claimed_row_is_nobody_elses_until_the_lease_ends(engine):
    queue(engine, 6)
    a = claim(engine, "a", limit=4)
    b = claim(engine, "b")
    assert len(a) == 4 and len(b) == 2 and not set(a) & set(b)
    assert claim(engine, "c", now=NOW + 59 * S) == []
    # a died: after its lease its rows are free again, and its renewal then loses to the taker
    c = claim(engine, "c", now=NOW + 61 * S)
    assert sorted(c) == sorted(a + b)
    with engine.begin() as conn:
        assert renew_claim(conn, a[0], NOW + 62 * S, "a", 60) is None
        assert renew_claim(conn, a[0], NOW + 62 * S, "c", 60) == NOW + 122 * S
        assert release_claims(conn, c, "a") == 0            # only the holder can give back
        assert release_claims(conn, c, "c") == len(c)
    assert sorted(claim(engine, "d", now=NOW + 63 * S)) == sorted(c)


def test_claims_taken_at_once_on_postgresql_skip_each_other(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("FOR UPDATE SKIP LOCKED is PostgreSQL's; SQLite has one writer at a time")
    queue(engine, 10)
    with engine.begin() as first:               # a's claim is not committed yet ...
        a = [r["id"] for r in claim_due(first, NOW, 5, "a", 60)]
        b = claim(engine, "b")                  # ... and b neither waits for it nor takes its rows
    assert len(a) == 5 and len(b) == 5 and not set(a) & set(b)


def cfg(lease=300.0):
    return Config(node=NodeConfig(name="n1"),
                  mail=MailConfig(smtp="127.0.0.1:25", claim_lease=lease, retry_base=60))


def test_a_sender_sends_only_rows_it_claimed(sqlite_engine):
    queue(sqlite_engine, 3)
    claim(sqlite_engine, "other:1", limit=1, lease=3600)
    clock = make_clock(NOW)
    sent = []
    s = OutboxSender(cfg(), SyncPool(sqlite_engine), clock,
                     sendmail=lambda h, f, to, msg, **kw: sent.append(msg) or defer.succeed(1))
    assert s.send_due().result == 2
    rows = mails(sqlite_engine)
    assert [r["sent_at"] is not None for r in rows] == [False, True, True]
    assert rows[0]["claimed_by"] == "other:1"
    assert all(r["claimed_by"] is None and r["claimed_until"] is None for r in rows[1:])


def test_stopping_cancels_the_send_in_flight_and_releases_the_batch(sqlite_engine):
    queue(sqlite_engine, 3)
    clock = make_clock(NOW)
    hanging = []

    def sendmail(h, f, to, msg, **kw):
        hanging.append(defer.Deferred())
        return hanging[-1]

    s = OutboxSender(cfg(), SyncPool(sqlite_engine), clock, sendmail=sendmail)
    s.startService()
    assert len(hanging) == 1 and all(r["claimed_by"] == s.me for r in mails(sqlite_engine))
    stopped = s.stopService()
    assert not stopped.called                    # the send in flight gets its grace time
    clock.advance(STOP_GRACE)
    assert stopped.called
    rows = mails(sqlite_engine)
    assert all(r["sent_at"] is None and r["attempts"] == 0 for r in rows)   # not an attempt
    assert all(r["claimed_by"] is None for r in rows)        # free for the next sender at once
    assert claim(sqlite_engine, "next", now=NOW) == [r["id"] for r in rows]


def test_a_send_that_finishes_in_the_grace_time_is_marked(sqlite_engine):
    queue(sqlite_engine, 2)
    clock = make_clock(NOW)
    pending = []
    s = OutboxSender(cfg(), SyncPool(sqlite_engine), clock,
                     sendmail=lambda *a, **kw: pending.append(defer.Deferred()) or pending[-1])
    s.startService()
    stopped = s.stopService()
    pending[0].callback(1)
    assert stopped.called and len(pending) == 1        # the second mail waits for the next node
    rows = mails(sqlite_engine)
    assert rows[0]["sent_at"] is not None and rows[1]["sent_at"] is None
    assert rows[1]["claimed_by"] is None


def test_a_claim_near_its_end_is_renewed_before_the_send(sqlite_engine):
    queue(sqlite_engine, 2)
    clock = make_clock(NOW)
    stamps = []

    def sendmail(*a, **kw):
        with sqlite_engine.connect() as c:
            stamps.append(c.execute(sa.select(outbox.c.claimed_until).where(
                outbox.c.sent_at.is_(None)).order_by(outbox.c.id)).scalars().all())
        clock.advance(100)                       # each send takes 100 s of a 150 s lease
        return defer.succeed(1)

    s = OutboxSender(cfg(lease=150), SyncPool(sqlite_engine), clock, sendmail=sendmail)
    assert s.send_due().result == 2
    # the first send starts with 150 s of lease left (more than SEND_TIMEOUT): no renewal; the
    # second starts 100 s later with 50 s left, so its claim is renewed to a full lease first
    assert stamps[0][0] == NOW + 150 * S and stamps[1][0] == NOW + 250 * S
