"""The small web framework every page of the admin listener shares.

Twisted's resource tree does the coarse routing (``/admin``, ``/api``, ``/dyn``, ``/static``); below
that a `Router` matches the rest of the path against a few patterns and runs an ``async`` handler.
Handlers return HTML (`str`), a `Response` or a `redirect(...)`. `respond` is the one render helper
of the site (the admin, the public pages, the API and the closer): it sets the one set of
security headers, writes what a page returns now or when its Deferred fires, and turns an
`HTTPError` into the site's error page and any other exception into a logged 500 (STYLE E12), so
no page can hang a connection or leak a traceback. Database work happens in ``ctx.pool.run(thd)``
(plain data back, STYLE E8); CPU-heavy work in ``ctx.run_in_thread``.

The pieces beside it: admin.web.limits (the HTTP layer: body, header and time limits),
admin.web.sessions (sessions and cookies), admin.web.csrf (the CSRF rule), admin.web.clients
(the visitor's address, rate limits, login back-off), admin.web.paths (files inside their root).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import inspect
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode

import jinja2
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from admin import figures
from admin.web import csrf
from admin.web.limits import (
    BODY_METHODS,
    FormError,
    Limits,
    body_bytes,
    body_form,
    has_body,
    query_args,
)
from admin.web.paths import contained_files
from admin.web.sessions import load_session

_log = Logger(namespace="admin.web")

ID = r"[0-9]{1,9}"
"""A row id in a URL: ASCII digits that fit the table's 32-bit ids (a longer one is a 404)."""


def parse_id(s: str) -> int | None:
    """A row id from a form or URL, or None when it is not one that can exist."""
    return int(s) if re.fullmatch(ID, s or "") else None


# --- security headers: one set for every page of the listener --------------------------------------

def security_headers(*, inline_styles: bool = False) -> tuple[tuple[bytes, bytes], ...]:
    """Pages are self-contained (no scripts at all), logos may come from https. Project download
    pages (the closer's templates) may carry style attributes: `inline_styles` allows them, and
    nothing else differs."""
    style = b"'self' 'unsafe-inline'" if inline_styles else b"'self'"
    return (
        (b"content-security-policy",
         b"default-src 'none'; style-src " + style + b"; img-src 'self' https: data:; "
         b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"strict-origin-when-cross-origin"),
        (b"x-frame-options", b"DENY"),
    )


SECURITY_HEADERS = security_headers()
NO_STORE = b"no-store"

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
    env.filters["ms"] = figures.ms
    env.filters["percent"] = figures.percent
    env.tests["web_url"] = is_web_url
    env.globals["status_word"] = status_word
    env.globals["maintenance_word"] = maintenance_word
    return env


