"""The one CSRF rule of the site: a token from the form's body, compared in constant time.

A form of a logged-in user carries its session's token (`session_token_ok`; the Router checks it
on every POST of a login route). A form without a session (the login form, the public application
form) uses a *signed double-submit* token (`SignedTokens`): the GET sets a random HttpOnly,
SameSite=Strict cookie and puts ``time.HMAC(secret, purpose|cookie|time)`` into the form; a POST
must carry both, fresh. A foreign site can neither read the cookie nor forge the HMAC without the
server's secret, so a cookie planted by someone else (``x``) with a form field to match (``x``)
is refused, and SameSite keeps the cookie off cross-site POSTs as a second wall.

Tokens are read from the POST body only, never from the query string: a token in a URL ends up
in logs, histories and Referer headers.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from admin.web.limits import FormError, body_form
from admin.web.sessions import set_cookie

FIELD = b"csrf"


def body_token(request) -> bytes:
    """The form body's csrf field (b"" when there is none, or no form)."""
    try:
        return (body_form(request).get(FIELD) or [b""])[0]
    except FormError:
        return b""


def session_token_ok(request, expected: str) -> bool:
    """The form's token equals the session's (STYLE B8)."""
    return bool(expected) and hmac.compare_digest(body_token(request), expected.encode())


class SignedTokens:
    """Signed double-submit tokens for one kind of sessionless form (see the module docstring).

    purpose keeps one form's token from being used for another; the cookie lives under `path`.
    """

    def __init__(self, clock, secret: bytes, *, purpose: str, cookie: bytes, path: bytes,
                 max_age: int):
        self.clock = clock
        self.secret = secret
        self.purpose = purpose
        self.cookie = cookie
        self.path = path
        self.max_age = max_age

    def _sig(self, cookie: str, ts: int) -> str:
        msg = f"{self.purpose}|{cookie}|{ts}".encode()
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()

    def _cookie(self, request) -> str:
        raw = request.getCookie(self.cookie) or b""
        try:
            c = raw.decode("ascii")
        except UnicodeDecodeError:
            return ""
        return c if 20 <= len(c) <= 64 and c.replace("-", "").replace("_", "").isalnum() else ""

    def issue(self, ctx, request) -> str:
        """A token for a form on this page; sets the cookie when the visitor has none."""
        cookie = self._cookie(request)
        if not cookie:
            cookie = secrets.token_urlsafe(24)
            request.received_cookies[self.cookie] = cookie.encode()   # one per request
            set_cookie(ctx, request, self.cookie, cookie.encode(), path=self.path)
        ts = int(self.clock.seconds())
        return f"{ts}.{self._sig(cookie, ts)}"

    def valid(self, request) -> bool:
        cookie = self._cookie(request)
        try:
            ts_s, _, sig = body_token(request).decode("ascii").partition(".")
            ts = int(ts_s)
        except (UnicodeDecodeError, ValueError):
            return False
        if not cookie or not 0 <= self.clock.seconds() - ts <= self.max_age:
            return False
        return hmac.compare_digest(sig, self._sig(cookie, ts))

    def clear(self, ctx, request) -> None:
        """Drop the cookie (after a successful login: the form is done)."""
        set_cookie(ctx, request, self.cookie, b"", max_age=0, path=self.path)
