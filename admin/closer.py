"""The closer: Apache-compatible download mirror chooser at /dyn/closer/<path>.

Projects that linked their download pages through Apache's ``closer.cgi`` / ``closer.lua`` point at
``/dyn/closer.cgi/<path>`` (or ``/dyn/closer/<path>``, ``/dyn/closer.lua/<path>``) here and keep their
EZT pages unchanged. The mirror comes from the same picker and plan as the DNS answers
(dnsd.picker): health, freshness, score, nearest tier, backups last. Unlike the original (same
country, else a random backup) a country without a healthy mirror gets its region's, and weights
count.

Hot paths (``action=download``, ``as_json``, ``preferred=true``) answer synchronously from memory:
the plan, and for "is it in the dist tree" an index of the tree that a TimerService rebuilds on a
worker thread (`DistIndex`, started by admin.makeService through `refresher`). No database, no
file. The optional HEAD check of ``action=download`` runs through treq, cached per mirror and
file, and never blocks the reactor. HTML pages need their template: it is found, stat'ed and
parsed on a worker thread and then served from memory for a few seconds (`TemplateStore`), so
the reactor thread does no file I/O after start-up.

Templates are EZT, rendered with the ``ezt`` package. A page is found the original way:
``<name>.cgi`` requested in a folder is rendered from ``<name>.html`` (or ``.ezt``, or ``.md``, which
is turned into HTML first, as the ASF site build did) beside it in ``[closer] document_root``, else
the built-in default. Values are HTML-escaped here and the template is rendered raw, so the one
value that is HTML (``[lookup]``) can carry a link. Square brackets that are not EZT directives
(``[HashAlgorithm]`` in a code sample) are kept as text instead of failing the page.
"""

from __future__ import annotations

import bisect
import html
import io
import json
import os
import random
import re
import threading
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import ezt
from markupsafe import Markup
from twisted.application import service
from twisted.application.internet import TimerService
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from admin.web.framework import ProxyRule
from dnsd import countries, picker

_log = Logger(namespace="admin.closer")

BUILTIN_DIR = Path(__file__).resolve().parent / "closer_templates"
TEMPLATE_SUFFIXES = (".html", ".ezt", ".md")
SCRIPT_SUFFIXES = (".cgi", ".lua")
CLOSER_NAMES = ("closer", "closer.cgi", "closer.lua")

# The variables of the original, plus the archive page's [lookup].
SCALARS = ("preferred", "path_info", "location", "country", "cca2", "project", "logo", "link",
           "lookup")
LISTS = ("http", "https", "ftp", "backup")
# EZT's own commands; [include]/[insertfile] are left out on purpose (a template must not read
# files outside the document root).
EZT_COMMANDS = ("if-any", "if-index", "is", "for", "define", "format", "else", "end")

MAX_PATH = 1024
HEAD_CANDIDATES = 8         # mirrors of the tier HEAD-checked for one file, in weighted order
MAX_PARAM = 2048

