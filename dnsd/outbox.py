"""Queueing mail: one row in the outbox, written in the caller's transaction.

Whoever causes a mail (a verdict, an admin's change, an application) calls `queue_mail(conn, ...)`
inside the same transaction as the change, so a change and its mail commit or vanish together. The
sender service (admin.outbox) delivers the rows over SMTP and retries; nothing here talks SMTP.
"""

from __future__ import annotations

import datetime as _dt
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import sqlalchemy as sa

from dnsd.models import outbox, utcnow


def build_message(*, sender: str, to: list[str], subject: str, body: str,
                  reply_to: str = "", auto: bool = True, headers: dict | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
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


def queue_mail(conn: sa.Connection, *, kind: str, sender: str, to: list[str], subject: str,
               body: str, mirror_id: int | None = None, author: str = "", reply_to: str = "",
               auto: bool = True, headers: dict | None = None) -> int:
    """Add one mail to the outbox in the caller's transaction; returns its row id."""
    to = [a for a in (t.strip() for t in to) if a]
    if not to:
        raise ValueError("a mail needs at least one recipient")
    msg = build_message(sender=sender, to=to, subject=subject, body=body, reply_to=reply_to,
                        auto=auto, headers=headers)
    res = conn.execute(outbox.insert().values(
        kind=kind, mirror_id=mirror_id, author=author, recipients=",".join(to),
        message=msg.as_bytes(), subject=msg["Subject"], next_attempt_at=utcnow(),
    ))
    return res.inserted_primary_key[0]
