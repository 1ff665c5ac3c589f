"""The closer's web resource: /dyn/closer[.cgi|.lua]/<path> and <folder>/<name>.cgi project pages.

Hot paths (``action=download``, ``as_json``, ``preferred=true``) return a `Response` at once, from
memory; an HTML page (which needs its template, perhaps from disk) is a coroutine. Both go through
the site's one render helper (admin.web.framework.respond) with the site's security headers
(style attributes allowed: project templates carry them) and ``no-store`` (every answer depends
on the visitor and the moment). Answers meant for machines (400, 503, text) are one line of text;
a missing page or a broken template gets the site's own 404 / 500 page.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import re
from urllib.parse import quote

from markupsafe import Markup
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource

from admin.closer import archive, links
from admin.closer.choice import Closer
from admin.closer.dist import file_facts
from admin.closer.origin import only_from_origin, origin_for
from admin.closer.params import BadRequest, clean_path, parse_params, parse_update, url_path
from admin.closer.templates import (
    BUILTIN_DIR,
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
from admin.web.paths import safe_segment
from dnsd import countries

_log = Logger(namespace="admin.closer")

SCRIPT_SUFFIXES = (".cgi", ".lua")
CLOSER_NAMES = ("closer", "closer.cgi", "closer.lua")
HEAD_CANDIDATES = 8         # mirrors of the tier HEAD-checked for one file, in weighted order
METALINK_MAX = 50           # mirrors listed in one Metalink document
GENERATOR = "mirrordns"
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


def _redirect(url: str, link: str = "") -> Response:
    """302 with an empty body: the hot path, so nothing a browser does not use; `link` is the
    RFC 6249 Link header for download managers (admin.closer.links)."""
    headers = {b"location": url.encode("utf-8")}
    if link:
        headers[b"link"] = link.encode("utf-8")
    return Response(b"", 302, headers=headers)


def _no_origin() -> Response:
    return _text(404, "checksums, signatures and keys come only from the project's own site, "
                      "and none is configured ([closer] origin_url)\n")


def _links(view, entries, q: str, metalink: str) -> str:
    """The Link header of a redirect: the further mirrors of the same draw, then the Metalink."""
    return links.duplicate_links([links.Location(view.web_url(e) + q, e.country)
                                  for e in entries], describedby=metalink)


def _utc(clock) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(clock.seconds(), _dt.UTC).replace(tzinfo=None)


def _request_base(request) -> str:
    """scheme://host of the request, for the Metalink's own address when [admin] base_url is
    not set (the Host header is the client's; it only ever goes back to that client)."""
    host = (request.getHeader("host") or "localhost").strip()
    return ("https://" if request.isSecure() else "http://") + host


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
        args = (request, folder, name, location, params, path)
        if folder[:1] == ("dyn",) or self.closer.pages.known(folder, name):
            return self._answer(*args)
        return self._found_now(*args)             # a project page: is it there (still)?

    async def _found_now(self, *args):
        """A project page not known to exist: looked for on a worker thread, so a page or
        folder added after start is served at once and a removed one is gone."""
        _request, folder, name = args[:3]
        if not await self.closer.pages.look(folder, name):
            raise _not_found()
        out = self._answer(*args)
        return (await out) if inspect.isawaitable(out) else out

    def _answer(self, request, folder, name, location, params, path):
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

        since = parse_update(params.update, _utc(c.clock))
        if params.action is not None:
            if params.action == "download":
                return self._download(view, cca2, params, path, location, since)
            if params.action == "metalink":
                return self._metalink(request, view, cca2, params, path, location, since)
            if params.action == "info":
                sel = c.select(view, cca2, params.preferred, since=since)
                return _text(200, c.explain(view, sel, where))
            return _text(400, "unknown action (download, metalink or info)\n")

        sel = c.select(view, cca2, params.preferred, since=since)
        if params.preferred_text:
            return _text(200 if sel.preferred else 503, sel.preferred)
        in_dist = path in c.dist
        project = path.split("/", 1)[0]
        in_attic = bool(project) and project in c.attic
        if params.as_json:
            # closer.lua's fields and mirrors.cgi's `location`, plus https, rsync and origin
            body = json.dumps({
                "path_info": url_path(path),
                "preferred": sel.preferred,
                "http": list(sel.lists["http"]),
                "https": list(sel.lists["https"]),
                "ftp": list(sel.lists["ftp"]),
                "rsync": list(sel.lists["rsync"]),
                "backup": list(sel.lists["backup"]),
                "cca2": (cca2 or "").lower(),
                "in_dist": in_dist,
                "in_attic": in_attic,
                "location": location,
                "origin": origin_for(c.cfg.closer, path),
            }, indent=2, sort_keys=True)
            return Response(body, 200, b"application/json")
        if in_attic:                               # closer.lua: a retired project's attic page
            return _redirect(c.attic.page(project))
        aware = params.archive_aware or c.cfg.closer.archive_aware
        return self._page(sel, folder, name, location, path, in_dist, aware)

    # -- action=download --

    def _download(self, view, cca2, params, path, location, since):
        c = self.closer
        fname = params.filename if params.filename is not None else path
        if not fname:
            return _text(400, "action=download needs filename=<path>\n")
        q = url_path(fname)
        origin = only_from_origin(c.cfg.closer, fname)
        if origin is not None:                     # never a mirror (admin.closer.origin)
            return _redirect(origin) if origin else _no_origin()
        if fname not in c.dist:
            return self._not_in_dist(c.select(view, cca2), fname)
        more = max(0, c.cfg.closer.duplicates)
        meta = f"{location}/{q}?action=metalink"
        if c.heads is None:
            sel = c.select(view, cca2, params.preferred, since=since, count=1 + more)
            if not sel.preferred:
                return _text(503, "no mirror is serving\n")
            return _redirect(sel.preferred + q, _links(view, sel.others, q, meta))
        return self._download_checked(view, cca2, params, fname, since, more, meta)

    async def _download_checked(self, view, cca2, params, fname, since, more, meta) -> Response:
        """Only a mirror that answered a HEAD for this file lately; else a backup. The Link
        header names the next mirrors of the same draw (not HEAD-checked: a download manager
        tries them when it needs them)."""
        c = self.closer
        q = url_path(fname)
        sel = c.select(view, cca2, params.preferred, since=since,
                       count=max(HEAD_CANDIDATES, 1 + more))
        entries = [] if sel.asked else [sel.entry]
        entries = [e for e in (*entries, *sel.others) if e is not None]
        order = ([sel.preferred] if sel.asked else []) + [view.web_url(e) for e in entries]
        order = list(dict.fromkeys(order))[:HEAD_CANDIDATES]
        by_url = {view.web_url(e): e for e in entries}

        def to(u):
            rest = [by_url[x] for x in order[order.index(u) + 1:] if x in by_url][:more]
            return _redirect(u + q, _links(view, rest, q, meta))

        cached = [c.heads.cached(u + q) for u in order]
        for u, ok in zip(order, cached):
            if ok:
                return to(u)
        pending = [u for u, ok in zip(order, cached) if ok is None]
        if pending:
            results = await defer.gatherResults([c.heads.check(u + q) for u in pending])
            for u, ok in zip(pending, results):
                if ok:
                    return to(u)
        b = c.backup_url(view)
        if not b:
            return _text(503, "no mirror has this file right now\n")
        return _redirect(b + q)

    # -- action=metalink --

    async def _metalink(self, request, view, cca2, params, path, location, since) -> Response:
        """An RFC 5854 document for one file: every mirror in the order the closer would
        choose (the preferred and the rest of its weighted draw, then the other tiers nearest
        first, then the backups), with country and priority; size and hashes from the dist
        tree when it has them (read on a worker thread, inside dist_root)."""
        c = self.closer
        fname = params.filename if params.filename is not None else path
        if not fname or fname.endswith("/"):
            return _text(400, "action=metalink needs the path of a file\n")
        q = url_path(fname)
        origin = only_from_origin(c.cfg.closer, fname)
        if origin is not None:
            if not origin:
                return _no_origin()
            locs = [links.Location(origin)]
        elif fname not in c.dist:
            return _text(404, "not on the mirrors\n")
        else:
            sel = c.select(view, cca2, params.preferred, since=since, count=METALINK_MAX)
            urls = [sel.preferred] if sel.preferred else []
            urls += [view.web_url(e) for e in sel.others]
            urls += [*sel.lists["http"], *sel.lists["backup"]]
            locs = []
            for u in list(dict.fromkeys(urls))[:METALINK_MAX]:
                e = view.entry_for_url(u)
                locs.append(links.Location(u + q, e.country if e is not None else ""))
            if not locs:
                return _text(503, "no mirror is serving\n")
        size, digests = None, ()
        if c.dist.root is not None:
            size, digests = await defer.maybeDeferred(c.run_in_thread, file_facts,
                                                      c.dist.root, fname)
        base = (c.cfg.admin.base_url or _request_base(request)).rstrip("/")
        body = links.metalink(fname, locs, origin=f"{base}{location}/{q}?action=metalink",
                              published=_utc(c.clock), generator=GENERATOR, size=size,
                              digests=digests)
        return Response(body, 200, links.MEDIA_TYPE.encode())

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
            "origin": esc(origin_for(self.closer.cfg.closer, path)),
            "preferred": esc(sel.preferred),
            "path_info": esc(url_path(path)),
            "location": esc(location),
            "country": esc(cc.name if cc else "Unknown"),
            "cca2": esc((cca2 or "").lower()),
            "project": esc(first or self.closer.cfg.closer.project),
            "logo": esc(logo) if logo.startswith(("https://", "http://")) else "",
            "link": esc(link) if link.startswith(("https://", "http://")) else "",
            "lookup": "",
            "report": esc(report_link(e)) if e is not None and self.closer.cfg.reports.enabled
            else "",
            "http": [esc(u) for u in sel.lists["http"]],
            "https": [esc(u) for u in sel.lists["https"]],
            "ftp": [esc(u) for u in sel.lists["ftp"]],
            "rsync": [esc(u) for u in sel.lists["rsync"]],
            "backup": [esc(u) for u in sel.lists["backup"]],
        }

    async def _page(self, sel, folder, name, location, path, in_dist, aware=False) -> Response:
        """The project's own page beside the script, else the default closer page."""
        c = self.closer
        if not in_dist:
            return await self._not_in_dist(sel, path, location, aware)
        loaded = await _template(c.templates.get(folder, name, BUILTIN_DIR / "closer.ezt"))
        out = _render_template(loaded, self._data(sel, location, path))
        out = collapse_slashes(out, [sel.preferred, *sel.lists["http"], *sel.lists["https"],
                                     *sel.lists["ftp"], *sel.lists["backup"]])
        title = loaded.title or f"{c.cfg.closer.project}: download mirrors"
        return Response(await self._wrap(out, title), 200, HTML)

    async def _not_in_dist(self, sel, path, location="/dyn/closer", aware=False) -> Response:
        """The archive page (docroot dyn/archive.html, else built in) with status 404; with
        `aware` (closer.lua's archive_aware) it says whether the archive has the path."""
        c = self.closer
        loaded = await _template(c.templates.get(("dyn",), "archive",
                                                 BUILTIN_DIR / "archive.ezt"))
        data = self._data(sel, location, path)
        if c.archive is not None:
            data["lookup"] = await self._lookup(path, aware)
        else:
            data["lookup"] = "It is not on the mirrors."
        out = _render_template(loaded, data)
        body = await self._wrap(out, f"{c.cfg.closer.project}: not on the mirrors")
        return Response(body, 404, HTML)

    async def _lookup(self, path: str, aware: bool) -> str:
        """closer.lua's [lookup] text: a link to where the archive keeps the path, and with
        archive_aware whether it really does (ArchiveLookup: HEAD, cached)."""
        a = self.closer.archive
        q = url_path(path)
        u, home = esc(a.url(q)), esc(a.url(""))
        there = f'<a href="{u}" rel="nofollow">{u}</a>'
        if not aware:
            return f"It may be in our archive: {there}"
        answer = await a.lookup(q)
        if answer == archive.FOUND:
            return f"The object is in our archive: {there}"
        if answer == archive.NOT_FOUND:
            return f'The object is not in our archive <a href="{home}">{home}</a>.'
        return f'A lookup on <a href="{home}">{home}</a> failed.<br>Try {there}'

    async def _wrap(self, body: str, title: str) -> bytes:
        """Templates are fragments (the ASF site wrapped them in its layout): here they go into
        the public layout; a template that is a whole page is sent as it is. The layout renders
        on a worker thread, like every page that carries a mirror list."""
        if re.search(r"<html[\s>]", body[:2000], re.IGNORECASE):
            return body.encode("utf-8")
        out = await self.ctx.render_threaded("closer/page.html", None, body=Markup(body),
                                             page_title=title)
        return out.encode("utf-8")


