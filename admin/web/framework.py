"""The small web framework every page of the admin listener shares.

Twisted's resource tree does the coarse routing (``/admin``, ``/api``, ``/dyn``, ``/static``); below
that a `Router` matches the rest of the path against a few patterns and runs an ``async`` handler.
Handlers return HTML (`str`), a `Response` or a `redirect(...)`; the render helper writes it, and
turns any exception into a logged 500 (STYLE E12), so no page can hang a connection or leak a
traceback. Database work happens in ``ctx.pool.run(thd)`` (plain data back, STYLE E8); CPU-heavy
work (argon2) in ``ctx.run_in_thread``.

Sessions live in the ``sessions`` table: the cookie carries a random token, the table only its
sha256, so a leaked database does not hand out live sessions. Each session has its own CSRF token,
put into every form by the layout macro and checked on every POST with `hmac.compare_digest`; the
login form, which has no session yet, uses a double-submit cookie instead.
"""

from __future__ import annotations

import collections
import datetime as _dt
import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode

import jinja2
import sqlalchemy as sa
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.web import resource, server

from dnsd.models import sessions, users

_log = Logger(namespace="admin.web")

SESSION_COOKIE = b"mirrordns_session"
LOGIN_CSRF_COOKIE = b"mirrordns_login"

# Sent with every page: pages are self-contained (no scripts at all), logos may come from https.
SECURITY_HEADERS = {
    b"content-security-policy": (
        b"default-src 'none'; style-src 'self'; img-src 'self' https: data:; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"same-origin",
    b"x-frame-options": b"DENY",
}

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


# --- the context every page gets ---------------------------------------------------------------

def _thread_runner(reactor):
    def run(f, *a, **kw):
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *a, **kw)
    return run


