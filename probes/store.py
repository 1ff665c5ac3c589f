"""The probes' side of the table: `thd(conn)` functions run on the DB pool (dnsd.db.DBPool.run).

Each probe node is a *vantage point* (`vantage_of(cfg)`) and keeps its own view of every mirror
(`vantage_health`: its counters and its last observation); `mirror_health` holds what the vantages
that count agree on (probes.verdicts: a quorum, broken and vanished vantages left out), and that
is what the plan serves from (dnsd.serving). The writers:

- `record_probe` stores one raw result and the vantage's view. A pass is judged at once (it can
  restore a mirror, make a new one serve); a failure waits for the end of the cycle.
- `end_cycle`, when a vantage finished a cycle: if fewer than `min_pass_share` of the mirrors
  passed from it, it is broken (the list gets one mail about it, and its results decide nothing
  until a cycle passes again); otherwise every mirror is judged (`judge`).
- `judge`: in one transaction, the agreed counters and the newest counted observation go to
  mirror_health, the mirror's status moves when the verdict says so, with the note and the mail,
  and the table version moves when a DNS answer did (dnsd.serving before and after). So a
  disabled mirror, its DNS answers and its maintainer's mail can never disagree. The status
  moves by compare-and-set (dnsd.records.mirrors.move_status): of several vantages judging the
  same transition at once, only the one that moves it writes the note and queues the mail.

A probe that started during a maintenance window of its mirror counts for nothing
(dnsd.maintenance.probes_paused): `record_probe` stores nothing of it (no raw result, no counter,
no share of its vantage's cycle), and `judge` leaves a mirror in maintenance as it is (no status
change, no mail).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass

import sqlalchemy as sa

from dnsd import maintenance, serving, statuses
from dnsd.models import (
    bump_version,
    mirror_health,
    mirrors,
    probe_results,
    vantage_health,
    vantages,
)
from dnsd.records import health as _health
from dnsd.records import maintenance as _maint
from dnsd.records import mirrors as _mirrors
from dnsd.records import vantages as _vantages
from dnsd.records.notes import add_note
from dnsd.serving import fmt_age
from probes import mails
from probes.probe import ProbeResult, Target, target_from_row, utc_from_ts
from probes.verdicts import (
    DISABLED,
    RECOVERED,
    Counters,
    Standing,
    agreed,
    broken,
    count,
    quorum_size,
    standing,
)
from probes.verdicts import judge as judge_verdict

AUTHOR = "probes"


def load_targets(conn: sa.Connection, zone: str, geo_name: str = "www",
                 ids=None) -> list[Target]:
    """The mirrors a probe visits (all that are probed, or those of `ids` among them)."""
    q = sa.select(*_mirrors.COLUMNS).where(mirrors.c.status.in_(statuses.PROBED))
    if ids is not None:
        q = q.where(mirrors.c.id.in_(list(ids)))
    rows = conn.execute(q.order_by(mirrors.c.id)).all()
    return [target_from_row(_mirrors.from_row(r), zone, geo_name) for r in rows]


def load_target(conn: sa.Connection, name_or_host: str, zone: str, geo_name: str = "www"):
    r = conn.execute(sa.select(*_mirrors.COLUMNS).where(
        sa.or_(mirrors.c.name == name_or_host.lower(), mirrors.c.hostname == name_or_host))
        .order_by(mirrors.c.id)).first()
    return target_from_row(_mirrors.from_row(r), zone, geo_name) if r else None


def vantage_of(cfg) -> str:
    """This probe node's vantage name: `[probes] vantage`, else the node's name."""
    return cfg.probes.vantage or cfg.node.identity


def record_probe(conn: sa.Connection, r: ProbeResult, cfg, now: _dt.datetime,
                 vantage: str = "", *, in_cycle: bool = True) -> dict:
    """Store one result as `vantage` saw it (see the module docstring); a pass is judged at once.
    `in_cycle=False` (a probe made on request, probes.requests): the result counts like any
    other but not in the cycle's share of passes (the brake), which is about one pass over every
    mirror. Returns what happened to the mirror: {"status", "changed", "mail", "bumped"}, and
    "maintenance" (the window) when the probe started during one and was not counted."""
    m = _mirrors.get(conn, r.mirror_id)
    if m is None:
        return {"status": None, "changed": False, "mail": None, "bumped": False}
    at = utc_from_ts(r.at)
    paused = maintenance.probes_paused(_maint.in_force(conn, m.id, at), at)
    if paused is not None:
        return {"status": m.status, "changed": False, "mail": None, "bumped": False,
                "maintenance": paused}
    conn.execute(probe_results.insert().values(
        mirror_id=r.mirror_id, at=at, vantage=vantage, url=r.url[:1024], address=r.address,
        family=r.family, http_status=r.http_status, ttfb_ms=r.ttfb_ms, total_ms=r.total_ms,
        timestamp=utc_from_ts(r.timestamp) if r.timestamp else None,
        sync_age=int(r.sync_age) if r.sync_age is not None else None, tls_ok=r.tls_ok,
        ok=r.ok, error_class=r.error_class, error="\n".join([r.error, *r.log_lines()]).strip()))
    before = _vantages.get_view(conn, m.id, vantage)
    c = count(Counters(before.failures_in_row, before.passes_in_row) if before else Counters(),
              r.ok)
    view = {"failures_in_row": c.failures_in_row, "passes_in_row": c.passes_in_row,
            "last_probe_at": at, "last_ok_at": at if r.ok else (before and before.last_ok_at),
            "last_error": "" if r.ok else r.describe()[:2000],
            "last_sync_at": utc_from_ts(r.timestamp) if r.timestamp else (
                before and before.last_sync_at),
            "ipv4_up": r.ipv4_up, "ipv6_up": r.ipv6_up, "https_ok": r.https_ok,
            "geo_check": r.geo_check, "updated_at": now,
            # resolved addresses are kept with the verdict on them; pinned ones are the table's
            "probed_ipv4": r.probed_ipv4 if r.resolved else None,
            "probed_ipv6": r.probed_ipv6 if r.resolved else None}
    if before is None:
        conn.execute(vantage_health.insert().values(mirror_id=m.id, vantage=vantage, **view))
    else:
        conn.execute(vantage_health.update().where(vantage_health.c.mirror_id == m.id,
                                                   vantage_health.c.vantage == vantage)
                     .values(**view))
    _vantages.ensure_vantage(conn, vantage)
    if in_cycle and m.status in statuses.VERDICT_STATUSES:   # what a vantage's share is of
        conn.execute(vantages.update().where(vantages.c.name == vantage).values(
            cycle_total=vantages.c.cycle_total + 1,
            cycle_passed=vantages.c.cycle_passed + (1 if r.ok else 0)))
    if not r.ok:              # failures are judged at the end of the cycle (`end_cycle`)
        return {"status": m.status, "changed": False, "mail": None, "bumped": False}
    done = judge(conn, cfg, now, vantage, ids=[m.id], passes_only=True)
    return done.get(m.id, {"status": m.status, "changed": False, "mail": None,
                           "bumped": False})


def start_cycle(conn: sa.Connection, vantage: str, now: _dt.datetime) -> None:
    """A vantage starts a cycle: its running share starts from nothing."""
    _vantages.ensure_vantage(conn, vantage)
    conn.execute(vantages.update().where(vantages.c.name == vantage).values(
        cycle_started_at=now, cycle_passed=0, cycle_total=0))


def end_cycle(conn: sa.Connection, cfg, vantage: str, now: _dt.datetime) -> dict:
    """A vantage finished a cycle: is it broken (fewer than `min_pass_share` of the mirrors passed
    from it)? If it just broke, the list gets one mail (at most one a day per vantage). If not,
    every mirror is judged from the vantages that count. Returns
    {"broken", "was_broken", "passed", "total", "mailed", "judged": {mirror id: what happened}}."""
    v = _vantages.ensure_vantage(conn, vantage)
    passed, total = v.cycle_passed, v.cycle_total
    is_broken = broken(passed, total, cfg.probes.min_pass_share)
    upd = {"last_cycle_at": now, "last_passed": passed, "last_total": total,
           "cycle_started_at": None, "cycle_passed": 0, "cycle_total": 0,
           "broken_since": (v.broken_since or now) if is_broken else None}
    mailed = None
    if is_broken and v.broken_since is None and _breaks(conn, vantage, now):
        mailed = _mail_vantage_broken(conn, cfg, v, passed, total, now)
    conn.execute(vantages.update().where(vantages.c.name == vantage).values(**upd))
    judged = {} if is_broken else judge(conn, cfg, now, vantage)
    return {"broken": is_broken, "was_broken": v.broken_since is not None, "passed": passed,
            "total": total, "mailed": mailed, "judged": judged}


def _breaks(conn: sa.Connection, vantage: str, now: _dt.datetime) -> bool:
    """The vantage becomes broken now and its mail is due (none in the last day): a
    compare-and-set on its row, so of two nodes ending its cycle at once only one mails."""
    res = conn.execute(vantages.update().where(
        vantages.c.name == vantage, vantages.c.broken_since.is_(None),
        sa.or_(vantages.c.broken_mailed_at.is_(None),
               vantages.c.broken_mailed_at <= now - _dt.timedelta(days=1)))
        .values(broken_since=now, broken_mailed_at=now))
    return res.rowcount == 1


def counted_vantages(conn: sa.Connection, cfg, now: _dt.datetime, me: str = "") -> list[str]:
    """The vantages whose results count now (probes.verdicts.standing)."""
    return [name for name, v in _vantages.all_vantages(conn).items()
            if standing(v, now=now, interval=cfg.probes.interval,
                        min_pass_share=cfg.probes.min_pass_share, me=name == me).counts]


def judge(conn: sa.Connection, cfg, now: _dt.datetime, me: str, ids=None, *,
          passes_only: bool = False) -> dict:
    """Judge mirrors (all when ids is None) from the views of the vantages that count: the
    counters a quorum agrees on go to mirror_health with the newest counted observation, the
    status moves when they say so, with its note and mail, and the table version moves once if
    any answer did. `passes_only` (a pass just recorded by `me`): only what a pass can do, so
    the failure side waits for the end of the cycle and the brake. Returns {mirror id: {"status",
    "changed", "mail", "bumped"}} for the mirrors judged."""
    p = cfg.probes
    counted = counted_vantages(conn, cfg, now, me)
    if passes_only and me not in counted:
        return {}
    need = quorum_size(len(counted), p.quorum)
    by_mirror = _vantages.views(conn, counted, ids)
    if not by_mirror:
        return {}
    windows = _maint.relevant(conn, now, ids)
    by_mirror = {k: v for k, v in by_mirror.items()
                 if maintenance.probes_paused(windows.get(k, ()), now) is None}
    if ids is None:                       # a cycle's end: every mirror, in two reads
        ms = [m for m in _mirrors.select(conn)
              if m.id in by_mirror and m.status in statuses.PROBED]   # not the retired
        healths = _health.of(conn)
    else:
        ms = [m for m in (_mirrors.get(conn, i) for i in by_mirror) if m is not None]
        healths = _health.of(conn, [m.id for m in ms])
    out, moved_any = {}, False
    for m in ms:
        views = by_mirror[m.id]
        h = healths.get(m.id) or _health.ensure_row(conn, m.id, now)
        agg = agreed([Counters(x.failures_in_row, x.passes_in_row) for x in views], need)
        mine = next((x for x in views if x.vantage == me), None)
        newest = max(views, key=lambda x: x.last_probe_at or _dt.datetime.min)
        if passes_only:               # failures seen since the last judgement are not judged yet
            agg = Counters(min(agg.failures_in_row, h.failures_in_row), agg.passes_in_row)
            newest = mine or newest
        failing = max((x for x in views if x.failures_in_row),
                      key=lambda x: x.last_probe_at or _dt.datetime.min, default=None)
        err_class, _, err = (failing.last_error if failing else "").partition(": ")
        k_fail = sum(1 for x in views if x.failures_in_row >= p.fail_after)
        k_pass = sum(1 for x in views if x.passes_in_row >= p.pass_after)

        def verdict(status):
            k = k_pass if status == statuses.DISABLED_PROBES else k_fail
            v = judge_verdict(status, agg, err_class, err, fail_after=p.fail_after,
                              pass_after=p.pass_after,
                              agreement=f"{k} of {len(counted)} vantages" if len(counted) > 1
                              else "")
            if passes_only and v.mail == DISABLED:
                v = judge_verdict(status, Counters(0, agg.passes_in_row), "", "",
                                  fail_after=p.fail_after, pass_after=p.pass_after)
            return v

        v = verdict(m.status)
        # a compare-and-set: another node judging the same transition at once (or an admin)
        # may have moved the mirror since it was read; then it wrote the note and queued the
        # mail, and this node judges the status that is there now (usually: nothing to do)
        while v.changed and not _mirrors.move_status(conn, m, v.status, v.reason, now):
            m, h = _mirrors.get(conn, m.id), _health.get(conn, m.id)
            v = verdict(m.status)
        upd = {f: getattr(newest, f) for f in _vantages.OBSERVATION}
        upd.update(failures_in_row=agg.failures_in_row, passes_in_row=agg.passes_in_row,
                   updated_at=now,
                   last_ok_at=max((x.last_ok_at for x in views if x.last_ok_at), default=None)
                   or h.last_ok_at,
                   last_sync_at=max((x.last_sync_at for x in views if x.last_sync_at),
                                    default=None) or h.last_sync_at)
        if v.outage_over:
            upd["outage_mailed_at"] = None
            upd["reminder_mailed_at"] = None
        mail = None
        if v.changed:                 # this node won the transition: its note, its mail
            add_note(conn, m.id, AUTHOR, f"{m.status} -> {v.status}: {v.reason}", now)
            if v.mail == DISABLED and h.outage_mailed_at is None:
                mail = _mail_disabled(conn, cfg, m, failing or newest, v, now)
                upd["outage_mailed_at"] = now
            elif v.mail == RECOVERED:
                mail = _mail_recovered(conn, cfg, m, v, now)
                upd["outage_mailed_at"] = None
                upd["reminder_mailed_at"] = None
        conn.execute(mirror_health.update().where(mirror_health.c.mirror_id == m.id)
                     .values(**upd))
        # what the DNS answers moved when the serving verdict (or its addresses) did
        after_m = dataclasses.replace(m, status=v.status, status_reason=v.reason) if v.changed \
            else m
        after_h = dataclasses.replace(h, **{k: val for k, val in upd.items()
                                            if k in _health.Health.__dataclass_fields__})
        ws = windows.get(m.id, ())
        moved = v.changed or (serving.decide(m, h, cfg, now, ws).answer_key
                              != serving.decide(after_m, after_h, cfg, now, ws).answer_key)
        moved_any = moved_any or moved
        out[m.id] = {"status": v.status, "changed": v.changed, "mail": mail, "bumped": moved}
    if moved_any:
        bump_version(conn)
    return out


@dataclass(frozen=True)
class VantageVerdict:
    """What one vantage point says about one mirror, and whether that counts now."""
    vantage: str
    standing: Standing                  # counts / broken / gone, and why
    says: str                           # "failing: 4 failed probes (refused: ...)", "passing", ...
    view: _vantages.View


def vantage_verdicts(conn: sa.Connection, cfg, mirror_id: int,
                     now: _dt.datetime) -> list[VantageVerdict]:
    """Every vantage's verdict on one mirror, for the mirror page and `mirrorctl show`: its own
    counters read with the serving rule's words (dnsd.serving.probe_state), and its standing."""
    known = _vantages.all_vantages(conn)
    out = []
    for view in _vantages.views_of(conn, mirror_id):
        v = known.get(view.vantage) or _vantages.Vantage(view.vantage)
        st = standing(v, now=now, interval=cfg.probes.interval,
                      min_pass_share=cfg.probes.min_pass_share)
        as_health = _health.Health(**{f: getattr(view, f)
                                      for f in _health.Health.__dataclass_fields__
                                      if hasattr(view, f)})
        ps = serving.probe_state(as_health, cfg)
        if ps.reason:
            says = f"{ps.state}: {ps.reason}"
        elif view.failures_in_row:
            says = f"{ps.state}, {view.failures_in_row} failed in a row"
        else:
            says = f"{ps.state}, {view.passes_in_row} passed in a row"
        out.append(VantageVerdict(view.vantage, st, says, view))
    return out


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


