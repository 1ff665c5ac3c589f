"""Read-only queries behind the admin pages; each is a thd(conn) returning records (STYLE E8).

Changes go through admin.store (audit, version bump, list mail); this module only reads. Whether
a mirror serves, and its score, come from the plan the page is shown with (admin.web.plans): the
queries take it, or build it from the same transaction when the web runs alone.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json

import sqlalchemy as sa

from admin.web import sorting
from dnsd import countries, maintenance, serving, statuses
from dnsd.errors import NotFound
from dnsd.models import mirrors, outbox, probe_results
from dnsd.plan import build_plan, load_rows
from dnsd.records import applications as _apps
from dnsd.records import health as _health
from dnsd.records import maintainers as _maint
from dnsd.records import maintenance as _windows
from dnsd.records import mirrors as _mirrors
from dnsd.records import notes as _notes
from dnsd.records.health import Health
from dnsd.records.mirrors import Mirror
from probes import store as probe_store

STATUS_ORDER = statuses.DISPLAY_ORDER


@dataclasses.dataclass(frozen=True)
class MirrorView:
    """A mirror as a page shows it: its record, its health and the plan's verdict on it. Fields of
    the mirror and of its health read through (`view.hostname`, `view.last_probe_at`)."""

    mirror: Mirror
    health: Health
    entry: object = None                  # the plan's MirrorEntry (None: not in that plan)
    extra: dict = dataclasses.field(default_factory=dict)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        extra = object.__getattribute__(self, "extra")
        if name in extra:
            return extra[name]
        m = object.__getattribute__(self, "mirror")
        if name in Mirror.__dataclass_fields__:
            return getattr(m, name)
        return getattr(object.__getattribute__(self, "health"), name)

    def __getitem__(self, name):
        return getattr(self, name)

    @property
    def serving(self) -> bool:
        return bool(self.entry is not None and self.entry.serving)

    @property
    def serving_reason(self) -> str:
        if self.entry is None:
            return "not in the plan yet"
        return self.entry.reason

    @property
    def score(self):
        return self.entry.score_detail if self.entry is not None else None

    @property
    def sync_age(self) -> float | None:
        return self.entry.sync_age if self.entry is not None else None


def _plan(conn, plan, cfg, now):
    return plan if plan is not None else build_plan(load_rows(conn, now), cfg, now)


def _status_rank(v: MirrorView) -> tuple:
    return (STATUS_ORDER.index(v.status) if v.status in STATUS_ORDER else len(STATUS_ORDER),
            not v.serving)


MIRROR_SORT = sorting.Table((
    sorting.Column("country", lambda v: (v.country, v.name is None, sorting.natural(v.name),
                                         sorting.natural(v.hostname))),
    sorting.Column("name", lambda v: (v.name is None, sorting.natural(v.name),
                                      sorting.natural(v.hostname))),
    sorting.Column("host", lambda v: sorting.natural(v.hostname)),
    sorting.Column("status", _status_rank),
    sorting.Column("since", lambda v: v.status_since),
    sorting.Column("sync", lambda v: v.sync_age, first=sorting.DESC),
    sorting.Column("probe", lambda v: v.last_probe_at),
    sorting.Column("uptime", lambda v: v.uptime_7d),
    sorting.Column("score", lambda v: v.score.total if v.score is not None else None,
                   first=sorting.DESC),
    sorting.Column("note", lambda v: v.latest_note.created_at if v.latest_note else None,
                   first=sorting.DESC),
), default="country")
"""The admin mirror list's columns: by country (grouped, the default), else one sorted list."""


def mirror_list(country: str = "", status: str = "", *, plan, cfg, now: _dt.datetime,
                order: sorting.Order | None = None):
    """Everything the mirror list shows: groups by country (one group without a country when
    `order` sorts by another column), totals, filter choices."""
    order = order or MIRROR_SORT.default_order()

    def thd(conn):
        p = _plan(conn, plan, cfg, now)
        ms = _mirrors.select(conn, country or None, status or None)
        health = _health.of(conn, [m.id for m in ms])
        latest = _notes.latest_notes(conn)
        views = order.apply(MirrorView(m, health.get(m.id, _health.NEVER), p.by_id.get(m.id),
                                       {"latest_note": latest.get(m.id)}) for m in ms)
        totals = _mirrors.counts_by_status(conn)
        totals["total"] = sum(totals.values())
        totals["serving"] = len(p.serving)
        all_cc = sorted(set(conn.execute(sa.select(mirrors.c.country).distinct()).scalars()))
        waiting = _apps.waiting_by_country(conn, statuses.WAITING)
        groups: list[dict] = []
        for v in views:
            if not order.is_default:                  # one list, in the order asked for
                if not groups:
                    groups.append({"country": None, "name": "", "mirrors": [], "waiting": 0,
                                   "serving": 0})
            elif not groups or groups[-1]["country"] != v.country:
                c = countries.get(v.country)
                groups.append({"country": v.country, "name": c.name if c else v.country,
                               "mirrors": [], "waiting": int(waiting.get(v.country, 0)),
                               "serving": 0})
            groups[-1]["mirrors"].append(v)
            groups[-1]["serving"] += int(v.serving)
        choices = [(cc, (countries.get(cc).name if countries.get(cc) else cc)) for cc in all_cc]
        return {"groups": groups, "totals": totals, "countries": choices,
                "shown": len(views), "plan": p, "order": order}
    return thd


