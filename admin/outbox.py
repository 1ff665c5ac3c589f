"""Sending the outbox: a Twisted service that delivers queued mail over SMTP, with retries.

Rows are written by `dnsd.outbox.queue_mail` in the same transaction as the change that causes
them, to the bare addresses dnsd.recipients gives. A sender first *claims* due rows (`claim_due`: who, and a lease of `[mail] claim_lease`
seconds; on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so two senders claiming at once take
different rows; SQLite's single writer serialises the claims by itself), then hands each to
`twisted.mail.smtp.sendmail`, and marks it sent *after* the SMTP server accepted it. So N senders
on one table deliver each mail once, and the guarantee stays at-least-once: a sender that dies
between the server's 250 and its mark, or whose lease ran out mid-send, may make a mail go twice;
a sender that dies holding claims leaves those mails to another sender once the lease is over;
nothing is lost. A claim is renewed before a send that could outlast it, and a row whose claim
went to another sender meanwhile is left to that sender.

While the SMTP server cannot be reached (refused, unreachable, timed out, the connection lost),
the sender holds the whole outbox back: one mail is tried per attempt, the wait between attempts
doubles (`[mail] retry_base` seconds, capped at 6 hours), and each failed attempt is ONE log line
naming the server, the error, how many mails wait and when the next try is; the line after the
first success says the server is back. Twisted's own sender would retry five times at once and
log each (`SMTP Client retrying server`), and announce every connection: `sendmail` here is
Twisted's without those retries and that noise. A server that answers but refuses a mail fails
that mail alone. Either way the row's `next_attempt_at` moves back by the same doubling and its
`last_error` says why; after `retry_max` attempts the row is parked (`failed`) for an admin to
look at. Nothing is lost: a row leaves the pending state only when the server accepted it.

Stopping: no new send starts; the one in flight gets `STOP_GRACE` seconds, then it is cancelled
(not counted as an attempt), and the rows still claimed are released for the next sender.

`sendmail` is a constructor argument (STYLE E14), so tests can swap in a recorder; the end-to-end
tests use a real aiosmtpd server on loopback instead.
"""

from __future__ import annotations

import datetime as _dt
import enum
import io
import os
import random
from dataclasses import dataclass

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer, error, task
from twisted.logger import Logger
from twisted.mail import smtp

from admin import figures
from dnsd import outbox as dnsd_outbox
from dnsd.config import split_hostport
from dnsd.models import outbox
from dnsd.recipients import from_stored
from dnsd.statuses import MAIL_PENDING

MAX_BACKOFF = 6 * 3600
SEND_TIMEOUT = 120            # seconds for one SMTP conversation
STOP_GRACE = 2.0              # seconds a send in flight may finish in once the node stops


def sendmail(smtphost, from_addr, to_addrs, msg, port=25, reactor=None, username=None,
             password=None, requireAuthentication=False, requireTransportSecurity=False):
    """twisted.mail.smtp.sendmail without its five immediate retries of a server that is down
    and without a log line per connection: the outbox retries, with backoff, and logs once."""
    if reactor is None:
        from twisted.internet import reactor
    d = defer.Deferred(lambda _d: _cancel())
    factory = smtp.ESMTPSenderFactory(
        username.encode() if isinstance(username, str) else username,
        password.encode() if isinstance(password, str) else password,
        from_addr, to_addrs, io.BytesIO(bytes(msg)), d, retries=0, heloFallback=True,
        requireAuthentication=requireAuthentication,
        requireTransportSecurity=requireTransportSecurity, hostname=smtphost)
    factory.noisy = False
    connector = reactor.connectTCP(smtphost, port, factory)

    def _cancel():
        factory.sendFinished = True
        if factory.currentProtocol:
            factory.currentProtocol.transport.abortConnection()
        else:
            connector.disconnect()
    return d


UNREACHABLE = (smtp.SMTPConnectError, error.ConnectError, error.TimeoutError, defer.TimeoutError,
               ConnectionError, TimeoutError)
"""Errors that say nothing about the mail, only that the server cannot be talked to."""