def _mail_disabled(conn, cfg, m, view, v, now):
    t = target_from_row(m, cfg.dns.zone, cfg.dns.geo_name)
    classes = [view.last_error.partition(":")[0]] if view.last_error else []
    addrs = (t.ipv4, t.ipv6) if t.pinned else (view.probed_ipv4, view.probed_ipv6)
    return mails.queue(
        conn, cfg, "disabled", "disabled.txt", mirror_id=m.id,
        mirror={"display": mails.display_name(m), "hostname": m.hostname},
        failures=v.failures_in_row, since=now.strftime("%Y-%m-%d %H:%M"),
        reason=v.reason, log_lines=_recent_lines(conn, m.id, cfg.probes.fail_after),
        hints=mails.hints_for(classes, cfg.dns.zone, t.names, addrs),
        interval_text=fmt_age(cfg.probes.interval), pass_after=cfg.probes.pass_after,
        max_age_text=fmt_age(serving.max_sync_age(cfg)), user_agent=cfg.probes.user_agent)


def _mail_recovered(conn, cfg, m, v, now):
    out = (now - m.status_since).total_seconds() if m.status_since else None
    return mails.queue(
        conn, cfg, "recovered", "recovered.txt", mirror_id=m.id,
        mirror={"display": mails.display_name(m), "hostname": m.hostname},
        passes=v.passes_in_row, since=now.strftime("%Y-%m-%d %H:%M"),
        outage_text=fmt_age(out) if out is not None else "",
        log_lines=_recent_lines(conn, m.id, cfg.probes.pass_after))


def _mail_vantage_broken(conn, cfg, v, passed: int, total: int, now: _dt.datetime):
    """One mail to the list about a vantage, instead of one per mirror it cannot reach."""
    classes: dict[str, int] = {}
    since = v.cycle_started_at or now - _dt.timedelta(seconds=cfg.probes.interval)
    for x in conn.execute(sa.select(vantage_health.c.last_error).where(
            vantage_health.c.vantage == v.name, vantage_health.c.failures_in_row > 0,
            vantage_health.c.last_probe_at >= since)).scalars():
        c = (x or "error").split(":", 1)[0]
        classes[c] = classes.get(c, 0) + 1
    others = [n for n in counted_vantages(conn, cfg, now) if n != v.name]
    return mails.queue(
        conn, cfg, "vantage-broken", "vantage_broken.txt", vantage=v.name, passed=passed,
        total=total, share=passed / total if total else 0.0, min_share=cfg.probes.min_pass_share,
        now=now.strftime("%Y-%m-%d %H:%M"), others=others,
        classes=sorted(classes.items(), key=lambda kv: -kv[1]))
