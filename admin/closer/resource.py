"""The closer's web resource: /dyn/closer[.cgi|.lua]/<path> and <folder>/<name>.cgi project pages.

Hot paths (``action=download``, ``as_json``, ``preferred=true``) return a `Response` at once, from
memory; an HTML page (which needs its template, perhaps from disk) is a coroutine. Both go through
the site's one render helper (admin.web.framework.respond) with the site's security headers
(style attributes allowed: project templates carry them) and ``no-store`` (every answer depends
on the visitor and the moment). Answers meant for machines (400, 503, text) are one line of text;
a missing page or a broken template gets the site's own 404 / 500 page.
"""

from __future__ import annotations

import json
import re

from markupsafe import Markup
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource

from admin.closer.choice import Closer
from admin.closer.params import BadRequest, clean_path, parse_params, url_path
from admin.closer.templates import (
    BUILTIN_DIR,
    TEMPLATE_SUFFIXES,
    TemplateError,
    esc,
    render_template,
)
from admin.web.framework import (
    NO_STORE,
    TEXT,
    HTTPError,
    Response,
    refuse_body,
    respond,
    security_headers,
)
from admin.web.paths import inside, safe_segment
from dnsd import countries

_log = Logger(namespace="admin.closer")

SCRIPT_SUFFIXES = (".cgi", ".lua")
CLOSER_NAMES = ("closer", "closer.cgi", "closer.lua")
HEAD_CANDIDATES = 8         # mirrors of the tier HEAD-checked for one file, in weighted order
HEADERS = security_headers(inline_styles=True)
HTML = b"text/html; charset=utf-8"