def make_jinja_env() -> jinja2.Environment:
    """The one HTML environment (STYLE B9): autoescaped, and a missing variable is an error."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("admin"),
        autoescape=jinja2.select_autoescape(),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,   # templates ship with the package: no os.stat per render on the reactor
    )
    env.filters["ago"] = format_ago
    env.filters["dt"] = format_dt
    env.filters["duration"] = format_duration
    env.tests["web_url"] = is_web_url
    env.globals["status_word"] = status_word
    return env


@dataclass
class WebContext:
    """What every resource needs, handed in by the composition root (admin.makeService).

    plan: dnsd's holder (``.current`` is the live ResolutionPlan) or None when running the web
    alone; geo: a locator with ``.country(ip) -> "DE" | None`` or None; clock: IReactorTime (a
    `Clock` in tests); run_in_thread(f, *a) -> Deferred for CPU-heavy work (tests run it inline).
    """

    cfg: Any
    pool: Any
    reactor: Any
    plan: Any = None
    geo: Any = None
    jinja: jinja2.Environment = field(default_factory=make_jinja_env)
    clock: Any = None
    run_in_thread: Callable[..., defer.Deferred] | None = None

    def __post_init__(self):
        if self.clock is None:
            self.clock = self.reactor
        if self.run_in_thread is None:
            self.run_in_thread = _thread_runner(self.reactor)

    def now(self) -> _dt.datetime:
        """Naive UTC from the clock, like dnsd.models.utcnow but steppable in tests."""
        return _dt.datetime.fromtimestamp(self.clock.seconds(), _dt.UTC).replace(tzinfo=None)

    def _values(self, request, values: dict) -> dict:
        base = {"user": None, "csrf": "", "path": "", "cfg": self.cfg, "now": self.now()}
        if request is not None:
            sess = getattr(request, "mirrordns_session", None)
            if sess is not None:
                base["user"] = sess.user
                base["csrf"] = sess.csrf
            base["path"] = request.path.decode("utf-8", "replace")
        base.update(values)
        return base

    def render(self, template: str, request=None, **values) -> str:
        """Render a template; the layout gets the user, CSRF token and title from the request."""
        return self.jinja.get_template(template).render(**self._values(request, values))

    def render_threaded(self, template: str, request=None, **values) -> defer.Deferred:
        """Like render, on a worker thread: a list of a thousand mirrors takes jinja ~0.1 s, which
        the reactor (and with it DNS) must not wait for. jinja2 templates render thread-safely."""
        v = self._values(request, values)
        return self.run_in_thread(lambda: self.jinja.get_template(template).render(**v))


class RateLimiter:
    """At most `limit` events per key in any `window` seconds, in memory, on an IReactorTime clock.

    Keys are visitor addresses, IPv6 folded to its /64 (one subscriber usually holds a whole /64).
    Expired keys are dropped as the table grows, so memory stays bounded by the recent visitors.
    """

    def __init__(self, clock, limit: int, window: float, max_keys: int = 100_000):
        self.clock, self.limit, self.window, self.max_keys = clock, limit, window, max_keys
        self._hits: dict[str, collections.deque] = {}

    @staticmethod
    def key(ip: str) -> str:
        try:
            a = ipaddress.ip_address(ip)
        except ValueError:
            return ip
        if a.version == 6:
            if a.ipv4_mapped is not None:
                return str(a.ipv4_mapped)
            return str(ipaddress.ip_network(f"{a}/64", strict=False))
        return str(a)

    def hit(self, ip: str) -> float:
        """Count one event; 0 when allowed, else the seconds until the next one would be."""
        now = self.clock.seconds()
        k = self.key(ip)
        q = self._hits.get(k)
        if q is None:
            if len(self._hits) >= self.max_keys:
                self._sweep(now)
            q = self._hits[k] = collections.deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) >= self.limit:
            return max(1.0, q[0] + self.window - now)
        q.append(now)
        return 0.0

    def _sweep(self, now: float) -> None:
        for k in [k for k, q in self._hits.items() if not q or q[-1] <= now - self.window]:
            del self._hits[k]
        while len(self._hits) >= self.max_keys:          # still full: forget the oldest
            self._hits.pop(next(iter(self._hits)))


# --- responses and the render helper -----------------------------------------------------------

@dataclass
class Response:
    body: str | bytes = b""
    code: int = 200
    content_type: bytes = b"text/html; charset=utf-8"
    headers: dict[bytes, bytes] = field(default_factory=dict)


def redirect(url: str, code: int = 303, **query) -> Response:
    """A 303 after a POST (so reload does not repeat it), with optional ?key=value."""
    q = {k: v for k, v in query.items() if v not in (None, "")}
    if q:
        url += ("&" if "?" in url else "?") + urlencode(q)
    return Response(code=code, headers={b"location": url.encode()})


class HTTPError(Exception):
    """Raise from a handler to answer with a short error page."""

    def __init__(self, code: int, message: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message or {400: "bad request", 403: "forbidden", 404: "not found",
                                   405: "method not allowed"}.get(code, "error")


def render_async(request, page: Callable[[Any], Awaitable[Any]]):
    """Run `page(request)` and write what it returns; log and answer 500 on failure (STYLE E12)."""
    for k, v in SECURITY_HEADERS.items():
        request.setHeader(k, v)
    finished = []
    request.notifyFinish().addErrback(lambda _f: finished.append(True))   # client went away

    def write(resp):
        if finished or request.finished:
            return
        if isinstance(resp, (str, bytes)):
            resp = Response(resp)
        request.setResponseCode(resp.code)
        if resp.body or resp.code not in (204, 301, 302, 303, 304):
            request.setHeader(b"content-type", resp.content_type)
        for k, v in resp.headers.items():
            request.setHeader(k, v)
        body = resp.body.encode("utf-8") if isinstance(resp.body, str) else resp.body
        if request.method != b"HEAD":
            request.write(body)
        request.finish()

    def fail(f):
        if f.check(HTTPError):
            e = f.value
            write(Response(f"<!doctype html><title>{e.code}</title><p>{_esc(e.message)}</p>",
                           code=e.code))
            return
        _log.failure("rendering {method} {uri}", f, method=request.method, uri=request.uri)
        if finished or request.finished:
            return
        write(Response(b"internal error", code=500, content_type=b"text/plain; charset=utf-8"))

    defer.ensureDeferred(page(request)).addCallbacks(write, fail)
    return server.NOT_DONE_YET


def _esc(s: str) -> str:
    return str(jinja2.utils.markupsafe.escape(s))


# --- sessions, login state, CSRF ---------------------------------------------------------------

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


def _lookup_session(key: str, now: _dt.datetime):
    def thd(conn):
        row = conn.execute(
            sa.select(sessions.c.id, sessions.c.csrf, users.c.id.label("uid"), users.c.username,
                      users.c.role)
            .join(users, users.c.id == sessions.c.user_id)
            .where(sessions.c.id == key, sessions.c.expires_at > now)
        ).first()
        return None if row is None else Session(
            row.id, row.csrf, SessionUser(row.uid, row.username, row.role))
    return thd


async def load_session(ctx: WebContext, request) -> Session | None:
    """The logged-in session of this request (cached on the request), or None."""
    if hasattr(request, "mirrordns_session"):
        return request.mirrordns_session
    token = request.getCookie(SESSION_COOKIE)
    sess = None
    if token:
        try:
            key = token_hash(token.decode("ascii"))
        except UnicodeDecodeError:
            key = None
        if key:
            sess = await ctx.pool.run_readonly(_lookup_session(key, ctx.now()))
    request.mirrordns_session = sess
    return sess


async def create_session(ctx: WebContext, request, user_id: int) -> None:
    """Start a session for user_id and set its cookie; old expired sessions are swept."""
    token = secrets.token_urlsafe(32)
    now = ctx.now()
    expires = now + _dt.timedelta(hours=ctx.cfg.admin.session_hours)

    def thd(conn):
        conn.execute(sessions.delete().where(sessions.c.expires_at <= now))
        conn.execute(sessions.insert().values(id=token_hash(token), user_id=user_id,
                                              csrf=secrets.token_urlsafe(32),
                                              created_at=now, expires_at=expires))
    await ctx.pool.run(thd)
    set_cookie(ctx, request, SESSION_COOKIE, token.encode(),
               max_age=ctx.cfg.admin.session_hours * 3600)


async def end_session(ctx: WebContext, request) -> None:
    sess = await load_session(ctx, request)
    if sess is not None:
        await ctx.pool.run(lambda conn: conn.execute(sessions.delete()
                                                      .where(sessions.c.id == sess.key)))
    set_cookie(ctx, request, SESSION_COOKIE, b"", max_age=0)
    request.mirrordns_session = None


def set_cookie(ctx: WebContext, request, name: bytes, value: bytes, max_age: int | None = None,
               path: bytes = b"/"):
    """HttpOnly, SameSite=Strict, Secure when the admin is served over https (STYLE B7)."""
    request.addCookie(name, value, path=path, httpOnly=True, sameSite="strict",
                      secure=bool(ctx.cfg.admin.https),
                      max_age=None if max_age is None else str(max_age).encode())


def form_value(request, name: str, default: str = "", *, strip: bool = True) -> str:
    vals = request.args.get(name.encode())
    if not vals:
        return default
    try:
        v = vals[0].decode("utf-8")
        return v.strip() if strip else v
    except UnicodeDecodeError:
        raise HTTPError(400, "form data is not UTF-8") from None


def form_values(request, name: str) -> list[str]:
    try:
        return [v.decode("utf-8").strip() for v in request.args.get(name.encode(), [])]
    except UnicodeDecodeError:
        raise HTTPError(400, "form data is not UTF-8") from None


def check_csrf(request, expected: str) -> None:
    """403 unless the form's csrf field equals `expected` (constant-time comparison, STYLE B8)."""
    got = (request.args.get(b"csrf") or [b""])[0]
    if not expected or not hmac.compare_digest(got, expected.encode()):
        raise HTTPError(403, "The form has expired or did not come from this site; "
                             "reload the page and try again.")


