"""What every record module shares: making a frozen dataclass from a row, and back to plain data,
and inserting a row that another node may be inserting at the same moment."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import Any, TypeVar

import sqlalchemy as sa

from dnsd.db import upsert

T = TypeVar("T")


def insert_if_missing(conn: sa.Connection, table: sa.Table, **values) -> bool:
    """Insert the row unless one with its primary key exists; False when it was there already,
    or another node's insert won just now. Read-then-insert would let two nodes judging the same
    new mirror both insert, and the second one's whole transaction would fail on the key."""
    pk = list(table.primary_key.columns)
    res = conn.execute(upsert(conn)(table).values(**values)
                       .on_conflict_do_nothing(index_elements=pk).returning(*pk))
    return res.first() is not None


def from_mapping(cls: type[T], m) -> T:
    """A record from a row mapping that holds at least the record's fields (extra keys ignored)."""
    return cls(**{f.name: m[f.name] for f in dataclasses.fields(cls) if f.init})


def plain(value: Any) -> Any:
    """A record (or records in lists/tuples/dicts) as JSON-ready data; datetimes as ISO text is
    the caller's choice, so they stay datetimes here."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def iso(v):
    """'2026-11-21T12:00:00Z' for a naive-UTC datetime; anything else unchanged."""
    return v.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(v, _dt.datetime) else v
