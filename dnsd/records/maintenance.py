"""The `maintenance_windows` table: windows planned for a mirror (what they do: dnsd.maintenance).

The plan reads, per mirror, the windows that have not ended and the one that ended last (it
decides whether the mirror still waits for its passed probe); the probes read the windows in
force when a probe started; the pages read a mirror's windows, newest first.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from dnsd import maintenance as rule
from dnsd.models import maintenance_windows as t
from dnsd.records._base import from_mapping


@dataclass(frozen=True)
class Window:
    id: int
    mirror_id: int
    starts_at: _dt.datetime
    ends_at: _dt.datetime
    reason: str
    created_by: str
    created_at: _dt.datetime
    cancelled_at: _dt.datetime | None = None
    cancelled_by: str | None = None

    @property
    def counts(self) -> bool:
        return rule.counts(self)

    @property
    def ended_early(self) -> bool:
        """Cancelled while it ran (its end is the cancel time)."""
        return self.cancelled_at is not None and self.counts


COLUMNS = tuple(t.c[f] for f in Window.__dataclass_fields__)


def _many(conn, q) -> list[Window]:
    return [from_mapping(Window, r._mapping) for r in conn.execute(q)]


def get(conn: sa.Connection, window_id: int) -> Window | None:
    r = conn.execute(sa.select(*COLUMNS).where(t.c.id == window_id)).first()
    return from_mapping(Window, r._mapping) if r else None


def select(conn: sa.Connection, mirror_id: int | None = None, *,
           not_ended_at: _dt.datetime | None = None, limit: int | None = 20) -> list[Window]:
    """Windows, the latest start first: one mirror's (or every mirror's), all of them
    (cancelled ones too: the record), or with `not_ended_at` only the counting ones not ended
    then, soonest first."""
    q = sa.select(*COLUMNS)
    if mirror_id is not None:
        q = q.where(t.c.mirror_id == mirror_id)
    if not_ended_at is not None:
        q = q.where(rule.counting(t), t.c.ends_at > not_ended_at).order_by(
            t.c.starts_at, t.c.id)
    else:
        q = q.order_by(t.c.starts_at.desc(), t.c.id.desc())
    return _many(conn, q.limit(limit) if limit else q)


def of_mirror(conn: sa.Connection, mirror_id: int, limit: int | None = 20) -> list[Window]:
    """A mirror's windows, the latest start first (cancelled ones too: the record)."""
    return select(conn, mirror_id, limit=limit)


def relevant(conn: sa.Connection, now: _dt.datetime,
             ids: Iterable[int] | None = None) -> dict[int, tuple[Window, ...]]:
    """{mirror id: windows} with a say at `now` or later: every counting window that has not
    ended, and per mirror the counting window that ended last. Mirrors without any are absent."""
    ids = None if ids is None else list(ids)
    if ids is not None and not ids:
        return {}
    live = rule.counting(t)
    scope = (t.c.mirror_id.in_(ids),) if ids is not None else ()
    last = (sa.select(t.c.mirror_id, sa.func.max(t.c.ends_at).label("ended"))
            .where(live, t.c.ends_at <= now, *scope).group_by(t.c.mirror_id).subquery())
    ahead = _many(conn, sa.select(*COLUMNS).where(live, t.c.ends_at > now, *scope))
    behind = _many(conn, sa.select(*COLUMNS).join(
        last, sa.and_(t.c.mirror_id == last.c.mirror_id, t.c.ends_at == last.c.ended))
        .where(live))
    out: dict[int, list[Window]] = {}
    for w in sorted({w.id: w for w in ahead + behind}.values(),
                    key=lambda w: (w.starts_at, w.id)):
        out.setdefault(w.mirror_id, []).append(w)
    return {k: tuple(v) for k, v in out.items()}


def in_force(conn: sa.Connection, mirror_id: int, at: _dt.datetime) -> tuple[Window, ...]:
    """The counting windows of one mirror that contain `at` (its probes then count for
    nothing)."""
    return tuple(_many(conn, sa.select(*COLUMNS).where(
        t.c.mirror_id == mirror_id, rule.counting(t), t.c.starts_at <= at, t.c.ends_at > at)))


def overlapping(conn: sa.Connection, mirror_id: int, starts_at: _dt.datetime,
                ends_at: _dt.datetime) -> Window | None:
    """A counting window of the mirror that overlaps [starts_at, ends_at), or None."""
    r = conn.execute(sa.select(*COLUMNS).where(
        t.c.mirror_id == mirror_id, rule.counting(t), t.c.starts_at < ends_at,
        t.c.ends_at > starts_at).order_by(t.c.starts_at).limit(1)).first()
    return from_mapping(Window, r._mapping) if r else None


def insert(conn: sa.Connection, mirror_id: int, starts_at: _dt.datetime, ends_at: _dt.datetime,
           reason: str, created_by: str, now: _dt.datetime) -> Window:
    wid = conn.execute(t.insert().values(
        mirror_id=mirror_id, starts_at=starts_at, ends_at=ends_at, reason=reason,
        created_by=created_by, created_at=now)).inserted_primary_key[0]
    return get(conn, wid)


def cancel(conn: sa.Connection, window_id: int, by: str, now: _dt.datetime,
           ends_at: _dt.datetime | None = None) -> Window:
    """Mark a window cancelled (and, for one that was running, end it at `ends_at`)."""
    vals = {"cancelled_at": now, "cancelled_by": by}
    if ends_at is not None:
        vals["ends_at"] = ends_at
    conn.execute(t.update().where(t.c.id == window_id).values(**vals))
    return get(conn, window_id)
