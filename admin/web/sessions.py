"""Sessions (admins' and maintainers') and the cookies every page sets.

Sessions live in the ``sessions`` table: the cookie carries a random token, the table only its
sha256, so a leaked database does not hand out live sessions. A session ends at the first of:
[admin] session_hours after login, [admin] session_idle_minutes without a request, logout, or a
password change of its user (admin.store.set_password ends them all). ``expires_at`` holds the
idle deadline, moved forward as the user works (at most one write a minute per session, never
past created_at + session_hours).

A row belongs to a user (the admin pages: `load_session`, cookie ``mirrordns_session``) or to a
maintainer's address (the maintainer pages, admin.web.maintainer_pages: `load_maintainer_session`,
cookie ``mirrordns_maintainer`` on /maintainer only). Each loader reads only its own kind, so a
maintainer's cookie is no admin login, whatever its value.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from dnsd.models import sessions, users

SESSION_COOKIE = b"mirrordns_session"
MAINTAINER_COOKIE = b"mirrordns_maintainer"
MAINTAINER_PATH = b"/maintainer"
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


@dataclass(frozen=True)
class MaintainerSession:
    """A maintainer logged in by a mailed link: an address, not a user. Which mirrors it reaches
    is asked at every request (dnsd.recipients.contact_mirrors), never stored with it."""

    key: str
    csrf: str
    email: str
    user: None = None     # no admin-web user: templates and the router see "no user"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _limits(cfg) -> tuple[_dt.timedelta, _dt.timedelta]:
    a = cfg.admin
    return _dt.timedelta(hours=a.session_hours), _dt.timedelta(minutes=a.session_idle_minutes)


def _lookup_session(key: str, now: _dt.datetime, lifetime: _dt.timedelta,
                    idle: _dt.timedelta, maintainer: bool = False):
    """thd: (Session or MaintainerSession, the new idle deadline when it should move, else
    None), or None."""
    def thd(conn):
        s = sessions.c
        live = (s.id == key, s.expires_at > now, s.created_at > now - lifetime)
        if maintainer:
            row = conn.execute(sa.select(s.id, s.csrf, s.created_at, s.expires_at,
                                         s.maintainer_email)
                               .where(*live, s.maintainer_email.is_not(None))).first()
        else:
            row = conn.execute(
                sa.select(s.id, s.csrf, s.created_at, s.expires_at, users.c.id.label("uid"),
                          users.c.username, users.c.role)
                .join(users, users.c.id == s.user_id).where(*live)).first()
        if row is None:
            return None
        want = min(row.created_at + lifetime, now + idle)
        if maintainer:
            sess = MaintainerSession(row.id, row.csrf, row.maintainer_email)
        else:
            sess = Session(row.id, row.csrf, SessionUser(row.uid, row.username, row.role))
        return sess, (want if want - row.expires_at >= TOUCH_EVERY else None)
    return thd


def _touch(key: str, until: _dt.datetime):
    def thd(conn):
        conn.execute(sessions.update().where(sessions.c.id == key, sessions.c.expires_at < until)
                     .values(expires_at=until))
    return thd


async def _load(ctx, request, maintainer: bool):
    if hasattr(request, "mirrordns_session"):
        return request.mirrordns_session
    token = request.getCookie(MAINTAINER_COOKIE if maintainer else SESSION_COOKIE)
    sess = None
    if token and len(token) <= 128:
        try:
            key = token_hash(token.decode("ascii"))
        except UnicodeDecodeError:
            key = None
        if key:
            lifetime, idle = _limits(ctx.cfg)
            found = await ctx.pool.run_readonly(_lookup_session(key, ctx.now(), lifetime, idle,
                                                                maintainer))
            if found is not None:
                sess, until = found
                if until is not None:
                    await ctx.pool.run(_touch(key, until))
    request.mirrordns_session = sess
    return sess


async def load_session(ctx, request) -> Session | None:
    """The logged-in user's session of this request (cached on the request), or None. A session
    in use has its idle deadline moved on (one write a minute at most; reading takes no write
    lock)."""
    return await _load(ctx, request, maintainer=False)


async def load_maintainer_session(ctx, request) -> MaintainerSession | None:
    """The maintainer's session of this request (cached on the request), or None."""
    return await _load(ctx, request, maintainer=True)


async def _create(ctx, request, cookie: bytes, path: bytes, **owner) -> None:
    token = secrets.token_urlsafe(32)
    now = ctx.now()
    lifetime, idle = _limits(ctx.cfg)

    def thd(conn):
        conn.execute(sessions.delete().where(sessions.c.expires_at <= now))
        conn.execute(sessions.insert().values(id=token_hash(token), csrf=secrets.token_urlsafe(32),
                                              created_at=now, expires_at=now + min(idle, lifetime),
                                              **owner))
    await ctx.pool.run(thd)
    set_cookie(ctx, request, cookie, token.encode(), max_age=int(lifetime.total_seconds()),
               path=path)


async def create_session(ctx, request, user_id: int) -> None:
    """Start a session for user_id and set its cookie; old expired sessions are swept."""
    await _create(ctx, request, SESSION_COOKIE, b"/", user_id=user_id)


async def create_maintainer_session(ctx, request, email: str) -> None:
    """Start a maintainer's session for the address a login link was mailed to."""
    await _create(ctx, request, MAINTAINER_COOKIE, MAINTAINER_PATH, maintainer_email=email)


async def _end(ctx, request, maintainer: bool) -> None:
    sess = await _load(ctx, request, maintainer)
    if sess is not None:
        await ctx.pool.run(lambda conn: conn.execute(sessions.delete()
                                                      .where(sessions.c.id == sess.key)))
    if maintainer:
        set_cookie(ctx, request, MAINTAINER_COOKIE, b"", max_age=0, path=MAINTAINER_PATH)
    else:
        set_cookie(ctx, request, SESSION_COOKIE, b"", max_age=0)
    request.mirrordns_session = None


async def end_session(ctx, request) -> None:
    await _end(ctx, request, maintainer=False)


async def end_maintainer_session(ctx, request) -> None:
    await _end(ctx, request, maintainer=True)


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
