"""Fakes for testing web resources with treq's StubTreq (STYLE E13).

StubTreq runs no threads, so everything a page awaits must fire at once: `SyncPool` runs
``thd(conn)`` immediately on a real (SQLite) engine in a transaction, and the context's
`run_in_thread` calls the function inline. A `Clock` set to a fixed time drives ``ctx.now()``.
"""

from __future__ import annotations

import datetime as _dt
import re

import sqlalchemy as sa
from twisted.internet import defer
from twisted.internet.task import Clock

from dnsd.config import parse_config
from dnsd.models import users

# 2026-11-21 09:00:00 UTC: a fixed "now" for pages that print ages.
T0 = _dt.datetime(2026, 11, 21, 9, 0, 0)


class SyncPool:
    """DBPool's interface, synchronous: for unit tests only."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def run(self, thd):
        try:
            with self.engine.begin() as conn:
                return defer.succeed(thd(conn))
        except Exception:
            return defer.fail()

    def run_readonly(self, thd):
        try:
            with self.engine.connect() as conn:
                try:
                    return defer.succeed(thd(conn))
                finally:
                    conn.rollback()
        except Exception:
            return defer.fail()


def inline(f, *a, **kw):
    return defer.maybeDeferred(f, *a, **kw)


def make_clock(at: _dt.datetime = T0) -> Clock:
    c = Clock()
    c.advance(at.replace(tzinfo=_dt.UTC).timestamp())
    return c


def make_ctx(engine, config_text: str = "", *, plan=None, geo=None, clock=None):
    from admin.web.framework import WebContext

    cfg = parse_config(config_text)
    clock = clock or make_clock()
    return WebContext(cfg=cfg, pool=SyncPool(engine), reactor=clock, plan=plan, geo=geo,
                      clock=clock, run_in_thread=inline)


# argon2 is slow on purpose; hash each test password once per test run.
_HASHES: dict[str, str] = {}


def add_user(engine, username: str, password: str = "pw-" + "x" * 12, role: str = "admin") -> int:
    from admin.passwords import hash_password

    if password not in _HASHES:
        _HASHES[password] = hash_password(password)
    with engine.begin() as conn:
        return conn.execute(users.insert().values(
            username=username, password_hash=_HASHES[password], role=role,
            email=f"{username}@example.org")).inserted_primary_key[0]


CSRF_RE = re.compile(rb'name="csrf" value="([^"]+)"')


def csrf_of(body: bytes) -> str:
    m = CSRF_RE.search(body)
    assert m, "no csrf field in the page"
    return m.group(1).decode()


def login(testcase, stub, username: str, password: str = "pw-" + "x" * 12,
          base: str = "http://admin.test") -> str:
    """Log in through the form; returns the session's CSRF token (from the mirror list page)."""
    r = testcase.successResultOf(stub.get(f"{base}/admin/login"))
    token = csrf_of(testcase.successResultOf(r.content()))
    r = testcase.successResultOf(stub.post(f"{base}/admin/login", data={
        "csrf": token, "username": username, "password": password, "next": "/admin/"},
        allow_redirects=False))
    assert r.code == 303, r.code
    r = testcase.successResultOf(stub.get(f"{base}/admin/", allow_redirects=False))
    assert r.code == 200, r.code
    return csrf_of(testcase.successResultOf(r.content()))
