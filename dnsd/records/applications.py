"""The `applications` table (the waiting list) and `application_maintainers`.

An application is an offer to host a mirror: who (the applicant, first of its maintainers), where
(country, host name, addresses, URLs), with what (declared specs). `token` is the applicant's
private link; only its owner ever sees it. Once accepted, `mirror_id` names the mirror it became.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import sqlalchemy as sa

from dnsd.errors import NotFound
from dnsd.models import application_maintainers, applications
from dnsd.records._base import from_mapping
from dnsd.records.maintainers import Maintainer

# what the applicant fills in (and may change through the private link)
OFFER_FIELDS = ("country", "hostname", "ipv4", "ipv6", "http_url", "https_url", "rsync_url",
                "provider_name", "provider_url", "bandwidth_mbit", "cores", "memory_gb",
                "disk_gb", "has_ipv6", "has_https", "comments")


@dataclass(frozen=True)
class Application:
    id: int
    token: str
    status: str
    name: str
    email: str
    country: str
    hostname: str
    ipv4: str | None
    ipv6: str | None
    http_url: str | None
    https_url: str | None
    rsync_url: str | None
    provider_name: str
    provider_url: str
    bandwidth_mbit: int | None
    cores: int | None
    memory_gb: int | None
    disk_gb: int | None
    has_ipv6: bool
    has_https: bool
    comments: str
    source_ip: str
    mirror_id: int | None
    created_at: _dt.datetime
    updated_at: _dt.datetime
    confirmed_at: _dt.datetime
    reminded_at: _dt.datetime | None
    maintainers: tuple[Maintainer, ...] = ()     # the applicant first

    @property
    def applicant(self) -> Maintainer:
        return Maintainer(self.name, self.email)


_COLUMNS = tuple(applications.c[f] for f in Application.__dataclass_fields__
                 if f != "maintainers")


def _people(conn, ids) -> dict[int, tuple[Maintainer, ...]]:
    out: dict[int, list[Maintainer]] = {i: [] for i in ids}
    if ids:
        am = application_maintainers.c
        for r in conn.execute(sa.select(am.application_id, am.name, am.email)
                              .where(am.application_id.in_(list(ids))).order_by(am.id)):
            out[r.application_id].append(Maintainer(r.name, r.email))
    return {k: tuple(v) for k, v in out.items()}


def _records(conn, rows) -> list[Application]:
    rows = list(rows)
    people = _people(conn, [r.id for r in rows])
    out = []
    for r in rows:
        m = dict(r._mapping)
        ps = people[r.id] or (Maintainer(m["name"], m["email"]),)   # rows from before 0002
        out.append(from_mapping(Application, {**m, "maintainers": ps}))
    return out


def get(conn: sa.Connection, app_id: int) -> Application:
    rows = conn.execute(sa.select(*_COLUMNS).where(applications.c.id == app_id)).all()
    if not rows:
        raise NotFound(f"no application #{app_id}")
    return _records(conn, rows)[0]


def move_status(conn: sa.Connection, app_id: int, from_statuses, status: str,
                now: _dt.datetime, **values) -> bool:
    """Move the application to `status` if it is still in one of `from_statuses`; False (and
    nothing written) when someone decided it meanwhile. A compare-and-set, as for mirrors
    (dnsd.records.mirrors.move_status): of two admins accepting it at once, one makes the mirror
    and its mail, the other is told."""
    res = conn.execute(applications.update().where(
        applications.c.id == app_id, applications.c.status.in_(tuple(from_statuses)))
        .values(status=status, updated_at=now, **values))
    return res.rowcount == 1


def by_token(conn: sa.Connection, token: str) -> Application | None:
    """The application behind a private link, or None (also for malformed tokens)."""
    if not token or len(token) > 64:
        return None
    rows = conn.execute(sa.select(*_COLUMNS).where(applications.c.token == token)).all()
    return _records(conn, rows)[0] if rows else None


def by_mirror(conn: sa.Connection, mirror_id: int) -> Application | None:
    rows = conn.execute(sa.select(*_COLUMNS).where(applications.c.mirror_id == mirror_id)
                        .order_by(applications.c.id.desc())).all()
    return _records(conn, rows)[0] if rows else None


def select(conn: sa.Connection, statuses_=None) -> list[Application]:
    """By country and age; `statuses_` a tuple of statuses (None: all)."""
    a = applications.c
    q = sa.select(*_COLUMNS)
    if statuses_ is not None:
        q = q.where(a.status.in_(list(statuses_)))
    return _records(conn, conn.execute(q.order_by(a.country, a.created_at, a.id)))


def counts_by_status(conn: sa.Connection) -> dict[str, int]:
    a = applications.c
    return {s: int(n) for s, n in conn.execute(sa.select(a.status, sa.func.count())
                                               .group_by(a.status))}


def waiting_by_country(conn: sa.Connection, waiting) -> dict[str, int]:
    a = applications.c
    return {cc: int(n) for cc, n in conn.execute(
        sa.select(a.country, sa.func.count()).where(a.status.in_(list(waiting)))
        .group_by(a.country))}


def set_maintainers(conn: sa.Connection, app_id: int, people) -> None:
    am = application_maintainers
    conn.execute(am.delete().where(am.c.application_id == app_id))
    for p in people:
        conn.execute(am.insert().values(application_id=app_id, name=p.name, email=p.email))
