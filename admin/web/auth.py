"""Login and logout for the admin pages, and what guards every password check.

Passwords are argon2id hashes (STYLE B6), verified on a worker thread because one verification
takes about 0.15 s of CPU. Guessing is slowed, never answered with a lock-out (a lock-out lets
anyone who knows a user name keep that user out):

- **Back-off per (user name, address)**: after [admin] login_free_failures failed attempts each
  further one doubles the wait before the next (1 s, 2 s, 4 s, ... up to login_max_delay).
  Failures from one address never delay the same user at another address.
- **Back-off per address** over all user names, after login_address_free_failures failures:
  guessing across many accounts from one address slows down too.
- **A cap on argon2 work in flight** (`MAX_HASHING` at a time, `MAX_WAITING` queued; beyond
  that 503): many addresses together cannot fill the worker threads that render pages.

An attempt counts from the moment it is let through, so parallel requests cannot slip past the
back-off. The login form and the password-change form share all of it. The answer never says
whether a user name exists: an unknown name is checked against a dummy hash (the same time), gets
the same message, and is throttled under its own (name, address) key just the same.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

import sqlalchemy as sa
from twisted.internet import defer
from twisted.logger import Logger

from admin.passwords import hash_password, needs_rehash, verify_password
from admin.web.clients import Backoff, address_key, client_ip
from admin.web.csrf import SignedTokens
from admin.web.framework import HTTPError, Response, Router, WebContext, form_value, redirect
from admin.web.limits import query_args
from admin.web.sessions import create_session, end_session, load_session
from dnsd.models import users

_log = Logger(namespace="admin.web.auth")

LOGIN_CSRF_COOKIE = b"mirrordns_login"
LOGIN_FORM_MAX_AGE = 3600                # seconds a login form stays valid
MAX_HASHING = 2                          # argon2 verifications running at once
MAX_WAITING = 16                         # and queued behind them; more are refused (503)
MAX_PASSWORD = 1024                      # characters; argon2 takes any length, nobody needs more

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


class Throttled(Exception):
    def __init__(self, wait: float):
        super().__init__(wait)
        self.wait = wait


class Busy(Exception):
    """Too many password checks in flight: try again in a moment."""


class PasswordChecks:
    """The back-off and the argon2 cap shared by the login and the password-change form."""

    def __init__(self, ctx: WebContext):
        a = ctx.cfg.admin
        self.ctx = ctx
        self.per_user = Backoff(ctx.clock, a.login_free_failures, a.login_max_delay)
        self.per_address = Backoff(ctx.clock, a.login_address_free_failures, a.login_max_delay)
        self._sem = defer.DeferredSemaphore(MAX_HASHING)

    @staticmethod
    def keys(username: str, ip: str) -> tuple[tuple[str, str], str]:
        addr = address_key(ip)
        return (username.strip().lower(), addr), addr

    async def check(self, username: str, ip: str, stored: str | None,
                    password: str) -> tuple[bool, bool]:
        """(ok, needs_rehash) for this attempt; raises Throttled (wait first) or Busy."""
        ku, ka = self.keys(username, ip)
        wait = max(self.per_user.wait(ku), self.per_address.wait(ka))
        if wait:
            raise Throttled(wait)
        if len(password) > MAX_PASSWORD:
            password = ""                      # wrong, at the price of a normal check
        if self._sem.tokens == 0 and len(self._sem.waiting) >= MAX_WAITING:
            raise Busy()
        self.per_user.attempt(ku)
        self.per_address.attempt(ka)
        ok, rehash = await self._sem.run(self.ctx.run_in_thread, check_password, stored, password)
        if ok:
            self.per_user.forget(ku)
            self.per_address.succeeded(ka)
        return ok, rehash


def throttled_message(wait: float) -> str:
    return (f"Too many failed attempts. Wait {int(wait) + 1} seconds before the next try.")


class LoginPages:
    def __init__(self, ctx: WebContext, checks: PasswordChecks):
        self.ctx = ctx
        self.checks = checks
        self.tokens = SignedTokens(ctx.clock, ctx.secret, purpose="login",
                                   cookie=LOGIN_CSRF_COOKIE, path=b"/admin/login",
                                   max_age=LOGIN_FORM_MAX_AGE)

    def install(self, router: Router) -> None:
        router.add("GET", r"login", self.login_form, login=False)
        router.add("POST", r"login", self.login, login=False, csrf=False)   # SignedTokens
        router.add("POST", r"logout", self.logout)          # session CSRF checked by the router

    def _form(self, request, *, error: str = "", username: str = "", code: int = 200,
              next_url: str = ""):
        html = self.ctx.render("admin/login.html", request, title="Log in",
                               login_csrf=self.tokens.issue(self.ctx, request), error=error,
                               username=username, next=safe_next(next_url))
        return Response(html, code=code)

    async def login_form(self, request):
        if await load_session(self.ctx, request) is not None:
            return redirect("/admin/")
        nxt = (query_args(request).get(b"next") or [b""])[0].decode("utf-8", "replace")
        return self._form(request, next_url=nxt)

    async def login(self, request):
        if not self.tokens.valid(request):
            raise HTTPError(403, "The login form has expired; reload the page and try again.")
        username = form_value(request, "username")
        password = form_value(request, "password", strip=False)    # spaces are part of it
        nxt = form_value(request, "next")
        ip = client_ip(self.ctx, request)

        def load(conn):
            # a disabled user is answered like an unknown one (admin.store.set_user_disabled)
            r = conn.execute(sa.select(users.c.id, users.c.password_hash)
                             .where(users.c.username == username.lower(),
                                    users.c.disabled.is_(False))).first()
            return None if r is None else (r.id, r.password_hash)
        row = await self.ctx.pool.run_readonly(load) if username else None
        try:
            ok, rehash = await self.checks.check(username, ip, row[1] if row else None, password)
        except Throttled as t:
            _log.warn("login attempts for {user} from {ip} delayed {s:.0f} s", user=username,
                      ip=ip, s=t.wait)
            resp = self._form(request, username=username, code=429, next_url=nxt,
                              error=throttled_message(t.wait))
            resp.headers[b"retry-after"] = str(int(t.wait) + 1).encode()
            return resp
        except Busy:
            resp = self._form(request, username=username, code=503, next_url=nxt,
                              error="The server is busy checking passwords; try again in a "
                                    "moment.")
            resp.headers[b"retry-after"] = b"5"
            return resp
        if not ok:
            _log.info("failed login for {user} from {ip}", user=username, ip=ip)
            return self._form(request, username=username, code=403, next_url=nxt,
                              error="Wrong user name or password.")
        if rehash:
            new_hash = await self.ctx.run_in_thread(hash_password, password)
            await self.ctx.pool.run(lambda conn: conn.execute(
                users.update().where(users.c.id == row[0]).values(password_hash=new_hash)))
        await create_session(self.ctx, request, row[0])
        self.tokens.clear(self.ctx, request)
        _log.info("login {user} from {ip}", user=username, ip=ip)
        return redirect(safe_next(nxt))

    async def logout(self, request):
        await end_session(self.ctx, request)
        return redirect("/admin/login")
