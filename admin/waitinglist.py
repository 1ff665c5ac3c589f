"""The waiting list: people offering to host a mirror, their private link, and the quarterly reminder.

Everything here runs inside a `thd(conn)` on the table's pool (plain data in, plain data out), so the
public form, the admin pages, the CLI and the scheduled-jobs service share one set of rules. The
confirmation and reminder mails are queued with `dnsd.outbox.queue_mail` in the same transaction as
the row they talk about: an application and its mail commit or vanish together.

The private link is `<base_url>/apply/<token>` with a 256-bit random token (applications.token); it
is the applicant's only credential, so it is compared by database lookup on the exact value and never
logged or shown to anyone but its owner (the admin pages show applications, not their links).
"""

from __future__ import annotations

import datetime as _dt
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import sqlalchemy as sa

from dnsd import countries
from dnsd.models import applications, utcnow
from dnsd.outbox import queue_mail

# An application still waiting for a decision (these get reminders and are counted publicly).
WAITING = ("new", "contacted")

# Form fields, in display order; the numeric ones are optional declared specs.
TEXT_FIELDS = ("name", "email", "country", "hostname", "provider_name", "provider_url", "comments")
INT_FIELDS = {"bandwidth_mbit": 1_000_000, "cores": 100_000, "memory_gb": 1_000_000,
              "disk_gb": 100_000_000}
BOOL_FIELDS = ("has_ipv6", "has_https")
MAX_LEN = {"name": 255, "email": 255, "country": 2, "hostname": 253, "provider_name": 255,
           "provider_url": 512, "comments": 4000}

