"""Login and logout for the admin pages.

Passwords are argon2id hashes (STYLE B6), verified on a worker thread because one verification
takes about 0.15 s of CPU. After `MAX_FAILURES` wrong passwords in a row an account is locked for
`LOCK_MINUTES`; while locked even the right password is refused, and the answer never says whether
the user name exists (an unknown name is checked against a dummy hash, so it costs the same time).
"""

from __future__ import annotations

import datetime as _dt
import hmac
import secrets
from urllib.parse import urlsplit

import sqlalchemy as sa
from twisted.logger import Logger

from admin.passwords import hash_password, needs_rehash, verify_password
from admin.web.framework import (
    LOGIN_CSRF_COOKIE,
    HTTPError,
    RateLimiter,
    Response,
    Router,
    WebContext,
    client_ip,
    create_session,
    end_session,
    form_value,
    load_session,
    redirect,
    set_cookie,
)
from dnsd.models import users

_log = Logger(namespace="admin.web.auth")

MAX_FAILURES = 5
LOCK_MINUTES = 15

_dummy_hash: list[str] = []


def check_password(stored: str | None, password: str) -> tuple[bool, bool]:
    """Blocking (run it in a thread). (ok, needs_rehash); an unknown user (stored None) costs one
    verification as well, so timing does not tell which user names exist."""
    if stored is None:
        if not _dummy_hash:
            _dummy_hash.append(hash_password(secrets.token_urlsafe(16)))
        verify_password(_dummy_hash[0], password)
        return False, False
    if not verify_password(stored, password):
        return False, False
    return True, needs_rehash(stored)


def safe_next(url: str) -> str:
    """Only local paths under /admin: a login link must not bounce anyone to another site."""
    parts = urlsplit(url or "")
    if parts.scheme or parts.netloc or not parts.path.startswith("/admin") or "\\" in url:
        return "/admin/"
    return url


class LoginPages:
    def __init__(self, ctx: WebContext):
        self.ctx = ctx
        # per address, before any password is checked: guessing across many accounts (which the
        # per-account lock-out cannot see) is slowed down too, and argon2 costs stay bounded
        a = ctx.cfg.admin
        self.limiter = RateLimiter(ctx.clock, a.login_rate_limit, a.login_rate_window)

    def install(self, router: Router) -> None:
        router.add("GET", r"login", self.login_form, login=False)
        router.add("POST", r"login", self.login, login=False)
        router.add("POST", r"logout", self.logout)          # session CSRF checked by the router

    def _form(self, request, *, error: str = "", username: str = "", code: int = 200):
        token = secrets.token_urlsafe(32)
        set_cookie(self.ctx, request, LOGIN_CSRF_COOKIE, token.encode(), path=b"/admin/login")
        html = self.ctx.render("admin/login.html", request, title="Log in", login_csrf=token,
                               error=error, username=username,
                               next=safe_next(request.args.get(b"next", [b""])[0].decode(
                                   "utf-8", "replace")))
        return Response(html, code=code)

    async def login_form(self, request):
        if await load_session(self.ctx, request) is not None:
            return redirect("/admin/")
        return self._form(request)

    async def login(self, request):
        # Double-submit: the form's token must equal the cookie set with the form (no session yet).
        cookie = request.getCookie(LOGIN_CSRF_COOKIE) or b""
        sent = (request.args.get(b"csrf") or [b""])[0]
        if not cookie or not hmac.compare_digest(cookie, sent):
            raise HTTPError(403, "The login form has expired; reload the page and try again.")
        username = form_value(request, "username")
        password = form_value(request, "password", strip=False)    # spaces are part of it
        wait = self.limiter.hit(client_ip(self.ctx, request))
        if wait:
            _log.warn("login attempts from {ip} over the limit", ip=client_ip(self.ctx, request))
            resp = self._form(request, username=username, code=429,
                              error="Too many login attempts from your address. Try again later.")
            resp.headers[b"retry-after"] = str(int(wait) + 1).encode()
            return resp
        now = self.ctx.now()

        def load(conn):
            # a disabled user is answered like an unknown one (admin.store.set_user_disabled)
            r = conn.execute(sa.select(users.c.id, users.c.password_hash, users.c.locked_until)
                             .where(users.c.username == username,
                                    users.c.disabled.is_(False))).first()
            return None if r is None else (r.id, r.password_hash, r.locked_until)
        row = await self.ctx.pool.run_readonly(load) if username else None
        stored = row[1] if row else None
        ok, rehash = await self.ctx.run_in_thread(check_password, stored, password)
        if row is not None and row[2] is not None and row[2] > now:
            _log.warn("login refused for locked account {user}", user=username)
            return self._form(request, username=username, code=403,
                              error="Too many failed attempts: this account is locked for a "
                                    "while. Try again later.")
        if not ok:
            if row is not None:
                await self.ctx.pool.run(_count_failure(row[0], now))
            _log.info("failed login for {user}", user=username)
            return self._form(request, username=username, code=403,
                              error="Wrong user name or password.")
        new_hash = await self.ctx.run_in_thread(hash_password, password) if rehash else None

        def success(conn):
            vals = {"failed_logins": 0, "locked_until": None}
            if new_hash:
                vals["password_hash"] = new_hash
            conn.execute(users.update().where(users.c.id == row[0]).values(**vals))
        await self.ctx.pool.run(success)
        await create_session(self.ctx, request, row[0])
        set_cookie(self.ctx, request, LOGIN_CSRF_COOKIE, b"", max_age=0, path=b"/admin/login")
        _log.info("login {user}", user=username)
        return redirect(safe_next(form_value(request, "next")))

    async def logout(self, request):
        await end_session(self.ctx, request)
        return redirect("/admin/login")


def _count_failure(user_id: int, now: _dt.datetime):
    def thd(conn):
        n = conn.execute(sa.select(users.c.failed_logins).where(users.c.id == user_id)).scalar_one()
        n += 1
        vals = {"failed_logins": n}
        if n >= MAX_FAILURES:
            vals["locked_until"] = now + _dt.timedelta(minutes=LOCK_MINUTES)
            vals["failed_logins"] = 0          # the next round starts after the lock expires
        conn.execute(users.update().where(users.c.id == user_id).values(**vals))
    return thd