@dataclass(frozen=True)
class Outage:
    """The SMTP server has not been reachable since `since`; `attempts` failed in a row; the
    sender holds the outbox back until `until`."""

    since: _dt.datetime
    attempts: int
    until: _dt.datetime


def _now(reactor) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(reactor.seconds(), _dt.UTC).replace(tzinfo=None)


def backoff(attempts: int, base: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after `attempts` failed attempts: base, 2 base, 4 base, ... up to 6 h, with
    up to 10% jitter so a queue of mails does not retry in lock-step."""
    delay = min(MAX_BACKOFF, base * (2 ** max(0, attempts - 1)))
    return delay * (1 + (rng or random).uniform(0, 0.1))


_DUE_COLUMNS = (outbox.c.id, outbox.c.recipients, outbox.c.message, outbox.c.attempts,
                outbox.c.kind, outbox.c.subject)


def _due(now: _dt.datetime):
    """Pending (dnsd.outbox: not sent, not failed, not discarded) and due."""
    return (dnsd_outbox.STATE_WHERE[MAIL_PENDING], outbox.c.next_attempt_at <= now)


def due_rows(conn: sa.Connection, now: _dt.datetime, limit: int) -> list[dict]:
    """The due rows, claimed or not (for counting and for the tests)."""
    rows = conn.execute(sa.select(*_DUE_COLUMNS).where(*_due(now))
                        .order_by(outbox.c.next_attempt_at, outbox.c.id).limit(limit)).mappings()
    return [dict(r) for r in rows]


def claim_due(conn: sa.Connection, now: _dt.datetime, limit: int, me: str,
              lease: float) -> list[dict]:
    """Claim up to `limit` due rows nobody holds (or whose holder's lease ran out) for `me` until
    now + lease; returns them oldest first, each with its `claimed_until`."""
    free = sa.or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until <= now)
    rows = conn.execute(
        sa.select(*_DUE_COLUMNS).where(*_due(now), free)
        .order_by(outbox.c.next_attempt_at, outbox.c.id).limit(limit)
        .with_for_update(skip_locked=True)).mappings().all()    # PostgreSQL; SQLite ignores it
    if not rows:
        return []
    until = now + _dt.timedelta(seconds=lease)
    conn.execute(outbox.update().where(outbox.c.id.in_([r["id"] for r in rows]))
                 .values(claimed_by=me, claimed_until=until))
    return [dict(r, claimed_until=until) for r in rows]


def renew_claim(conn: sa.Connection, row_id: int, now: _dt.datetime, me: str,
                lease: float) -> _dt.datetime | None:
    """Extend `me`'s claim on an unsent row; None when the row is sent or another sender holds
    it now (after `me`'s lease ran out)."""
    until = now + _dt.timedelta(seconds=lease)
    res = conn.execute(outbox.update().where(
        outbox.c.id == row_id, dnsd_outbox.STATE_WHERE[MAIL_PENDING],
        sa.or_(outbox.c.claimed_by == me, outbox.c.claimed_until.is_(None),
               outbox.c.claimed_until <= now))
        .values(claimed_by=me, claimed_until=until))
    return until if res.rowcount else None


def release_claims(conn: sa.Connection, row_ids: list[int], me: str) -> int:
    """Give back `me`'s claims on rows it will not send now (the node stops, the server is down)."""
    if not row_ids:
        return 0
    return conn.execute(outbox.update().where(
        outbox.c.id.in_(row_ids), outbox.c.claimed_by == me, outbox.c.sent_at.is_(None))
        .values(claimed_by=None, claimed_until=None)).rowcount


def mark_sent(conn: sa.Connection, row_id: int, now: _dt.datetime) -> None:
    conn.execute(outbox.update().where(outbox.c.id == row_id).values(
        sent_at=now, attempts=outbox.c.attempts + 1, last_error="", claimed_by=None,
        claimed_until=None))


def mark_failed(conn: sa.Connection, row_id: int, now: _dt.datetime, error: str, retry_max: int,
                delay: float) -> bool:
    """Record one failed attempt; True when the row is now parked for good."""
    attempts = conn.execute(sa.select(outbox.c.attempts).where(outbox.c.id == row_id)).scalar_one()
    attempts += 1
    parked = attempts >= retry_max
    conn.execute(outbox.update().where(outbox.c.id == row_id).values(
        attempts=attempts, last_error=error[:2000], failed=parked,
        next_attempt_at=now + _dt.timedelta(seconds=delay), claimed_by=None, claimed_until=None))
    return parked


def pending_count(conn: sa.Connection) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(outbox)
                        .where(dnsd_outbox.STATE_WHERE[MAIL_PENDING])).scalar_one()


class Outcome(enum.Enum):
    SENT = "sent"
    FAILED = "failed"          # the server refused or is down: the rest of the batch waits
    SKIPPED = "skipped"        # another sender holds the row now
    STOPPED = "stopped"        # the node is stopping: not sent, not counted as an attempt


class OutboxSender(service.Service):
    name = "outbox"
    _log = Logger()

    def __init__(self, cfg, pool, reactor, sendmail=sendmail, batch: int = 20, rng=None):
        self.cfg, self.pool, self.reactor = cfg, pool, reactor
        self._sendmail = sendmail
        self.batch = batch
        self.rng = rng or random.Random()
        self.host, self.port = split_hostport(cfg.mail.smtp, "[mail] smtp")
        # read once here, at startup, so no file is read on the reactor thread while it runs
        m = cfg.mail
        self._password = (cfg.resolve_path(m.password_file).read_text().strip()
                          if m.password_file else None)
        self.me = f"{cfg.node.identity}:{os.getpid()}"       # the claimant's name in the table
        self._loop = self._loop_done = None
        self._stopping = False
        self._inflight: defer.Deferred | None = None
        self.outage: Outage | None = None

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    def startService(self):
        super().startService()
        self._stopping = False
        self._loop = task.LoopingCall(self.send_due)
        self._loop.clock = self.reactor
        self._loop_done = self._loop.start(self.cfg.mail.poll_interval, now=True).addErrback(
            lambda f: self._log.failure("outbox loop stopped", f))

    def stopService(self):
        """Fires once the round in flight is over (a send gets STOP_GRACE s) and its claims
        are released."""
        super().stopService()
        self._stopping = True
        if self._loop is None or not self._loop.running:
            return None
        self._loop.stop()
        if self._inflight is not None:
            grace = self.reactor.callLater(STOP_GRACE, self._cancel_inflight)
            self._loop_done.addBoth(lambda r: (grace.active() and grace.cancel(), r)[1])
        return self._loop_done

    def _cancel_inflight(self):
        if self._inflight is not None:
            self._inflight.cancel()

    def send(self, recipients: list[str], message: bytes) -> defer.Deferred:
        """One SMTP conversation (the seam tests can replace through `sendmail`)."""
        m = self.cfg.mail
        d = self._sendmail(
            self.host, m.from_, recipients, message, port=self.port, reactor=self.reactor,
            username=m.username or None, password=self._password,
            requireAuthentication=bool(m.username), requireTransportSecurity=m.starttls)
        return d.addTimeout(SEND_TIMEOUT, self.reactor)

    def send_due(self) -> defer.Deferred:
        """Claim and send the due rows, oldest first, until none is due or one fails; never
        raises. Fires with the number sent."""
        return defer.ensureDeferred(self._send_due())

    async def _send_due(self) -> int:
        sent = 0
        lease = self.cfg.mail.claim_lease
        if self.outage is not None and _now(self.reactor) < self.outage.until:
            return 0                        # the server is down: nothing is tried before then
        try:
            while not self._stopping:
                now = _now(self.reactor)
                rows = await self.pool.run(
                    lambda conn, now=now: claim_due(conn, now, self.batch, self.me, lease))
                if not rows:
                    return sent
                done: set[int] = set()
                outcome = Outcome.SENT
                try:
                    for row in rows:
                        if self._stopping:
                            break
                        outcome = await self._one(row)
                        if outcome is Outcome.SENT:
                            sent += 1
                        if outcome in (Outcome.SENT, Outcome.FAILED, Outcome.SKIPPED):
                            done.add(row["id"])
                        if outcome in (Outcome.FAILED, Outcome.STOPPED):
                            break   # the server is likely down: the rest waits for the next poll
                finally:
                    rest = [r["id"] for r in rows if r["id"] not in done]
                    if rest:
                        await self.pool.run(lambda conn, rest=rest: release_claims(
                            conn, rest, self.me))
                if outcome in (Outcome.FAILED, Outcome.STOPPED) or len(rows) < self.batch:
                    return sent
        except Exception:
            self._log.failure("outbox round failed")
        return sent

    async def _one(self, row: dict) -> Outcome:
        lease = self.cfg.mail.claim_lease
        now = _now(self.reactor)
        if (row["claimed_until"] - now).total_seconds() < SEND_TIMEOUT:
            until = await self.pool.run(lambda conn: renew_claim(conn, row["id"], now, self.me,
                                                                 lease))
            if until is None:
                return Outcome.SKIPPED
            row["claimed_until"] = until
        to = from_stored(row["recipients"])          # bare addresses (dnsd.recipients)
        try:
            self._inflight = self.send(to, row["message"])
            await self._inflight
        except defer.CancelledError:
            self._log.info("mail {id} ({kind}) not sent: the node is stopping", id=row["id"],
                           kind=row["kind"])
            return Outcome.STOPPED
        except Exception as e:
            await self._failed(row, e)
            return Outcome.FAILED
        finally:
            self._inflight = None
        now = _now(self.reactor)
        await self.pool.run(lambda conn: mark_sent(conn, row["id"], now))
        if self.outage is not None:
            o, self.outage = self.outage, None
            waiting = await self.pool.run_readonly(pending_count)
            self._log.info("SMTP server {server} reachable again after {attempts} failed "
                           "attempts in {outage}; {waiting} mails to send",
                           server=self.server, attempts=o.attempts, waiting=waiting,
                           outage=figures.duration((now - o.since).total_seconds()))
        self._log.info("mail {id} ({kind}) sent to {to}", id=row["id"], kind=row["kind"],
                       to=row["recipients"])
        return Outcome.SENT

    async def _failed(self, row: dict, e: Exception) -> None:
        """One failed attempt: the row's backoff, the outage's (when the server could not be
        talked to), and one log line that says when the next try is."""
        down = isinstance(e, UNREACHABLE)
        cause = e.__cause__ if isinstance(e, smtp.SMTPConnectError) and e.__cause__ else e
        err = f"{type(cause).__name__}: {cause}"        # the refusal, not Twisted's wrapper
        now = _now(self.reactor)
        attempt = row["attempts"] + 1
        streak = (self.outage.attempts + 1 if self.outage else 1) if down else 0
        delay = backoff(max(attempt, streak), self.cfg.mail.retry_base, self.rng)
        retry_max = self.cfg.mail.retry_max

        def thd(conn):
            return (mark_failed(conn, row["id"], now, err, retry_max, delay),
                    pending_count(conn))
        parked, waiting = await self.pool.run(thd)
        until = now + _dt.timedelta(seconds=delay)
        fields = dict(id=row["id"], kind=row["kind"], to=row["recipients"], attempt=attempt,
                      retry_max=retry_max, error=err, delay=delay, waiting=waiting,
                      server=self.server, next_at=f"{until:%Y-%m-%d %H:%M:%S} UTC",
                      wait=figures.duration(delay), parked=parked)
        mail_state = ("given up, parked for an admin" if parked
                      else "attempt {attempt} of {retry_max}")
        if down:
            self.outage = Outage(self.outage.since if self.outage else now, streak, until)
            self._log.warn("SMTP server {server} unreachable ({error}); {waiting} mails wait, "
                           "none lost; next try {next_at} (in {wait}); mail {id}: "
                           + mail_state, outage_attempt=streak, **fields)
        else:
            log = self._log.error if parked else self._log.warn
            log("mail {id} ({kind}) to {to} refused by {server} ({error}); "
                + mail_state + ("" if parked else "; next try {next_at} (in {wait})"), **fields)


def makeService(cfg, pool, reactor) -> OutboxSender:
    return OutboxSender(cfg, pool, reactor)