def report_link(entry) -> str:
    """The public report form for the mirror a page suggests (admin.web.report_pages)."""
    return "/report?mirror=" + quote(entry.name or entry.hostname, safe="")


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
    """Put the closer at /dyn, and project pages (<folder>/<name>.cgi of [closer]
    document_root) at every top-level name nothing else has taken: the closer is the root's
    fallback (admin.web.framework.SiteRoot), and whether a page is there is asked at request
    time (PageIndex), so a project added after start is served at once.

    The dist index is built by `refresher(root)`'s service, which admin.makeService starts; until
    it has run once every path counts as present.
    """
    pages = build(ctx, rng=rng, head=head)
    root.putChild(b"dyn", pages)
    if pages.closer.docroot is not None:
        root.fallback = pages
    return pages


def refresher(root: resource.Resource) -> service.IService:
    """The closer's background service for admin.makeService: the refreshers of the dist index
    and the attic list of the closer `mount` put on `root` (a service that does nothing when
    there is none). ``closer.refresher(site.resource).setServiceParent(top)``"""
    pages = root.children.get(b"dyn")
    top = service.MultiService()
    if isinstance(pages, ClosePages):
        pages.closer.dist.service().setServiceParent(top)
        if pages.closer.attic.root is not None:
            pages.closer.attic.service().setServiceParent(top)
    return top
