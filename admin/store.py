"""Mirror operations made by a person, shared by `mirrorctl` and the admin web.

Every function takes a SQLAlchemy Connection that is already inside a transaction (the CLI opens one
per command; the web runs the function as `pool.run(lambda conn: store.disable(conn, ...))`), does
one clear operation and returns plain dicts. Nothing here commits: a change, its audit row, its
version bump and its mail commit or vanish together with the caller's transaction.

Rules every change follows:
- a change to a mirror row calls `bump_version` (the plan carries every mirror field the DNS answer
  and the closer use: addresses, name, country, status, weight, backup, URLs, specs for the score);
- every change writes one `audit` row: actor, action, the changed fields before and after (JSON);
- additions, removals and status changes queue a mail to the list (and the maintainers, when the
  mirror has some) with `dnsd.outbox.queue_mail`, as php.net's mirror system did.

Errors are `StoreError` with one sentence an admin can act on.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import json
import re
from dataclasses import dataclass
from email.utils import parseaddr
from urllib.parse import urlsplit

import sqlalchemy as sa

from dnsd import countries
from dnsd.models import (
    ACTIVE,
    DISABLED_ADMIN,
    DISABLED_PROBES,
    PENDING,
    RETIRED,
    ROLES,
    STATUSES,
    audit,
    bump_version,
    maintainers,
    mirror_health,
    mirrors,
    notes,
    sessions,
    users,
    utcnow,
)
from dnsd.outbox import queue_mail


class StoreError(Exception):
    """A refused operation, worded for the admin who asked for it."""


@dataclass(frozen=True)
class MailSettings:
    """Who change mails come from and go to: [mail] from, list and reply_to of the config."""

    sender: str
    list: str
    reply_to: str = ""

    @classmethod
    def from_config(cls, cfg) -> MailSettings:
        return cls(sender=cfg.mail.from_, list=cfg.mail.list, reply_to=cfg.mail.reply_to)


NAME_RE = re.compile(r"^[a-z]{2}[0-9]+$")
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
URL_FIELDS = {"http_url": "http", "https_url": "https", "ftp_url": "ftp", "rsync_url": "rsync"}
SPEC_FIELDS = ("bandwidth_mbit", "cores", "memory_gb", "disk_gb")

# What `edit_mirror` (and `add_mirror`) may set directly; status has its own operations.
EDITABLE = (
    "name", "hostname", "country", "ipv4", "ipv6", *URL_FIELDS, "provider_name", "provider_url",
    "provider_logo", "backup", "weight", *SPEC_FIELDS, "has_ipv6", "has_https", "source",
)
NOTES_SHOWN = 20


# --- validation --------------------------------------------------------------------------------

def check_name(name: str) -> str:
    n = (name or "").strip().lower()
    if not NAME_RE.match(n):
        raise StoreError(f"'{name}' is not a mirror name: two letters and a number, like de2")
    return n


def check_country(code: str) -> str:
    c = (code or "").strip().upper()
    if not countries.is_country(c):
        raise StoreError(f"'{code}' is not an ISO 3166-1 alpha-2 country code (like DE, US, GB)")
    return c


def check_hostname(host: str) -> str:
    h = (host or "").strip().lower().rstrip(".")
    labels = h.split(".")
    if len(h) > 253 or len(labels) < 2 or not all(_LABEL_RE.match(x) for x in labels):
        raise StoreError(f"'{host}' is not a host name (like mirror.example.net)")
    return h


def check_ip(value: str | None, family: int) -> str | None:
    if value is None or str(value).strip() == "":
        return None
    cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    try:
        return str(cls(str(value).strip()))          # canonical form (IPv6 compressed)
    except ValueError:
        raise StoreError(f"'{value}' is not an IPv{family} address") from None


def check_url(value: str | None, field: str) -> str | None:
    """A base URL of the right scheme with a host, ending in '/' (files are appended to it)."""
    if value is None or str(value).strip() == "":
        return None
    scheme = URL_FIELDS[field]
    v = str(value).strip()
    parts = urlsplit(v)
    if parts.scheme.lower() != scheme or not parts.hostname:
        raise StoreError(f"'{value}' is not a {scheme}:// URL with a host")
    if parts.query or parts.fragment:
        raise StoreError(f"'{value}': a base URL takes no ?query or #fragment")
    return v if v.endswith("/") else v + "/"


def url_field(url: str) -> str:
    """Which column a URL belongs in, from its scheme (for `--url` given without a protocol)."""
    scheme = urlsplit(url.strip()).scheme.lower()
    for field, s in URL_FIELDS.items():
        if s == scheme:
            return field
    raise StoreError(f"'{url}': only http, https, ftp and rsync URLs are mirror URLs")


def parse_maintainer(text: str) -> dict:
    """'Jane Doe <jane@example.org>' or 'jane@example.org' -> {'name':..., 'email':...}."""
    name, email = parseaddr(text or "")
    email = email.strip()
    if "@" not in email or " " in email or email.startswith("@") or email.endswith("@"):
        raise StoreError(f"'{text}' is not a maintainer: use \"Name <address@example.org>\"")
    return {"name": name.strip(), "email": email}


def _check_field(field: str, value):
    if field == "name":
        return None if value in (None, "") else check_name(value)
    if field == "hostname":
        return check_hostname(value)
    if field == "country":
        return check_country(value)
    if field == "ipv4":
        return check_ip(value, 4)
    if field == "ipv6":
        return check_ip(value, 6)
    if field in URL_FIELDS:
        return check_url(value, field)
    if field in ("backup", "has_ipv6", "has_https"):
        if not isinstance(value, bool):
            raise StoreError(f"{field} must be true or false")
        return value
    if field == "weight":
        try:
            w = float(value)
        except (TypeError, ValueError):
            raise StoreError(f"weight '{value}' is not a number") from None
        if not (w >= 0 and w < float("inf")):
            raise StoreError(f"weight must be 0 or more, not {value}")
        return w
    if field in SPEC_FIELDS:
        if value in (None, ""):
            return None
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise StoreError(f"{field} '{value}' is not a whole number") from None
        if n < 0:
            raise StoreError(f"{field} must be 0 or more, not {value}")
        return n
    if field in ("provider_name", "provider_url", "provider_logo", "source"):
        return "" if value is None else str(value).strip()
    raise StoreError(f"'{field}' is not a mirror field that can be set")


# --- reading -----------------------------------------------------------------------------------

def _plain(row) -> dict:
    return dict(row._mapping)


def _find(conn: sa.Connection, ref: str) -> dict:
    """A mirror row by name (de2), by id (#12 or 12) or by host name."""
    ref = (ref or "").strip()
    q = sa.select(mirrors)
    if NAME_RE.match(ref.lower()):
        row = conn.execute(q.where(mirrors.c.name == ref.lower())).first()
    elif ref.lstrip("#").isdigit():
        row = conn.execute(q.where(mirrors.c.id == int(ref.lstrip("#")))).first()
    else:
        rows = conn.execute(q.where(mirrors.c.hostname == ref.lower().rstrip("."))).all()
        if len(rows) > 1:
            raise StoreError(f"{len(rows)} mirrors have host name {ref}: use the mirror name")
        row = rows[0] if rows else None
    if row is None:
        raise StoreError(f"no mirror named {ref}")
    return _plain(row)


def _maintainers_of(conn: sa.Connection, ids: list[int]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {i: [] for i in ids}
    if not ids:
        return out
    rows = conn.execute(
        sa.select(maintainers.c.mirror_id, maintainers.c.name, maintainers.c.email)
        .where(maintainers.c.mirror_id.in_(ids)).order_by(maintainers.c.id)
    )
    for r in rows:
        out[r.mirror_id].append({"name": r.name, "email": r.email})
    return out


def label(m: dict) -> str:
    """How a mirror is called in messages: 'de2 (mirror.example.de)'."""
    return f"{m['name']} ({m['hostname']})" if m.get("name") else f"#{m['id']} ({m['hostname']})"


def get_mirror(conn: sa.Connection, ref: str) -> dict:
    """One mirror with its maintainers, its health row (or None) and its latest notes."""
    m = _find(conn, ref)
    m["maintainers"] = _maintainers_of(conn, [m["id"]])[m["id"]]
    h = conn.execute(sa.select(mirror_health).where(mirror_health.c.mirror_id == m["id"])).first()
    m["health"] = _plain(h) if h else None
    rows = conn.execute(
        sa.select(notes.c.author, notes.c.created_at, notes.c.text)
        .where(notes.c.mirror_id == m["id"])
        .order_by(notes.c.created_at.desc(), notes.c.id.desc()).limit(NOTES_SHOWN)
    )
    m["notes"] = [_plain(r) for r in rows]
    return m


def list_mirrors(conn: sa.Connection, country: str | None = None,
                 status: str | None = None) -> list[dict]:
    """Mirrors ordered by country and name, each with its maintainers."""
    q = sa.select(mirrors)
    if country:
        q = q.where(mirrors.c.country == check_country(country))
    if status:
        if status not in STATUSES:
            raise StoreError(f"'{status}' is not a status (one of {', '.join(STATUSES)})")
        q = q.where(mirrors.c.status == status)
    q = q.order_by(mirrors.c.country, sa.func.length(mirrors.c.name), mirrors.c.name, mirrors.c.id)
    out = [_plain(r) for r in conn.execute(q)]
    by_id = _maintainers_of(conn, [m["id"] for m in out])
    for m in out:
        m["maintainers"] = by_id[m["id"]]
    return out


def next_free_name(conn: sa.Connection, country: str) -> str:
    """The lowest unused ccN for a country (retired mirrors keep their names, so no reuse)."""
    cc = check_country(country).lower()
    taken = set(conn.execute(
        sa.select(mirrors.c.name).where(mirrors.c.name.like(f"{cc}%"))).scalars())
    n = 1
    while f"{cc}{n}" in taken:
        n += 1
    return f"{cc}{n}"


# --- audit and mail ----------------------------------------------------------------------------

def _json(d: dict) -> str:
    return json.dumps(d, sort_keys=True, default=_jsonable)


def _jsonable(v):
    if isinstance(v, (_dt.datetime, _dt.date)):
        return v.isoformat()
    return str(v)


def _audit(conn, actor: str, action: str, mirror_id: int | None, before: dict, after: dict) -> None:
    conn.execute(audit.insert().values(
        at=utcnow(), actor=actor, mirror_id=mirror_id, action=action,
        before=_json(before) if before else "", after=_json(after) if after else "",
    ))


def _note(conn, mirror_id: int, actor: str, text: str) -> None:
    conn.execute(notes.insert().values(mirror_id=mirror_id, author=actor, created_at=utcnow(),
                                       text=text))


def _mail(conn, mail: MailSettings | None, *, kind: str, m: dict, actor: str, subject: str,
          body: str, to_maintainers: bool) -> None:
    if mail is None:
        return
    to = [mail.list] if mail.list else []
    if to_maintainers:
        # bare addresses: the outbox keeps recipients comma-separated, and names may hold commas
        to += [x["email"] for x in _maintainers_of(conn, [m["id"]])[m["id"]]]
    if not to:
        return
    queue_mail(conn, kind=kind, sender=mail.sender, to=to, subject=subject,
               body=body + _signature(), mirror_id=m["id"], author=actor,
               reply_to=mail.reply_to)


def _signature() -> str:
    return "\n-- \nmirrordns: this mail was sent because a mirror's entry changed.\n"


def _describe(m: dict) -> str:
    urls = [m[f] for f in URL_FIELDS if m.get(f)]
    lines = [
        f"Name:     {m.get('name') or '(none yet)'}",
        f"Host:     {m['hostname']}",
        f"Country:  {m['country']}",
        f"IPv4:     {m.get('ipv4') or '-'}",
        f"IPv6:     {m.get('ipv6') or '-'}",
        f"URLs:     {' '.join(urls) if urls else '-'}",
        f"Provider: {m.get('provider_name') or '-'}",
        f"Status:   {m['status']}" + (f" ({m['status_reason']})" if m.get("status_reason") else ""),
    ]
    return "\n".join(lines)


# --- changes -----------------------------------------------------------------------------------

def add_mirror(conn: sa.Connection, *, actor: str, mail: MailSettings | None, country: str,
               hostname: str, name: str | None = None, auto_name: bool = True,
               status: str = ACTIVE, status_reason: str = "",
               maintainers_: list | tuple = (), action: str = "add", same_host_ok: bool = False,
               **fields) -> dict:
    """Add a mirror; it gets `name` or, with auto_name, the next free ccN of its country.

    A host already in the table (and not retired) is refused, so a form sent twice does not
    create dk2 and dk3 for one machine; importers, keyed by their own source, pass same_host_ok.

    `fields` are any of EDITABLE. has_ipv6 / has_https default to whether an IPv6 address / an
    https URL was given. `maintainers_` are "Name <mail>" strings or {'name','email'} dicts.
    """
    values = {"country": check_country(country), "hostname": check_hostname(hostname)}
    for k, v in fields.items():
        if k in ("country", "hostname", "name"):
            raise StoreError(f"{k} given twice")
        values[k] = _check_field(k, v)
    if status not in (PENDING, ACTIVE, DISABLED_ADMIN):
        raise StoreError(f"a new mirror is pending, active or disabled-by-admin, not {status}")
    if status == DISABLED_ADMIN and not status_reason.strip():
        raise StoreError("a mirror added as disabled needs a reason")
    values.setdefault("has_ipv6", bool(values.get("ipv6")))
    values.setdefault("has_https", bool(values.get("https_url")))
    if not same_host_ok:
        twin = conn.execute(sa.select(mirrors.c.name, mirrors.c.id).where(
            mirrors.c.hostname == values["hostname"], mirrors.c.status != RETIRED)).first()
        if twin is not None:
            raise StoreError(f"{values['hostname']} is already in the table as "
                             f"{twin.name or '#' + str(twin.id)}: edit that mirror instead")
    if name:
        values["name"] = check_name(name)
        _name_free(conn, values["name"])
    elif auto_name:
        values["name"] = next_free_name(conn, values["country"])
    mlist = [x if isinstance(x, dict) else parse_maintainer(x) for x in maintainers_]
    now = utcnow()
    values.update(status=status, status_reason=status_reason.strip(), status_since=now,
                  created_at=now, updated_at=now)
    try:
        mid = conn.execute(mirrors.insert().values(**values)).inserted_primary_key[0]
    except sa.exc.IntegrityError:
        raise StoreError(f"name {values.get('name')} was taken meanwhile; try again") from None
    for x in mlist:
        conn.execute(maintainers.insert().values(mirror_id=mid, name=x["name"], email=x["email"]))
    bump_version(conn)
    m = _find(conn, f"#{mid}")
    after = {k: m[k] for k in values if k not in ("created_at", "updated_at", "status_since")}
    if mlist:
        after["maintainers"] = mlist
    _audit(conn, actor, action, mid, {}, after)
    _mail(conn, mail, kind="mirror-added", m=m, actor=actor,
          subject=f"[mirrors] {label(m)} added in {m['country']} by {actor}",
          body=f"{actor} added a mirror.\n\n{_describe(m)}\n", to_maintainers=True)
    m["maintainers"] = mlist
    return m


def _name_free(conn, name: str, except_id: int | None = None) -> None:
    row = conn.execute(sa.select(mirrors.c.id, mirrors.c.hostname).where(mirrors.c.name == name)).first()
    if row is not None and row.id != except_id:
        raise StoreError(f"name {name} is already used by {row.hostname}")


def edit_mirror(conn: sa.Connection, ref: str, actor: str, *, action: str = "edit",
                **fields) -> dict:
    """Change fields of EDITABLE; returns {'mirror': ..., 'changed': {field: [before, after]}}.

    Unchanged values are dropped, so an edit that changes nothing writes nothing.
    """
    m = _find(conn, ref)
    if not fields:
        raise StoreError("nothing to change: give at least one field")
    new = {}
    for k, v in fields.items():
        if k not in EDITABLE:
            raise StoreError(f"'{k}' cannot be edited (status has its own commands)")
        nv = _check_field(k, v)
        if nv != m[k]:
            new[k] = nv
    if new.get("name"):
        _name_free(conn, new["name"], except_id=m["id"])
    if not new:
        return {"mirror": m, "changed": {}}
    new["updated_at"] = utcnow()
    conn.execute(mirrors.update().where(mirrors.c.id == m["id"]).values(**new))
    del new["updated_at"]
    bump_version(conn)
    _audit(conn, actor, action, m["id"], {k: m[k] for k in new}, new)
    return {"mirror": _find(conn, f"#{m['id']}"),
            "changed": {k: [m[k], v] for k, v in new.items()}}


def _set_status(conn, m: dict, status: str, reason: str, actor: str, action: str) -> dict:
    now = utcnow()
    conn.execute(mirrors.update().where(mirrors.c.id == m["id"]).values(
        status=status, status_reason=reason, status_since=now, updated_at=now))
    bump_version(conn)
    _audit(conn, actor, action, m["id"],
           {"status": m["status"], "status_reason": m["status_reason"]},
           {"status": status, "status_reason": reason})
    return _find(conn, f"#{m['id']}")


def disable(conn: sa.Connection, ref: str, actor: str, reason: str,
            mail: MailSettings | None) -> dict:
    """Take a mirror out of every answer by hand; probes never re-enable it (admin outranks)."""
    reason = (reason or "").strip()
    if not reason:
        raise StoreError("disabling a mirror needs a reason (it is mailed to its maintainers)")
    m = _find(conn, ref)
    if m["status"] == DISABLED_ADMIN:
        raise StoreError(f"{label(m)} is already disabled by an admin: {m['status_reason']}")
    if m["status"] == RETIRED:
        raise StoreError(f"{label(m)} is retired")
    new = _set_status(conn, m, DISABLED_ADMIN, reason, actor, "disable")
    _note(conn, m["id"], actor, f"Disabled (was {m['status']}): {reason}")
    _mail(conn, mail, kind="mirror-disabled", m=new, actor=actor,
          subject=f"[mirrors] {label(new)} disabled by {actor}: {reason}",
          body=(f"{actor} disabled the mirror {label(new)}; it no longer appears in answers.\n\n"
                f"Reason: {reason}\n\n{_describe(new)}\n"), to_maintainers=True)
    return new


def enable(conn: sa.Connection, ref: str, actor: str, mail: MailSettings | None,
           reason: str = "") -> dict:
    """Make a mirror active again (from pending, disabled or retired); probes still judge health."""
    m = _find(conn, ref)
    if m["status"] == ACTIVE:
        raise StoreError(f"{label(m)} is already active")
    reason = (reason or "").strip()
    new = _set_status(conn, m, ACTIVE, reason, actor, "enable")
    _note(conn, m["id"], actor, f"Enabled (was {m['status']})" + (f": {reason}" if reason else ""))
    extra = ("\nThe probes had disabled it; they will disable it again if it still fails.\n"
             if m["status"] == DISABLED_PROBES else "")
    _mail(conn, mail, kind="mirror-enabled", m=new, actor=actor,
          subject=f"[mirrors] {label(new)} enabled by {actor}",
          body=(f"{actor} enabled the mirror {label(new)} (it was {m['status']}).\n{extra}\n"
                f"{_describe(new)}\n"), to_maintainers=True)
    return new


def retire(conn: sa.Connection, ref: str, actor: str, reason: str,
           mail: MailSettings | None) -> dict:
    """Remove a mirror for good; its row, name, notes and history stay for the record."""
    m = _find(conn, ref)
    if m["status"] == RETIRED:
        raise StoreError(f"{label(m)} is already retired")
    reason = (reason or "").strip() or "retired"
    new = _set_status(conn, m, RETIRED, reason, actor, "retire")
    _note(conn, m["id"], actor, f"Retired (was {m['status']}): {reason}")
    _mail(conn, mail, kind="mirror-retired", m=new, actor=actor,
          subject=f"[mirrors] {label(new)} retired by {actor}",
          body=(f"{actor} retired the mirror {label(new)}; it no longer appears in answers.\n\n"
                f"Reason: {reason}\n\n{_describe(new)}\n"), to_maintainers=True)
    return new


def add_note(conn: sa.Connection, ref: str, actor: str, text: str) -> dict:
    text = (text or "").strip()
    if not text:
        raise StoreError("an empty note says nothing")
    m = _find(conn, ref)
    _note(conn, m["id"], actor, text)
    _audit(conn, actor, "note", m["id"], {}, {"text": text})
    return {"mirror": m["name"], "author": actor, "text": text}


def set_maintainers(conn: sa.Connection, ref: str, actor: str, people: list | tuple) -> list[dict]:
    """Replace a mirror's maintainers by `people` ("Name <mail>" strings or dicts)."""
    m = _find(conn, ref)
    new = [x if isinstance(x, dict) else parse_maintainer(x) for x in people]
    old = _maintainers_of(conn, [m["id"]])[m["id"]]
    if new == old:
        return old
    conn.execute(maintainers.delete().where(maintainers.c.mirror_id == m["id"]))
    for x in new:
        conn.execute(maintainers.insert().values(mirror_id=m["id"], name=x.get("name", ""),
                                                 email=x["email"]))
    _audit(conn, actor, "maintainers", m["id"], {"maintainers": old}, {"maintainers": new})
    return new


def audit_log(conn: sa.Connection, ref: str | None = None, limit: int = 50) -> list[dict]:
    q = sa.select(audit).order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit)
    if ref:
        q = q.where(audit.c.mirror_id == _find(conn, ref)["id"])
    return [_plain(r) for r in conn.execute(q)]


# --- users -------------------------------------------------------------------------------------

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def add_user(conn: sa.Connection, username: str, password_hash: str, role: str = "admin",
             email: str = "", actor: str = "") -> dict:
    """A new admin-web user; `password_hash` comes from admin.passwords.hash_password."""
    u = (username or "").strip().lower()
    if not USERNAME_RE.match(u):
        raise StoreError(f"'{username}' is not a user name: lower-case letters, digits, . _ -")
    if role not in ROLES:
        raise StoreError(f"'{role}' is not a role (one of {', '.join(ROLES)})")
    if not password_hash.startswith("$argon2"):
        raise StoreError("the password must be stored as an argon2 hash")
    if conn.execute(sa.select(users.c.id).where(users.c.username == u)).first():
        raise StoreError(f"user {u} exists already")
    uid = conn.execute(users.insert().values(
        username=u, password_hash=password_hash, role=role, email=email.strip(),
        created_at=utcnow())).inserted_primary_key[0]
    _audit(conn, actor or u, "user-add", None, {}, {"username": u, "role": role})
    return {"id": uid, "username": u, "role": role, "email": email.strip()}


def set_password(conn: sa.Connection, username: str, password_hash: str, actor: str = "") -> None:
    """Set a new password, end every session of the user and revoke their API token: whoever
    held the old password (or a stolen cookie, or a token made with it) is shut out with it."""
    u = (username or "").strip().lower()
    uid = conn.execute(sa.select(users.c.id).where(users.c.username == u)).scalar()
    if uid is None:
        raise StoreError(f"no user named {username}")
    conn.execute(users.update().where(users.c.id == uid).values(
        password_hash=password_hash, failed_logins=0, locked_until=None, api_token_hash=None))
    conn.execute(sessions.delete().where(sessions.c.user_id == uid))
    _audit(conn, actor or u, "user-password", None, {}, {"username": u})


def get_user(conn: sa.Connection, username: str) -> dict | None:
    row = conn.execute(sa.select(users).where(users.c.username == (username or "").lower())).first()
    return _plain(row) if row else None


# --- waiting list decisions (added by H5 for the admin web) ------------------------------------

APPLICATION_DECISIONS = ("new", "contacted", "declined", "withdrawn")


def _application(conn: sa.Connection, app_id: int) -> dict:
    from dnsd.models import applications
    row = conn.execute(sa.select(applications).where(applications.c.id == app_id)).first()
    if row is None:
        raise StoreError(f"no application #{app_id}")
    return _plain(row)


def set_application_status(conn: sa.Connection, app_id: int, actor: str, status: str) -> dict:
    """Mark an application new, contacted, declined or withdrawn (accepting has its own function)."""
    from dnsd.models import applications
    if status not in APPLICATION_DECISIONS:
        raise StoreError(f"'{status}' is not one of {', '.join(APPLICATION_DECISIONS)}")
    app = _application(conn, app_id)
    if app["status"] == "accepted":
        raise StoreError(f"application #{app_id} was accepted already (mirror #{app['mirror_id']})")
    if app["status"] == status:
        return app
    conn.execute(applications.update().where(applications.c.id == app_id)
                 .values(status=status, updated_at=utcnow()))
    _audit(conn, actor, "application-status", None, {"application": app_id, "status": app["status"]},
           {"application": app_id, "status": status})
    return _application(conn, app_id)


def accept_application(conn: sa.Connection, app_id: int, actor: str, name: str | None,
                       mail: MailSettings | None) -> dict:
    """Turn a waiting application into a pending mirror named `name` (or the next free ccN).

    The applicant becomes the mirror's maintainer; the mirror stays pending (not in answers) until
    an admin enables it once it is set up and probed.
    """
    from dnsd.models import applications
    app = _application(conn, app_id)
    if app["status"] not in ("new", "contacted"):
        raise StoreError(f"application #{app_id} is {app['status']}, not waiting")
    specs = {k: app[k] for k in (*SPEC_FIELDS, "has_ipv6", "has_https")}
    m = add_mirror(
        conn, actor=actor, mail=mail, country=app["country"], hostname=app["hostname"],
        name=name or None, auto_name=True, status=PENDING,
        maintainers_=[{"name": app["name"], "email": app["email"]}],
        provider_name=app["provider_name"], provider_url=app["provider_url"],
        source=f"application:{app_id}", **specs)
    conn.execute(applications.update().where(applications.c.id == app_id)
                 .values(status="accepted", mirror_id=m["id"], updated_at=utcnow()))
    _audit(conn, actor, "application-accept", m["id"], {"application": app_id, "status": app["status"]},
           {"application": app_id, "status": "accepted", "mirror": m["name"]})
    return m
