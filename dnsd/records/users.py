"""The `users` table: logins of the admin web (and the owners of API tokens)."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import sqlalchemy as sa

from dnsd.errors import NotFound
from dnsd.models import users
from dnsd.records._base import from_mapping


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str
    email: str
    disabled: bool
    failed_logins: int
    locked_until: _dt.datetime | None
    created_at: _dt.datetime
    has_token: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


_COLUMNS = (users.c.id, users.c.username, users.c.role, users.c.email, users.c.disabled,
            users.c.failed_logins, users.c.locked_until, users.c.created_at,
            users.c.api_token_hash.is_not(None).label("has_token"))


def _user(row) -> User:
    return from_mapping(User, row._mapping)


def get(conn: sa.Connection, username: str) -> User:
    row = conn.execute(sa.select(*_COLUMNS)
                       .where(users.c.username == (username or "").strip().lower())).first()
    if row is None:
        raise NotFound(f"no user named {username}")
    return _user(row)


def select(conn: sa.Connection) -> list[User]:
    return [_user(r) for r in conn.execute(sa.select(*_COLUMNS).order_by(users.c.username))]


def admins_left(conn: sa.Connection, except_id: int) -> int:
    """How many enabled admins there are besides `except_id` (the last one may not go)."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(users).where(
        users.c.role == "admin", users.c.disabled.is_(False), users.c.id != except_id))
        .scalar_one())
