"""The `mirrors` table: one download mirror as the admins described it.

`ipv4`/`ipv6` here are the *pinned* addresses (typed in by an admin or an applicant); a mirror
without any gets its addresses from its host name through the probes (dnsd.records.health), and
dnsd.serving decides which of the two the DNS answers with.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from dnsd import statuses
from dnsd.errors import NotFound
from dnsd.models import mirrors
from dnsd.records._base import from_mapping

NAME_RE = re.compile(r"^[a-z]{2}[0-9]+$")
URL_FIELDS = {"http_url": "http", "https_url": "https", "ftp_url": "ftp", "rsync_url": "rsync"}
PROTOCOLS = tuple(URL_FIELDS.values())
SPEC_FIELDS = ("bandwidth_mbit", "cores", "memory_gb", "disk_gb")


@dataclass(frozen=True)
class Mirror:
    id: int
    name: str | None
    hostname: str
    country: str
    ipv4: str | None
    ipv6: str | None
    http_url: str | None
    https_url: str | None
    ftp_url: str | None
    rsync_url: str | None
    provider_name: str
    provider_url: str
    provider_logo: str
    status: str
    status_reason: str
    status_since: _dt.datetime
    backup: bool
    weight: float
    bandwidth_mbit: int | None
    cores: int | None
    memory_gb: int | None
    disk_gb: int | None
    has_ipv6: bool
    has_https: bool
    source: str
    created_at: _dt.datetime
    updated_at: _dt.datetime

    @property
    def label(self) -> str:
        """How a mirror is called in messages: 'de2 (mirror.example.de)'."""
        return f"{self.name or '#' + str(self.id)} ({self.hostname})"

    @property
    def display(self) -> str:
        return self.name or self.hostname

    @property
    def urls(self) -> dict[str, str]:
        """{protocol: base URL} for the URLs it has, http first."""
        return {p: u for f, p in URL_FIELDS.items() if (u := getattr(self, f))}

    @property
    def pinned(self) -> bool:
        """An address is in the table: the probes use it and never resolve the host name."""
        return bool(self.ipv4 or self.ipv6)

    def value(self, field: str):
        return getattr(self, field)


COLUMNS = tuple(mirrors.c[f] for f in Mirror.__dataclass_fields__)


def from_row(row) -> Mirror:
    return from_mapping(Mirror, row._mapping if hasattr(row, "_mapping") else row)


def get(conn: sa.Connection, mirror_id: int) -> Mirror | None:
    row = conn.execute(sa.select(*COLUMNS).where(mirrors.c.id == mirror_id)).first()
    return from_row(row) if row else None


def move_status(conn: sa.Connection, m: Mirror, status: str, reason: str,
                now: _dt.datetime) -> bool:
    """Move the mirror from the status it had when `m` was read to `status`; False (and nothing
    written) when another writer moved it meanwhile. The one way a status changes: a
    compare-and-set on (status, status_since), so of two nodes judging the same transition at
    once only the one that wins writes the note and queues the mail (PostgreSQL re-checks the
    WHERE once the winner's row lock is released; SQLite has one writer at a time). The loser
    reads the mirror again and judges what is there now."""
    res = conn.execute(mirrors.update().where(
        mirrors.c.id == m.id, mirrors.c.status == m.status,
        mirrors.c.status_since.is_not_distinct_from(m.status_since))
        .values(status=status, status_reason=reason, status_since=now, updated_at=now))
    return res.rowcount == 1


def find(conn: sa.Connection, ref: str) -> Mirror:
    """A mirror by name (de2), by id (#12 or 12) or by host name; NotFound otherwise."""
    ref = (ref or "").strip()
    q = sa.select(*COLUMNS)
    if NAME_RE.match(ref.lower()):
        rows = conn.execute(q.where(mirrors.c.name == ref.lower())).all()
    elif ref.lstrip("#").isdigit() and len(ref.lstrip("#")) <= 9:
        rows = conn.execute(q.where(mirrors.c.id == int(ref.lstrip("#")))).all()
    else:
        rows = conn.execute(q.where(mirrors.c.hostname == ref.lower().rstrip("."))
                            .order_by(mirrors.c.id)).all()
        live = [r for r in rows if r.status in statuses.LIVE]
        rows = live if len(live) == 1 else rows
        if len(rows) > 1:
            raise NotFound(f"{len(rows)} mirrors have host name {ref}: use the mirror name")
    if not rows:
        raise NotFound(f"no mirror named {ref}")
    return from_row(rows[0])


def select(conn: sa.Connection, country: str | None = None,
           status: str | None = None) -> list[Mirror]:
    """Mirrors ordered by country, then name as people sort it (de2 before de10)."""
    q = sa.select(*COLUMNS)
    if country:
        q = q.where(mirrors.c.country == country)
    if status:
        q = q.where(mirrors.c.status == status)
    q = q.order_by(mirrors.c.country, sa.func.length(mirrors.c.name), mirrors.c.name, mirrors.c.id)
    return [from_row(r) for r in conn.execute(q)]


def host_owner(conn: sa.Connection, hostname: str, except_id: int | None = None) -> Mirror | None:
    """The live (not retired) mirror that has this host name, other than `except_id`."""
    q = sa.select(*COLUMNS).where(mirrors.c.hostname == hostname,
                                  mirrors.c.status.in_(statuses.LIVE))
    if except_id is not None:
        q = q.where(mirrors.c.id != except_id)
    row = conn.execute(q.order_by(mirrors.c.id)).first()
    return from_row(row) if row else None


def name_owner(conn: sa.Connection, name: str, except_id: int | None = None) -> Mirror | None:
    row = conn.execute(sa.select(*COLUMNS).where(mirrors.c.name == name)).first()
    if row is None or row.id == except_id:
        return None
    return from_row(row)


def by_source(conn: sa.Connection, source: str) -> Mirror | None:
    row = conn.execute(sa.select(*COLUMNS).where(mirrors.c.source == source)
                       .order_by(mirrors.c.id)).first()
    return from_row(row) if row else None


def next_free_name(conn: sa.Connection, country: str,
                   taken_elsewhere: Callable[[str], bool] = lambda name: False) -> str:
    """The lowest unused ccN for a country (retired mirrors keep their names: no reuse), skipping
    names `taken_elsewhere` says are not free (the zone file's, dnsd.validation)."""
    cc = country.lower()
    taken = set(conn.execute(sa.select(mirrors.c.name).where(mirrors.c.name.like(f"{cc}%")))
                .scalars())
    n = 1
    while f"{cc}{n}" in taken or taken_elsewhere(f"{cc}{n}"):
        n += 1
    return f"{cc}{n}"


def counts_by_status(conn: sa.Connection) -> dict[str, int]:
    out = {s: 0 for s in statuses.STATUSES}
    for s, n in conn.execute(sa.select(mirrors.c.status, sa.func.count()).group_by(mirrors.c.status)):
        out[s] = int(n)
    return out
