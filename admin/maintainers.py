"""Maintainers looking after their own mirrors: the login links mailed to them, and their notes.

A maintainer has no password. They give an address on /maintainer/login; when it is a contact of a
live mirror (dnsd.recipients.contact_mirrors: the addresses listed for it) a link
``<base_url>/maintainer/login/<token>`` is queued to that address through the outbox. The token is
256 random bits; the table keeps only its sha256 (login_links.token_hash), its address and its
expiry ([admin] maintainer_link_minutes). Following the link shows a page with one button; only
that POST uses the link (so a mail scanner that fetches links does not spend it), once: it marks
the link and every other open link of the address used, and starts a maintainer session
(admin.web.sessions) for the address.

What the session reaches is asked again at every request and in every change's transaction
(admin.store.own_mirror): the mirrors that list the address *now*. Take an address off a mirror and
its maintainer's access to it ends with the next click.

Everything here runs inside a ``thd(conn)`` on the table's pool, like admin.waitinglist.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from admin import store
from dnsd import recipients, validation
from dnsd.errors import Invalid
from dnsd.models import login_links
from dnsd.outbox import queue_mail
from dnsd.records import mirrors as _mirrors
from dnsd.records.notes import Note
from probes import requests as probe_requests

KEEP_USED = _dt.timedelta(days=1)       # used and expired links are swept after this


@dataclass(frozen=True)
class LinkSettings:
    """Where links point and who mails them: from the configuration (`from_config`)."""

    base_url: str
    sender: str
    title: str
    minutes: int
    reply_to: str = ""

    @classmethod
    def from_config(cls, cfg) -> LinkSettings:
        from admin.waitinglist import public_base_url

        return cls(base_url=public_base_url(cfg), sender=cfg.mail.from_,
                   title=cfg.admin.public_title, minutes=cfg.admin.maintainer_link_minutes,
                   reply_to=cfg.mail.reply_to)


def new_token() -> str:
    return secrets.token_urlsafe(32)          # 43 characters of [A-Za-z0-9_-]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/maintainer/login/{token}"


def _body(address: str, url: str, mirrors_: list, s: LinkSettings) -> str:
    names = ", ".join(m.label for m in mirrors_)
    return (
        f"Hello,\n\n"
        f"someone (we hope you) asked for a link to look after the {s.title} mirrors that list "
        f"{address} ({names}). It works once, within {s.minutes} minutes:\n\n  {url}\n\n"
        f"If you did not ask for it, ignore this mail: without the link nobody gets in.\n"
    )


def request_link(conn: sa.Connection, address: str, s: LinkSettings,
                 now: _dt.datetime) -> bool:
    """Queue a login link to `address` when it is a contact of a live mirror; False, with
    nothing written, when it is not (the page says the same either way). Old links are swept."""
    conn.execute(login_links.delete().where(login_links.c.expires_at < now - KEEP_USED))
    try:
        addr = validation.email(address)
    except Invalid:
        return False
    scope = recipients.contact_mirrors(conn, addr)
    if not scope:
        return False
    token = new_token()
    conn.execute(login_links.insert().values(
        token_hash=token_hash(token), email=addr, created_at=now,
        expires_at=now + _dt.timedelta(minutes=s.minutes)))
    ms = [_mirrors.get(conn, i) for i in sorted(scope)]
    queue_mail(conn, kind="maintainer-login", sender=s.sender, reply_to=s.reply_to,
               to=recipients.for_kind("maintainer-login", address=addr),
               subject=f"Your login link for the {s.title} mirrors",
               body=_body(addr, link(s.base_url, token), ms, s))
    return True


def _open(conn, token: str, now: _dt.datetime):
    row = conn.execute(sa.select(login_links).where(
        login_links.c.token_hash == token_hash(token))).first()
    if row is None or row.used_at is not None or row.expires_at <= now:
        return None
    return row


def link_is_open(conn: sa.Connection, token: str, now: _dt.datetime) -> bool:
    """May this link still be used? (For the page the link opens; using it is `use_link`.)"""
    return _open(conn, token, now) is not None


def use_link(conn: sa.Connection, token: str, now: _dt.datetime) -> str | None:
    """The address the link was mailed to, once: the link and the address's other open links
    are used up with it. None when the link is unknown, used or expired, or when no mirror
    lists the address any more."""
    row = _open(conn, token, now)
    if row is None:
        return None
    c = login_links.c
    won = conn.execute(login_links.update().where(c.id == row.id, c.used_at.is_(None))
                       .values(used_at=now)).rowcount
    if won != 1:                              # used meanwhile by a parallel request
        return None
    conn.execute(login_links.update().where(c.email == row.email, c.used_at.is_(None))
                 .values(used_at=now))
    if not recipients.contact_mirrors(conn, row.email):
        return None
    return row.email


def add_note(conn: sa.Connection, mirror_id: int, address: str, text: str) -> Note:
    """A note on the maintainer's own mirror, signed with their address."""
    m = store.own_mirror(conn, mirror_id, address)
    return store.add_note(conn, f"#{m.id}", address, text)


def request_probe(conn: sa.Connection, mirror_id: int, address: str, now: _dt.datetime):
    """"Probe now" on the maintainer's own mirror (probes.requests, the one way to ask)."""
    m = store.own_mirror(conn, mirror_id, address)
    return probe_requests.request_probe(conn, m.id, "maintainer", address, now=now)


def plan_maintenance(conn: sa.Connection, mirror_id: int, address: str, mail, *, starts_at,
                     ends_at, reason: str, now: _dt.datetime):
    """A maintenance window on the maintainer's own mirror (admin.store.plan_maintenance: the
    admins' own planning, audited and mailed the same way), planned under their address."""
    m = store.own_mirror(conn, mirror_id, address)
    return store.plan_maintenance(conn, f"#{m.id}", address, starts_at=starts_at,
                                  ends_at=ends_at, reason=reason, mail=mail, now=now)


def cancel_maintenance(conn: sa.Connection, mirror_id: int, window_id: int, address: str, mail,
                       now: _dt.datetime):
    """Cancel (or end now) a window of the maintainer's own mirror; another mirror's window is
    NotFound (admin.store.cancel_maintenance's mirror_ref)."""
    m = store.own_mirror(conn, mirror_id, address)
    return store.cancel_maintenance(conn, window_id, address, mirror_ref=f"#{m.id}", mail=mail,
                                    now=now)
