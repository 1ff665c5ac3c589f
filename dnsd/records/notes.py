"""The append-only logs: `notes` (a mirror's notes log) and `audit` (every change by a person)."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass

import sqlalchemy as sa

from dnsd.models import audit, mirrors, notes, utcnow
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
    mirror_name: str | None = None     # the mirror's name and host now (None: no such mirror)
    mirror_host: str | None = None

    @property
    def target(self) -> str:
        """What the change was made to, for a person: the mirror by its name and host as they
        are now, "#12 (deleted)" for a mirror no longer in the table, a user or an application
        for changes that are not about a mirror, else "-"."""
        if self.mirror_id is not None:
            if self.mirror_host is None:
                return f"#{self.mirror_id} (deleted)"
            if self.mirror_name:
                return f"{self.mirror_name} ({self.mirror_host})"
            return self.mirror_host
        fields = {**_load(self.before), **_load(self.after)}
        if isinstance(fields.get("username"), str):
            return f"user {fields['username']}"
        if isinstance(fields.get("application"), int):
            return f"application #{fields['application']}"
        return "-"

    def changes(self) -> list[tuple[str, str, str]]:
        """[(field, before, after)] as text, fields in alphabetical order."""
        before, after = _load(self.before), _load(self.after)
        return [(k, _show(before.get(k)), _show(after.get(k)))
                for k in sorted(before.keys() | after.keys())]


def _load(text: str) -> dict:
    try:
        v = json.loads(text) if text else {}
    except ValueError:
        return {"": text}
    return v if isinstance(v, dict) else {"": v}


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
    q = (sa.select(audit, mirrors.c.name.label("mirror_name"),
                   mirrors.c.hostname.label("mirror_host"))
         .select_from(audit.outerjoin(mirrors, mirrors.c.id == audit.c.mirror_id))
         .order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit))
    if mirror_id is not None:
        q = q.where(audit.c.mirror_id == mirror_id)
    if actions is not None:
        q = q.where(audit.c.action.in_(list(actions)))
    return [from_mapping(AuditEntry, r._mapping) for r in conn.execute(q)]