def _strip_port(hop: str) -> str:
    """'192.0.2.1:4711' and '[2001:db8::1]:4711' (some proxies add the port) -> the address."""
    if hop.startswith("["):
        return hop[1:].split("]", 1)[0]
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop


class ProxyRule:
    """The visitor's address: the connecting one, or behind [admin] trusted_proxies the nearest
    untrusted hop of X-Forwarded-For; a proxy that passes on something that is not an address
    gets its own address believed, nothing more.

    One rule for every page and the closer; the networks are parsed once and the answer "is this
    peer a trusted proxy" is remembered (peers are few; proxies fewer), as the closer's hot path
    wants.
    """

    def __init__(self, trusted):
        self.nets = tuple(ipaddress.ip_network(t, strict=False) for t in trusted)
        self._peer: dict[str, bool] = {}

    def _trusted(self, ip: str) -> bool | None:
        """True/False, or None when `ip` is not an address at all."""
        try:
            a = ipaddress.ip_address(ip)
        except ValueError:
            return None
        return any(a in n for n in self.nets)

    def client(self, request) -> str:
        peer = getattr(request.getClientAddress(), "host", "") or ""
        if not self.nets:
            return peer
        t = self._peer.get(peer)
        if t is None:
            t = bool(self._trusted(peer))
            if len(self._peer) > 4096:
                self._peer.clear()
            self._peer[peer] = t
        if not t:
            return peer
        raw = request.getHeader(b"x-forwarded-for")
        if not raw:
            return peer
        hops = [_strip_port(h.strip()) for h in raw.decode("latin-1").split(",") if h.strip()]
        for hop in reversed(hops):            # walk back from the nearest proxy
            ht = self._trusted(hop)
            if ht is None:
                return peer                   # garbage from a proxy: the proxy's own address
            if not ht:
                return hop
        return hops[0] if self._trusted(hops[0]) is not None else peer


