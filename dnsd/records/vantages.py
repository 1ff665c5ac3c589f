"""The `vantages` and `vantage_health` tables: each probe vantage point, and its own view of each
mirror. (What a quorum of them agrees on is in `mirror_health`, dnsd.records.health; the rules
that decide whether a vantage counts and what the quorum agrees on are in probes.verdicts.)"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import sqlalchemy as sa

from dnsd.models import vantage_health, vantages
from dnsd.records._base import from_mapping, insert_if_missing


@dataclass(frozen=True)
class Vantage:
    name: str
    cycle_started_at: _dt.datetime | None = None
    cycle_passed: int = 0               # the cycle in progress, so far
    cycle_total: int = 0
    last_cycle_at: _dt.datetime | None = None
    last_passed: int = 0                # the last complete cycle
    last_total: int = 0
    broken_since: _dt.datetime | None = None
    broken_mailed_at: _dt.datetime | None = None


@dataclass(frozen=True)
class View:
    """One vantage's view of one mirror: its own counters and its last observation."""
    mirror_id: int
    vantage: str
    failures_in_row: int = 0
    passes_in_row: int = 0
    last_probe_at: _dt.datetime | None = None
    last_ok_at: _dt.datetime | None = None
    last_error: str = ""
    last_sync_at: _dt.datetime | None = None
    ipv4_up: bool | None = None
    ipv6_up: bool | None = None
    https_ok: bool | None = None
    geo_check: str = ""
    probed_ipv4: str | None = None
    probed_ipv6: str | None = None


VANTAGE_COLUMNS = tuple(vantages.c[f] for f in Vantage.__dataclass_fields__)
VIEW_COLUMNS = tuple(vantage_health.c[f] for f in View.__dataclass_fields__)
# what a view holds of a probe's observation (copied to mirror_health when the view counts)
OBSERVATION = ("last_probe_at", "last_ok_at", "last_error", "last_sync_at", "ipv4_up", "ipv6_up",
               "https_ok", "geo_check", "probed_ipv4", "probed_ipv6")


def all_vantages(conn: sa.Connection) -> dict[str, Vantage]:
    rows = conn.execute(sa.select(*VANTAGE_COLUMNS).order_by(vantages.c.name))
    return {r.name: from_mapping(Vantage, r._mapping) for r in rows}


def get_vantage(conn: sa.Connection, name: str) -> Vantage | None:
    r = conn.execute(sa.select(*VANTAGE_COLUMNS).where(vantages.c.name == name)).first()
    return from_mapping(Vantage, r._mapping) if r else None


def ensure_vantage(conn: sa.Connection, name: str) -> Vantage:
    v = get_vantage(conn, name)
    if v is None:
        if insert_if_missing(conn, vantages, name=name, cycle_passed=0, cycle_total=0,
                             last_passed=0, last_total=0):
            return Vantage(name)
        v = get_vantage(conn, name)              # another node's insert won just now
    return v


def views_of(conn: sa.Connection, mirror_id: int) -> list[View]:
    """Every vantage's view of one mirror, by vantage name."""
    rows = conn.execute(sa.select(*VIEW_COLUMNS).where(vantage_health.c.mirror_id == mirror_id)
                        .order_by(vantage_health.c.vantage))
    return [from_mapping(View, r._mapping) for r in rows]


def views(conn: sa.Connection, names, ids=None) -> dict[int, list[View]]:
    """{mirror id: [views of these vantages]} (all mirrors when ids is None)."""
    names = list(names)
    if not names:
        return {}
    q = sa.select(*VIEW_COLUMNS).where(vantage_health.c.vantage.in_(names))
    if ids is not None:
        q = q.where(vantage_health.c.mirror_id.in_(list(ids)))
    out: dict[int, list[View]] = {}
    for r in conn.execute(q.order_by(vantage_health.c.mirror_id, vantage_health.c.vantage)):
        out.setdefault(r.mirror_id, []).append(from_mapping(View, r._mapping))
    return out


def get_view(conn: sa.Connection, mirror_id: int, vantage: str) -> View | None:
    r = conn.execute(sa.select(*VIEW_COLUMNS).where(vantage_health.c.mirror_id == mirror_id,
                                                    vantage_health.c.vantage == vantage)).first()
    return from_mapping(View, r._mapping) if r else None
