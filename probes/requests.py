"""Probe a mirror now: one request any part can make, served within seconds by every probe node.

The admin's "Probe now" button, a maintainer's, and downloaders' reports all call
`request_probe(conn, mirror_id, reason, requested_by)` in their own transaction. The request is
a row of `probe_requests`, at most one per mirror: a new request moves its `requested_at` (and
counts itself in `requests`), so any number of requests for one mirror coalesce into one row, and
the table never holds more rows than there are mirrors.

Every probe node (each vantage point, probes.store.vantage_of) serves the requests on its own:
`due(conn, vantage, now, gap)` lists the mirrors whose request is newer than the one the vantage
last served (`probe_requests_served`), and `claim` marks them served before the probe starts (a
probe cut short by a stop is not retried: the next request or the next cycle covers it). So each
request is probed once from each vantage, and one vantage probes a mirror on request at most
once per `[probes] request_gap` seconds (a request inside the gap waits for its end, it is not
lost): a flood of reports costs a mirror one probe a minute per vantage, not one per report.
The probe's result is recorded like any other (probes.store.record_probe), without counting in
the vantage's cycle share (the brake), which is about one pass over every mirror.

A node notices a request by polling `due` every `[probes] request_poll` seconds (a read of one
small table), and on PostgreSQL at once: the request sends `NOTIFY mirrordns_probe` with the
mirror id, delivered at commit (the listener is dnsd.follow's, on its own thread). Requests older
than `KEEP` are deleted by the probes' history upkeep.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import sqlalchemy as sa

from dnsd import statuses
from dnsd.db import upsert
from dnsd.errors import NotFound
from dnsd.models import PROBE_CHANNEL, mirrors, probe_requests, probe_requests_served, utcnow

KEEP = _dt.timedelta(days=1)
MAX_REASON = 64          # the columns' width: a short word ("admin", "report: unreachable")


@dataclass(frozen=True)
class ProbeRequest:
    """A mirror's request as it stands: the newest one, and how many were coalesced into it."""

    mirror_id: int
    requested_at: _dt.datetime
    reason: str
    requested_by: str
    requests: int


def request_probe(conn: sa.Connection, mirror_id: int, reason: str, requested_by: str,
                  now: _dt.datetime | None = None) -> ProbeRequest:
    """Ask every probe node to probe mirror `mirror_id` once, soon; in the caller's transaction.
    One statement (an upsert), so requests made at once on several nodes coalesce without a
    read-then-write race. NotFound for a mirror that does not exist or is not probed (retired)."""
    now = now or utcnow()
    status = conn.execute(sa.select(mirrors.c.status).where(mirrors.c.id == mirror_id)).scalar()
    if status is None or status not in statuses.PROBED:
        raise NotFound("No such mirror to probe." if status is None
                       else "A retired mirror is not probed.")
    reason, requested_by = reason[:MAX_REASON], requested_by[:MAX_REASON]
    insert = upsert(conn)
    stmt = insert(probe_requests).values(mirror_id=mirror_id, requested_at=now, reason=reason,
                                         requested_by=requested_by, requests=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=["mirror_id"],
        set_={"requested_at": sa.func.max(probe_requests.c.requested_at, now)
              if conn.dialect.name == "sqlite"
              else sa.func.greatest(probe_requests.c.requested_at, now),
              "reason": reason, "requested_by": requested_by,
              "requests": probe_requests.c.requests + 1},
    ).returning(*probe_requests.c)
    row = conn.execute(stmt).one()
    if conn.dialect.name == "postgresql":      # sent at commit, never for a rolled-back request
        conn.execute(sa.select(sa.func.pg_notify(PROBE_CHANNEL, str(mirror_id))))
    return ProbeRequest(**row._mapping)


def get(conn: sa.Connection, mirror_id: int) -> ProbeRequest | None:
    """The mirror's request, if one was made within `KEEP` (for its page)."""
    row = conn.execute(sa.select(probe_requests)
                       .where(probe_requests.c.mirror_id == mirror_id)).first()
    return ProbeRequest(**row._mapping) if row else None


@dataclass(frozen=True)
class Served:
    """When a vantage point last served a request of one mirror."""

    vantage: str
    requested_at: _dt.datetime
    served_at: _dt.datetime


def served(conn: sa.Connection, mirror_id: int) -> list[Served]:
    rows = conn.execute(sa.select(probe_requests_served.c.vantage,
                                  probe_requests_served.c.requested_at,
                                  probe_requests_served.c.served_at)
                        .where(probe_requests_served.c.mirror_id == mirror_id)
                        .order_by(probe_requests_served.c.vantage)).all()
    return [Served(*r) for r in rows]


def due(conn: sa.Connection, vantage: str, now: _dt.datetime, gap: float,
        limit: int = 100) -> list[ProbeRequest]:
    """The requests `vantage` has not served yet and may serve now (its last on-request probe of
    that mirror at least `gap` seconds ago), oldest first, at most `limit`; only mirrors that are
    probed (a request for a mirror retired since is left to expire)."""
    s = probe_requests_served
    joined = probe_requests.join(mirrors, mirrors.c.id == probe_requests.c.mirror_id).outerjoin(
        s, sa.and_(s.c.mirror_id == probe_requests.c.mirror_id, s.c.vantage == vantage))
    rows = conn.execute(
        sa.select(*probe_requests.c).select_from(joined)
        .where(mirrors.c.status.in_(statuses.PROBED),
               sa.or_(s.c.mirror_id.is_(None),
                      sa.and_(s.c.requested_at < probe_requests.c.requested_at,
                              s.c.served_at <= now - _dt.timedelta(seconds=gap))))
        .order_by(probe_requests.c.requested_at, probe_requests.c.mirror_id).limit(limit)).all()
    return [ProbeRequest(**r._mapping) for r in rows]


def claim(conn: sa.Connection, vantage: str, reqs: list[ProbeRequest],
          now: _dt.datetime) -> None:
    """Mark `reqs` served by `vantage` (before probing: see the module docstring)."""
    insert = upsert(conn)
    for r in reqs:
        stmt = insert(probe_requests_served).values(
            mirror_id=r.mirror_id, vantage=vantage, requested_at=r.requested_at, served_at=now)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["mirror_id", "vantage"],
            set_={"requested_at": r.requested_at, "served_at": now}))


def expire(conn: sa.Connection, now: _dt.datetime) -> int:
    """Delete requests (and what was served of them) older than `KEEP`; returns how many."""
    cut = now - KEEP
    n = conn.execute(probe_requests.delete().where(probe_requests.c.requested_at < cut)).rowcount
    conn.execute(probe_requests_served.delete().where(probe_requests_served.c.served_at < cut))
    return n