@dataclass
class WebContext:
    """What every resource needs, handed in by the composition root (admin.makeService).

    plan: dnsd's holder (``.current`` is the live ResolutionPlan) or None when running the web
    alone; geo: a locator with ``.country(ip) -> "DE" | None`` or None; clock: IReactorTime (a
    `Clock` in tests); run_in_thread(f, *a) -> Deferred for CPU-heavy work (tests run it inline);
    secret: this process's key for signed tokens (random per start: a restart only costs an open
    form one "please submit again").
    """

    cfg: Any
    pool: Any
    reactor: Any
    plan: Any = None
    geo: Any = None
    jinja: jinja2.Environment = field(default_factory=make_jinja_env)
    clock: Any = None
    run_in_thread: Callable[..., defer.Deferred] | None = None
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def __post_init__(self):
        if self.clock is None:
            self.clock = self.reactor
        if self.run_in_thread is None:
            self.run_in_thread = _thread_runner(self.reactor)
        self.errors = ErrorPages(self)
        self.limits = Limits.from_config(self.cfg)

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
        the reactor must not wait for. jinja2 templates render thread-safely."""
        v = self._values(request, values)
        return self.run_in_thread(lambda: self.jinja.get_template(template).render(**v))


# --- responses, errors and the render helper ---------------------------------------------------

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


ERROR_WORDS = {400: "bad request", 403: "forbidden", 404: "not found", 405: "method not allowed",
               408: "request timeout", 413: "request body too large",
               415: "unsupported media type", 429: "too many requests", 500: "internal error",
               503: "service unavailable"}


class HTTPError(Exception):
    """Raise from a handler to answer with a short error page (in the style of the resource,
    unless `style` names another: ErrorPages)."""

    def __init__(self, code: int, message: str = "", style: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message or ERROR_WORDS.get(code, "error")
        self.style = style


TEXT = b"text/plain; charset=utf-8"
NO_BODY = (204, 301, 302, 303, 304)


class ErrorPages:
    """The site's own error answers, in three styles: "html" (the site's layout,
    templates/error.html), "json" (``{"error": ...}``, for the API) and "text" (one line, for the
    closer's machine-readable answers)."""

    def __init__(self, ctx: WebContext):
        self.ctx = ctx

    def response(self, request, code: int, message: str = "", style: str = "html") -> Response:
        message = message or ERROR_WORDS.get(code, "error")
        if style == "json":
            return Response(json.dumps({"error": message}), code=code,
                            content_type=b"application/json")
        if style == "text":
            return Response(message.rstrip("\n") + "\n", code=code, content_type=TEXT)
        try:
            html = self.ctx.render("error.html", request, code=code, message=message,
                                   title=f"{code} {message}",
                                   public=not (request.path or b"").startswith(b"/admin"))
        except Exception:
            _log.failure("rendering the error page for {code}", code=code)
            return Response(f"{code} {_esc(message)}\n", code=code, content_type=TEXT)
        return Response(html, code=code)

    def from_failure(self, request, f: Failure, style: str) -> Response:
        if f.check(HTTPError):
            e = f.value
            return self.response(request, e.code, e.message, e.style or style)
        if f.check(FormError):
            return self.response(request, 400, str(f.value), style)
        _log.failure("rendering {method} {uri}", f, method=request.method, uri=request.uri)
        return self.response(request, 500, "", style)

    def page(self, request, code: int) -> tuple[bytes, bytes]:
        """(body, content type) of an error Twisted would otherwise answer (admin.web.limits)."""
        r = self.response(request, code)
        body = r.body.encode("utf-8") if isinstance(r.body, str) else r.body
        return body, r.content_type


def _as_response(out) -> Response:
    return out if isinstance(out, Response) else Response(out)


def _apply(request, resp: Response, headers) -> bytes:
    """Status, headers and body bytes of `resp`. The security headers go on everything with a
    body; a bare redirect (the closer's hot path) has nothing for them to protect."""
    request.setResponseCode(resp.code)
    if resp.body or resp.code not in NO_BODY:
        request.setHeader(b"content-type", resp.content_type)
        for k, v in headers:
            request.setHeader(k, v)
    for k, v in resp.headers.items():
        request.setHeader(k, v)
    return resp.body.encode("utf-8") if isinstance(resp.body, str) else resp.body


def respond(request, page: Callable[[Any], Any], errors: ErrorPages, *, style: str = "html",
            headers: tuple[tuple[bytes, bytes], ...] = SECURITY_HEADERS,
            cache_control: bytes | None = None):
    """The one render helper: run ``page(request)`` and write what it gives.

    A page returns a `Response` (or str/bytes: a 200 HTML page), or an awaitable of one. A
    `Response` is written at once (the closer's hot paths stay synchronous); an awaitable is
    written when it fires, unless the client has gone meanwhile. An HTTPError becomes the error
    answer of `style`, anything else a logged 500. HEAD gets the headers of GET without a body.
    """
    if cache_control is not None:
        request.setHeader(b"cache-control", cache_control)
    try:
        out = page(request)
    except Exception:
        out = errors.from_failure(request, Failure(), style)
    if not (inspect.isawaitable(out) or isinstance(out, defer.Deferred)):
        body = _apply(request, _as_response(out), headers)
        if request.method == b"HEAD":
            request.setHeader(b"content-length", b"%d" % len(body))
            return b""
        return body

    gone = []
    request.notifyFinish().addErrback(lambda _f: gone.append(True))   # client went away

    def write(result):
        if gone or request.finished:
            return
        body = _apply(request, _as_response(result), headers)
        request.setHeader(b"content-length", b"%d" % len(body))
        if request.method != b"HEAD":
            request.write(body)
        request.finish()

    def fail(f):
        if gone or request.finished:
            if not f.check(HTTPError):
                _log.failure("rendering {method} {uri} (client gone)", f, method=request.method,
                             uri=request.uri)
            return
        write(errors.from_failure(request, f, style))

    d = defer.ensureDeferred(out) if inspect.iscoroutine(out) else out
    d.addCallbacks(write, fail).addErrback(
        lambda f: _log.failure("writing {uri}", f, uri=request.uri))
    return server.NOT_DONE_YET


def _esc(s: str) -> str:
    return str(jinja2.utils.markupsafe.escape(s))


# --- what a request carries ----------------------------------------------------------------------

def _args(request) -> dict[bytes, list[bytes]]:
    """A POST's fields come from its body only, a GET's from the query string."""
    return body_form(request) if request.method in BODY_METHODS else query_args(request)


def form_value(request, name: str, default: str = "", *, strip: bool = True) -> str:
    vals = _args(request).get(name.encode())
    if not vals:
        return default
    try:
        v = vals[0].decode("utf-8")
        return v.strip() if strip else v
    except UnicodeDecodeError:
        raise HTTPError(400, "form data is not UTF-8") from None


def form_values(request, name: str, *, strip: bool = True) -> list[str]:
    try:
        vals = [v.decode("utf-8") for v in _args(request).get(name.encode(), [])]
    except UnicodeDecodeError:
        raise HTTPError(400, "form data is not UTF-8") from None
    return [v.strip() for v in vals] if strip else vals


def form_dict(request) -> dict[str, str]:
    """Every field of the form (the first value of each), decoded; 400 when not UTF-8."""
    out = {}
    for k, vals in _args(request).items():
        try:
            out[k.decode("utf-8")] = vals[0].decode("utf-8") if vals else ""
        except UnicodeDecodeError:
            raise HTTPError(400, "form data is not UTF-8") from None
    return out


def json_object(request) -> dict:
    """The body as a JSON object: 413 over the body limit, 415 unless the Content-Type is
    application/json (a browser sends that cross-site only after a CORS preflight, which this
    site never grants: so a JSON endpoint is no target for a forged form), 400 when it is not a
    JSON object."""
    try:
        raw = body_bytes(request)        # the listener has refused bodies over [admin] max_body
    except FormError:
        raise HTTPError(413, "request body too large") from None
    ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if ctype != b"application/json":
        raise HTTPError(415, "send the body as application/json")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise HTTPError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise HTTPError(400, "the body must be a JSON object")
    return data


def path_segments(request) -> list[str] | None:
    """The rest of the path, decoded, or None when a segment cannot be a name: not UTF-8
    (overlong forms included), or holding a NUL, a control character, a backslash or an encoded
    slash (%2F)."""
    out = []
    for raw in request.postpath:
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if _BAD_SEGMENT.search(s):
            return None
        out.append(s)
    return out


_BAD_SEGMENT = re.compile(r"[\x00-\x1f\x7f/\\]")


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

    ``router.add("GET", rf"mirrors/(?P<mid>{ID})", handler, login=True, role="admin")``; the
    pattern must match the whole remaining path ("" is the mounted folder itself). For routes with
    ``login=True`` an anonymous visitor is sent to the login page (GET) or refused (POST), a user
    without the role gets 403, and every POST needs the session's CSRF token from its body.
    Handlers are ``async def h(request, **groups)`` and find the session at
    ``request.mirrordns_session``. A method no route takes is answered 405 before any body is
    read.
    """

    isLeaf = True

    def __init__(self, ctx: WebContext, login_url: str = "/admin/login", errors: str = "html",
                 cache_control: bytes | None = None, session=load_session):
        """errors: the style of error answers (ErrorPages): "html" pages in the site's layout,
        "json" for the API, "text" for machines; cache_control: sent with every answer
        (b"no-store" for the admin pages); session: how a login route finds its session
        (admin.web.sessions: users' by default, maintainers' for the maintainer pages)."""
        super().__init__()
        self.ctx = ctx
        self.login_url = login_url
        self.errors = errors
        self.cache_control = cache_control
        self.load_session = session
        self.routes: list[Route] = []

    def add(self, method: str, pattern: str, handler, *, login: bool = True,
            role: str | None = None, csrf: bool | None = None) -> None:
        m = method.upper().encode()
        self.routes.append(Route(m, re.compile(pattern), handler, login, role,
                                 (m == b"POST") if csrf is None else csrf))

    def render(self, request):
        segs = path_segments(request)
        page = _raise(HTTPError(404))
        if segs is not None:
            rest = "/".join(segs)
            method = b"GET" if request.method == b"HEAD" else request.method
            allowed, route, groups = [], None, {}
            for r in self.routes:
                m = r.pattern.fullmatch(rest)
                if m:
                    allowed.append(r.method)
                    if r.method == method and route is None:
                        route, groups = r, m.groupdict()
            if route is not None and route.method not in BODY_METHODS and has_body(request):
                page = _raise(NO_BODY_HERE)
            elif route is not None:
                def page(req, route=route, groups=groups):
                    return self._run(route, req, groups)
            elif allowed:
                request.setHeader(b"allow", b", ".join(sorted(set(allowed))))
                page = _raise(HTTPError(405))
        if self.errors == "html":
            page = self._with_session_on_error(page)
        return respond(request, page, self.ctx.errors, style=self.errors,
                       cache_control=self.cache_control)

    def _with_session_on_error(self, page):
        """An error page in the site's layout shows the logged-in user's navigation."""
        async def guarded(request):
            try:
                out = page(request)
                return (await out) if inspect.isawaitable(out) else out
            except HTTPError:
                try:
                    await self.load_session(self.ctx, request)
                except Exception:
                    request.mirrordns_session = None
                raise
        return guarded

    async def _run(self, route: Route, request, groups):
        if route.login:
            sess = await self.load_session(self.ctx, request)
            if sess is None:
                if request.method in (b"GET", b"HEAD"):
                    return redirect(self.login_url, next=request.uri.decode("utf-8", "replace"))
                raise HTTPError(403, "Not logged in.")
            if route.csrf and not csrf.session_token_ok(request, sess.csrf):
                raise HTTPError(403, "The form has expired or did not come from this site; "
                                     "reload the page and try again.")
            if route.role == "admin" and not sess.user.is_admin:
                raise HTTPError(403, "This needs an admin; helpers may disable mirrors and add "
                                     "notes only.")
        return await route.handler(request, **groups)


NO_BODY_HERE = HTTPError(413, "This page takes no request body.")


def refuse_body(page):
    """For a resource that only answers GET/HEAD: a request with a body is refused (413)."""
    def guarded(request):
        if has_body(request):
            raise NO_BODY_HERE
        return page(request)
    return guarded


def _raise(e: Exception):
    def page(_request):
        raise e
    return page


class NotFound(resource.Resource):
    """The site's 404 for any path no part of the tree claims."""

    isLeaf = True

    def __init__(self, ctx: WebContext):
        super().__init__()
        self.ctx = ctx

    def render(self, request):
        return respond(request, refuse_body(_raise(HTTPError(404))), self.ctx.errors)


class SiteRoot(resource.Resource):
    """The root of the tree: its children are the parts; any other name goes to `fallback`
    (the closer's project pages, which it finds at request time) or is our 404 (never
    Twisted's bare "No Such Resource" page)."""

    def __init__(self, ctx: WebContext):
        super().__init__()
        self._missing = NotFound(ctx)
        self.fallback: resource.Resource | None = None

    def getChild(self, path, request):
        if self.fallback is not None and path:
            return self.fallback                 # a leaf: it reads prepath + postpath
        return self._missing

    def render(self, request):
        return self._missing.render(request)


class StaticFiles(resource.Resource):
    """The few small files in admin/static/, read once into memory and served with an ETag.

    Not twisted.web.static.File: ours are a handful of kilobytes, and a plain resource answers
    synchronously (so StubTreq tests see it) and cannot be talked into listing or leaving the folder
    (admin.web.paths.contained_files: a symlink out of the folder is not served).
    """

    isLeaf = True
    TYPES: ClassVar[dict[str, bytes]] = {".css": b"text/css; charset=utf-8",
                                         ".svg": b"image/svg+xml", ".png": b"image/png",
                                         ".ico": b"image/x-icon", ".txt": TEXT}

    def __init__(self, ctx: WebContext, folder: Path = STATIC_DIR):
        super().__init__()
        self.ctx = ctx
        self.files: dict[str, tuple[bytes, bytes, bytes]] = {}
        for p in contained_files(folder):
            if p.suffix in self.TYPES:
                data = p.read_bytes()
                etag = b'"' + hashlib.sha256(data).hexdigest()[:16].encode() + b'"'
                self.files[p.name] = (data, self.TYPES[p.suffix], etag)

    def _page(self, request):
        segs = path_segments(request)
        f = self.files.get(segs[0]) if segs is not None and len(segs) == 1 else None
        if f is None:
            raise HTTPError(404)
        data, ctype, etag = f
        headers = {b"etag": etag, b"cache-control": b"public, max-age=3600"}
        if request.getHeader(b"if-none-match") == etag:
            return Response(b"", 304, ctype, headers)
        return Response(data, 200, ctype, headers)

    def render_GET(self, request):
        return respond(request, refuse_body(self._page), self.ctx.errors)

    render_HEAD = render_GET


def static_resource(ctx: WebContext) -> resource.Resource:
    """Our one stylesheet (and whatever else sits in admin/static/)."""
    return StaticFiles(ctx)


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


def maintenance_word(phase: str) -> str:
    """A maintenance phase in words (dnsd.maintenance)."""
    from dnsd.maintenance import word

    return word(phase)


format_duration = figures.duration


@jinja2.pass_context
def format_ago(context, when) -> str:
    """'5 min ago', measured from the page's `now` (the context's clock, so tests are exact)."""
    now = context.get("now") or _dt.datetime.now(_dt.UTC).replace(tzinfo=None)
    return figures.ago(when, now)


def format_dt(when) -> str:
    return "–" if when is None else when.strftime("%Y-%m-%d %H:%M UTC")