SECURITY_HEADERS = {
    b"content-security-policy": (
        b"default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' https: data:; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer-when-downgrade",
    b"x-frame-options": b"DENY",
}
NO_STORE = b"no-store"                   # every answer depends on the visitor and the moment


def _secure(request) -> None:
    for k, v in SECURITY_HEADERS.items():
        request.setHeader(k, v)


class BadRequest(Exception):
    """Input we refuse (400) rather than guess at."""


class TemplateError(Exception):
    """A project template EZT cannot parse or render (the operator's to fix: 500, logged)."""


# --- input ---------------------------------------------------------------------------------------

_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def clean_path(raw: str) -> str:
    """A path below the distribution root, normalised; raises BadRequest for anything odd.

    Leading and doubled slashes go, a trailing slash (a folder) stays; '.', '..', control
    characters and backslashes are refused, so the path can neither climb out of the dist tree
    nor smuggle a header or markup through.
    """
    if len(raw) > MAX_PATH:
        raise BadRequest("path too long")
    if _BAD_CHARS.search(raw):
        raise BadRequest("path has control characters or backslashes")
    parts = [p for p in raw.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise BadRequest("path may not contain '.' or '..' segments")
    p = "/".join(parts)
    if p and raw.endswith("/"):
        p += "/"
    return p


def url_path(p: str) -> str:
    """The clean path as it goes into a URL: percent-encoded, '/' kept."""
    return quote(p, safe="/~-._+,=:@")


def _arg(args: dict, *names: str) -> str | None:
    for n in names:
        vals = args.get(n.encode())
        if vals:
            v = vals[0]
            if len(v) > MAX_PARAM:
                raise BadRequest(f"parameter {n} too long")
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"parameter {n} is not UTF-8") from None
    return None


def _flag(v: str | None) -> bool:
    """as_json / asjson: present and not '0' (the original's rule; '?asjson' alone counts)."""
    return v is not None and v != "0"


def parse_cca2(v: str | None) -> str | None:
    """'de' / 'DE' / 'uk' -> 'DE' / 'GB'; None when absent; BadRequest when not a country."""
    if v is None or v == "":
        return None
    v = v.strip().upper()
    if v == "UK":                       # the ASF's lists said uk for Great Britain
        v = "GB"
    if not re.fullmatch(r"[A-Z]{2}", v) or not countries.is_country(v):
        raise BadRequest("cca2 must be a two-letter country code")
    return v


@dataclass(slots=True)
class Params:
    preferred: str | None       # a URL the visitor asked for (only used if it is listed)
    preferred_text: bool        # preferred=true: the bare URL as text/plain
    cca2: str | None            # choose as if from this country
    path: str | None            # overrides the path after the script name
    as_json: bool
    action: str | None
    filename: str | None


def parse_params(args: dict, uri: bytes = b"") -> Params:
    prefs = [_arg(args, "Preferred"), _arg(args, "preferred")]
    action = _arg(args, "action")
    filename = _arg(args, "filename")
    path = _arg(args, "path")
    as_json = _arg(args, "as_json", "asjson")
    if as_json is None and b"?" in uri:
        # '?asjson' alone: twisted.web drops query items without '=', the original did not
        query = uri.split(b"?", 1)[1]
        if any(item in (b"asjson", b"as_json") for item in query.split(b"&")):
            as_json = ""
    return Params(
        preferred=next((p for p in prefs if p not in (None, "", "true")), None),
        preferred_text="true" in prefs,
        cca2=parse_cca2(_arg(args, "cca2")),
        path=None if path is None else clean_path(path),
        as_json=_flag(as_json),
        action=action,
        filename=None if filename is None else clean_path(filename),
    )


# --- the distribution tree -------------------------------------------------------------------------

MAX_DIST_ENTRIES = 5_000_000     # a dist_root pointed at "/" by mistake stops here, not at OOM


class _Stopped(Exception):
    """The refresher was stopped while a walk ran: the walk gives up at the next folder."""


def walk_dist(root: Path, stop: threading.Event | None = None) -> memoryview:
    """Every file and folder below `root`, as a sorted read-only array of hash(relative path).

    Runs on a worker thread: a real dist tree (100k files) is 0.1-0.2 s of directory reads on a
    local disk, seconds on a cold network file system. The answer is 8 bytes per path (a frozenset
    of the path strings would take ~15 times that); hash() is the process's own string hash (64
    bits, seeded per process, which is fine: the index never leaves the process), so a path that
    is not there is mistaken for one that is with a chance of about n/2**64, and the error is on
    the harmless side (a page, not a 404). Symlinks count as os.path.exists sees them: a link to a folder is walked like a folder
    (except into one of its own parents: a loop), a dangling link is not there.
    """
    st = root.stat()                        # a missing root is an error, not an empty tree
    hashes = array("q", [hash("")])
    todo = [(str(root), "", ((st.st_dev, st.st_ino),))]
    while todo:
        if stop is not None and stop.is_set():
            raise _Stopped()
        path, prefix, parents = todo.pop()
        try:
            it = os.scandir(path)
        except OSError:
            continue                        # an unreadable folder: its contents are not there
        with it:
            for e in it:
                rel = prefix + e.name
                try:
                    is_dir = e.is_dir()
                    if not is_dir and e.is_symlink() and not e.is_file():
                        continue            # dangling
                    hashes.append(hash(rel))
                    if is_dir:
                        s = e.stat()
                        key = (s.st_dev, s.st_ino)
                        if key not in parents:
                            todo.append((e.path, rel + "/", (*parents, key)))
                except OSError:
                    continue
        if len(hashes) > MAX_DIST_ENTRIES:
            raise RuntimeError(f"more than {MAX_DIST_ENTRIES} entries below {root}")
    return memoryview(array("q", sorted(hashes)).tobytes()).cast("q")


class DistIndex:
    """'Is this path on the mirrors?', answered from memory.

    The tree under [closer] dist_root is walked on a worker thread (`refresh`, run every
    [closer] dist_refresh seconds by `service()`) and the new index replaces the old one in one
    assignment on the reactor thread, so a request only does a binary search. A failed walk (the
    root gone, an NFS hiccup) is logged and keeps the previous index.

    Until the first walk has finished, and without a dist_root, every path counts as present: a
    restart must not turn every download into a 404 for the seconds the first walk takes.
    """

    def __init__(self, root: str | Path | None, *, clock, run_in_thread, interval: float = 60.0):
        self.root = Path(root) if root else None
        self.clock = clock
        self.run_in_thread = run_in_thread
        self.interval = interval
        self.built_at: float | None = None      # clock time of the index in use
        self.entries = 0
        self._index: memoryview | None = None   # None: not built (yet): everything is present
        self._stop = threading.Event()
        self._service = None

    def __contains__(self, path: str) -> bool:
        idx = self._index
        if idx is None:
            return True
        h = hash(path.rstrip("/"))
        i = bisect.bisect_left(idx, h)
        return i < len(idx) and idx[i] == h

    def refresh(self) -> defer.Deferred:
        """One walk on a worker thread; the Deferred fires (never fails) once it is swapped in."""
        if self.root is None:
            return defer.succeed(None)
        t0 = self.clock.seconds()

        def swap(idx):
            self._index = idx
            self.entries = len(idx)
            self.built_at = self.clock.seconds()
            _log.debug("dist index: {n} paths below {root} in {s:.1f} s", n=len(idx),
                       root=str(self.root), s=self.built_at - t0)

        def failed(f):
            if not f.check(_Stopped):
                _log.error("dist index of {root} not refreshed (keeping the previous one): {err}",
                           root=str(self.root), err=f.getErrorMessage())

        d = defer.maybeDeferred(self.run_in_thread, walk_dist, self.root, self._stop)
        return d.addCallbacks(swap, failed)

    def service(self) -> service.IService:
        """The refresher: a TimerService on the clock; stopping it aborts a running walk."""
        if self._service is None:
            if self.root is None:
                self._service = service.Service()
            else:
                self._service = _DistRefresher(self)
            self._service.setName("closer-dist")
        return self._service


class _DistRefresher(TimerService):
    def __init__(self, index: DistIndex):
        super().__init__(index.interval, index.refresh)
        self.clock = index.clock
        self.index = index

    def startService(self):
        self.index._stop.clear()
        super().startService()

    def stopService(self):
        """Fires once a walk that is running has given up (at its next folder)."""
        self.index._stop.set()
        return super().stopService()


# --- templates -----------------------------------------------------------------------------------

_EZT_ITEM = r'(?:"(?:[^\\"]|\\.)*"|[A-Za-z_][-\w.]*)'
_EZT_ARG = r'(?:"(?:[^\\"]|\\.)*"|[-\w.]+)'
_DIRECTIVE_AT = re.compile(rf"\[({_EZT_ITEM}(?: +{_EZT_ARG})*)\]|\[\[\]|\[#[^\]]*\]")
_DEFINE = re.compile(r"\[define +([A-Za-z_][-\w.]*)\]")


def protect_brackets(text: str) -> str:
    """Escape every '[' that does not open one of our EZT directives as '[[]' (EZT's literal '[').

    Download pages contain brackets of their own (a markdown '[ PGP ]', '[HashAlgorithm]' in a
    code sample) that EZT would read as unknown variables and fail on; the original CGI printed
    them as they were.
    """
    known = set(SCALARS) | set(LISTS) | set(EZT_COMMANDS) | set(_DEFINE.findall(text))
    out, i = [], 0
    while True:
        j = text.find("[", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        m = _DIRECTIVE_AT.match(text, j)
        if m and (m.group(1) is None or m.group(1).split(" ", 1)[0].split(".")[0] in known):
            out.append(m.group(0))
            i = m.end()
        else:
            out.append("[[]")
            i = j + 1


_META_LINE = re.compile(r"[A-Za-z][\w-]*:\s.*")
_HEADING_ID = re.compile(r"<(h[1-6])>(.*?)\s*\{#([A-Za-z][\w:.-]*)\}</\1>", re.DOTALL)


def markdown_to_html(text: str) -> tuple[str, str]:
    """(html, title) of a Pelican-style markdown page, the way the ASF site build made .html.

    The 'Title: ...' header lines are metadata, '# Heading {#id}' gets its id, and link targets
    keep their '[preferred]' brackets so EZT can fill them in afterwards.
    """
    from markdown_it import MarkdownIt

    lines = text.splitlines()
    title, n = "", 0
    while n < len(lines) and _META_LINE.fullmatch(lines[n]):
        key, _, val = lines[n].partition(":")
        if key.strip().lower() == "title":
            title = val.strip()
        n += 1
    body = "\n".join(lines[n:])
    md = MarkdownIt("commonmark", {"html": True})
    default_normalize = md.normalizeLink
    md.normalizeLink = lambda url: default_normalize(url).replace("%5B", "[").replace("%5D", "]")
    out = md.render(body)
    out = _HEADING_ID.sub(lambda m: f'<{m[1]} id="{m[3]}">{m[2]}</{m[1]}>', out)
    return out, title


@dataclass(frozen=True)
class LoadedTemplate:
    template: ezt.Template
    title: str
    path: Path
    mtime: float


@dataclass(frozen=True)
class _Checked:
    loaded: LoadedTemplate
    at: float                   # clock time of the last look at the file


def find_template(docroot: Path | None, folder: tuple[str, ...], name: str) -> Path | None:
    """docroot/folder/name.{html,ezt,md}, the first that exists; None without a docroot."""
    if docroot is None:
        return None
    base = docroot.joinpath(*folder)
    for suffix in TEMPLATE_SUFFIXES:
        p = base / f"{name}{suffix}"
        if p.is_file():
            return p
    return None


def parse_template(path: Path, mtime: float) -> LoadedTemplate:
    """Read and compile one template file (markdown first when it is .md)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TemplateError(f"{path}: {e}") from None
    title = ""
    if path.suffix == ".md":
        text, title = markdown_to_html(text)
    t = ezt.Template(compress_whitespace=0)
    try:
        t.parse(protect_brackets(text), base_format=ezt.FORMAT_RAW)
    except ezt.EZTException as e:
        raise TemplateError(f"{path}: {e}") from None
    return LoadedTemplate(t, title, path, mtime)


def load_page(docroot: Path | None, folder: tuple[str, ...], name: str, default: Path,
              known: dict[Path, LoadedTemplate]) -> LoadedTemplate:
    """The page's template, for a worker thread: found, stat'ed, and read and parsed only when
    its mtime differs from the compiled one in `known` (a snapshot, never written here)."""
    p = find_template(docroot, folder, name) or default
    try:
        mtime = p.stat().st_mtime
    except OSError as e:                                    # removed since find_template
        raise TemplateError(f"{p}: {e}") from None
    old = known.get(p)
    if old is not None and old.mtime == mtime:
        return old
    return parse_template(p, mtime)


class TemplateStore:
    """Compiled templates by page, ready for the reactor thread without touching a file.

    A page (folder, name, default) is resolved, stat'ed and, when it changed, read and parsed on a
    worker thread (`load_page`); the answer is then used from memory for `check_every` seconds,
    after which the next request for the page looks at the file again (one look at a time per
    page; requests arriving meanwhile wait for it). So an edited or new page shows within seconds,
    and an unchanged one is parsed once. Pages are kept for the `size` most recent names: names
    come from URLs, which anyone can invent.
    """

    def __init__(self, docroot: Path | None, clock, run_in_thread, check_every: float = 5.0,
                 size: int = 1024):
        self.docroot = docroot
        self.clock = clock
        self.run_in_thread = run_in_thread
        self.check_every = check_every
        self.size = size
        self._pages: OrderedDict[tuple, _Checked] = OrderedDict()
        self._files: dict[Path, LoadedTemplate] = {}
        self._waiting: dict[tuple, list[defer.Deferred]] = {}

    def cached(self, folder: tuple[str, ...], name: str, default: Path) -> LoadedTemplate | None:
        """The page's template when it was looked at less than `check_every` seconds ago."""
        hit = self._pages.get((folder, name, default))
        if hit is not None and self.clock.seconds() - hit.at < self.check_every:
            return hit.loaded
        return None

    def get(self, folder: tuple[str, ...], name: str, default: Path) -> defer.Deferred:
        """Deferred[LoadedTemplate]; fails with TemplateError for a broken template (not cached:
        the operator's fix shows on the next request)."""
        hit = self.cached(folder, name, default)
        if hit is not None:
            return defer.succeed(hit)
        key = (folder, name, default)
        out = defer.Deferred()
        if key in self._waiting:
            self._waiting[key].append(out)
            return out
        self._waiting[key] = [out]

        def done(loaded):
            self._files[loaded.path] = loaded
            self._pages[key] = _Checked(loaded, self.clock.seconds())
            self._pages.move_to_end(key)
            while len(self._pages) > self.size:
                self._pages.popitem(last=False)
            return loaded

        def tell(result):
            for d in self._waiting.pop(key):
                if isinstance(result, Failure):
                    d.errback(result)
                else:
                    d.callback(result)

        d = defer.maybeDeferred(self.run_in_thread, load_page, self.docroot, folder, name,
                                default, dict(self._files))
        d.addCallback(done).addBoth(tell)
        return out


def render_template(loaded: LoadedTemplate, data: dict) -> str:
    buf = io.StringIO()
    try:
        loaded.template.generate(buf, data)
    except ezt.EZTException as e:
        raise TemplateError(str(e)) from None
    return buf.getvalue()


def esc(s: str) -> str:
    return html.escape(s, quote=True)


# --- choosing ------------------------------------------------------------------------------------

_TIER_RANK = {t: i for i, t in enumerate((*picker.TIERS, "none"))}


def _slash(u: str) -> str:
    return u if u.endswith("/") else u + "/"


class PlanView:
    """What the closer derives from one immutable plan, computed once per (plan, country).

    Uses the picker's own candidate selection and weighted drawer, so the closer and the DNS
    answer agree on tiers and weights; only the draw itself happens per request.
    """

    def __init__(self, plan, allow_http: bool):
        self.plan = plan
        self.web = ("https", "http") if allow_http else ("https",)
        self._pick: dict = {}
        self._lists: dict = {}
        self._locs: dict = {}

    def location(self, cc: str | None) -> picker.Location:
        loc = self._locs.get(cc)
        if loc is None:
            loc = self._locs[cc] = picker.as_location(cc)
        return loc

    def web_url(self, e) -> str | None:
        for proto in self.web:
            u = e.url(proto)
            if u:
                return _slash(u)
        return None

    def candidates(self, cc: str | None):
        """(protocol, tier, tier_key, Drawer): the nearest tier any allowed protocol reaches,
        https at equal distance, backups last. Distance comes first: a few https mirrors far
        away must not take every visitor from the http mirrors next door (nor be hammered)."""
        hit = self._pick.get(cc)
        if hit is not None:
            return hit
        loc = self.location(cc)
        options = []
        for proto in self.web:                                   # https first
            tier, key, cands = picker.candidates(self.plan, loc, protocol=proto)
            drawer = picker.Drawer([e for e, _ in cands], [w for _, w in cands])
            options.append((proto, tier, key, drawer))
        hit = min(options, key=lambda o: _TIER_RANK[o[1]])       # min keeps the first of equals
        self._pick[cc] = hit
        return hit

    def lists(self, cc: str | None) -> dict[str, tuple[str, ...]]:
        """The four lists, nearest first: by tier (country, sub-region, continent, world), inside a
        tier by distance (500 km steps), then score.

        `http` holds each mirror's web URL (https when it has one, plain http only when [closer]
        allow_http): old templates loop over `http` alone and must still offer every mirror.
        """
        hit = self._lists.get(cc)
        if hit is not None:
            return hit
        loc = self.location(cc)
        point = loc.point()

        def nearest(e):
            km = 0.0
            if point is not None and e.lat is not None:
                km = countries.haversine_km(point[0], point[1], e.lat, e.lon)
            return (round(km / 500), -e.score, e.hostname)

        order, seen = [], set()
        for level, key in picker.tiers_for(loc):
            tier = sorted(self.plan.pool(None, level, key), key=nearest)
            for e in tier:
                if e.id not in seen:
                    seen.add(e.id)
                    order.append(e)
        backups = sorted(self.plan.pool(None, "backup", None), key=lambda e: (-e.score, e.hostname))
        out = {
            "http": tuple(u for e in order if (u := self.web_url(e))),
            "https": tuple(_slash(e.https) for e in order if e.https),
            "ftp": tuple(_slash(e.ftp) for e in order if e.ftp),
            "backup": tuple(u for e in backups if (u := self.web_url(e))),
        }
        self._lists[cc] = out
        return out

    def entry_for_url(self, url: str):
        for e in self.plan.mirrors:
            if e.serving and any(_slash(u) == url for u in e.urls.values()):
                return e
        return None


@dataclass
class Selection:
    """One visitor's answer: the preferred mirror and the lists, before any rendering."""

    cca2: str | None            # the country chosen for (override or geo), upper case
    protocol: str | None
    tier: str
    tier_key: str | None
    entry: object | None        # the preferred plan entry (None: no mirror at all)
    preferred: str              # its base URL, ending in '/' ('' when there is none)
    lists: dict
    asked: bool = False         # the visitor's own Preferred was accepted


class Closer:
    """The closer's decisions, without HTTP: testable with a plan, a clock and a seeded rng."""

    def __init__(self, cfg, plan_holder, *, clock, rng=None, head=None, run_in_thread=None):
        """run_in_thread(f, *args) -> Deferred runs file work off the reactor thread (the dist
        walk, template loads); tests pass one that runs f inline."""
        self.cfg = cfg
        self.holder = plan_holder
        self.clock = clock
        self.rng = rng or random.Random()
        run_in_thread = run_in_thread or threads.deferToThread
        c = cfg.closer
        if c.dist_refresh <= 0:
            raise ValueError("[closer] dist_refresh must be a positive number of seconds")
        self.docroot = cfg.resolve_path(c.document_root) if c.document_root else None
        self.dist = DistIndex(cfg.resolve_path(c.dist_root) if c.dist_root else None,
                              clock=clock, run_in_thread=run_in_thread, interval=c.dist_refresh)
        self.templates = TemplateStore(self.docroot, clock, run_in_thread)
        self.archive_url = _slash(c.archive_url) if c.archive_url else ""
        self.heads = HeadCache(clock, c.head_check_ttl, c.head_timeout, head) if c.head_check \
            else None
        self.proxies = ProxyRule(cfg.admin.trusted_proxies)
        self._view: PlanView | None = None

    def view(self) -> PlanView | None:
        plan = getattr(self.holder, "current", None) if self.holder is not None else None
        if plan is None:
            return None
        v = self._view
        if v is None or v.plan is not plan:
            v = self._view = PlanView(plan, self.cfg.closer.allow_http)
        return v

    def select(self, view: PlanView, cca2: str | None, asked: str | None = None) -> Selection:
        proto, tier, key, drawer = view.candidates(cca2)
        lists = view.lists(cca2)
        if asked:
            want = _slash(asked)
            if any(want in lists[k] for k in LISTS):
                return Selection(cca2, proto, tier, key, view.entry_for_url(want), want, lists,
                                 asked=True)
        chosen = drawer.draw(1, self.rng)
        if not chosen:
            return Selection(cca2, proto, tier, key, None, "", lists)
        e = chosen[0]
        return Selection(cca2, proto, tier, key, e, view.web_url(e), lists)   # https if it has it

    def backup_url(self, view: PlanView) -> str | None:
        b = view.plan.pool(None, "backup", None)
        if not b:
            return None
        drawer = picker.Drawer(b, [max(e.score, 0.0) or 1.0 for e in b])
        return view.web_url(drawer.draw(1, self.rng)[0])

    def explain(self, view: PlanView, sel: Selection, where: str) -> str:
        """action=info: location, tier, every mirror with its weight or the reason it is out."""
        loc = view.location(sel.cca2)
        lines = [
            f"visitor: {where}",
            f"location: {loc.describe()}",
            f"protocols: {', '.join(view.web)} (the nearest tier wins; https at equal distance)",
            f"protocol: {sel.protocol or '-'}",
            f"tier: {sel.tier}" + (f" {sel.tier_key}" if sel.tier_key else ""),
            f"preferred: {sel.preferred or '(none)'}"
            + (" (asked for with Preferred=)" if sel.asked else ""),
            f"plan version: {view.plan.version}, built {view.plan.built_at:%Y-%m-%d %H:%M:%S} UTC",
            "",
        ]
        ch = picker.pick(view.plan, loc, protocol=sel.protocol, count=0, rng=self.rng) \
            if sel.protocol else None
        total = sum(w for _e, w in ch.candidates) if ch else 0.0
        lines.append("candidates (weight, share of the tier):")
        for e, w in (ch.candidates if ch else ()):
            share = f"{100 * w / total:.1f}%" if total else "-"
            lines.append(f"  {e.label:<12} {e.country}  {w:8.3f}  {share:>6}  {view.web_url(e)}")
        if not ch or not ch.candidates:
            lines.append("  (none)")
        lines.append("")
        lines.append("not candidates:")
        for e, why in (ch.excluded if ch else ((e, e.reason or "no serving mirror")
                                                for e in view.plan.mirrors)):
            lines.append(f"  {e.label:<12} {e.country}  {why}")
        return "\n".join(lines) + "\n"


class HeadCache:
    """'Did this mirror answer a HEAD for this file recently?', asked through treq, cached.

    Answers are kept `ttl` seconds; concurrent requests for the same URL share one HEAD.
    """

    def __init__(self, clock, ttl: float, timeout: float, head=None, size: int = 16384):
        self.clock = clock
        self.ttl = ttl
        self.timeout = timeout
        self.size = size
        self._head = head or self._treq_head
        self._cache: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        self._inflight: dict[str, defer.Deferred] = {}

    def _treq_head(self, url: str) -> defer.Deferred:
        import treq

        d = treq.head(url, timeout=self.timeout, allow_redirects=False, reactor=self.clock)
        return d.addCallback(lambda r: r.code)

    def cached(self, url: str) -> bool | None:
        hit = self._cache.get(url)
        if hit is not None and self.clock.seconds() - hit[1] < self.ttl:
            return hit[0]
        return None

    def check(self, url: str) -> defer.Deferred:
        """Deferred[bool]: the cached answer, else one HEAD (errors and timeouts count as no)."""
        c = self.cached(url)
        if c is not None:
            return defer.succeed(c)
        if url in self._inflight:
            d = defer.Deferred()
            self._inflight[url].addBoth(lambda r: (d.callback(r), r)[1])
            return d

        def done(code):
            ok = isinstance(code, int) and 200 <= code < 400      # a redirect still leads there
            self._cache[url] = (ok, self.clock.seconds())
            self._cache.move_to_end(url)
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
            return ok

        def failed(f):
            _log.info("HEAD {url} failed: {err}", url=url, err=f.getErrorMessage())
            return done(None)

        d = defer.maybeDeferred(self._head, url).addCallbacks(done, failed)
        self._inflight[url] = d
        d.addBoth(lambda r: (self._inflight.pop(url, None), r)[1])
        out = defer.Deferred()
        d.addBoth(lambda r: (out.callback(r), r)[1])
        return out


# --- the web resource ----------------------------------------------------------------------------

def _seg(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("path is not UTF-8") from None


class ClosePages(resource.Resource):
    """Leaf resource for /dyn/closer[.cgi|.lua]/<path> and <folder>/<name>.cgi project pages.

    The first path segment named ``closer``/``closer.cgi``/``closer.lua`` (under /dyn) or ending in
    ``.cgi``/``.lua`` is the script; the folders before it locate the template, the rest is the
    path of the file on the mirrors.
    """

    isLeaf = True

    def __init__(self, ctx, closer: Closer):
        super().__init__()
        self.ctx = ctx
        self.closer = closer

    def render_GET(self, request):
        """Text, JSON and redirects are answered here and now; an HTML page (which needs its
        template, perhaps from disk) comes back as a Deferred and is written when it fires."""
        request.setHeader(b"cache-control", NO_STORE)
        try:
            body = self._render(request)
        except (BadRequest, TemplateError) as e:
            body = _error(request, e)
        if isinstance(body, defer.Deferred):
            return self._finish_later(request, body)
        if isinstance(body, bytes) and request.code != 302:    # a redirect's body is empty
            _secure(request)
        return body

    def render_HEAD(self, request):
        """GET's headers without its body (Twisted would log a warning for every HEAD body)."""
        body = self.render_GET(request)
        if isinstance(body, bytes):
            request.setHeader(b"content-length", b"%d" % len(body))
            return b""
        return body

    def _finish_later(self, request, d: defer.Deferred):
        """Write the page `d` fires with (errors become the same answers as in render_GET, or a
        logged 500), unless the visitor has gone meanwhile (admin.web.framework.render_async's
        pattern, with the closer's own headers)."""
        gone = []
        request.notifyFinish().addErrback(lambda _f: gone.append(True))

        def write(body: bytes):
            if gone or request.finished:
                return
            _secure(request)
            request.setHeader(b"content-length", b"%d" % len(body))
            if request.method != b"HEAD":
                request.write(body)
            request.finish()

        def fail(f):
            if f.check(BadRequest, TemplateError):
                return write(_error(request, f.value))
            _log.failure("closer page {uri}", f, uri=request.uri)
            return write(_text(request, 500, "internal error\n"))

        d.addCallbacks(write, fail).addErrback(
            lambda f: _log.failure("closer writing {uri}", f, uri=request.uri))
        return server.NOT_DONE_YET

    def _render(self, request):
        segs = [_seg(s) for s in request.prepath + request.postpath]
        script = None
        for i, s in enumerate(segs):
            if s.endswith(SCRIPT_SUFFIXES) or (i == 1 and segs[0] == "dyn" and s in CLOSER_NAMES):
                script = i
                break
        if script is None or any(s in (".", "..") or s.startswith(".") for s in segs[:script]):
            return _text(request, 404, "not found\n")
        folder = tuple(segs[:script])
        name = segs[script]
        for suf in SCRIPT_SUFFIXES:
            name = name.removesuffix(suf)
        location = "/" + "/".join(segs[: script + 1])
        params = parse_params(request.args, request.uri)
        rest = segs[script + 1:]
        path = params.path if params.path is not None else clean_path("/".join(rest))

        c = self.closer
        view = c.view()
        if view is None:
            return _text(request, 503, "no mirror plan loaded yet\n")
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
                return self._download(request, view, cca2, params, path)
            if params.action == "info":
                sel = c.select(view, cca2, params.preferred)
                return _text(request, 200, c.explain(view, sel, where))
            return _text(request, 400, "unknown action (download or info)\n")

        sel = c.select(view, cca2, params.preferred)
        if params.preferred_text:
            return _text(request, 200 if sel.preferred else 503, sel.preferred)
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
            }, indent=2, sort_keys=True).encode()
            request.setHeader(b"content-type", b"application/json")
            return body
        return defer.ensureDeferred(self._page(request, sel, folder, name, location, path,
                                               in_dist))

    # -- action=download --

    def _download(self, request, view, cca2, params, path):
        c = self.closer
        fname = params.filename if params.filename is not None else path
        if not fname:
            return _text(request, 400, "action=download needs filename=<path>\n")
        if fname not in c.dist:
            return defer.ensureDeferred(self._not_in_dist(request, c.select(view, cca2), fname))
        if c.heads is None:
            sel = c.select(view, cca2, params.preferred)
            if not sel.preferred:
                return _text(request, 503, "no mirror is serving\n")
            return _redirect(request, sel.preferred + url_path(fname))
        d = defer.ensureDeferred(self._download_checked(view, cca2, params, fname))

        def ok(url):
            if url is None:
                _text(request, 503, "no mirror has this file right now\n", finish=True)
            else:
                _redirect(request, url, finish=True)

        def fail(f):
            _log.failure("closer download {path}", f, path=fname)
            _text(request, 500, "internal error\n", finish=True)

        d.addCallbacks(ok, fail)
        return server.NOT_DONE_YET

    async def _download_checked(self, view, cca2, params, fname):
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
                return u + q
        pending = [u for u, ok in zip(order, cached) if ok is None]
        if pending:
            results = await defer.gatherResults([c.heads.check(u + q) for u in pending])
            for u, ok in zip(pending, results):
                if ok:
                    return u + q
        b = c.backup_url(view)
        return b + q if b else None

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

    async def _page(self, request, sel, folder, name, location, path, in_dist) -> bytes:
        """The project's own page beside the script, else the default closer page."""
        c = self.closer
        if not in_dist:
            return await self._not_in_dist(request, sel, path, location)
        loaded = await c.templates.get(folder, name, BUILTIN_DIR / "closer.ezt")
        out = render_template(loaded, self._data(sel, location, path))
        out = collapse_slashes(out, [sel.preferred, *sel.lists["http"], *sel.lists["https"],
                                     *sel.lists["ftp"], *sel.lists["backup"]])
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return await self._wrap(out, loaded.title or f"{c.cfg.closer.project}: download mirrors")

    async def _not_in_dist(self, request, sel, path, location="/dyn/closer") -> bytes:
        """The archive page (docroot dyn/archive.html, else built in) with status 404."""
        c = self.closer
        loaded = await c.templates.get(("dyn",), "archive", BUILTIN_DIR / "archive.ezt")
        data = self._data(sel, location, path)
        if c.archive_url:
            u = esc(c.archive_url + url_path(path))
            data["lookup"] = f'It may be in our archive: <a href="{u}" rel="nofollow">{u}</a>'
        else:
            data["lookup"] = "It is not on the mirrors."
        out = render_template(loaded, data)
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return await self._wrap(out, f"{c.cfg.closer.project}: not on the mirrors")

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


def _error(request, e: Exception) -> bytes:
    """400 for input we refuse; 500 for a broken template, logged for the operator (the visitor
    gets no file path)."""
    if isinstance(e, TemplateError):
        _log.error("closer template error: {err}", err=str(e))
        return _text(request, 500, "this download page's template is broken\n")
    return _text(request, 400, f"bad request: {e}\n")


def _text(request, code: int, body: str, finish: bool = False):
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    data = body.encode("utf-8")
    if finish:
        if not request.finished:
            _secure(request)
            if request.method != b"HEAD":
                request.write(data)
            request.finish()
        return None
    return data


def _redirect(request, url: str, finish: bool = False):
    """302 with an empty body: the hot path, so nothing a browser does not use."""
    request.setResponseCode(302)
    request.setHeader(b"location", url.encode("utf-8"))
    if finish:
        if not request.finished:
            request.finish()
        return None
    return b""


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
            if p.name.startswith(".") or p.name == "dyn":
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
