"""The `outbox` table: mail queued in the caller's transaction, as records.

Whoever causes a mail (a verdict, an admin's change, an application) calls `queue_mail(conn, ...)`
inside the same transaction as the change, so a change and its mail commit or vanish together. Who
gets which mail is dnsd.recipients' rule; the sender service (admin.outbox) claims the due rows,
delivers them over SMTP and marks them; nothing here talks SMTP.

A row is *pending* (not sent yet, retried with backoff), *failed* (parked after `[mail] retry_max`
attempts), *sent*, or *discarded* (an operator gave up on it); `retry` makes a failed row pending
again.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import sqlalchemy as sa

from dnsd import recipients as _recipients
from dnsd import statuses
from dnsd.errors import NotFound, Refused
from dnsd.models import outbox, utcnow
from dnsd.recipients import Recipient
from dnsd.records._base import from_mapping


def _checked(to) -> list[Recipient]:
    """Every recipient through dnsd.validation (a one-line name, one bare address), however it
    was made: a CR, LF or NUL never reaches a header, a list never the envelope."""
    return [_recipients.recipient(t.name, t.email) if isinstance(t, Recipient)
            else _recipients.recipient("", t) for t in to]


def build_message(*, sender: str, to: Sequence, subject: str, body: str,
                  reply_to: str = "", auto: bool = True,
                  headers: dict | None = None) -> EmailMessage:
    to = _checked(to)
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = _recipients.header(to)
    msg["Subject"] = " ".join(subject.split())        # a reason typed with a line break: one line
    msg["Date"] = format_datetime(_dt.datetime.now(_dt.UTC))
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "mirrordns.invalid")
    if reply_to:
        msg["Reply-To"] = reply_to
    if auto:
        msg["Auto-Submitted"] = "auto-generated"      # RFC 3834: no vacation replies to us
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    return msg


def queue_mail(conn: sa.Connection, *, kind: str, sender: str, to: Sequence[Recipient],
               subject: str, body: str, mirror_id: int | None = None, author: str = "",
               reply_to: str = "", auto: bool = True, headers: dict | None = None) -> int:
    """Add one mail to the outbox in the caller's transaction; returns its row id. `to` holds
    dnsd.recipients.Recipient pairs (or bare addresses, which are checked as such: a
    "Name <addr>" string is refused, never split)."""
    to = _checked(t for t in to if not (isinstance(t, str) and not t.strip()))
    if not to:
        raise ValueError("a mail needs at least one recipient")
    envelope = _recipients.stored(to)               # refuses anything but bare addresses
    msg = build_message(sender=sender, to=to, subject=subject, body=body, reply_to=reply_to,
                        auto=auto, headers=headers)
    res = conn.execute(outbox.insert().values(
        kind=kind, mirror_id=mirror_id, author=author, recipients=envelope,
        message=msg.as_bytes(), subject=msg["Subject"], next_attempt_at=utcnow(),
    ))
    return res.inserted_primary_key[0]


# --- records ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mail:
    id: int
    created_at: _dt.datetime
    kind: str
    mirror_id: int | None
    author: str
    recipients: str
    subject: str
    attempts: int
    next_attempt_at: _dt.datetime
    sent_at: _dt.datetime | None
    failed: bool
    discarded_at: _dt.datetime | None
    last_error: str

    @property
    def state(self) -> str:
        if self.sent_at is not None:
            return statuses.MAIL_SENT
        if self.discarded_at is not None:
            return statuses.MAIL_DISCARDED
        return statuses.MAIL_FAILED if self.failed else statuses.MAIL_PENDING

    @property
    def addresses(self) -> list[str]:
        return _recipients.from_stored(self.recipients)


COLUMNS = tuple(outbox.c[f] for f in Mail.__dataclass_fields__)
_c = outbox.c
_UNSENT = sa.and_(_c.sent_at.is_(None), _c.discarded_at.is_(None))
STATE_WHERE = {
    statuses.MAIL_PENDING: sa.and_(_UNSENT, _c.failed.is_(False)),
    statuses.MAIL_FAILED: sa.and_(_UNSENT, _c.failed.is_(True)),
    statuses.MAIL_SENT: _c.sent_at.is_not(None),
    statuses.MAIL_DISCARDED: sa.and_(_c.sent_at.is_(None), _c.discarded_at.is_not(None)),
}


def _mail(row) -> Mail:
    return from_mapping(Mail, row._mapping)


def get(conn: sa.Connection, mail_id: int) -> Mail:
    row = conn.execute(sa.select(*COLUMNS).where(_c.id == mail_id)).first()
    if row is None:
        raise NotFound(f"no mail #{mail_id} in the outbox")
    return _mail(row)


def select(conn: sa.Connection, state: str | None = None, *, kind: str | None = None,
           mirror_id: int | None = None, limit: int = 200) -> list[Mail]:
    """Newest first; `state` one of dnsd.statuses.MAIL_STATES (None: all)."""
    q = sa.select(*COLUMNS)
    if state:
        q = q.where(STATE_WHERE[state])
    if kind:
        q = q.where(_c.kind == kind)
    if mirror_id is not None:
        q = q.where(_c.mirror_id == mirror_id)
    q = q.order_by(_c.created_at.desc(), _c.id.desc()).limit(limit)
    return [_mail(r) for r in conn.execute(q)]


def counts(conn: sa.Connection) -> dict[str, int]:
    return {s: int(conn.execute(sa.select(sa.func.count()).select_from(outbox)
                                .where(w)).scalar_one()) for s, w in STATE_WHERE.items()}


def oldest_pending(conn: sa.Connection) -> _dt.datetime | None:
    return conn.execute(sa.select(sa.func.min(_c.created_at))
                        .where(STATE_WHERE[statuses.MAIL_PENDING])).scalar()


def retry(conn: sa.Connection, mail_id: int, now: _dt.datetime) -> Mail:
    """A failed (or discarded, or waiting) mail goes out on the sender's next round."""
    m = get(conn, mail_id)
    if m.state == statuses.MAIL_SENT:
        raise Refused(f"mail #{mail_id} was sent at {m.sent_at:%Y-%m-%d %H:%M}; not again")
    conn.execute(outbox.update().where(_c.id == mail_id).values(
        failed=False, discarded_at=None, next_attempt_at=now, attempts=0, claimed_by=None,
        claimed_until=None))
    return get(conn, mail_id)


def discard(conn: sa.Connection, mail_id: int, now: _dt.datetime) -> Mail:
    """An unsent mail is never sent; its row stays, for the record."""
    m = get(conn, mail_id)
    if m.state == statuses.MAIL_SENT:
        raise Refused(f"mail #{mail_id} was sent already")
    if m.state == statuses.MAIL_DISCARDED:
        raise Refused(f"mail #{mail_id} is discarded already")
    conn.execute(outbox.update().where(_c.id == mail_id).values(discarded_at=now))
    return get(conn, mail_id)


def message(conn: sa.Connection, mail_id: int) -> bytes:
    row = conn.execute(sa.select(_c.message).where(_c.id == mail_id)).first()
    if row is None:
        raise NotFound(f"no mail #{mail_id} in the outbox")
    return bytes(row.message)
