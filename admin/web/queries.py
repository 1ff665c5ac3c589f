"""Read-only queries behind the admin pages; each is a thd(conn) returning plain data (STYLE E8).

Changes go through admin.store (audit, version bump, list mail); this module only reads.
"""

from __future__ import annotations

import datetime as _dt
import json

import sqlalchemy as sa

from dnsd import countries
from dnsd.models import (
    ACTIVE,
    DISABLED_ADMIN,
    DISABLED_PROBES,
    PENDING,
    RETIRED,
    STATUSES,
    applications,
    audit,
    maintainers,
    mirror_health,
    mirrors,
    notes,
    outbox,
    probe_results,
)
from dnsd.score import ScoreInputs, compute

HEALTH_COLS = ("last_probe_at", "last_ok_at", "last_error", "last_sync_at", "ipv4_up", "ipv6_up",
               "https_ok", "uptime_24h", "uptime_7d", "uptime_30d", "rtt_p50_ms", "rtt_p95_ms",
               "geo_check", "failures_in_row", "passes_in_row")


def score_of(m: dict, now: _dt.datetime, max_age: float):
    """dnsd.score for a mirror row merged with its health columns (None when never probed)."""
    sync_age = None
    if m.get("last_sync_at") is not None:
        sync_age = max(0.0, (now - m["last_sync_at"]).total_seconds())
    return compute(ScoreInputs(
        bandwidth_mbit=m.get("bandwidth_mbit"), cores=m.get("cores"), memory_gb=m.get("memory_gb"),
        has_https=bool(m.get("has_https")), has_ipv6=bool(m.get("has_ipv6")),
        uptime_7d=m.get("uptime_7d"), rtt_p95_ms=m.get("rtt_p95_ms"), sync_age=sync_age,
        weight=m.get("weight") if m.get("weight") is not None else 1.0,
    ), max_age)


def _latest_notes(conn, ids=None) -> dict[int, dict]:
    last = sa.select(notes.c.mirror_id, sa.func.max(notes.c.id).label("nid")) \
        .group_by(notes.c.mirror_id)
    if ids is not None:
        last = last.where(notes.c.mirror_id.in_(ids))
    last = last.subquery()
    rows = conn.execute(sa.select(notes.c.mirror_id, notes.c.author, notes.c.created_at,
                                  notes.c.text).join(last, notes.c.id == last.c.nid))
    return {r.mirror_id: {"author": r.author, "created_at": r.created_at, "text": r.text}
            for r in rows}


def mirror_list(country: str = "", status: str = "", *, now: _dt.datetime, max_age: float):
    """Everything the mirror list shows: groups by country, totals, filter choices."""
    def thd(conn):
        q = (sa.select(mirrors, *[mirror_health.c[c] for c in HEALTH_COLS])
             .select_from(mirrors.outerjoin(mirror_health,
                                            mirror_health.c.mirror_id == mirrors.c.id)))
        if country:
            q = q.where(mirrors.c.country == country)
        if status:
            q = q.where(mirrors.c.status == status)
        q = q.order_by(mirrors.c.country, sa.func.length(mirrors.c.name), mirrors.c.name,
                       mirrors.c.id)
        rows = [dict(r._mapping) for r in conn.execute(q)]
        latest = _latest_notes(conn)
        for m in rows:
            m["latest_note"] = latest.get(m["id"])
            m["score"] = score_of(m, now, max_age).total
            m["sync_age"] = (None if m["last_sync_at"] is None
                             else (now - m["last_sync_at"]).total_seconds())
        totals = {s: 0 for s in STATUSES}
        for s, n in conn.execute(sa.select(mirrors.c.status, sa.func.count())
                                 .group_by(mirrors.c.status)):
            totals[s] = int(n)
        totals["total"] = sum(totals[s] for s in STATUSES)
        all_cc = sorted(set(conn.execute(sa.select(mirrors.c.country).distinct()).scalars()))
        waiting = dict(conn.execute(
            sa.select(applications.c.country, sa.func.count())
            .where(applications.c.status.in_(("new", "contacted")))
            .group_by(applications.c.country)).all())
        groups: list[dict] = []
        for m in rows:
            if not groups or groups[-1]["country"] != m["country"]:
                c = countries.get(m["country"])
                groups.append({"country": m["country"], "name": c.name if c else m["country"],
                               "mirrors": [], "waiting": int(waiting.get(m["country"], 0)),
                               "serving": 0})
            groups[-1]["mirrors"].append(m)
            if m["status"] == ACTIVE:
                groups[-1]["serving"] += 1
        choices = [(cc, (countries.get(cc).name if countries.get(cc) else cc)) for cc in all_cc]
        return {"groups": groups, "totals": totals, "countries": choices,
                "shown": len(rows)}
    return thd


