"""Admin sessions and the cookies every page sets.

Sessions live in the ``sessions`` table: the cookie carries a random token, the table only its
sha256, so a leaked database does not hand out live sessions. A session ends at the first of:
[admin] session_hours after login, [admin] session_idle_minutes without a request, logout, or a
password change of its user (admin.store.set_password ends them all). ``expires_at`` holds the
idle deadline, moved forward as the user works (at most one write a minute per session, never
past created_at + session_hours).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from dnsd.models import sessions, users

SESSION_COOKIE = b"mirrordns_session"
TOUCH_EVERY = _dt.timedelta(minutes=1)      # how stale the idle deadline may get before a write


@dataclass(frozen=True)
class SessionUser:
    id: int
    username: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Session:
    key: str          # sha256 hex of the cookie value (the table's id)
    csrf: str
    user: SessionUser


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _limits(cfg) -> tuple[_dt.timedelta, _dt.timedelta]:
    a = cfg.admin
    return _dt.timedelta(hours=a.session_hours), _dt.timedelta(minutes=a.session_idle_minutes)


def _lookup_session(key: str, now: _dt.datetime, lifetime: _dt.timedelta,
                    idle: _dt.timedelta):
    """thd: (Session, the new idle deadline when it should move, else None), or None."""
    def thd(conn):
        s = sessions.c
        row = conn.execute(
            sa.select(s.id, s.csrf, s.created_at, s.expires_at, users.c.id.label("uid"),
                      users.c.username, users.c.role)
            .join(users, users.c.id == s.user_id)
            .where(s.id == key, s.expires_at > now, s.created_at > now - lifetime)
        ).first()
        if row is None:
            return None
        want = min(row.created_at + lifetime, now + idle)
        sess = Session(row.id, row.csrf, SessionUser(row.uid, row.username, row.role))
        return sess, (want if want - row.expires_at >= TOUCH_EVERY else None)
    return thd


def _touch(key: str, until: _dt.datetime):
    def thd(conn):
        conn.execute(sessions.update().where(sessions.c.id == key, sessions.c.expires_at < until)
                     .values(expires_at=until))
    return thd


async def load_session(ctx, request) -> Session | None:
    """The logged-in session of this request (cached on the request), or None. A session in use
    has its idle deadline moved on (one write a minute at most; reading takes no write lock)."""
    if hasattr(request, "mirrordns_session"):
        return request.mirrordns_session
    token = request.getCookie(SESSION_COOKIE)
    sess = None
    if token and len(token) <= 128:
        try:
            key = token_hash(token.decode("ascii"))
        except UnicodeDecodeError:
            key = None
        if key:
            lifetime, idle = _limits(ctx.cfg)
            found = await ctx.pool.run_readonly(_lookup_session(key, ctx.now(), lifetime, idle))
            if found is not None:
                sess, until = found
                if until is not None:
                    await ctx.pool.run(_touch(key, until))
    request.mirrordns_session = sess
    return sess


async def create_session(ctx, request, user_id: int) -> None:
    """Start a session for user_id and set its cookie; old expired sessions are swept."""
    token = secrets.token_urlsafe(32)
    now = ctx.now()
    lifetime, idle = _limits(ctx.cfg)

    def thd(conn):
        conn.execute(sessions.delete().where(sessions.c.expires_at <= now))
        conn.execute(sessions.insert().values(id=token_hash(token), user_id=user_id,
                                              csrf=secrets.token_urlsafe(32),
                                              created_at=now, expires_at=now + min(idle, lifetime)))
    await ctx.pool.run(thd)
    set_cookie(ctx, request, SESSION_COOKIE, token.encode(), max_age=int(lifetime.total_seconds()))


async def end_session(ctx, request) -> None:
    sess = await load_session(ctx, request)
    if sess is not None:
        await ctx.pool.run(lambda conn: conn.execute(sessions.delete()
                                                      .where(sessions.c.id == sess.key)))
    set_cookie(ctx, request, SESSION_COOKIE, b"", max_age=0)
    request.mirrordns_session = None


def cookies_secure(cfg) -> bool:
    """Cookies get Secure when the pages are served over https: [admin] https, or a base_url
    that says https (a proxy terminates TLS, and the browser sees https)."""
    a = cfg.admin
    return bool(a.https) or a.base_url.strip().lower().startswith("https://")


def set_cookie(ctx, request, name: bytes, value: bytes, max_age: int | None = None,
               path: bytes = b"/"):
    """HttpOnly, SameSite=Strict, Secure under https (STYLE B7)."""
    request.addCookie(name, value, path=path, httpOnly=True, sameSite="strict",
                      secure=cookies_secure(ctx.cfg),
                      max_age=None if max_age is None else str(max_age).encode())