def audit_entry(a: _notes.AuditEntry) -> dict:
    """An audit row for display, with its before/after JSON as [(field, before, after)]."""
    return {**dataclasses.asdict(a), "target": a.target, "changes": a.changes()}


def mirror_page(mid: int, *, plan, cfg, now: _dt.datetime, results: int = 50):
    """One mirror with maintainers, health, all notes, audit, last probe results, mails sent."""
    def thd(conn):
        m = _mirrors.get(conn, mid)
        if m is None:
            return None
        p = _plan(conn, plan, cfg, now)
        c = countries.get(m.country)
        extra = {
            "maintainers": _maint.of_mirror(conn, mid),
            "notes": _notes.notes_of(conn, mid),
            "audit": [audit_entry(a) for a in
                      _notes.audit_entries(conn, mid, 200)],
            "results": [dict(r._mapping) for r in conn.execute(
                sa.select(probe_results).where(probe_results.c.mirror_id == mid)
                .order_by(probe_results.c.at.desc(), probe_results.c.id.desc())
                .limit(results))],
            "mails": [dict(r._mapping) for r in conn.execute(
                sa.select(outbox.c.id, outbox.c.created_at, outbox.c.kind, outbox.c.author,
                          outbox.c.recipients, outbox.c.subject, outbox.c.sent_at,
                          outbox.c.failed, outbox.c.discarded_at)
                .where(outbox.c.mirror_id == mid)
                .order_by(outbox.c.created_at.desc(), outbox.c.id.desc()).limit(30))],
            "country_name": c.name if c else m.country,
            "plan_version": p.version, "plan_built_at": p.built_at,
        }
        h = _health.get(conn, mid)
        extra["addresses"] = serving.addresses(m, h)
        extra["vantages"] = probe_store.vantage_verdicts(conn, cfg, mid, now)
        extra["windows"] = [maintenance.status_of(w, now, cfg.dns.ttl)
                            for w in _windows.of_mirror(conn, mid)]
        return MirrorView(m, h, p.by_id.get(mid), extra)
    return thd


def mirror_choices(conn) -> list[Mirror]:
    """Mirrors for the mail form's select (not retired), by country and name."""
    return [m for m in _mirrors.select(conn) if m.status in statuses.LIVE]


def sent_mails(limit: int = 100):
    """Mails written by people (the form-to-mail record), newest first."""
    def thd(conn):
        return [dict(r._mapping) for r in conn.execute(
            sa.select(outbox.c.id, outbox.c.created_at, outbox.c.kind, outbox.c.author,
                      outbox.c.recipients, outbox.c.subject, outbox.c.sent_at, outbox.c.failed,
                      outbox.c.mirror_id, mirrors.c.name.label("mirror_name"))
            .select_from(outbox.outerjoin(mirrors, mirrors.c.id == outbox.c.mirror_id))
            .where(outbox.c.kind == "admin-mail")
            .order_by(outbox.c.created_at.desc(), outbox.c.id.desc()).limit(limit))]
    return thd


def serving_by_country(plan) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in plan.serving:
        out[e.country] = out.get(e.country, 0) + 1
    return out


def applications_list(status: str = "", *, plan, cfg, now: _dt.datetime):
    """Applications grouped by country (waiting ones by default), with per-country counts."""
    def thd(conn):
        chosen = None if status == "all" else ((status,) if status else statuses.WAITING)
        rows = _apps.select(conn, chosen)
        counts = {s: 0 for s in statuses.APPLICATION_STATUSES}
        counts.update(_apps.counts_by_status(conn))
        groups: list[dict] = []
        for r in rows:
            if not groups or groups[-1]["country"] != r.country:
                c = countries.get(r.country)
                groups.append({"country": r.country, "name": c.name if c else r.country,
                               "apps": [], "waiting": 0})
            groups[-1]["apps"].append(r)
            if r.status in statuses.WAITING:
                groups[-1]["waiting"] += 1
        by_cc = serving_by_country(_plan(conn, plan, cfg, now))
        for g in groups:
            g["serving"] = by_cc.get(g["country"], 0)
        return {"groups": groups, "counts": counts, "shown": len(rows)}
    return thd


def application(app_id: int, *, plan, cfg, now: _dt.datetime):
    def thd(conn):
        try:
            app = _apps.get(conn, app_id)
        except NotFound:
            return None
        c = countries.get(app.country)
        p = _plan(conn, plan, cfg, now)
        mirror = None
        if app.mirror_id:
            m = _mirrors.get(conn, app.mirror_id)
            if m is not None:
                e = p.by_id.get(m.id)
                mirror = {"id": m.id, "name": m.name, "status": m.status,
                          "serving": bool(e and e.serving),
                          "reason": e.reason if e else "not in the plan yet"}
        history = []
        for r in _notes.audit_entries(conn, None, 10_000, ("application-status",
                                                           "application-accept")):
            try:
                ref = json.loads(r.after or "{}").get("application")
            except (ValueError, AttributeError):
                continue
            if ref == app_id:
                history.append(audit_entry(r))
        return {"app": app, "country_name": c.name if c else app.country, "mirror": mirror,
                "history": history,
                "serving_in_country": serving_by_country(p).get(app.country, 0)}
    return thd
