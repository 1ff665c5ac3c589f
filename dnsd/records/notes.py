"""The append-only logs: `notes` (a mirror's notes log) and `audit` (every change by a person)."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import sqlalchemy as sa

from dnsd.models import audit, notes, utcnow
from dnsd.records._base import from_mapping


@dataclass(frozen=True)
class Note:
    author: str
    created_at: _dt.datetime
    text: str


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: _dt.datetime
    actor: str
    mirror_id: int | None
    action: str
    before: str            # JSON text of the changed fields before
    after: str             # ... and after


def add_note(conn: sa.Connection, mirror_id: int, author: str, text: str,
             at: _dt.datetime | None = None) -> None:
    conn.execute(notes.insert().values(mirror_id=mirror_id, author=author,
                                       created_at=at or utcnow(), text=text))


def notes_of(conn: sa.Connection, mirror_id: int, limit: int | None = None) -> list[Note]:
    q = (sa.select(notes.c.author, notes.c.created_at, notes.c.text)
         .where(notes.c.mirror_id == mirror_id)
         .order_by(notes.c.created_at.desc(), notes.c.id.desc()))
    if limit:
        q = q.limit(limit)
    return [from_mapping(Note, r._mapping) for r in conn.execute(q)]


def latest_notes(conn: sa.Connection) -> dict[int, Note]:
    last = (sa.select(notes.c.mirror_id, sa.func.max(notes.c.id).label("nid"))
            .group_by(notes.c.mirror_id).subquery())
    rows = conn.execute(sa.select(notes.c.mirror_id, notes.c.author, notes.c.created_at,
                                  notes.c.text).join(last, notes.c.id == last.c.nid))
    return {r.mirror_id: from_mapping(Note, r._mapping) for r in rows}


def add_audit(conn: sa.Connection, actor: str, action: str, mirror_id: int | None,
              before: str, after: str) -> None:
    conn.execute(audit.insert().values(at=utcnow(), actor=actor, mirror_id=mirror_id,
                                       action=action, before=before, after=after))


def audit_entries(conn: sa.Connection, mirror_id: int | None = None, limit: int = 50,
                  actions=None) -> list[AuditEntry]:
    q = sa.select(audit).order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit)
    if mirror_id is not None:
        q = q.where(audit.c.mirror_id == mirror_id)
    if actions is not None:
        q = q.where(audit.c.action.in_(list(actions)))
    return [from_mapping(AuditEntry, r._mapping) for r in conn.execute(q)]