_proxy_rules: dict[tuple[str, ...], ProxyRule] = {}


def client_ip(ctx: WebContext, request) -> str:
    """The visitor's address; X-Forwarded-For is believed only from [admin] trusted_proxies."""
    trusted = tuple(ctx.cfg.admin.trusted_proxies)
    rule = _proxy_rules.get(trusted)
    if rule is None:
        rule = _proxy_rules[trusted] = ProxyRule(trusted)
    return rule.client(request)


# --- routing -----------------------------------------------------------------------------------

@dataclass
class Route:
    method: bytes
    pattern: re.Pattern
    handler: Callable[..., Awaitable[Any]]
    login: bool
    role: str | None          # None = any logged-in user; "admin" = admins only
    csrf: bool


class Router(resource.Resource):
    """A leaf resource dispatching the rest of the path to async handlers.

    ``router.add("GET", r"mirrors/(?P<mid>\\d+)", handler, login=True, role="admin")``; the pattern
    must match the whole remaining path ("" is the mounted folder itself). For routes with
    ``login=True`` an anonymous visitor is sent to the login page (GET) or refused (POST), a user
    without the role gets 403, and every POST needs the session's CSRF token. Handlers are
    ``async def h(request, **groups)`` and find the session at ``request.mirrordns_session``.
    """

    isLeaf = True

    def __init__(self, ctx: WebContext, login_url: str = "/admin/login", html_errors: bool = True):
        """html_errors: 4xx answers as a page in the site's layout (templates/error.html); a
        JSON API passes False and keeps short plain answers."""
        super().__init__()
        self.ctx = ctx
        self.login_url = login_url
        self.html_errors = html_errors
        self.routes: list[Route] = []

    def add(self, method: str, pattern: str, handler, *, login: bool = True,
            role: str | None = None, csrf: bool | None = None) -> None:
        m = method.upper().encode()
        self.routes.append(Route(m, re.compile(pattern), handler, login, role,
                                 (m == b"POST") if csrf is None else csrf))

    def render(self, request):
        rest = "/".join(p.decode("utf-8", "replace") for p in request.postpath)
        method = b"GET" if request.method == b"HEAD" else request.method
        allowed, route, groups = [], None, {}
        for r in self.routes:
            m = r.pattern.fullmatch(rest)
            if m:
                allowed.append(r.method)
                if r.method == method and route is None:
                    route, groups = r, m.groupdict()
        if route is None:
            if allowed:
                request.setHeader(b"allow", b", ".join(sorted(set(allowed))))
                return render_async(request, self._guard(_raise(HTTPError(405))))
            return render_async(request, self._guard(_raise(HTTPError(404))))
        return render_async(request, self._guard(lambda req: self._run(route, req, groups)))

    def _guard(self, page):
        """Turn an HTTPError from `page` into an error page in the site's layout."""
        if not self.html_errors:
            return page

        async def guarded(request):
            try:
                return await page(request)
            except HTTPError as e:
                try:
                    await load_session(self.ctx, request)
                except Exception:
                    request.mirrordns_session = None
                html = self.ctx.render("error.html", request, code=e.code, message=e.message,
                                       title=f"{e.code} {e.message}",
                                       public=not request.path.startswith(b"/admin"))
                return Response(html, code=e.code)
        return guarded

    async def _run(self, route: Route, request, groups):
        if route.login:
            sess = await load_session(self.ctx, request)
            if sess is None:
                if request.method in (b"GET", b"HEAD"):
                    return redirect(self.login_url, next=request.uri.decode("utf-8", "replace"))
                raise HTTPError(403, "Not logged in.")
            if route.csrf:
                check_csrf(request, sess.csrf)
            if route.role == "admin" and not sess.user.is_admin:
                raise HTTPError(403, "This needs an admin; helpers may disable mirrors and add "
                                     "notes only.")
        return await route.handler(request, **groups)


