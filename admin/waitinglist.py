"""The waiting list: people offering to host a mirror, their private link, and the quarterly reminder.

Everything here runs inside a `thd(conn)` on the table's pool (plain data in, records out), so the
public form, the admin pages, the CLI and the scheduled-jobs service share one set of rules. Fields
are checked by dnsd.validation, the same rules the CLI, the admin web and the API apply. The
confirmation and reminder mails are queued with `dnsd.outbox.queue_mail` in the same transaction
as the row they talk about: an application and its mail commit or vanish together.

An offer names its host, its addresses (optional: without them the probes resolve the host name),
its URLs (http or https, so the probes can check it; rsync too) and the people who run it (the
applicant first). Accepting it (admin.store.accept_application) makes an active mirror that serves
once a probe over it passed. The private link `<base_url>/apply/<token>` (a 256-bit random token,
applications.token) stays open until then: while the offer waits it edits the offer; once accepted,
until the mirror serves, it edits the mirror's host, addresses, URLs and people, so the maintainer
can finish the set-up without writing to anyone. The token is the applicant's only credential: it
is compared by database lookup on the exact value and never logged or shown to anyone but its
owner.
"""

from __future__ import annotations

import datetime as _dt
import secrets
from dataclasses import dataclass, field

import sqlalchemy as sa

from dnsd import recipients, statuses, validation
from dnsd.errors import Invalid
from dnsd.errors import sentence as _sentence
from dnsd.models import applications, utcnow
from dnsd.outbox import queue_mail
from dnsd.records import applications as _apps
from dnsd.records.applications import Application
from dnsd.statuses import WAITING
from dnsd.validation import Rules

__all__ = ["WAITING", "Application"]

# Form fields, in display order; the numeric ones are optional declared specs.
TEXT_FIELDS = ("name", "email", "country", "hostname", "ipv4", "ipv6", "http_url", "https_url",
               "rsync_url", "provider_name", "provider_url", "comments")
INT_FIELDS = {k: validation.SPEC_MAX[k] for k in ("bandwidth_mbit", "cores", "memory_gb",
                                                  "disk_gb")}
BOOL_FIELDS = ("has_ipv6", "has_https")
EXTRA_PEOPLE = 3                     # rows for more maintainers on the form
# what the private link may change on the mirror once the offer was accepted
MIRROR_FIELDS = ("hostname", "ipv4", "ipv6", "http_url", "https_url", "rsync_url",
                 "provider_name", "provider_url")


@dataclass
class Validated:
    """The cleaned values (ready for the table) and one message per field that failed."""
    values: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    people: tuple = ()               # Maintainer records, the applicant first

    @property
    def ok(self) -> bool:
        return not self.errors


def is_web_url(u: str) -> bool:
    """An http(s) URL with a host: anything else (javascript:, data:) never reaches a page."""
    return validation.is_web_url(u)


def validate(form: dict[str, str], people: list[tuple[str, str]] = (),
             rules: Rules = validation.STRICT) -> Validated:
    """Check an application form (str -> str) the way the page shows it: one message per field.
    `people` are the extra (name, address) rows of the form; empty rows are ignored."""
    v = Validated()

    def check(name, fn):
        try:
            v.values[name] = fn(form.get(name, ""))
        except Invalid as e:
            v.errors[name] = _sentence(e.message)
            v.values[name] = form.get(name, "")

    check("name", lambda x: validation.text(x, "name", limit=validation.MAX_LEN["applicant_name"],
                                            required=True, what="your name"))
    check("email", lambda x: validation.email(x, "email"))
    check("country", lambda x: validation.country(x))
    check("hostname", lambda x: validation.hostname(x, rules=rules))
    check("ipv4", lambda x: validation.address(x, 4, rules=rules))
    check("ipv6", lambda x: validation.address(x, 6, rules=rules))
    for f in ("http_url", "https_url", "rsync_url"):
        check(f, lambda x, f=f: validation.url(x, f, rules))
    check("provider_name", lambda x: validation.text(x, "provider_name"))
    check("provider_url", lambda x: validation.web_url(x, "provider_url", rules))
    check("comments", lambda x: validation.text(x, "comments", lines=True))
    for name in INT_FIELDS:
        check(name, lambda x, name=name: validation.count(x, name))
    for name in BOOL_FIELDS:
        v.values[name] = (form.get(name) or "") in ("1", "on", "yes", "true")
    if not (v.errors.keys() & {"http_url", "https_url"}):
        if validation.activation_problem(v.values):
            v.errors["http_url"] = _sentence("an http:// or https:// URL is needed, so that the "
                                             "probes can check the mirror")
    if "name" not in v.errors and "email" not in v.errors:
        rows = [(v.values["name"], v.values["email"])]
        rows += [(n, a) for n, a in people if (n or "").strip() or (a or "").strip()]
        try:
            v.people = validation.maintainers([{"name": n, "email": a} for n, a in rows],
                                              "maintainers")
        except Invalid as e:
            v.errors["maintainers"] = _sentence(e.message)
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

def _confirmation_body(app: Application, url: str, title: str) -> str:
    return (
        f"Hello {app.name},\n\n"
        f"thank you for offering to host a mirror ({app.hostname}, {app.country}) for "
        f"{title}. You are now on the waiting list; we will write when a place opens in your "
        f"region.\n\n"
        f"This private link lets you update or withdraw your offer at any time:\n\n  {url}\n\n"
        f"Keep it to yourself: anyone with the link can change your entry. If you did not fill in "
        f"our form, ignore this mail or withdraw the entry through the link.\n"
    )