def _seg(b: bytes) -> str | None:
    """A decoded segment; None when it is not UTF-8 (an overlong '/' or '.' included)."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _text(code: int, body: str) -> Response:
    return Response(body, code, TEXT)


def _redirect(url: str) -> Response:
    """302 with an empty body: the hot path, so nothing a browser does not use."""
    return Response(b"", 302, headers={b"location": url.encode("utf-8")})


def _not_found() -> HTTPError:
    return HTTPError(404, "There is no download page here.", style="html")


class ClosePages(resource.Resource):
    """Leaf resource for /dyn/closer[.cgi|.lua]/<path> and <folder>/<name>.cgi project pages.

    The first path segment named ``closer``/``closer.cgi``/``closer.lua`` (under /dyn) or ending in
    ``.cgi``/``.lua`` is the script; the folders before it locate the template, the rest is the
    path of the file on the mirrors. The folders and the script must be plain names
    (admin.web.paths.safe_segment: no '..', no encoded slash, ...), judged before any file is
    looked for.
    """

    isLeaf = True

    def __init__(self, ctx, closer: Closer):
        super().__init__()
        self.ctx = ctx
        self.closer = closer

    def render_GET(self, request):
        return respond(request, refuse_body(self._render), self.ctx.errors, style="text",
                       headers=HEADERS, cache_control=NO_STORE)

    render_HEAD = render_GET

    def _render(self, request):
        segs = [_seg(s) for s in request.prepath + request.postpath]
        script = None
        for i, s in enumerate(segs):
            if s is None:
                break
            if s.endswith(SCRIPT_SUFFIXES) or (i == 1 and segs[0] == "dyn" and s in CLOSER_NAMES):
                script = i
                break
        if script is None or not all(safe_segment(s) for s in segs[: script + 1]):
            raise _not_found()
        if None in segs:
            raise BadRequest("path is not UTF-8")
        folder = tuple(segs[:script])
        name = segs[script]
        for suf in SCRIPT_SUFFIXES:
            name = name.removesuffix(suf)
        if not name:
            raise _not_found()
        location = "/" + "/".join(segs[: script + 1])
        params = parse_params(request.args, request.uri)
        rest = segs[script + 1:]
        path = params.path if params.path is not None else clean_path("/".join(rest))

        c = self.closer
        view = c.view()
        if view is None:
            return _text(503, "no mirror plan loaded yet\n")
        cca2 = params.cca2
        if cca2 is None:
            ip = c.proxies.client(request)
            geo = self.ctx.geo
            cca2 = geo.country(ip) if (geo is not None and ip) else None
            where = f"{ip} -> {cca2 or 'unknown'}"
        else:
            where = f"cca2={cca2} (asked)"

        if params.action is not None:
            if params.action == "download":
                return self._download(view, cca2, params, path)
            if params.action == "info":
                sel = c.select(view, cca2, params.preferred)
                return _text(200, c.explain(view, sel, where))
            return _text(400, "unknown action (download or info)\n")

        sel = c.select(view, cca2, params.preferred)
        if params.preferred_text:
            return _text(200 if sel.preferred else 503, sel.preferred)
        in_dist = path in c.dist
        if params.as_json:
            body = json.dumps({
                "path_info": url_path(path),
                "preferred": sel.preferred,
                "http": list(sel.lists["http"]),
                "https": list(sel.lists["https"]),
                "ftp": list(sel.lists["ftp"]),
                "backup": list(sel.lists["backup"]),
                "cca2": (cca2 or "").lower(),
                "in_dist": in_dist,
            }, indent=2, sort_keys=True)
            return Response(body, 200, b"application/json")
        return self._page(sel, folder, name, location, path, in_dist)

    # -- action=download --

    def _download(self, view, cca2, params, path):
        c = self.closer
        fname = params.filename if params.filename is not None else path
        if not fname:
            return _text(400, "action=download needs filename=<path>\n")
        if fname not in c.dist:
            return self._not_in_dist(c.select(view, cca2), fname)
        if c.heads is None:
            sel = c.select(view, cca2, params.preferred)
            if not sel.preferred:
                return _text(503, "no mirror is serving\n")
            return _redirect(sel.preferred + url_path(fname))
        return self._download_checked(view, cca2, params, fname)

    async def _download_checked(self, view, cca2, params, fname) -> Response:
        """Only a mirror that answered a HEAD for this file lately; else a backup."""
        c = self.closer
        q = url_path(fname)
        order = []
        sel = c.select(view, cca2, params.preferred)
        if sel.asked:
            order.append(sel.preferred)
        proto, _tier, _key, drawer = view.candidates(cca2)
        order += [view.web_url(e) for e in drawer.draw(HEAD_CANDIDATES, c.rng)]
        order = list(dict.fromkeys(order))
        cached = [c.heads.cached(u + q) for u in order]
        for u, ok in zip(order, cached):
            if ok:
                return _redirect(u + q)
        pending = [u for u, ok in zip(order, cached) if ok is None]
        if pending:
            results = await defer.gatherResults([c.heads.check(u + q) for u in pending])
            for u, ok in zip(pending, results):
                if ok:
                    return _redirect(u + q)
        b = c.backup_url(view)
        if not b:
            return _text(503, "no mirror has this file right now\n")
        return _redirect(b + q)

    # -- HTML --

    def _data(self, sel, location, path) -> dict:
        """The template's variables, every value HTML-escaped (the template is rendered raw)."""
        cca2 = sel.cca2
        cc = countries.get(cca2) if cca2 else None
        e = sel.entry
        logo = e.provider_logo if e is not None else ""
        link = e.provider_url if e is not None else ""
        first = path.split("/", 1)[0]          # the original's [project]: the path's top folder
        return {
            "preferred": esc(sel.preferred),
            "path_info": esc(url_path(path)),
            "location": esc(location),
            "country": esc(cc.name if cc else "Unknown"),
            "cca2": esc((cca2 or "").lower()),
            "project": esc(first or self.closer.cfg.closer.project),
            "logo": esc(logo) if logo.startswith(("https://", "http://")) else "",
            "link": esc(link) if link.startswith(("https://", "http://")) else "",
            "lookup": "",
            "http": [esc(u) for u in sel.lists["http"]],
            "https": [esc(u) for u in sel.lists["https"]],
            "ftp": [esc(u) for u in sel.lists["ftp"]],
            "backup": [esc(u) for u in sel.lists["backup"]],
        }

    async def _page(self, sel, folder, name, location, path, in_dist) -> Response:
        """The project's own page beside the script, else the default closer page."""
        c = self.closer
        if not in_dist:
            return await self._not_in_dist(sel, path, location)
        loaded = await _template(c.templates.get(folder, name, BUILTIN_DIR / "closer.ezt"))
        out = _render_template(loaded, self._data(sel, location, path))
        out = collapse_slashes(out, [sel.preferred, *sel.lists["http"], *sel.lists["https"],
                                     *sel.lists["ftp"], *sel.lists["backup"]])
        title = loaded.title or f"{c.cfg.closer.project}: download mirrors"
        return Response(await self._wrap(out, title), 200, HTML)

    async def _not_in_dist(self, sel, path, location="/dyn/closer") -> Response:
        """The archive page (docroot dyn/archive.html, else built in) with status 404."""
        c = self.closer
        loaded = await _template(c.templates.get(("dyn",), "archive",
                                                 BUILTIN_DIR / "archive.ezt"))
        data = self._data(sel, location, path)
        if c.archive_url:
            u = esc(c.archive_url + url_path(path))
            data["lookup"] = f'It may be in our archive: <a href="{u}" rel="nofollow">{u}</a>'
        else:
            data["lookup"] = "It is not on the mirrors."
        out = _render_template(loaded, data)
        body = await self._wrap(out, f"{c.cfg.closer.project}: not on the mirrors")
        return Response(body, 404, HTML)

    async def _wrap(self, body: str, title: str) -> bytes:
        """Templates are fragments (the ASF site wrapped them in its layout): here they go into
        the public layout; a template that is a whole page is sent as it is. The layout renders
        on a worker thread, like every page that carries a mirror list."""
        if re.search(r"<html[\s>]", body[:2000], re.IGNORECASE):
            return body.encode("utf-8")
        out = await self.ctx.render_threaded("closer/page.html", None, body=Markup(body),
                                             page_title=title)
        return out.encode("utf-8")


