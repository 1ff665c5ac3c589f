"""The `maintainers` table: (name, address) pairs, several per mirror.

Names and addresses are stored apart and never joined into "Name <addr>" text that someone would
have to split again: SMTP gets the bare address, the To: header gets the pair encoded by the email
package (dnsd.recipients). Values are checked on the way in by dnsd.validation.maintainer.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from dnsd.models import maintainers, mirrors


@dataclass(frozen=True)
class Maintainer:
    name: str
    email: str

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


def of(conn: sa.Connection, ids) -> dict[int, tuple[Maintainer, ...]]:
    """{mirror id: maintainers in the order they were given} for these mirrors."""
    ids = list(ids)
    out: dict[int, list[Maintainer]] = {i: [] for i in ids}
    if not ids:
        return {}
    rows = conn.execute(
        sa.select(maintainers.c.mirror_id, maintainers.c.name, maintainers.c.email)
        .where(maintainers.c.mirror_id.in_(ids)).order_by(maintainers.c.id))
    for r in rows:
        out[r.mirror_id].append(Maintainer(r.name, r.email))
    return {k: tuple(v) for k, v in out.items()}


def of_mirror(conn: sa.Connection, mirror_id: int) -> tuple[Maintainer, ...]:
    return of(conn, [mirror_id])[mirror_id]


def replace(conn: sa.Connection, mirror_id: int, people) -> None:
    """Make `people` (validated Maintainer records) the mirror's maintainers, in this order."""
    conn.execute(maintainers.delete().where(maintainers.c.mirror_id == mirror_id))
    for p in people:
        conn.execute(maintainers.insert().values(mirror_id=mirror_id, name=p.name, email=p.email))


def mirrors_listing(conn: sa.Connection, address_key: str, statuses) -> list[int]:
    """Ids of the mirrors in `statuses` with a maintainer whose address, lower-cased, is
    `address_key` (dnsd.recipients.contact_mirrors is the rule; this is its query)."""
    return list(conn.execute(
        sa.select(maintainers.c.mirror_id).distinct()
        .join(mirrors, mirrors.c.id == maintainers.c.mirror_id)
        .where(sa.func.lower(maintainers.c.email) == address_key, mirrors.c.status.in_(statuses))
        .order_by(maintainers.c.mirror_id)).scalars())