def _reminder_body(app, url: str, title: str, since: _dt.datetime, days: int) -> str:
    return (
        f"Hello {app.name},\n\n"
        f"on {since:%Y-%m-%d} you offered to host a mirror ({app.hostname}, {app.country}) "
        f"for {title}, and you are still on our waiting list. Are you still willing?\n\n"
        f"Please confirm, update or withdraw your offer here:\n\n  {url}\n\n"
        f"We ask everyone on the list about every {days} days, so that the list stays "
        f"accurate.\n"
    )


# --- operations (each runs as thd(conn) on the table's pool) -------------------------------------

_ROW_FIELDS = (*TEXT_FIELDS, *INT_FIELDS, *BOOL_FIELDS)


def create(conn: sa.Connection, v: Validated, *, source_ip: str, base_url: str, sender: str,
           title: str, reply_to: str = "", now: _dt.datetime | None = None) -> Application:
    """Insert a validated application and queue its confirmation mail (same transaction)."""
    now = now or utcnow()
    token = new_token()
    res = conn.execute(applications.insert().values(
        **{k: v.values[k] for k in _ROW_FIELDS}, token=token, status=statuses.APP_NEW,
        source_ip=source_ip[:45], created_at=now, updated_at=now, confirmed_at=now))
    app_id = res.inserted_primary_key[0]
    _apps.set_maintainers(conn, app_id, v.people)
    app = _apps.get(conn, app_id)
    queue_mail(conn, kind="application", sender=sender, reply_to=reply_to,
               to=recipients.for_kind("application", applicant=app.applicant),
               subject=f"Your mirror offer for {title}: {app.hostname}",
               body=_confirmation_body(app, link(base_url, token), title))
    return app


def by_token(conn: sa.Connection, token: str) -> Application | None:
    """The application behind a private link, or None (also for malformed tokens)."""
    return _apps.by_token(conn, token)


def link_open(app: Application, mirror_serving: bool | None) -> bool:
    """May the private link still change things? While the offer waits; once accepted, until the
    mirror it became serves (`mirror_serving`: the plan's verdict, None when it has no mirror)."""
    if app.status in WAITING:
        return True
    return app.status == statuses.APP_ACCEPTED and app.mirror_id is not None \
        and mirror_serving is False


def update(conn: sa.Connection, token: str, v: Validated, *, mirror_serving: bool | None = None,
           rules: Rules = validation.STRICT, now: _dt.datetime | None = None
           ) -> Application | None:
    """The applicant's own update through the link: a waiting offer changes (and counts as "still
    willing"); an accepted one whose mirror does not serve yet changes the mirror (admin.store,
    audited as the applicant). None when the link is closed."""
    from admin import store

    now = now or utcnow()
    app = by_token(conn, token)
    if app is None or not link_open(app, mirror_serving):
        return None
    conn.execute(applications.update().where(applications.c.id == app.id)
                 .values(**{k: v.values[k] for k in _ROW_FIELDS}, updated_at=now,
                         confirmed_at=now))
    _apps.set_maintainers(conn, app.id, v.people)
    if app.status == statuses.APP_ACCEPTED:
        actor = f"applicant:{app.id}"
        ref = f"#{app.mirror_id}"
        store.edit_mirror(conn, ref, actor, action="applicant-edit", rules=rules,
                          **{k: v.values[k] for k in MIRROR_FIELDS})
        store.set_maintainers(conn, ref, actor, v.people)
        m = store.find(conn, ref)
        if m.status == statuses.PENDING and not validation.activation_problem(m):
            store.enable(conn, ref, actor, None, reason="the applicant completed the set-up")
    return by_token(conn, token)


def _waiting(conn, token: str) -> Application | None:
    app = by_token(conn, token)
    return app if app is not None and app.status in WAITING else None


def confirm(conn: sa.Connection, token: str, now: _dt.datetime | None = None) -> Application | None:
    now = now or utcnow()
    app = _waiting(conn, token)
    if app is None:
        return None
    conn.execute(applications.update().where(applications.c.id == app.id)
                 .values(confirmed_at=now, updated_at=now))
    return by_token(conn, token)


def withdraw(conn: sa.Connection, token: str, now: _dt.datetime | None = None) -> Application | None:
    now = now or utcnow()
    app = _waiting(conn, token)
    if app is None:
        return None
    _apps.move_status(conn, app.id, statuses.WAITING, statuses.APP_WITHDRAWN, now)
    return by_token(conn, token)


def waiting_counts(conn: sa.Connection) -> dict[str, int]:
    """{country: number of applications still waiting}, for the public page and country headings."""
    return _apps.waiting_by_country(conn, WAITING)


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
    ).all()
    for app in due:
        queue_mail(conn, kind="application-reminder", sender=sender, reply_to=reply_to,
                   to=recipients.for_kind("application-reminder", applicant=app),
                   subject=f"Still willing to host a {title} mirror?",
                   body=_reminder_body(app, link(base_url, app.token), title, app.created_at,
                                       days))
        conn.execute(applications.update().where(a.id == app.id).values(reminded_at=now))
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