def audit_entry(a: dict) -> dict:
    """An audit row with its before/after JSON turned into [(field, before, after)] for display."""
    def load(text):
        try:
            v = json.loads(text) if text else {}
        except ValueError:
            return {"": text}
        return v if isinstance(v, dict) else {"": v}
    before, after = load(a["before"]), load(a["after"])
    changes = []
    for k in sorted(before.keys() | after.keys()):
        changes.append((k, _show(before.get(k)), _show(after.get(k))))
    a["changes"] = changes
    return a


def _show(v) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return ", ".join(_show(x) for x in v)
    if isinstance(v, dict):
        if set(v) <= {"name", "email"} and "email" in v:
            return f"{v.get('name', '')} <{v['email']}>".strip()
        return json.dumps(v, sort_keys=True)
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def mirror_page(mid: int, *, now: _dt.datetime, max_age: float, results: int = 50):
    """One mirror with maintainers, health, all notes, audit, last probe results, mails sent."""
    def thd(conn):
        row = conn.execute(sa.select(mirrors).where(mirrors.c.id == mid)).first()
        if row is None:
            return None
        m = dict(row._mapping)
        h = conn.execute(sa.select(mirror_health).where(mirror_health.c.mirror_id == mid)).first()
        m["health"] = dict(h._mapping) if h else None
        for c in HEALTH_COLS:
            m[c] = m["health"][c] if m["health"] else None
        m["maintainers"] = [dict(r._mapping) for r in conn.execute(
            sa.select(maintainers.c.name, maintainers.c.email)
            .where(maintainers.c.mirror_id == mid).order_by(maintainers.c.id))]
        m["notes"] = [dict(r._mapping) for r in conn.execute(
            sa.select(notes.c.author, notes.c.created_at, notes.c.text)
            .where(notes.c.mirror_id == mid)
            .order_by(notes.c.created_at.desc(), notes.c.id.desc()))]
        m["audit"] = [audit_entry(dict(r._mapping)) for r in conn.execute(
            sa.select(audit).where(audit.c.mirror_id == mid)
            .order_by(audit.c.at.desc(), audit.c.id.desc()).limit(200))]
        m["results"] = [dict(r._mapping) for r in conn.execute(
            sa.select(probe_results).where(probe_results.c.mirror_id == mid)
            .order_by(probe_results.c.at.desc(), probe_results.c.id.desc()).limit(results))]
        m["mails"] = [dict(r._mapping) for r in conn.execute(
            sa.select(outbox.c.id, outbox.c.created_at, outbox.c.kind, outbox.c.author,
                      outbox.c.recipients, outbox.c.subject, outbox.c.sent_at, outbox.c.failed)
            .where(outbox.c.mirror_id == mid)
            .order_by(outbox.c.created_at.desc(), outbox.c.id.desc()).limit(30))]
        m["sync_age"] = (None if m["last_sync_at"] is None
                         else (now - m["last_sync_at"]).total_seconds())
        m["score"] = score_of(m, now, max_age)
        c = countries.get(m["country"])
        m["country_name"] = c.name if c else m["country"]
        return m
    return thd


