"""Mirror operations made by a person, shared by `mirrorctl`, the admin web, the API and the
importers.

Every function takes a SQLAlchemy Connection that is already inside a transaction (the CLI opens one
per command; the web runs the function as `pool.run(lambda conn: store.disable(conn, ...))`), does
one clear operation and returns records (dnsd.records). Nothing here commits: a change, its audit
row, its version bump and its mail commit or vanish together with the caller's transaction.

The rules it applies are not written here but called: dnsd.validation (what a field may hold, a
mirror needs a URL or an address, only a mirror with an http or https URL may be active),
dnsd.serving (which changes alter the plan, so bump the version), dnsd.recipients (who is mailed),
dnsd.statuses (what a status allows). What is written here: every change writes one `audit` row
(actor, action, the changed fields before and after, JSON), and a host name belongs to one live
mirror at a time (add, edit, enable and import refuse a second).

Errors are `StoreError` (dnsd.errors.Refused) with one sentence an admin can act on; `Invalid`
ones name the field.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import re
from dataclasses import dataclass

import sqlalchemy as sa

from dnsd import maintenance, recipients, serving, statuses, validation
from dnsd import outbox as _outbox
from dnsd.errors import Invalid, NotFound, Refused
from dnsd.models import applications, bump_version, mirrors, sessions, users, utcnow
from dnsd.outbox import queue_mail
from dnsd.records import applications as _apps
from dnsd.records import health as _health
from dnsd.records import maintainers as _maint
from dnsd.records import maintenance as _windows
from dnsd.records import mirrors as _mirrors
from dnsd.records import notes as _notes
from dnsd.records import users as _users
from dnsd.records._base import plain
from dnsd.records.health import Health
from dnsd.records.maintainers import Maintainer
from dnsd.records.mirrors import SPEC_FIELDS, URL_FIELDS, Mirror
from dnsd.statuses import ACTIVE, DISABLED_ADMIN, DISABLED_PROBES, PENDING, RETIRED, STATUSES
from dnsd.validation import Rules

StoreError = Refused          # the name callers know; NotFound and Invalid are kinds of it

__all__ = ["STATUSES", "URL_FIELDS", "Invalid", "NotFound", "StoreError"]

STRICT = validation.STRICT


@dataclass(frozen=True)
class MailSettings:
    """Who change mails come from and go to: [mail] from, list and reply_to of the config."""

    sender: str
    list: str
    reply_to: str = ""

    @classmethod
    def from_config(cls, cfg) -> MailSettings:
        return cls(sender=cfg.mail.from_, list=cfg.mail.list, reply_to=cfg.mail.reply_to)


# What `edit_mirror` (and `add_mirror`) may set directly; status has its own operations.
EDITABLE = tuple(f for f in validation.MIRROR_FIELDS)
# What a mirror's maintainer may change themselves (`edit_by_maintainer`): how it is shown, where
# it answers. Its name, country, host name, weight, people and status stay the admins'.
MAINTAINER_EDITABLE = ("provider_name", "provider_url", "provider_logo",
                       *validation.ADDRESS_FIELDS, *URL_FIELDS)
NOTES_SHOWN = 20


@dataclass(frozen=True)
class MirrorDetail:
    """A mirror with what belongs to it: maintainers, health, latest notes."""

    mirror: Mirror
    maintainers: tuple[Maintainer, ...]
    health: Health
    notes: tuple[_notes.Note, ...] = ()

    def __getattr__(self, name):            # detail.name, detail.status: the mirror's fields
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.mirror, name)


@dataclass(frozen=True)
class Edit:
    mirror: Mirror
    changed: dict                            # {field: (before, after)}


# --- reading -----------------------------------------------------------------------------------

def find(conn: sa.Connection, ref: str) -> Mirror:
    """A mirror by name (de2), by id (#12 or 12) or by host name."""
    return _mirrors.find(conn, ref)


def get_mirror(conn: sa.Connection, ref: str) -> MirrorDetail:
    """One mirror with its maintainers, its health and its latest notes."""
    m = _mirrors.find(conn, ref)
    return MirrorDetail(m, _maint.of_mirror(conn, m.id), _health.get(conn, m.id),
                        tuple(_notes.notes_of(conn, m.id, NOTES_SHOWN)))


def list_mirrors(conn: sa.Connection, country: str | None = None,
                 status: str | None = None) -> list[MirrorDetail]:
    """Mirrors ordered by country and name, each with its maintainers and health."""
    cc = validation.country(country) if country else None
    if status and status not in STATUSES:
        raise Invalid("status", f"'{status}' is not a status (one of {', '.join(STATUSES)})")
    ms = _mirrors.select(conn, cc, status or None)
    people = _maint.of(conn, [m.id for m in ms])
    health = _health.of(conn, [m.id for m in ms])
    return [MirrorDetail(m, people[m.id], health.get(m.id, _health.NEVER)) for m in ms]


def next_free_name(conn: sa.Connection, country: str, rules: Rules = STRICT) -> str:
    """The name a new mirror of `country` gets: the lowest ccN free in the table and in the zone
    file."""
    return _mirrors.next_free_name(conn, validation.country(country),
                                   lambda n: rules.zone_occupant(n) is not None)


# --- audit and mail ----------------------------------------------------------------------------

def _jsonable(v):
    if isinstance(v, (_dt.datetime, _dt.date)):
        return v.isoformat()
    return str(v)


def _json(d: dict) -> str:
    return json.dumps(plain(d), sort_keys=True, default=_jsonable)


def _audit(conn, actor: str, action: str, mirror_id: int | None, before: dict, after: dict) -> None:
    _notes.add_audit(conn, actor, action, mirror_id, _json(before) if before else "",
                     _json(after) if after else "")


def _mail(conn, mail: MailSettings | None, *, kind: str, m: Mirror, actor: str, subject: str,
          body: str) -> None:
    if mail is None:
        return
    to = recipients.for_kind(kind, list_address=mail.list,
                             maintainers=_maint.of_mirror(conn, m.id))
    if not to:
        return
    queue_mail(conn, kind=kind, sender=mail.sender, to=to, subject=subject,
               body=body + _signature(), mirror_id=m.id, author=actor, reply_to=mail.reply_to)


def _signature() -> str:
    return "\n-- \nmirrordns: this mail was sent because a mirror's entry changed.\n"


def _describe(m: Mirror) -> str:
    urls = list(m.urls.values())
    lines = [
        f"Name:     {m.name or '(none yet)'}",
        f"Host:     {m.hostname}",
        f"Country:  {m.country}",
        f"IPv4:     {m.ipv4 or '-'}",
        f"IPv6:     {m.ipv6 or '-'}",
        f"URLs:     {' '.join(urls) if urls else '-'}",
        f"Provider: {m.provider_name or '-'}",
        f"Status:   {m.status}" + (f" ({m.status_reason})" if m.status_reason else ""),
    ]
    return "\n".join(lines)


# --- rules of the table that need the table ------------------------------------------------------

def _host_free(conn, hostname: str, except_id: int | None = None) -> None:
    twin = _mirrors.host_owner(conn, hostname, except_id)
    if twin is not None:
        raise Refused(f"{hostname} is already in the table as "
                      f"{twin.name or '#' + str(twin.id)}: edit that mirror instead", "hostname")


def _name_free(conn, name: str, except_id: int | None = None) -> None:
    row = _mirrors.name_owner(conn, name, except_id)
    if row is not None:
        raise Refused(f"name {name} is already used by {row.hostname}", "name")


def _complete(values, field: str = "url") -> None:
    if problem := validation.mirror_problem(values):
        raise Invalid(field, problem)


def _may_be_active(m, label: str) -> None:
    if problem := validation.activation_problem(m):
        raise Invalid("status", f"{label} cannot be active: {problem}")


# --- changes -----------------------------------------------------------------------------------

def add_mirror(conn: sa.Connection, *, actor: str, mail: MailSettings | None, country: str,
               hostname: str, name: str | None = None, auto_name: bool = True,
               status: str | None = ACTIVE, status_reason: str = "", maintainers_=(),
               action: str = "add", rules: Rules = STRICT, **fields) -> Mirror:
    """Add a mirror; it gets `name` or, with auto_name, the next free ccN of its country.

    A host already in the table (and not retired) is refused, so a form sent twice does not
    create dk2 and dk3 for one machine. `status` None means active when it can be, else pending
    with the reason (an ftp- or rsync-only mirror); active asked for and impossible is refused.
    `fields` are any of EDITABLE; has_ipv6 / has_https default to whether an IPv6 address / an
    https URL was given. `maintainers_` are Maintainer records, "Name <mail>" strings or
    {'name','email'} dicts.
    """
    for k in fields:
        if k in ("country", "hostname", "name"):
            raise Invalid(k, f"{k} given twice")
    values = {"country": validation.country(country),
              "hostname": validation.hostname(hostname, rules=rules)}
    values.update(validation.mirror_fields(fields, rules))
    _complete(values)
    if status is None:
        problem = validation.activation_problem(values)
        status, status_reason = (PENDING, problem) if problem else (ACTIVE, "")
    if status not in statuses.NEW_MIRROR:
        raise Invalid("status", f"a new mirror is pending, active or disabled-by-admin, "
                                f"not {status}")
    reason = validation.reason(status_reason)
    if status == DISABLED_ADMIN and not reason:
        raise Invalid("reason", "a mirror added as disabled needs a reason")
    if status == ACTIVE:
        _may_be_active(values, values["hostname"])
    values.setdefault("has_ipv6", bool(values.get("ipv6")))
    values.setdefault("has_https", bool(values.get("https_url")))
    _host_free(conn, values["hostname"])
    people = validation.maintainers(maintainers_)
    if name:
        values["name"] = validation.zone_name_free(validation.name(name), rules)
        _name_free(conn, values["name"])
    elif auto_name:
        values["name"] = next_free_name(conn, values["country"], rules)
    now = utcnow()
    values.update(status=status, status_reason=reason, status_since=now, created_at=now,
                  updated_at=now)
    try:
        with conn.begin_nested():
            mid = conn.execute(mirrors.insert().values(**values)).inserted_primary_key[0]
    except sa.exc.IntegrityError:
        raise Refused(f"name {values.get('name')} was taken meanwhile; try again") from None
    _maint.replace(conn, mid, people)
    bump_version(conn)
    m = _mirrors.get(conn, mid)
    after = {k: getattr(m, k) for k in values if k not in ("created_at", "updated_at",
                                                           "status_since")}
    if people:
        after["maintainers"] = list(people)
    _audit(conn, actor, action, mid, {}, after)
    _mail(conn, mail, kind="mirror-added", m=m, actor=actor,
          subject=f"[mirrors] {m.label} added in {m.country} by {actor}",
          body=f"{actor} added a mirror.\n\n{_describe(m)}\n")
    return m


def edit_mirror(conn: sa.Connection, ref: str, actor: str, *, action: str = "edit",
                rules: Rules = STRICT, **fields) -> Edit:
    """Change fields of EDITABLE; unchanged values are dropped, so an edit that changes nothing
    writes nothing."""
    m = _mirrors.find(conn, ref)
    if not fields:
        raise Refused("nothing to change: give at least one field")
    for k in fields:
        if k not in EDITABLE:
            raise Invalid(k, f"'{k}' cannot be edited (status has its own commands)")
    new = {k: v for k, v in validation.mirror_fields(fields, rules).items()
           if v != getattr(m, k)}
    if not new:
        return Edit(m, {})
    merged = dataclasses.replace(m, **new)
    if new.get("name"):
        validation.zone_name_free(new["name"], rules)
        _name_free(conn, new["name"], except_id=m.id)
    if "hostname" in new and m.status in statuses.LIVE:
        _host_free(conn, new["hostname"], except_id=m.id)
    _complete(merged)
    if m.status == ACTIVE:
        _may_be_active(merged, m.label)
    conn.execute(mirrors.update().where(mirrors.c.id == m.id).values(**new, updated_at=utcnow()))
    if serving.changes_plan(new):
        bump_version(conn)
    _audit(conn, actor, action, m.id, {k: getattr(m, k) for k in new}, new)
    return Edit(_mirrors.get(conn, m.id), {k: (getattr(m, k), v) for k, v in new.items()})


def own_mirror(conn: sa.Connection, mirror_id: int, address: str) -> Mirror:
    """The mirror `mirror_id` if `address` is one of its contacts now (dnsd.recipients), else
    NotFound, worded the same whether the mirror exists or not: a maintainer learns nothing about
    mirrors that are not theirs. Every maintainer operation starts here, in its transaction."""
    if mirror_id not in recipients.contact_mirrors(conn, address):
        raise NotFound(f"no mirror #{mirror_id} of yours")
    return _mirrors.get(conn, mirror_id)


def edit_by_maintainer(conn: sa.Connection, mirror_id: int, address: str,
                       mail: MailSettings | None, *, rules: Rules = STRICT, **fields) -> Edit:
    """A maintainer's change to their own mirror: MAINTAINER_EDITABLE only, checked like an
    admin's edit (the same `edit_mirror`), audited under their address, and mailed to the list and
    the mirror's maintainers (a change nobody else sees would be the one nobody catches)."""
    m = own_mirror(conn, mirror_id, address)
    for k in fields:
        if k not in MAINTAINER_EDITABLE:
            raise Invalid(k, f"'{k}' is changed by the admins; write to them")
    res = edit_mirror(conn, f"#{m.id}", address, action="maintainer-edit", rules=rules, **fields)
    if res.changed:
        lines = "\n".join(f"  {k}: {before or '-'} -> {after or '-'}"
                          for k, (before, after) in res.changed.items())
        _mail(conn, mail, kind="maintainer-edit", m=res.mirror, actor=address,
              subject=f"[mirrors] {res.mirror.label} changed by its maintainer {address}",
              body=(f"{address}, a maintainer of {res.mirror.label}, changed it:\n\n{lines}\n\n"
                    f"{_describe(res.mirror)}\n"))
    return res


def _set_status(conn, m: Mirror, status: str, reason: str, actor: str, action: str) -> Mirror:
    """Move `m` from the status it was read with (dnsd.records.mirrors.move_status): when
    someone else (another admin, the probes) moved it meanwhile, nothing is written or mailed
    and the person is told, rather than two changes and two mails or an overwritten one."""
    now = utcnow()
    if not _mirrors.move_status(conn, m, status, reason, now):
        now_is = _mirrors.get(conn, m.id)
        raise Refused(f"{m.label} was changed meanwhile: it is {statuses.word(now_is.status)} "
                      f"now; nothing was done")
    bump_version(conn)
    _audit(conn, actor, action, m.id, {"status": m.status, "status_reason": m.status_reason},
           {"status": status, "status_reason": reason})
    return _mirrors.get(conn, m.id)


def disable(conn: sa.Connection, ref: str, actor: str, reason: str,
            mail: MailSettings | None) -> Mirror:
    """Take a mirror out of every answer by hand; probes never re-enable it (admin outranks)."""
    reason = validation.reason(reason)
    if not reason:
        raise Invalid("reason", "disabling a mirror needs a reason (it is mailed to its "
                                "maintainers)")
    m = _mirrors.find(conn, ref)
    if m.status == DISABLED_ADMIN:
        raise Refused(f"{m.label} is already disabled by an admin: {m.status_reason}")
    if m.status == RETIRED:
        raise Refused(f"{m.label} is retired")
    new = _set_status(conn, m, DISABLED_ADMIN, reason, actor, "disable")
    _notes.add_note(conn, m.id, actor, f"Disabled (was {m.status}): {reason}")
    _mail(conn, mail, kind="mirror-disabled", m=new, actor=actor,
          subject=f"[mirrors] {new.label} disabled by {actor}: {reason}",
          body=(f"{actor} disabled the mirror {new.label}; it no longer appears in answers.\n\n"
                f"Reason: {reason}\n\n{_describe(new)}\n"))
    return new


def enable(conn: sa.Connection, ref: str, actor: str, mail: MailSettings | None,
           reason: str = "") -> Mirror:
    """Make a mirror active again (from pending, disabled or retired); whether it then serves is
    dnsd.serving's question (with probes on: once a probe passed)."""
    m = _mirrors.find(conn, ref)
    if m.status == ACTIVE:
        raise Refused(f"{m.label} is already active")
    reason = validation.reason(reason)
    _may_be_active(m, m.label)
    if m.status not in statuses.LIVE:                  # a retired mirror comes back
        _host_free(conn, m.hostname, except_id=m.id)
    new = _set_status(conn, m, ACTIVE, reason, actor, "enable")
    _notes.add_note(conn, m.id, actor, f"Enabled (was {m.status})"
                    + (f": {reason}" if reason else ""))
    extra = ("\nThe probes had disabled it; they will disable it again if it still fails.\n"
             if m.status == DISABLED_PROBES else "")
    _mail(conn, mail, kind="mirror-enabled", m=new, actor=actor,
          subject=f"[mirrors] {new.label} enabled by {actor}",
          body=(f"{actor} enabled the mirror {new.label} (it was {m.status}).\n{extra}\n"
                f"{_describe(new)}\n"))
    return new


def retire(conn: sa.Connection, ref: str, actor: str, reason: str,
           mail: MailSettings | None) -> Mirror:
    """Remove a mirror for good; its row, name, notes and history stay for the record."""
    m = _mirrors.find(conn, ref)
    if m.status == RETIRED:
        raise Refused(f"{m.label} is already retired")
    reason = validation.reason(reason) or "retired"
    new = _set_status(conn, m, RETIRED, reason, actor, "retire")
    _notes.add_note(conn, m.id, actor, f"Retired (was {m.status}): {reason}")
    _mail(conn, mail, kind="mirror-retired", m=new, actor=actor,
          subject=f"[mirrors] {new.label} retired by {actor}",
          body=(f"{actor} retired the mirror {new.label}; it no longer appears in answers.\n\n"
                f"Reason: {reason}\n\n{_describe(new)}\n"))
    return new


def add_note(conn: sa.Connection, ref: str, actor: str, text: str) -> _notes.Note:
    text = validation.note(text)
    m = _mirrors.find(conn, ref)
    now = utcnow()
    _notes.add_note(conn, m.id, actor, text, now)
    _audit(conn, actor, "note", m.id, {}, {"text": text})
    return _notes.Note(actor, now, text)


def set_maintainers(conn: sa.Connection, ref: str, actor: str, people) -> tuple[Maintainer, ...]:
    """Replace a mirror's maintainers by `people` (records, "Name <mail>" strings or dicts)."""
    m = _mirrors.find(conn, ref)
    new = validation.maintainers(people)
    old = _maint.of_mirror(conn, m.id)
    if new == old:
        return old
    _maint.replace(conn, m.id, new)
    _audit(conn, actor, "maintainers", m.id, {"maintainers": list(old)},
           {"maintainers": list(new)})
    return new


# --- maintenance windows -----------------------------------------------------------------------

def plan_maintenance(conn: sa.Connection, ref: str, actor: str, *, starts_at, ends_at,
                     reason: str, mail: MailSettings | None = None,
                     now: _dt.datetime | None = None) -> _windows.Window:
    """Plan a maintenance window for the mirror `ref` (name, #id or host name): from `[dns] ttl`
    seconds before `starts_at` until a probe after `ends_at` passed it is out of the answers,
    and probes during it count for nothing (dnsd.maintenance). Times are datetimes (naive =
    UTC) or text ('2026-12-01 14:00'); `actor` is who planned it (a user name, or whatever a
    maintainer login records). Checked by dnsd.validation.maintenance_window (Invalid naming
    `starts_at`, `ends_at` or `reason`); Refused for a retired mirror or one with a window
    overlapping these times (field `starts_at`), NotFound for no such mirror. Writes the window,
    a note, the audit row, the version bump (the plan must learn its edges) and, with `mail`, a
    mail to the list and the maintainers."""
    now = now or utcnow()
    w = validation.maintenance_window(starts_at, ends_at, reason, now)
    m = _mirrors.find(conn, ref)
    if m.status == RETIRED:
        raise Refused(f"{m.label} is retired")
    if (o := _windows.overlapping(conn, m.id, w.starts_at, w.ends_at)) is not None:
        raise Refused(f"the mirror already has maintenance planned from "
                      f"{maintenance.when(o.starts_at)} to {maintenance.when(o.ends_at)} "
                      f"(window #{o.id}); cancel it first or choose other times", "starts_at")
    new = _windows.insert(conn, m.id, w.starts_at, w.ends_at, w.reason, actor, now)
    span = f"{maintenance.when(new.starts_at)} to {maintenance.when(new.ends_at)}"
    _notes.add_note(conn, m.id, actor, f"Maintenance planned, {span}: {new.reason}", now)
    bump_version(conn)
    _audit(conn, actor, "maintenance-plan", m.id, {},
           {"window": new.id, "starts_at": new.starts_at, "ends_at": new.ends_at,
            "reason": new.reason})
    _mail(conn, mail, kind="maintenance-planned", m=m, actor=actor,
          subject=f"[mirrors] {m.label} maintenance {span}",
          body=(f"{actor} planned maintenance of the mirror {m.label}: {span}.\n\n"
                f"Reason: {new.reason}\n\n{_MAINTENANCE_TEXT}\n"))
    return new


def cancel_maintenance(conn: sa.Connection, window_id: int, actor: str, *,
                       mirror_ref: str | None = None, mail: MailSettings | None = None,
                       now: _dt.datetime | None = None) -> _windows.Window:
    """Cancel a maintenance window. One that has not started is gone (its mirror returns to the
    answers at once if it had left them); one in progress ends now, and its mirror returns after
    its next passed probe. With `mirror_ref` the window must be that mirror's (NotFound
    otherwise: a maintainer's page cannot cancel another mirror's window by its id). Refused
    when it is already cancelled or over. Audited, noted, the version bumped, mailed with
    `mail`."""
    now = (now or utcnow()).replace(microsecond=0)
    w = _windows.get(conn, int(window_id))
    if w is None or (mirror_ref is not None and _mirrors.find(conn, mirror_ref).id != w.mirror_id):
        raise NotFound(f"there is no maintenance window #{window_id}"
                       + (f" for {mirror_ref}" if mirror_ref is not None else ""))
    m = _mirrors.get(conn, w.mirror_id)
    if w.cancelled_at is not None:
        raise Refused(f"window #{w.id} was already cancelled by {w.cancelled_by}")
    if w.ends_at <= now:
        raise Refused(f"window #{w.id} is over (it ended {maintenance.when(w.ends_at)})")
    running = w.starts_at < now
    new = _windows.cancel(conn, w.id, actor, now, ends_at=now if running else None)
    what = "ended early" if running else "cancelled"
    _notes.add_note(conn, m.id, actor, f"Maintenance {what} (was {maintenance.when(w.starts_at)}"
                                       f" to {maintenance.when(w.ends_at)}): {w.reason}", now)
    bump_version(conn)
    _audit(conn, actor, "maintenance-cancel", m.id,
           {"window": w.id, "ends_at": w.ends_at, "cancelled_at": None},
           {"window": w.id, "ends_at": new.ends_at, "cancelled_at": new.cancelled_at})
    _mail(conn, mail, kind="maintenance-cancelled", m=m, actor=actor,
          subject=f"[mirrors] {m.label} maintenance {what}",
          body=(f"{actor} {what} the maintenance of the mirror {m.label} planned from "
                f"{maintenance.when(w.starts_at)} to {maintenance.when(w.ends_at)} "
                f"({w.reason}).\n\n"
                + ("It returns to the answers after its next passed probe.\n" if running else
                   "It stays in the answers.\n")))
    return new


def maintenance_windows(conn: sa.Connection, ref: str | None = None, *,
                        not_ended_at: _dt.datetime | None = None,
                        limit: int | None = 20) -> list[_windows.Window]:
    """A mirror's windows (every mirror's when `ref` is None), the latest start first, cancelled
    ones too; with `not_ended_at`, only those that still have a say then, soonest first."""
    mid = _mirrors.find(conn, ref).id if ref is not None else None
    return _windows.select(conn, mid, not_ended_at=not_ended_at, limit=limit)


_MAINTENANCE_TEXT = ("The mirror leaves the DNS answers before the start (by the answers' TTL, so "
                     "that resolvers have forgotten it when it goes down); probes during the "
                     "window do not count and send no mail; after the end it returns once a "
                     "probe passes.")


def audit_log(conn: sa.Connection, ref: str | None = None,
              limit: int = 50) -> list[_notes.AuditEntry]:
    mid = _mirrors.find(conn, ref).id if ref else None
    return _notes.audit_entries(conn, mid, limit)


# --- users -------------------------------------------------------------------------------------

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _username(username: str) -> str:
    u = (username or "").strip().lower()
    if not USERNAME_RE.match(u):
        raise Invalid("username", f"'{username[:64]}' is not a user name: lower-case letters, "
                                  "digits, . _ -")
    return u


def add_user(conn: sa.Connection, username: str, password_hash: str, role: str = "admin",
             email: str = "", actor: str = "") -> _users.User:
    """A new admin-web user; `password_hash` comes from admin.passwords.hash_password."""
    u = _username(username)
    if role not in statuses.ROLES:
        raise Invalid("role", f"'{role}' is not a role (one of {', '.join(statuses.ROLES)})")
    if not password_hash.startswith("$argon2"):
        raise Refused("the password must be stored as an argon2 hash")
    mail = validation.email(email) if email and email.strip() else ""
    if conn.execute(sa.select(users.c.id).where(users.c.username == u)).first():
        raise Refused(f"user {u} exists already")
    conn.execute(users.insert().values(username=u, password_hash=password_hash, role=role,
                                       email=mail, created_at=utcnow()))
    _audit(conn, actor or u, "user-add", None, {}, {"username": u, "role": role})
    return _users.get(conn, u)


def set_password(conn: sa.Connection, username: str, password_hash: str, actor: str = "") -> None:
    """Set a new password, end every session of the user and revoke their API token: whoever
    held the old password (or a stolen cookie, or a token made with it) is shut out with it."""
    user = _users.get(conn, username)
    conn.execute(users.update().where(users.c.id == user.id).values(
        password_hash=password_hash, failed_logins=0, locked_until=None, api_token_hash=None))
    conn.execute(sessions.delete().where(sessions.c.user_id == user.id))
    _audit(conn, actor or user.username, "user-password", None, {}, {"username": user.username})


def get_user(conn: sa.Connection, username: str) -> _users.User | None:
    try:
        return _users.get(conn, username)
    except NotFound:
        return None


def list_users(conn: sa.Connection) -> list[_users.User]:
    return _users.select(conn)


def _last_admin_guard(conn, user: _users.User, what: str) -> None:
    if user.is_admin and not user.disabled and _users.admins_left(conn, user.id) == 0:
        raise Refused(f"{user.username} is the last admin; {what} would lock everyone out "
                      "(make another admin first)")


def set_role(conn: sa.Connection, username: str, role: str, actor: str) -> _users.User:
    user = _users.get(conn, username)
    if role not in statuses.ROLES:
        raise Invalid("role", f"'{role}' is not a role (one of {', '.join(statuses.ROLES)})")
    if role == user.role:
        return user
    if role != statuses.ADMIN:
        _last_admin_guard(conn, user, "making them a helper")
    conn.execute(users.update().where(users.c.id == user.id).values(role=role))
    _audit(conn, actor, "user-role", None, {"username": user.username, "role": user.role},
           {"username": user.username, "role": role})
    return _users.get(conn, username)


def set_user_disabled(conn: sa.Connection, username: str, disabled: bool,
                      actor: str) -> _users.User:
    """A disabled user cannot log in; their sessions end and their API token is revoked."""
    user = _users.get(conn, username)
    if user.disabled == disabled:
        return user
    if disabled:
        _last_admin_guard(conn, user, "disabling them")
        conn.execute(sessions.delete().where(sessions.c.user_id == user.id))
    conn.execute(users.update().where(users.c.id == user.id).values(
        disabled=disabled, **({"api_token_hash": None} if disabled else {})))
    _audit(conn, actor, "user-disable" if disabled else "user-enable", None,
           {"username": user.username, "disabled": user.disabled},
           {"username": user.username, "disabled": disabled})
    return _users.get(conn, username)


def delete_user(conn: sa.Connection, username: str, actor: str) -> None:
    """Remove a login for good (their sessions with it); the audit log keeps their name."""
    user = _users.get(conn, username)
    if user.username == actor:
        raise Refused("you cannot delete yourself")
    _last_admin_guard(conn, user, "deleting them")
    conn.execute(sessions.delete().where(sessions.c.user_id == user.id))
    conn.execute(users.delete().where(users.c.id == user.id))
    _audit(conn, actor, "user-delete", None, {"username": user.username, "role": user.role}, {})


# --- the outbox, by hand -----------------------------------------------------------------------

def retry_mail(conn: sa.Connection, mail_id: int, actor: str) -> _outbox.Mail:
    before = _outbox.get(conn, mail_id)
    m = _outbox.retry(conn, mail_id, utcnow())
    _audit(conn, actor, "mail-retry", m.mirror_id, {"mail": mail_id, "state": before.state},
           {"mail": mail_id, "state": m.state})
    return m


def discard_mail(conn: sa.Connection, mail_id: int, actor: str) -> _outbox.Mail:
    before = _outbox.get(conn, mail_id)
    m = _outbox.discard(conn, mail_id, utcnow())
    _audit(conn, actor, "mail-discard", m.mirror_id, {"mail": mail_id, "state": before.state},
           {"mail": mail_id, "state": m.state, "subject": m.subject})
    return m


# --- waiting list decisions --------------------------------------------------------------------

def set_application_status(conn: sa.Connection, app_id: int, actor: str,
                           status: str) -> _apps.Application:
    """Mark an application new, contacted, declined or withdrawn (accepting has its own
    function)."""
    if status not in statuses.APPLICATION_DECISIONS:
        raise Invalid("status", f"'{status}' is not one of "
                                f"{', '.join(statuses.APPLICATION_DECISIONS)}")
    app = _apps.get(conn, app_id)
    if app.status == statuses.APP_ACCEPTED:
        raise Refused(f"application #{app_id} was accepted already (mirror #{app.mirror_id})")
    if app.status == status:
        return app
    if not _apps.move_status(conn, app_id, (app.status,), status, utcnow()):
        raise Refused(f"application #{app_id} was changed meanwhile: it is "
                      f"{_apps.get(conn, app_id).status} now; nothing was done")
    _audit(conn, actor, "application-status", None, {"application": app_id, "status": app.status},
           {"application": app_id, "status": status})
    return _apps.get(conn, app_id)


def accept_application(conn: sa.Connection, app_id: int, actor: str, name: str | None,
                       mail: MailSettings | None, rules: Rules = STRICT) -> Mirror:
    """Turn a waiting application into a mirror named `name` (or the next free ccN).

    The applicant's people become the mirror's maintainers and its addresses and URLs the
    mirror's; it is *active* at once when it has an http or https URL, so it serves once a probe
    over it passed (dnsd.serving), else pending until one is added. The applicant's private link
    stays open until then (admin.waitinglist).
    """
    app = _apps.get(conn, app_id)
    if app.status not in statuses.WAITING:
        raise Refused(f"application #{app_id} is {app.status}, not waiting")
    fields = {k: getattr(app, k) for k in (*SPEC_FIELDS, "has_ipv6", "has_https", "ipv4",
                                           "ipv6", "http_url", "https_url", "rsync_url",
                                           "provider_name", "provider_url")}
    fields = {k: v for k, v in fields.items() if v not in (None, "")}
    if validation.mirror_problem(fields):
        raise Invalid("url", f"application #{app_id} gives no URL and no address; the applicant "
                             "can add them through their private link")
    # taken first, so that of two admins accepting it at once only one makes the mirror (and
    # its mail); the other waits for this row, then finds it accepted
    if not _apps.move_status(conn, app_id, statuses.WAITING, statuses.APP_ACCEPTED, utcnow()):
        raise Refused(f"application #{app_id} was decided meanwhile: it is "
                      f"{_apps.get(conn, app_id).status} now; nothing was done")
    m = add_mirror(
        conn, actor=actor, mail=mail, country=app.country, hostname=app.hostname,
        name=name or None, auto_name=True, status=None, maintainers_=app.maintainers,
        source=f"application:{app_id}", rules=rules, **fields)
    conn.execute(applications.update().where(applications.c.id == app_id)
                 .values(mirror_id=m.id))
    _audit(conn, actor, "application-accept", m.id, {"application": app_id, "status": app.status},
           {"application": app_id, "status": statuses.APP_ACCEPTED, "mirror": m.name})
    return m
