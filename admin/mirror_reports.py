"""Reports from downloaders: "there is a problem with this mirror", kept and counted per mirror.

A downloader reports a mirror through the public form (/report) or the JSON endpoint
(/report.json; admin.web.report_pages) with a reason from dnsd.validation.REPORT_REASONS and an
optional text. `add_report` runs in one transaction:

- **What is stored.** The mirror, the time, the reason, the text, and `visitor`: an HMAC of the
  visitor's *network* (its IPv4 /24 or IPv6 /56, `[reports] ipv4_prefix/ipv6_prefix`) under the
  day's key (`report_keys`, random, one per UTC day, deleted the day after). Never an address:
  the hash only tells two reports of one day from one network apart from reports of two
  networks, and once the key is gone not even that can be traced back (a /24 is one of 16
  million, which an unkeyed hash would give away at once). Reports are deleted after
  `[reports] keep_days` (30).
- **Once per visitor.** One row per visitor network, mirror and day (a unique key): a repeat
  replaces the reason and text and counts in `repeats`, so one network cannot make a mirror look
  reported by many.
- **A probe now.** A new report asks every probe node to probe the mirror now
  (probes.requests.request_probe, which coalesces and bounds them).
- **One mail.** When `[reports] threshold` reports (distinct networks) fall within
  `[reports] window`, the mirror's maintainers (dnsd.recipients, kind "reports") get one mail,
  and no second one within the window. Every report of a mirror first locks the mirror's
  `report_mails` row (so the count sees every report before it, on PostgreSQL too), and the mail
  is claimed by a compare-and-set on that row (`mailed_at` moves only if it is older than the
  window), in the transaction that queues the mail: however many admin nodes take reports at
  once, one mail is queued.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import secrets
from collections import Counter
from dataclasses import dataclass

import sqlalchemy as sa

from admin.web.clients import network_key
from dnsd import statuses, validation
from dnsd.db import upsert
from dnsd.errors import NotFound
from dnsd.models import mirror_reports, mirrors, report_keys, report_mails
from dnsd.records import mirrors as _mirrors
from dnsd.records._base import insert_if_missing
from probes import mails
from probes.requests import ProbeRequest, request_probe

KIND = "reports"
KEEP_KEYS = _dt.timedelta(days=1)     # yesterday's key lives one more day, then goes


@dataclass(frozen=True)
class Report:
    id: int
    mirror_id: int
    created_at: _dt.datetime
    updated_at: _dt.datetime
    reason: str
    text: str
    repeats: int

    @property
    def reason_words(self) -> str:
        return validation.REPORT_REASONS.get(self.reason, self.reason)


@dataclass(frozen=True)
class Outcome:
    """What one report did: counted as new (else a repeat of the day's), the probe asked for,
    the mail queued (its outbox id)."""

    mirror_id: int
    label: str
    new: bool
    probe: ProbeRequest | None
    mail_id: int | None


@dataclass(frozen=True)
class MirrorReports:
    """A mirror's reports as the admin pages show them."""

    mirror_id: int
    name: str | None
    hostname: str
    status: str
    recent: int                          # within [reports] window
    total: int                           # kept (within keep_days)
    reasons: tuple[tuple[str, int], ...]  # kept, most frequent first
    latest_at: _dt.datetime
    latest: tuple[Report, ...]           # newest first
    mailed_at: _dt.datetime | None

    @property
    def label(self) -> str:
        return self.name or self.hostname


def network(ip: str, v4_prefix: int = 24, v6_prefix: int = 56) -> str:
    """The visitor's network, the unit reports are counted in (admin.web.clients' rule)."""
    return network_key(ip, v4_prefix, v6_prefix)


def day_key(conn: sa.Connection, day: _dt.date) -> bytes:
    """The day's key, made by the first report of the day (an insert that loses to another
    node's leaves that node's key)."""
    insert_if_missing(conn, report_keys, day=day, key=secrets.token_hex(32))
    return bytes.fromhex(conn.execute(sa.select(report_keys.c.key)
                                      .where(report_keys.c.day == day)).scalar_one())


def visitor_hash(conn: sa.Connection, net: str, now: _dt.datetime) -> str:
    return hmac.new(day_key(conn, now.date()), net.encode(), hashlib.sha256).hexdigest()[:32]


def reportable(conn: sa.Connection, ref: str):
    """The mirror a downloader names (its name, or its host name); NotFound for anything else,
    a pending or retired mirror included (the public does not know those)."""
    ref = (ref or "").strip()
    if not ref or len(ref) > validation.MAX_LEN["hostname"] or ref.lstrip("#").isdigit():
        raise NotFound("Please choose the mirror you mean.")
    try:
        m = _mirrors.find(conn, ref)
    except NotFound:
        m = None
    if m is None or m.status not in statuses.REPORTABLE:
        raise NotFound(f"There is no mirror called {ref[:80]}.")
    return m


def add_report(conn: sa.Connection, cfg, ref: str, reason: str, text: str, ip: str,
               now: _dt.datetime) -> Outcome:
    """Take one report (see the module docstring). `reason` and `text` as typed: checked here
    by dnsd.validation (Invalid names the field); NotFound for a mirror one cannot report."""
    reason = validation.report_reason(reason)
    text = validation.report_text(text, reason)
    m = reportable(conn, ref)
    r = cfg.reports
    # the mirror's lock: every report of this mirror waits here for the one before it
    insert_if_missing(conn, report_mails, mirror_id=m.id, mailed_at=None)
    conn.execute(sa.select(report_mails.c.mirror_id).where(report_mails.c.mirror_id == m.id)
                 .with_for_update())
    visitor = visitor_hash(conn, network(ip, r.ipv4_prefix, r.ipv6_prefix), now)
    ins = upsert(conn)(mirror_reports).values(
        mirror_id=m.id, created_at=now, updated_at=now, reason=reason, text=text,
        visitor=visitor, repeats=0)
    repeats = conn.execute(ins.on_conflict_do_update(
        index_elements=["mirror_id", "visitor"],
        set_={"reason": reason, "text": text, "updated_at": now,
              "repeats": mirror_reports.c.repeats + 1})
        .returning(mirror_reports.c.repeats)).scalar_one()
    if repeats:
        return Outcome(m.id, mails.display_name(m), False, None, None)
    probe = request_probe(conn, m.id, f"report: {reason}", "public", now=now)
    return Outcome(m.id, mails.display_name(m), True, probe, _mail_if_due(conn, cfg, m, now))


def _mail_if_due(conn: sa.Connection, cfg, m, now: _dt.datetime) -> int | None:
    r = cfg.reports
    since = now - _dt.timedelta(seconds=r.window)
    recent = _reports(conn, [m.id], since)
    if len(recent) < r.threshold:
        return None
    claimed = conn.execute(report_mails.update().where(
        report_mails.c.mirror_id == m.id,
        sa.or_(report_mails.c.mailed_at.is_(None), report_mails.c.mailed_at <= since))
        .values(mailed_at=now)).rowcount
    if claimed != 1:
        return None                      # mailed within the window already
    reasons = Counter(x.reason for x in recent).most_common()
    return mails.queue(
        conn, cfg, KIND, "reports.txt", mirror_id=m.id,
        mirror={"display": mails.display_name(m), "hostname": m.hostname}, count=len(recent),
        window=_words(r.window),
        reasons=[(validation.REPORT_REASONS[k], n) for k, n in reasons],
        texts=[x.text for x in recent if x.text][:10])


def _words(seconds: int) -> str:
    """'1 hour', '3 hours', '90 minutes': the window in a sentence of the mail."""
    if seconds % 3600 == 0:
        h = seconds // 3600
        return f"{h} hour{'' if h == 1 else 's'}"
    m = max(1, round(seconds / 60))
    return f"{m} minute{'' if m == 1 else 's'}"


def _reports(conn: sa.Connection, ids, since: _dt.datetime | None = None) -> list[Report]:
    q = sa.select(mirror_reports.c.id, mirror_reports.c.mirror_id, mirror_reports.c.created_at,
                  mirror_reports.c.updated_at, mirror_reports.c.reason, mirror_reports.c.text,
                  mirror_reports.c.repeats)
    if ids is not None:
        q = q.where(mirror_reports.c.mirror_id.in_(list(ids)))
    if since is not None:
        q = q.where(mirror_reports.c.created_at > since)
    return [Report(*row) for row in conn.execute(
        q.order_by(mirror_reports.c.updated_at.desc(), mirror_reports.c.id.desc()))]


def summaries(conn: sa.Connection, cfg, now: _dt.datetime, ids=None,
              latest: int = 3) -> list[MirrorReports]:
    """Every mirror with kept reports (or those of `ids`), the most reported lately first."""
    since = now - _dt.timedelta(seconds=cfg.reports.window)
    by_mirror: dict[int, list[Report]] = {}
    for x in _reports(conn, ids):
        by_mirror.setdefault(x.mirror_id, []).append(x)
    if not by_mirror:
        return []
    ms = {row.id: row for row in conn.execute(
        sa.select(mirrors.c.id, mirrors.c.name, mirrors.c.hostname, mirrors.c.status)
        .where(mirrors.c.id.in_(list(by_mirror))))}
    mailed = dict(conn.execute(sa.select(report_mails.c.mirror_id, report_mails.c.mailed_at)
                               .where(report_mails.c.mirror_id.in_(list(by_mirror)))).all())
    out = []
    for mid, rs in by_mirror.items():
        m = ms[mid]
        out.append(MirrorReports(
            mirror_id=mid, name=m.name, hostname=m.hostname, status=m.status,
            recent=sum(1 for x in rs if x.created_at > since), total=len(rs),
            reasons=tuple(Counter(x.reason for x in rs).most_common()),
            latest_at=rs[0].updated_at, latest=tuple(rs[:latest]), mailed_at=mailed.get(mid)))
    out.sort(key=lambda s: (-s.recent, -s.total, -s.latest_at.timestamp(), s.mirror_id))
    return out


def of_mirror(conn: sa.Connection, cfg, mirror_id: int, now: _dt.datetime,
              latest: int = 10) -> MirrorReports | None:
    found = summaries(conn, cfg, now, ids=[mirror_id], latest=latest)
    return found[0] if found else None


def expire(conn: sa.Connection, cfg, now: _dt.datetime) -> dict:
    """Delete reports older than `[reports] keep_days` and the day keys before yesterday's;
    returns what went ({} when nothing did)."""
    cut = now - _dt.timedelta(days=cfg.reports.keep_days)
    n = conn.execute(mirror_reports.delete().where(mirror_reports.c.updated_at < cut)).rowcount
    k = conn.execute(report_keys.delete().where(
        report_keys.c.day < (now - KEEP_KEYS).date())).rowcount
    return {what: count for what, count in (("reports", n), ("keys", k)) if count}