_EMAIL = re.compile(r"^[^@\s<>\"',;]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class Validated:
    """The cleaned values (ready for the table) and one message per field that failed."""
    values: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def is_hostname(h: str) -> bool:
    if not h or len(h) > 253 or "." not in h:
        return False
    return all(_LABEL.match(label) for label in h.rstrip(".").split("."))


def is_web_url(u: str) -> bool:
    """An http(s) URL with a host: anything else (javascript:, data:) never reaches a page."""
    try:
        s = urlsplit(u)
    except ValueError:
        return False
    return s.scheme in ("http", "https") and bool(s.hostname) and not _CONTROL.search(u) \
        and " " not in u


def validate(form: dict[str, str]) -> Validated:
    """Check an application form (str -> str) the way the page shows it: one message per field."""
    v = Validated()
    for name in TEXT_FIELDS:
        raw = form.get(name, "")
        val = raw.strip() if name != "comments" else raw.strip().replace("\r\n", "\n")
        if _CONTROL.search(val) or (name != "comments" and "\n" in val):
            v.errors[name] = "Please remove control characters and line breaks."
        elif len(val) > MAX_LEN[name]:
            v.errors[name] = f"At most {MAX_LEN[name]} characters, please."
        v.values[name] = val
    if not v.values["name"] and "name" not in v.errors:
        v.errors["name"] = "Please tell us your name."
    email = v.values["email"]
    if "email" not in v.errors:
        if not email:
            v.errors["email"] = "We need an address to reach you."
        elif not _EMAIL.match(email):
            v.errors["email"] = "This does not look like a mail address (name@example.org)."
    cc = v.values["country"].upper()
    v.values["country"] = cc
    if "country" not in v.errors and not (cc and countries.is_country(cc)):
        v.errors["country"] = "Please choose the country the mirror would be in."
    host = v.values["hostname"].lower().rstrip(".")
    v.values["hostname"] = host
    if "hostname" not in v.errors:
        if not host:
            v.errors["hostname"] = "Please give the host name the mirror would have."
        elif not is_hostname(host):
            v.errors["hostname"] = "A host name such as mirror.example.net, please."
    url = v.values["provider_url"]
    if url and "provider_url" not in v.errors and not is_web_url(url):
        v.errors["provider_url"] = "An http:// or https:// address, please."
    for name, top in INT_FIELDS.items():
        raw = (form.get(name) or "").strip()
        if not raw:
            v.values[name] = None
        elif not raw.isascii() or not raw.isdigit():
            v.errors[name] = "A whole number, please (or leave it empty)."
        elif int(raw) > top:
            v.errors[name] = f"At most {top:,}, please."
        else:
            v.values[name] = int(raw)
    for name in BOOL_FIELDS:
        v.values[name] = (form.get(name) or "") in ("1", "on", "yes", "true")
    return v


def new_token() -> str:
    return secrets.token_urlsafe(32)          # 43 characters, fits applications.token (64)


def link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/apply/{token}"


def public_base_url(cfg) -> str:
    """Where the private links in mails point: [admin] base_url, else the admin listener itself
    (right for a test setup). Never a request's Host header, which the visitor chooses."""
    if cfg.admin.base_url:
        return cfg.admin.base_url
    return f"{'https' if cfg.admin.https else 'http'}://{cfg.admin.listen}"


# --- mails ---------------------------------------------------------------------------------------

def _confirmation_body(app: dict, url: str, title: str) -> str:
    return (
        f"Hello {app['name']},\n\n"
        f"thank you for offering to host a mirror ({app['hostname']}, {app['country']}) for "
        f"{title}. You are now on the waiting list; we will write when a place opens in your "
        f"region.\n\n"
        f"This private link lets you update or withdraw your offer at any time:\n\n  {url}\n\n"
        f"Keep it to yourself: anyone with the link can change your entry. If you did not fill in "
        f"our form, ignore this mail or withdraw the entry through the link.\n"
    )


def _reminder_body(app: dict, url: str, title: str, since: _dt.datetime) -> str:
    return (
        f"Hello {app['name']},\n\n"
        f"on {since:%Y-%m-%d} you offered to host a mirror ({app['hostname']}, {app['country']}) "
        f"for {title}, and you are still on our waiting list. Are you still willing?\n\n"
        f"Please confirm, update or withdraw your offer here:\n\n  {url}\n\n"
        f"We ask everyone on the list about every {{days}} days, so that the list stays "
        f"accurate.\n"
    )


# --- operations (each runs as thd(conn) on the table's pool) -------------------------------------

PUBLIC_COLUMNS = (
    "id", "token", "status", "name", "email", "country", "hostname", "provider_name",
    "provider_url", "bandwidth_mbit", "cores", "memory_gb", "disk_gb", "has_ipv6", "has_https",
    "comments", "created_at", "updated_at", "confirmed_at", "reminded_at",
)


def create(conn: sa.Connection, values: dict, *, source_ip: str, base_url: str, sender: str,
           title: str, reply_to: str = "", now: _dt.datetime | None = None) -> dict:
    """Insert a validated application and queue its confirmation mail (same transaction)."""
    now = now or utcnow()
    token = new_token()
    row = {k: values[k] for k in (*TEXT_FIELDS, *INT_FIELDS, *BOOL_FIELDS)}
    res = conn.execute(applications.insert().values(
        **row, token=token, status="new", source_ip=source_ip[:45],
        created_at=now, updated_at=now, confirmed_at=now,
    ))
    app = {**row, "id": res.inserted_primary_key[0], "token": token}
    queue_mail(conn, kind="application", sender=sender, to=[app["email"]], reply_to=reply_to,
               subject=f"Your mirror offer for {title}: {app['hostname']}",
               body=_confirmation_body(app, link(base_url, token), title))
    return app


def by_token(conn: sa.Connection, token: str) -> dict | None:
    """The application behind a private link, or None (also for malformed tokens)."""
    if not token or len(token) > 64:
        return None
    r = conn.execute(sa.select(*[applications.c[c] for c in PUBLIC_COLUMNS])
                     .where(applications.c.token == token)).mappings().first()
    return dict(r) if r else None


def update(conn: sa.Connection, token: str, values: dict,
           now: _dt.datetime | None = None) -> dict | None:
    """The applicant's own update through the link: also counts as "still willing"."""
    now = now or utcnow()
    app = by_token(conn, token)
    if app is None or app["status"] not in WAITING:
        return None
    row = {k: values[k] for k in (*TEXT_FIELDS, *INT_FIELDS, *BOOL_FIELDS)}
    conn.execute(applications.update().where(applications.c.id == app["id"])
                 .values(**row, updated_at=now, confirmed_at=now))
    return by_token(conn, token)


def confirm(conn: sa.Connection, token: str, now: _dt.datetime | None = None) -> dict | None:
    now = now or utcnow()
    app = by_token(conn, token)
    if app is None or app["status"] not in WAITING:
        return None
    conn.execute(applications.update().where(applications.c.id == app["id"])
                 .values(confirmed_at=now, updated_at=now))
    return by_token(conn, token)


def withdraw(conn: sa.Connection, token: str, now: _dt.datetime | None = None) -> dict | None:
    now = now or utcnow()
    app = by_token(conn, token)
    if app is None or app["status"] not in WAITING:
        return None
    conn.execute(applications.update().where(applications.c.id == app["id"])
                 .values(status="withdrawn", updated_at=now))
    return by_token(conn, token)


def waiting_counts(conn: sa.Connection) -> dict[str, int]:
    """{country: number of applications still waiting}, for the public page and country headings."""
    rows = conn.execute(
        sa.select(applications.c.country, sa.func.count())
        .where(applications.c.status.in_(WAITING))
        .group_by(applications.c.country)
    ).all()
    return {cc: int(n) for cc, n in rows}


def send_reminders(conn: sa.Connection, *, days: int, base_url: str, sender: str, title: str,
                   reply_to: str = "", now: _dt.datetime | None = None, limit: int = 500) -> int:
    """Queue "are you still willing?" mails; returns how many were queued.

    An application is due when both its last confirmation and its last reminder are older than
    `days`, so someone who confirms (or updates) through the link is left alone for a full period,
    and a restart or a second run in the same period sends nothing twice. `limit` bounds one
    transaction; the rest go out on the next run.
    """
    if days <= 0:
        return 0
    now = now or utcnow()
    cutoff = now - _dt.timedelta(days=days)
    a = applications.c
    due = conn.execute(
        sa.select(a.id, a.token, a.name, a.email, a.country, a.hostname, a.created_at)
        .where(a.status.in_(WAITING), a.confirmed_at <= cutoff,
               sa.or_(a.reminded_at.is_(None), a.reminded_at <= cutoff))
        .order_by(a.id).limit(limit)
    ).mappings().all()
    for app in due:
        body = _reminder_body(app, link(base_url, app["token"]), title, app["created_at"])
        queue_mail(conn, kind="application-reminder", sender=sender, to=[app["email"]],
                   reply_to=reply_to, subject=f"Still willing to host a {title} mirror?",
                   body=body.replace("{days}", str(days)))
        conn.execute(applications.update().where(a.id == app["id"]).values(reminded_at=now))
    return len(due)


JOB = "application-reminders"          # the job_runs name, when run by admin.reports


def application_reminders(conn: sa.Connection, cfg, now: _dt.datetime) -> int:
    """The scheduled job, with admin.reports' job signature fn(conn, cfg, now) -> result.

    admin.reports runs it daily through dnsd.jobs.run_once (job_runs bookkeeping). It decides on its
    own who is due, so running it more often than daily never sends more mail.
    """
    return send_reminders(conn, days=cfg.admin.application_reminder_days,
                          base_url=public_base_url(cfg),
                          sender=cfg.mail.from_, reply_to=cfg.mail.reply_to,
                          title=cfg.admin.public_title, now=now)