def collapse_slashes(out: str, urls) -> str:
    """'[preferred]/path' and '[preferred]path' both give one slash: base URLs end in '/'."""
    bases = sorted({esc(u) for u in urls if u}, key=len, reverse=True)
    if not bases:
        return out
    rx = re.compile("(" + "|".join(re.escape(b) for b in bases) + ")/+")
    return rx.sub(r"\1", out)




def _broken(e: TemplateError) -> HTTPError:
    """A broken template is the operator's to fix: logged with its file, and the visitor gets
    the site's 500 page without the path."""
    _log.error("closer template error: {err}", err=str(e))
    return HTTPError(500, "This download page's template is broken.", style="html")


async def _template(d: defer.Deferred):
    try:
        return await d
    except TemplateError as e:
        raise _broken(e) from None


def _render_template(loaded, data: dict) -> str:
    try:
        return render_template(loaded, data)
    except TemplateError as e:
        raise _broken(e) from None


# --- wiring --------------------------------------------------------------------------------------

def make_closer(ctx, *, rng=None, head=None) -> Closer:
    return Closer(ctx.cfg, ctx.plan, clock=ctx.clock, rng=rng, head=head,
                  run_in_thread=ctx.run_in_thread)


def build(ctx, *, rng=None, head=None) -> resource.Resource:
    """The resource for /dyn (closer, closer.cgi, closer.lua, and <name>.cgi pages below it)."""
    return ClosePages(ctx, make_closer(ctx, rng=rng, head=head))


def mount(root: resource.Resource, ctx, *, rng=None, head=None) -> ClosePages:
    """Put the closer at /dyn, and project pages (<folder>/<name>.cgi) at the top-level names of
    [closer] document_root that nothing else has taken (read at start: a new top-level folder
    needs a restart).

    The dist index is built by `refresher(root)`'s service, which admin.makeService starts; until
    it has run once every path counts as present.
    """
    pages = build(ctx, rng=rng, head=head)
    root.putChild(b"dyn", pages)
    docroot = pages.closer.docroot
    # One listing of the document root's top level, blocking: this runs once in build_root while
    # the service tree is composed, before the reactor serves anything, so nobody waits for it.
    if docroot is not None and docroot.is_dir():
        for p in sorted(docroot.iterdir()):
            if not safe_segment(p.name) or p.name == "dyn" or not inside(docroot, p):
                continue
            if p.is_dir():
                names = [p.name]
            elif p.suffix in TEMPLATE_SUFFIXES:
                names = [p.stem + s for s in SCRIPT_SUFFIXES]
            else:
                continue
            for n in names:
                key = n.encode("utf-8")
                if key not in root.children:
                    root.putChild(key, pages)
    return pages


def refresher(root: resource.Resource) -> service.IService:
    """The closer's background service for admin.makeService: the dist index refresher of the
    closer `mount` put on `root` (a service that does nothing when there is none, or no
    dist_root). ``closer.refresher(site.resource).setServiceParent(top)``"""
    pages = root.children.get(b"dyn")
    if isinstance(pages, ClosePages):
        return pages.closer.dist.service()
    return service.Service()