def _raise(e: Exception):
    async def page(_request):
        raise e
    return page


class StaticFiles(resource.Resource):
    """The few small files in admin/static/, read once into memory and served with an ETag.

    Not twisted.web.static.File: ours are a handful of kilobytes, and a plain resource answers
    synchronously (so StubTreq tests see it) and cannot be talked into listing or leaving the folder.
    """

    isLeaf = True
    TYPES: ClassVar[dict[str, bytes]] = {".css": b"text/css; charset=utf-8", ".svg": b"image/svg+xml",
             ".png": b"image/png", ".ico": b"image/x-icon", ".txt": b"text/plain; charset=utf-8"}

    def __init__(self, folder: Path = STATIC_DIR):
        super().__init__()
        self.files: dict[str, tuple[bytes, bytes, bytes]] = {}
        for p in sorted(folder.iterdir()) if folder.is_dir() else ():
            if p.is_file() and p.suffix in self.TYPES:
                data = p.read_bytes()
                etag = b'"' + hashlib.sha256(data).hexdigest()[:16].encode() + b'"'
                self.files[p.name] = (data, self.TYPES[p.suffix], etag)

    def render_GET(self, request):
        name = "/".join(x.decode("utf-8", "replace") for x in request.postpath)
        f = self.files.get(name)
        if f is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found"
        data, ctype, etag = f
        request.setHeader(b"content-type", ctype)
        request.setHeader(b"etag", etag)
        request.setHeader(b"cache-control", b"public, max-age=3600")
        request.setHeader(b"x-content-type-options", b"nosniff")
        if request.getHeader(b"if-none-match") == etag:
            request.setResponseCode(304)
            return b""
        return data

    render_HEAD = render_GET


def static_resource() -> resource.Resource:
    """Our one stylesheet (and whatever else sits in admin/static/)."""
    return StaticFiles()


# --- template filters --------------------------------------------------------------------------

def is_web_url(u) -> bool:
    """For `{% if url is web_url %}`: only http(s) URLs become links (never javascript: or data:);
    dnsd.validation's rule, so what a form accepts and what a page links agree."""
    from dnsd.validation import is_web_url as _rule

    return bool(u) and _rule(str(u))


def status_word(status: str) -> str:
    """A status in words (dnsd.statuses); "serving" is never a status word, it is the plan's."""
    from dnsd.statuses import word

    return word(status)


def format_duration(seconds) -> str:
    """3 d 4 h, 5 h 12 min, 40 s: two units at most, for ages and intervals."""
    if seconds is None:
        return "–"
    s = int(abs(seconds))
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        return f"{d} d {h} h" if h else f"{d} d"
    if h:
        return f"{h} h {m} min" if m else f"{h} h"
    if m:
        return f"{m} min"
    return f"{s} s"


@jinja2.pass_context
def format_ago(context, when) -> str:
    """'5 min ago', measured from the page's `now` (the context's clock, so tests are exact)."""
    if when is None:
        return "never"
    now = context.get("now") or _dt.datetime.now(_dt.UTC).replace(tzinfo=None)
    delta = (now - when).total_seconds()
    if delta < 0:
        return "in " + format_duration(-delta)
    return format_duration(delta) + " ago"


def format_dt(when) -> str:
    return "–" if when is None else when.strftime("%Y-%m-%d %H:%M UTC")