def mirror_choices(conn) -> list[dict]:
    """Mirrors for the mail form's select (not retired), by country and name."""
    return [dict(r._mapping) for r in conn.execute(
        sa.select(mirrors.c.id, mirrors.c.name, mirrors.c.hostname, mirrors.c.country)
        .where(mirrors.c.status != RETIRED)
        .order_by(mirrors.c.country, sa.func.length(mirrors.c.name), mirrors.c.name))]


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


def maintainer_groups(conn) -> list[dict]:
    """[{mirror id, name, hostname, emails}] for every mirror that is not retired."""
    rows = conn.execute(
        sa.select(mirrors.c.id, mirrors.c.name, mirrors.c.hostname, maintainers.c.name.label("mn"),
                  maintainers.c.email)
        .join(maintainers, maintainers.c.mirror_id == mirrors.c.id)
        .where(mirrors.c.status != RETIRED)
        .order_by(mirrors.c.country, mirrors.c.name, maintainers.c.id))
    out: dict[int, dict] = {}
    for r in rows:
        g = out.setdefault(r.id, {"id": r.id, "name": r.name, "hostname": r.hostname,
                                  "people": []})
        g["people"].append({"name": r.mn, "email": r.email})
    return list(out.values())


def applications_list(status: str = ""):
    """Applications grouped by country (waiting ones by default), with per-country counts."""
    def thd(conn):
        a = applications.c
        q = sa.select(applications)
        if status == "all":
            pass
        elif status:
            q = q.where(a.status == status)
        else:
            q = q.where(a.status.in_(("new", "contacted")))
        rows = [dict(r._mapping) for r in conn.execute(q.order_by(a.country, a.created_at, a.id))]
        counts = {s: 0 for s in ("new", "contacted", "accepted", "declined", "withdrawn")}
        for s, n in conn.execute(sa.select(a.status, sa.func.count()).group_by(a.status)):
            counts[s] = int(n)
        groups: list[dict] = []
        for r in rows:
            if not groups or groups[-1]["country"] != r["country"]:
                c = countries.get(r["country"])
                groups.append({"country": r["country"], "name": c.name if c else r["country"],
                               "apps": [], "waiting": 0})
            groups[-1]["apps"].append(r)
            if r["status"] in ("new", "contacted"):
                groups[-1]["waiting"] += 1
        serving = dict(conn.execute(
            sa.select(mirrors.c.country, sa.func.count()).where(mirrors.c.status == ACTIVE)
            .group_by(mirrors.c.country)).all())
        for g in groups:
            g["serving"] = int(serving.get(g["country"], 0))
        return {"groups": groups, "counts": counts, "shown": len(rows)}
    return thd


def application(app_id: int):
    def thd(conn):
        r = conn.execute(sa.select(applications).where(applications.c.id == app_id)).first()
        if r is None:
            return None
        app = dict(r._mapping)
        c = countries.get(app["country"])
        app["country_name"] = c.name if c else app["country"]
        app["mirror"] = None
        if app["mirror_id"]:
            mr = conn.execute(sa.select(mirrors.c.id, mirrors.c.name, mirrors.c.status)
                              .where(mirrors.c.id == app["mirror_id"])).first()
            app["mirror"] = dict(mr._mapping) if mr else None
        app["history"] = []
        for r in conn.execute(sa.select(audit).where(audit.c.action.in_(
                ("application-status", "application-accept"))).order_by(audit.c.at.desc(),
                                                                        audit.c.id.desc())):
            try:
                ref = json.loads(r.after or "{}").get("application")
            except (ValueError, AttributeError):
                continue
            if ref == app_id:
                app["history"].append(audit_entry(dict(r._mapping)))
        same = conn.execute(sa.select(sa.func.count()).select_from(mirrors).where(
            mirrors.c.country == app["country"], mirrors.c.status == ACTIVE)).scalar_one()
        app["serving_in_country"] = int(same)
        return app
    return thd


STATUS_ORDER = (ACTIVE, DISABLED_PROBES, DISABLED_ADMIN, PENDING, RETIRED)
