"""Project download pages: EZT templates (.html, .ezt, or .md turned into HTML first) found in
[closer] document_root, compiled on a worker thread and served from memory.

Every template file is found through admin.web.paths.contained: the folder and name come from
the URL, so they must be plain names, and the file must resolve inside the document root.
"""

from __future__ import annotations

import html
import io
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import ezt
from twisted.internet import defer
from twisted.python.failure import Failure

from admin.web.paths import contained

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
TEMPLATE_SUFFIXES = (".html", ".ezt", ".md")

# The variables of the original, plus the archive page's [lookup], the origin's base URL and
# the link to report a problem with the preferred mirror.
SCALARS = ("preferred", "path_info", "location", "country", "cca2", "project", "logo", "link",
           "lookup", "origin", "report")
LISTS = ("http", "https", "ftp", "rsync", "backup")
# EZT's own commands; [include]/[insertfile] are left out on purpose (a template must not read
# files outside the document root).
EZT_COMMANDS = ("if-any", "if-index", "is", "for", "define", "format", "else", "end")


class TemplateError(Exception):
    """A project template EZT cannot parse or render (the operator's to fix: 500, logged)."""


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
    """docroot/folder/name.{html,ezt,md}, the first that exists inside the document root (links
    resolved); None without a docroot. Blocking: for a worker thread."""
    if docroot is None:
        return None
    for suffix in TEMPLATE_SUFFIXES:
        p = contained(docroot, (*folder, f"{name}{suffix}"))
        if p is not None and p.is_file():
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


def page_exists(docroot: Path | None, folder: tuple[str, ...], name: str) -> bool:
    """Is `/<folder>/<name>.cgi` a download page? The folder must exist in the document root
    (then the page is `<name>.html`/`.ezt`/`.md` there, else the default closer page, as
    closer.cgi rendered its default for any name.cgi of a folder); at the top level the page
    itself must. Blocking: for a worker thread."""
    if docroot is None:
        return False
    if not folder:
        return find_template(docroot, (), name) is not None
    p = contained(docroot, folder)
    return p is not None and p.is_dir()


class PageIndex:
    """Which project pages exist, found at request time (a page or folder added after start is
    served at once): a name not known to exist is looked up on a worker thread (`look`), and
    one found is then known for `check_every` seconds, after which the next request looks
    again, so a removed page is gone within that time. What is not there is not remembered (it
    may be there the next moment); the names kept are bounded, since URLs are anyone's."""

    def __init__(self, docroot: Path | None, clock, run_in_thread, check_every: float = 5.0,
                 size: int = 4096):
        self.docroot, self.clock, self.run_in_thread = docroot, clock, run_in_thread
        self.check_every, self.size = check_every, size
        self._found: OrderedDict[tuple, float] = OrderedDict()

    def known(self, folder: tuple[str, ...], name: str) -> bool:
        at = self._found.get((folder, name))
        return at is not None and self.clock.seconds() - at < self.check_every

    def look(self, folder: tuple[str, ...], name: str) -> defer.Deferred:
        """Deferred[bool], from the file system (on a worker thread)."""
        key = (folder, name)

        def seen(ok):
            if ok:
                self._found[key] = self.clock.seconds()
                self._found.move_to_end(key)
                while len(self._found) > self.size:
                    self._found.popitem(last=False)
            else:
                self._found.pop(key, None)
            return ok

        d = defer.maybeDeferred(self.run_in_thread, page_exists, self.docroot, folder, name)
        return d.addCallback(seen)


def render_template(loaded: LoadedTemplate, data: dict) -> str:
    buf = io.StringIO()
    try:
        loaded.template.generate(buf, data)
    except ezt.EZTException as e:
        raise TemplateError(str(e)) from None
    return buf.getvalue()


def esc(s: str) -> str:
    return html.escape(s, quote=True)
