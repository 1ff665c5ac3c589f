"""Sending the outbox: a Twisted service that delivers queued mail over SMTP, with retries.

Rows are written by `dnsd.outbox.queue_mail` in the same transaction as the change that causes
them; this service only reads due rows, hands each to `twisted.mail.smtp.sendmail`, and marks it
sent *after* the SMTP server accepted it. So the guarantee is at-least-once: if the process dies
between the server's 250 and our mark, the mail goes again on restart; it is never lost. While the
SMTP server is down, each row's `next_attempt_at` moves back exponentially (`[mail] retry_base`
seconds, doubling, capped at 6 hours) and its `last_error` says why; after `retry_max` attempts the
row is parked (`failed`) for an admin to look at.

`sendmail` is a constructor argument (STYLE E14), so tests can swap in a recorder; the end-to-end
tests use a real aiosmtpd server on loopback instead.
"""

from __future__ import annotations

import datetime as _dt
import random

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.mail import smtp

from dnsd.config import split_hostport
from dnsd.models import outbox

MAX_BACKOFF = 6 * 3600
SEND_TIMEOUT = 120            # seconds for one SMTP conversation


def _now(reactor) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(reactor.seconds(), _dt.UTC).replace(tzinfo=None)


def backoff(attempts: int, base: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after `attempts` failed attempts: base, 2 base, 4 base, ... up to 6 h, with
    up to 10% jitter so a queue of mails does not retry in lock-step."""
    delay = min(MAX_BACKOFF, base * (2 ** max(0, attempts - 1)))
    return delay * (1 + (rng or random).uniform(0, 0.1))


def due_rows(conn: sa.Connection, now: _dt.datetime, limit: int) -> list[dict]:
    rows = conn.execute(
        sa.select(outbox.c.id, outbox.c.recipients, outbox.c.message, outbox.c.attempts,
                  outbox.c.kind, outbox.c.subject)
        .where(outbox.c.sent_at.is_(None), outbox.c.failed.is_(False),
               outbox.c.next_attempt_at <= now)
        .order_by(outbox.c.next_attempt_at, outbox.c.id).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


def mark_sent(conn: sa.Connection, row_id: int, now: _dt.datetime) -> None:
    conn.execute(outbox.update().where(outbox.c.id == row_id).values(
        sent_at=now, attempts=outbox.c.attempts + 1, last_error=""))


def mark_failed(conn: sa.Connection, row_id: int, now: _dt.datetime, error: str, retry_max: int,
                delay: float) -> bool:
    """Record one failed attempt; True when the row is now parked for good."""
    attempts = conn.execute(sa.select(outbox.c.attempts).where(outbox.c.id == row_id)).scalar_one()
    attempts += 1
    parked = attempts >= retry_max
    conn.execute(outbox.update().where(outbox.c.id == row_id).values(
        attempts=attempts, last_error=error[:2000], failed=parked,
        next_attempt_at=now + _dt.timedelta(seconds=delay)))
    return parked


class OutboxSender(service.Service):
    name = "outbox"
    _log = Logger()

    def __init__(self, cfg, pool, reactor, sendmail=smtp.sendmail, batch: int = 20, rng=None):
        self.cfg, self.pool, self.reactor = cfg, pool, reactor
        self._sendmail = sendmail
        self.batch = batch
        self.rng = rng or random.Random()
        self.host, self.port = split_hostport(cfg.mail.smtp, "[mail] smtp")
        # read once here, at startup, so no file is read on the reactor thread while it runs
        m = cfg.mail
        self._password = (cfg.resolve_path(m.password_file).read_text().strip()
                          if m.password_file else None)
        self._loop = None

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self.send_due)
        self._loop.clock = self.reactor
        self._loop.start(self.cfg.mail.poll_interval, now=True).addErrback(
            lambda f: self._log.failure("outbox loop stopped", f))

    def stopService(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return super().stopService()

    def send(self, recipients: list[str], message: bytes) -> defer.Deferred:
        """One SMTP conversation (the seam tests can replace through `sendmail`)."""
        m = self.cfg.mail
        d = self._sendmail(
            self.host, m.from_, recipients, message, port=self.port, reactor=self.reactor,
            username=m.username or None, password=self._password,
            requireAuthentication=bool(m.username), requireTransportSecurity=m.starttls)
        return d.addTimeout(SEND_TIMEOUT, self.reactor)

    def send_due(self) -> defer.Deferred:
        """Send the due rows, oldest first, until none is due or one fails; never raises."""
        return defer.ensureDeferred(self._send_due())

    async def _send_due(self) -> int:
        sent = 0
        try:
            while True:
                now = _now(self.reactor)
                rows = await self.pool.run_readonly(
                    lambda conn, now=now: due_rows(conn, now, self.batch))
                if not rows:
                    return sent
                for row in rows:
                    if not await self._one(row):
                        return sent       # the server is likely down: the rest waits for next poll
                    sent += 1
                if len(rows) < self.batch:
                    return sent
        except Exception:
            self._log.failure("outbox round failed")
            return sent

    async def _one(self, row: dict) -> bool:
        to = [a for a in row["recipients"].split(",") if a]
        try:
            await self.send(to, row["message"])
        except Exception as e:
            err = f"{type(e).__name__}: {e}"
            delay = backoff(row["attempts"] + 1, self.cfg.mail.retry_base, self.rng)
            now = _now(self.reactor)
            parked = await self.pool.run(lambda conn: mark_failed(
                conn, row["id"], now, err, self.cfg.mail.retry_max, delay))
            log = self._log.error if parked else self._log.warn
            log("mail {id} ({kind}) to {to} not sent, attempt {attempt}: {error}"
                + (" (given up)" if parked else " (retry in {delay:.0f} s)"),
                id=row["id"], kind=row["kind"], to=row["recipients"], attempt=row["attempts"] + 1,
                error=err, delay=delay)
            return False
        now = _now(self.reactor)
        await self.pool.run(lambda conn: mark_sent(conn, row["id"], now))
        self._log.info("mail {id} ({kind}) sent to {to}", id=row["id"], kind=row["kind"],
                       to=row["recipients"])
        return True


def makeService(cfg, pool, reactor) -> OutboxSender:
    return OutboxSender(cfg, pool, reactor)
