"""The `mirror_health` table: what the probes know about a mirror now (one row per mirror).

`probed_ipv4`/`probed_ipv6` are the addresses the last probe used when the mirror has no pinned
address: the probe resolved the host name (or took the URL's IP literal) and `ipv4_up`/`ipv6_up`
say whether the probe over them passed. A mirror never probed has no row; `NEVER` stands in.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import sqlalchemy as sa

from dnsd.models import mirror_health
from dnsd.records._base import from_mapping, insert_if_missing


@dataclass(frozen=True)
class Health:
    failures_in_row: int = 0
    passes_in_row: int = 0
    last_probe_at: _dt.datetime | None = None
    last_ok_at: _dt.datetime | None = None
    last_error: str = ""
    last_sync_at: _dt.datetime | None = None
    ipv4_up: bool | None = None
    ipv6_up: bool | None = None
    https_ok: bool | None = None
    probed_ipv4: str | None = None
    probed_ipv6: str | None = None
    uptime_24h: float | None = None
    uptime_7d: float | None = None
    uptime_30d: float | None = None
    rtt_p50_ms: float | None = None
    rtt_p95_ms: float | None = None
    geo_check: str = ""
    outage_mailed_at: _dt.datetime | None = None
    reminder_mailed_at: _dt.datetime | None = None

    @property
    def probed(self) -> bool:
        return self.last_probe_at is not None

    @property
    def ever_passed(self) -> bool:
        return self.last_ok_at is not None


NEVER = Health()
COLUMNS = tuple(mirror_health.c[f] for f in Health.__dataclass_fields__)


def from_row(row) -> Health:
    m = row._mapping if hasattr(row, "_mapping") else row
    return from_mapping(Health, {k: (m[k] if m[k] is not None or k not in _NOT_NULL else
                                     getattr(NEVER, k)) for k in Health.__dataclass_fields__})


# columns the table never leaves NULL; an outer join gives NULL for a mirror with no row
_NOT_NULL = ("failures_in_row", "passes_in_row", "last_error", "geo_check")


def from_join(row) -> Health:
    """The health part of a mirrors LEFT JOIN mirror_health row (NEVER when there is none)."""
    m = row._mapping if hasattr(row, "_mapping") else row
    if m.get("health_id") is None:
        return NEVER
    return from_row(m)


def get(conn: sa.Connection, mirror_id: int) -> Health:
    row = conn.execute(sa.select(*COLUMNS).where(mirror_health.c.mirror_id == mirror_id)).first()
    return from_row(row) if row else NEVER


def of(conn: sa.Connection, ids=None) -> dict[int, Health]:
    """{mirror id: Health} for these mirrors (all when ids is None); missing ids mean NEVER."""
    q = sa.select(mirror_health.c.mirror_id, *COLUMNS)
    if ids is not None:
        ids = list(ids)
        if not ids:
            return {}
        q = q.where(mirror_health.c.mirror_id.in_(ids))
    return {r.mirror_id: from_row(r) for r in conn.execute(q)}


def ensure_row(conn: sa.Connection, mirror_id: int, now: _dt.datetime) -> Health:
    """The mirror's row, inserted empty first if it has none (the probes' writer needs one)."""
    h = conn.execute(sa.select(*COLUMNS).where(mirror_health.c.mirror_id == mirror_id)).first()
    if h is None:
        if insert_if_missing(conn, mirror_health, mirror_id=mirror_id, updated_at=now):
            return NEVER
        return get(conn, mirror_id)              # another node's insert won just now
    return from_row(h)
