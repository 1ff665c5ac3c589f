"""The probes' side of the table: `thd(conn)` functions run on the DB pool (dnsd.db.DBPool.run).

`record_probe` is the one writer of verdicts. In one transaction it stores the raw result, moves the
counters in `mirror_health` (with the addresses the probe used, when it resolved them), changes the
mirror's status when the verdict says so, bumps the table version when the DNS answer moved (the
serving verdict of dnsd.serving, or the addresses it answers with, before and after the probe),
writes a note to the mirror's log, and queues the mail. So a disabled mirror, its DNS answers and
its maintainer's mail can never disagree.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt

import sqlalchemy as sa

from dnsd import serving, statuses
from dnsd.jobs import Job, run_once
from dnsd.models import bump_version, mirror_health, mirrors, probe_results
from dnsd.records import health as _health
from dnsd.records import mirrors as _mirrors
from dnsd.records.notes import add_note
from dnsd.serving import fmt_age
from probes import mails
from probes.probe import ProbeResult, Target, target_from_row, utc_from_ts
from probes.verdicts import DISABLED, RECOVERED, Counters, decide

AUTHOR = "probes"


def load_targets(conn: sa.Connection, zone: str, geo_name: str = "www") -> list[Target]:
    rows = conn.execute(sa.select(*_mirrors.COLUMNS).where(mirrors.c.status.in_(statuses.PROBED))
                        .order_by(mirrors.c.id)).all()
    return [target_from_row(_mirrors.from_row(r), zone, geo_name) for r in rows]


def load_target(conn: sa.Connection, name_or_host: str, zone: str, geo_name: str = "www"):
    r = conn.execute(sa.select(*_mirrors.COLUMNS).where(
        sa.or_(mirrors.c.name == name_or_host.lower(), mirrors.c.hostname == name_or_host))
        .order_by(mirrors.c.id)).first()
    return target_from_row(_mirrors.from_row(r), zone, geo_name) if r else None


def record_probe(conn: sa.Connection, r: ProbeResult, cfg, now: _dt.datetime,
                 vantage: str = "") -> dict:
    """Store one result and apply its verdict (see the module docstring). Returns what happened:
    {"status", "changed", "mail", "bumped"}."""
    p = cfg.probes
    m = _mirrors.get(conn, r.mirror_id)
    if m is None:
        return {"status": None, "changed": False, "mail": None, "bumped": False}
    at = utc_from_ts(r.at)
    conn.execute(probe_results.insert().values(
        mirror_id=r.mirror_id, at=at, vantage=vantage, url=r.url[:1024], address=r.address,
        family=r.family, http_status=r.http_status, ttfb_ms=r.ttfb_ms, total_ms=r.total_ms,
        timestamp=utc_from_ts(r.timestamp) if r.timestamp else None,
        sync_age=int(r.sync_age) if r.sync_age is not None else None, tls_ok=r.tls_ok,
        ok=r.ok, error_class=r.error_class, error="\n".join([r.error, *r.log_lines()]).strip()))
    h = _health.ensure_row(conn, r.mirror_id, now)
    v = decide(m.status, Counters(h.failures_in_row, h.passes_in_row), r.ok,
               r.error_class, r.error, fail_after=p.fail_after, pass_after=p.pass_after)
    upd = {"failures_in_row": v.failures_in_row, "passes_in_row": v.passes_in_row,
           "last_probe_at": at, "last_error": "" if r.ok else r.describe()[:2000],
           "last_sync_at": utc_from_ts(r.timestamp) if r.timestamp else h.last_sync_at,
           "ipv4_up": r.ipv4_up, "ipv6_up": r.ipv6_up, "https_ok": r.https_ok,
           "geo_check": r.geo_check, "updated_at": now,
           # resolved addresses are kept with the verdict on them; pinned ones are the table's
           "probed_ipv4": r.probed_ipv4 if r.resolved else None,
           "probed_ipv6": r.probed_ipv6 if r.resolved else None}
    if r.ok:
        upd["last_ok_at"] = at
    if v.outage_over:
        upd["outage_mailed_at"] = None
        upd["reminder_mailed_at"] = None
    mail = None
    if v.changed:
        conn.execute(mirrors.update().where(mirrors.c.id == r.mirror_id).values(
            status=v.status, status_reason=v.reason, status_since=now, updated_at=now))
        add_note(conn, r.mirror_id, AUTHOR, f"{m.status} -> {v.status}: {v.reason}", now)
        if v.mail == DISABLED and h.outage_mailed_at is None:
            mail = _mail_disabled(conn, cfg, m, r, v, now)
            upd["outage_mailed_at"] = now
        elif v.mail == RECOVERED:
            mail = _mail_recovered(conn, cfg, m, r, v, now)
            upd["outage_mailed_at"] = None
            upd["reminder_mailed_at"] = None
    conn.execute(mirror_health.update().where(mirror_health.c.mirror_id == r.mirror_id)
                 .values(**upd))
    # what the DNS answers moved when the serving verdict (or its addresses) did
    after_m = dataclasses.replace(m, status=v.status, status_reason=v.reason) if v.changed else m
    after_h = dataclasses.replace(h, **{k: val for k, val in upd.items()
                                        if k in _health.Health.__dataclass_fields__})
    moved = (serving.decide(m, h, cfg, now).answer_key
             != serving.decide(after_m, after_h, cfg, now).answer_key)
    if moved or v.changed:
        bump_version(conn)
    return {"status": v.status, "changed": v.changed, "mail": mail, "bumped": moved or v.changed}


def _recent_lines(conn, mirror_id: int, n: int) -> list[str]:
    rows = conn.execute(sa.select(probe_results.c.at, probe_results.c.ok, probe_results.c.error)
                        .where(probe_results.c.mirror_id == mirror_id)
                        .order_by(probe_results.c.at.desc(), probe_results.c.id.desc()).limit(n)).all()
    out = []
    for row in reversed(rows):
        stamp = row.at.strftime("%Y-%m-%d %H:%M:%S")
        lines = (row.error or ("ok" if row.ok else "failed")).splitlines()
        out.append(f"{stamp}  {lines[0]}")
        out.extend(f"    {x}" for x in lines[1:])
    return out


def _mail_disabled(conn, cfg, m, r: ProbeResult, v, now):
    classes = [r.error_class] + [f.error_class for f in r.fetches if f.error_class]
    t = target_from_row(m, cfg.dns.zone, cfg.dns.geo_name)
    addrs = (r.probed_ipv4, r.probed_ipv6) if r.resolved else (t.ipv4, t.ipv6)
    return mails.queue(
        conn, cfg, "disabled", "disabled.txt", mirror_id=m.id,
        mirror={"display": mails.display_name(m), "hostname": m.hostname},
        failures=v.failures_in_row, since=now.strftime("%Y-%m-%d %H:%M"),
        reason=v.reason, log_lines=_recent_lines(conn, m.id, cfg.probes.fail_after),
        hints=mails.hints_for(classes, cfg.dns.zone, t.names, addrs),
        interval_text=fmt_age(cfg.probes.interval), pass_after=cfg.probes.pass_after,
        max_age_text=fmt_age(serving.max_sync_age(cfg)), user_agent=cfg.probes.user_agent)


def _mail_recovered(conn, cfg, m, r: ProbeResult, v, now):
    out = (now - m.status_since).total_seconds() if m.status_since else None
    return mails.queue(
        conn, cfg, "recovered", "recovered.txt", mirror_id=m.id,
        mirror={"display": mails.display_name(m), "hostname": m.hostname},
        passes=v.passes_in_row, since=now.strftime("%Y-%m-%d %H:%M"),
        outage_text=fmt_age(out) if out is not None else "", log_lines=r.log_lines()[:8])


PASS_SHARE_JOB = Job("probes-pass-share-warning", _dt.timedelta(days=1))


def check_pass_share(conn: sa.Connection, cfg, now: _dt.datetime) -> dict:
    """Warn the list (at most once a day) when fewer than min_pass_share of the probed mirrors
    passed their last probe. Only mirrors meant to serve count (active or disabled by probes)."""
    rows = conn.execute(
        sa.select(mirror_health.c.failures_in_row, mirror_health.c.last_error)
        .select_from(mirrors.join(mirror_health, mirror_health.c.mirror_id == mirrors.c.id))
        .where(mirrors.c.status.in_(statuses.VERDICT_STATUSES),
               mirror_health.c.last_probe_at.is_not(None))).all()
    total = len(rows)
    passing = sum(1 for x in rows if x.failures_in_row == 0)
    share = passing / total if total else 1.0
    res = {"total": total, "passing": passing, "share": share, "mailed": None}
    if not total or share >= cfg.probes.min_pass_share:
        return res
    classes: dict[str, int] = {}
    for x in rows:
        if x.failures_in_row:
            c = (x.last_error or "error").split(":", 1)[0]
            classes[c] = classes.get(c, 0) + 1
    res["mailed"] = run_once(conn, PASS_SHARE_JOB, now, lambda c: mails.queue(
        c, cfg, "pass-share", "pass_share.txt", passing=passing, total=total,
        share=share, min_share=cfg.probes.min_pass_share, now=now.strftime("%Y-%m-%d %H:%M"),
        fail_after=cfg.probes.fail_after, classes=sorted(classes.items(), key=lambda kv: -kv[1])))
    return res
