"""The closer keeps file work off the reactor thread: the dist index is walked by a refresher on a
worker thread and swapped in whole, templates are found, stat'ed and parsed on a worker thread,
and the JSON, preferred=true and redirect answers touch no file at all.

File access is watched by wrapping os.stat/lstat/scandir/listdir/open and io.open: with StubTreq
(no threads) the thread runner marks the calls it runs, everything else counts as the reactor's;
with a real listener the calls are told apart by the thread they come from.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_twisted
import treq
from twisted.application import service
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.web import resource
from twisted.web.server import Site

from admin import closer
from admin.closer import dist as closer_dist
from admin.closer import templates as closer_templates
from admin.web.framework import SiteRoot
from tests.closer_support import SERVING_WEB, get, header, make_stub, parse
from tests.webfakes import inline

FIX = Path(__file__).parent / "fixtures"
FILE = "httpd/httpd-2.4.66.tar.gz"
FR = SERVING_WEB["fr1"]
PACKAGE_TEMPLATES = Path(closer.__file__).resolve().parent.parent / "templates"


class MarkingRunner:
    """A thread runner for StubTreq tests: runs f inline, and knows while it does."""

    def __init__(self):
        self.depth = 0
        self.ran: list[str] = []

    def __call__(self, f, *a, **kw):
        self.ran.append(getattr(f, "__name__", repr(f)))
        self.depth += 1
        try:
            return defer.maybeDeferred(f, *a, **kw)
        finally:
            self.depth -= 1


WATCHED = [(os, "stat"), (os, "lstat"), (os, "scandir"), (os, "listdir"), (os, "open"),
           (io, "open"), (builtins, "open")]


@contextmanager
def watch_files(on_reactor):
    """Record (function, path) of every file access for which on_reactor() is true."""
    seen = []
    saved = [(mod, name, getattr(mod, name)) for mod, name in WATCHED]

    def wrap(mod, name, orig):
        def watched(*a, **kw):
            if on_reactor():
                seen.append((f"{mod.__name__}.{name}", str(a[0]) if a else ""))
            return orig(*a, **kw)
        return watched

    for mod, name, orig in saved:
        setattr(mod, name, wrap(mod, name, orig))
    try:
        yield seen
    finally:
        for mod, name, orig in saved:
            setattr(mod, name, orig)


def make_site(tmp_path: Path) -> tuple[Path, Path, str]:
    """A document root with the httpd download page and the ASF archive page, a small dist tree,
    and the [closer] section naming both."""
    doc = tmp_path / "www"
    for src, dst in [("apache-httpd-download-page-2025-12-04.ezt.md", "httpd/download.md"),
                     ("apache-closer-archive-template.ezt.html", "dyn/archive.html")]:
        (doc / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIX / src, doc / dst)
    dist = tmp_path / "dist"
    (dist / "httpd").mkdir(parents=True)
    (dist / FILE).write_bytes(b"")
    cfg = f'[closer]\ndocument_root = "{doc}"\ndist_root = "{dist}"\n'
    return doc, dist, cfg


HOT = [
    (f"/dyn/closer.cgi/{FILE}?as_json=1&cca2=de", 200),
    ("/dyn/closer/httpd/old.tgz?asjson=1&cca2=de", 200),            # not in dist: JSON says so
    ("/dyn/closer/?preferred=true&cca2=fr", 200),
    (f"/dyn/closer.lua?action=download&filename={FILE}&cca2=de", 302),
    (f"/dyn/closer?action=download&filename={FILE}&Preferred={quote(FR)}", 302),
    ("/dyn/closer/?action=info&cca2=nl", 200),
]


# --- StubTreq: the thread runner marks what it runs ----------------------------------------------

def test_json_text_and_redirect_answers_touch_no_file(tmp_path):
    _doc, _dist, cfg = make_site(tmp_path)
    runner = MarkingRunner()
    stub, c, _ctx = make_stub(cfg, run_in_thread=runner)
    assert runner.ran == ["walk_dist"] and c.dist.entries == 3      # "", httpd, httpd/<file>
    with watch_files(lambda: True) as seen:
        for url, code in HOT:
            resp, body = get(stub, url)
            assert resp.code == code, (url, body)
    assert seen == []                        # not a stat, not an open, on any thread
    assert runner.ran == ["walk_dist"]       # and nothing handed to a thread either
    resp, body = get(stub, "/dyn/closer/httpd/old.tgz?asjson=1&cca2=de")
    assert json.loads(body)["in_dist"] is False


def test_html_pages_do_their_file_work_in_the_thread_runner(tmp_path):
    _doc, _dist, cfg = make_site(tmp_path)
    runner = MarkingRunner()
    stub, _c, _ctx = make_stub(cfg, run_in_thread=runner)
    pages = [(f"/httpd/download.cgi?cca2=de&Preferred={quote(FR)}", 200),   # project page (.md)
             (f"/dyn/closer/{FILE}?cca2=de", 200),                           # built-in default
             ("/dyn/closer/httpd/old.tgz?cca2=de", 404),                     # archive page
             ("/dyn/closer?action=download&filename=httpd/old.tgz", 404)]    # archive, download
    with watch_files(lambda: runner.depth == 0) as on_reactor:
        for url, code in pages:
            resp, body = get(stub, url)
            assert resp.code == code, (url, body[:300])
            assert header(resp, "content-type").startswith("text/html")
        assert "load_page" in runner.ran
        p = parse(get(stub, f"/httpd/download.cgi?cca2=de&Preferred={quote(FR)}")[1])
    assert on_reactor == []
    assert FR + "httpd/httpd-2.4.66.tar.bz2" in p.hrefs()
    # three templates, each loaded once: the repeats came from memory
    assert runner.ran.count("load_page") == 3


def test_without_the_first_walk_nothing_is_a_404(tmp_path):
    """The refresher not started (or its first walk still running): every path is present."""
    _doc, _dist, cfg = make_site(tmp_path)
    pending = []

    def later(f, *a, **kw):
        d = defer.Deferred()
        pending.append((d, f, a))
        return d

    stub, c, _ctx = make_stub(cfg, run_in_thread=later)
    assert [f.__name__ for _d, f, _a in pending] == ["walk_dist"]
    resp, body = get(stub, "/dyn/closer/httpd/old.tgz?as_json=1&cca2=de")
    assert json.loads(body)["in_dist"] is True
    resp, _ = get(stub, "/dyn/closer?action=download&filename=httpd/old.tgz&cca2=de")
    assert resp.code == 302
    d, f, a = pending.pop()
    d.callback(f(*a))                        # the walk finishes
    assert c.dist.built_at is not None
    resp, body = get(stub, "/dyn/closer/httpd/old.tgz?as_json=1&cca2=de")
    assert json.loads(body)["in_dist"] is False
    # the 404 page waits for its template from the runner
    answers = []
    stub.get("http://closer.test/dyn/closer?action=download&filename=httpd/old.tgz",
             allow_redirects=False).addBoth(answers.append)
    assert answers == []
    d, f, a = pending.pop()
    assert f is closer_templates.load_page
    d.callback(f(*a))
    d, f, a = pending.pop()                  # then the site layout around it
    d.callback(f(*a))
    stub.flush()
    assert answers[0].code == 404 and pending == []


# --- the dist index -----------------------------------------------------------------------------

def test_walk_follows_links_like_exists_and_survives_a_loop(tmp_path):
    root = tmp_path / "dist"
    (root / "httpd" / "2.4.66").mkdir(parents=True)
    (root / "httpd" / "2.4.66" / "a.tgz").write_bytes(b"")
    (root / "httpd" / "current").symlink_to("2.4.66")              # an alias of a sibling
    (root / "httpd" / "2.4.66" / "up").symlink_to("../..")          # a loop
    (root / "httpd" / "gone.tgz").symlink_to("nowhere.tgz")         # dangling
    idx = closer_dist.DistIndex(root, clock=Clock(), run_in_thread=inline)
    idx.refresh()
    for present in ("", "httpd", "httpd/", "httpd/2.4.66/a.tgz", "httpd/current/a.tgz",
                    "httpd/current/", "httpd/2.4.66/up"):
        assert present in idx, present
    for absent in ("httpd/gone.tgz", "httpd/2.4.66/up/httpd/2.4.66/a.tgz", "httpd/a.tgz", "a"):
        assert absent not in idx, absent
    assert idx.entries == 8


def test_a_failed_walk_keeps_the_index_in_use(tmp_path):
    root = tmp_path / "dist"
    root.mkdir()
    (root / "KEYS").write_text("k")
    idx = closer_dist.DistIndex(root, clock=Clock(), run_in_thread=inline)
    idx.refresh()
    moved = tmp_path / "elsewhere"
    root.rename(moved)                                              # an unmounted share
    with capturedLogs() as events:
        d = idx.refresh()
    assert d.called and d.result is None                            # the refresher lives on
    assert "KEYS" in idx and "other" not in idx
    assert any("not refreshed" in e.get("log_format", "") for e in events)


def test_stopping_the_refresher_abandons_a_running_walk(tmp_path):
    root = tmp_path / "dist"
    (root / "a").mkdir(parents=True)
    clock = Clock()
    walks = []

    def runner(f, *a):
        d = defer.Deferred()
        walks.append((d, f, a))
        return d

    idx = closer_dist.DistIndex(root, clock=clock, interval=30, run_in_thread=runner)
    svc = idx.service()
    svc.startService()
    assert len(walks) == 1
    stopped = svc.stopService()
    assert not stopped.called                                       # waits for the walk
    d, f, a = walks[0]
    with pytest.raises(closer_dist._Stopped):
        f(*a)                                                       # the worker sees the flag
    d.errback(closer_dist._Stopped())                                    # as the thread pool would
    assert stopped.called
    clock.advance(300)
    assert len(walks) == 1                                          # no walk after the stop
    assert "anything" in idx                                        # never built: all present


def test_refresher_is_the_mounted_closers_service(tmp_path):
    _doc, dist, cfg = make_site(tmp_path)
    _stub, _c, ctx = make_stub(cfg)
    top = service.MultiService()
    root = SiteRoot(ctx)
    pages = closer.mount(root, ctx)
    svc = closer.refresher(root)
    assert list(svc) == [pages.closer.dist.service()] and list(svc)[0].name == "closer-dist"
    svc.setServiceParent(top)
    top.startService()                                              # as admin.makeService's tree
    assert "httpd/old.tgz" not in pages.closer.dist
    (dist / "httpd" / "old.tgz").write_bytes(b"")
    ctx.clock.advance(60)                                           # [closer] dist_refresh default
    assert "httpd/old.tgz" in pages.closer.dist
    top.stopService()
    # nothing to do without a closer or without a dist_root
    assert list(closer.refresher(resource.Resource())) == []
    _s, _c, ctx2 = make_stub()
    root2 = SiteRoot(ctx2)
    closer.mount(root2, ctx2)
    assert [type(s) for s in closer.refresher(root2)] == [service.Service]


def test_dist_refresh_must_be_positive():
    with pytest.raises(ValueError, match="dist_refresh"):
        make_stub("[closer]\ndist_refresh = 0\n")


# --- the template store -------------------------------------------------------------------------

def test_template_store_loads_once_for_concurrent_requests_and_rechecks_later(tmp_path):
    doc = tmp_path / "www"
    (doc / "p").mkdir(parents=True)
    page = doc / "p" / "get.html"
    page.write_text("<p>[preferred]</p>")
    clock = Clock()
    loads = []

    def runner(f, *a):
        d = defer.Deferred()
        loads.append((d, f, a))
        return d

    store = closer_templates.TemplateStore(doc, clock, runner)
    default = closer_templates.BUILTIN_DIR / "closer.ezt"
    a, b = store.get(("p",), "get", default), store.get(("p",), "get", default)
    assert len(loads) == 1 and not a.called
    d, f, args = loads.pop()
    d.callback(f(*args))
    assert a.result is b.result and a.result.path == page
    first = a.result
    assert store.get(("p",), "get", default).result is first        # from memory, no runner
    assert loads == []
    clock.advance(5)
    d2 = store.get(("p",), "get", default)
    d, f, args = loads.pop()
    d.callback(f(*args))
    assert d2.result is first                                       # same mtime: not re-parsed
    page.write_text("<p>[preferred]x</p>")
    os.utime(page, (1, first.mtime + 10))
    clock.advance(5)
    d3 = store.get(("p",), "get", default)
    d, f, args = loads.pop()
    d.callback(f(*args))
    assert d3.result is not first and d3.result.mtime == first.mtime + 10
    # a page that does not exist is the default; a broken one fails and is not kept
    d4 = store.get(("p",), "nothing", default)
    d, f, args = loads.pop()
    d.callback(f(*args))
    assert d4.result.path == default
    (doc / "p" / "bad.html").write_text("[if-any http] unclosed")
    d5 = store.get(("p",), "bad", default)
    d, f, args = loads.pop()
    with pytest.raises(closer_templates.TemplateError):
        f(*args)
    d.errback(closer_templates.TemplateError("bad.html"))
    assert isinstance(d5.result.value, closer_templates.TemplateError)
    d5.addErrback(lambda _f: None)
    assert store.cached(("p",), "bad", default) is None


def test_template_store_keeps_a_bounded_number_of_pages(tmp_path):
    store = closer_templates.TemplateStore(None, Clock(), inline, size=3)
    default = closer_templates.BUILTIN_DIR / "closer.ezt"
    for i in range(10):                                             # names from invented URLs
        store.get(("x",), f"n{i}", default)
    assert len(store._pages) == 3 and len(store._files) == 1


# --- real threads on a real listener ------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_on_a_real_listener_file_work_happens_on_worker_threads(tmp_path):
    """The reactor is the main thread here; the runner is the reactor's thread pool (the
    production default). File access to the site, the built-in and the layout templates from
    the main thread is recorded while pages, JSON and redirects are served."""
    from twisted.internet import reactor

    from admin.web.framework import WebContext
    from dnsd.config import parse_config
    from tests.closer_support import Holder, make_plan, standard_rows
    from tests.webfakes import SyncPool

    _doc, _dist, cfg_text = make_site(tmp_path)
    cfg = parse_config(cfg_text)
    ctx = WebContext(cfg=cfg, pool=SyncPool(None), reactor=reactor,
                     plan=Holder(make_plan(standard_rows(), cfg)))
    root = SiteRoot(ctx)
    pages = closer.mount(root, ctx)
    svc = closer.refresher(root)
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}"
    roots = (str(tmp_path), str(closer_templates.BUILTIN_DIR), str(PACKAGE_TEMPLATES))
    main = threading.main_thread()
    off_reactor = []

    def on_reactor():
        return threading.current_thread() is main

    try:
        with watch_files(on_reactor) as seen:
            svc.startService()
            await pages.closer.dist.refresh()                       # the index is built
            for url, code in [*HOT, (f"/httpd/download.cgi?cca2=de&Preferred={quote(FR)}", 200),
                              (f"/dyn/closer/{FILE}?cca2=de", 200),
                              ("/dyn/closer/httpd/old.tgz?cca2=de", 404)]:
                resp = await treq.get(base + url, allow_redirects=False)
                body = await resp.text()
                assert resp.code == code, (url, body[:300])
            with watch_files(lambda: threading.current_thread() is not main) as off_reactor:
                resp = await treq.get(f"{base}/dyn/closer/{FILE}?cca2=fr")
                assert resp.code == 200 and FR in await resp.text()
        on_main = [(fn, p) for fn, p in seen if p.startswith(roots)]
        assert on_main == [], on_main
        assert "httpd/old.tgz" not in pages.closer.dist and FILE in pages.closer.dist
    finally:
        await svc.stopService()
        await port.stopListening()
    # the layout was read once, on a worker thread (on_main is empty), and jinja never stats it
    # again: auto_reload is off, so a cached page costs no file access on any thread
    assert ctx.jinja.auto_reload is False
    assert not [p for _fn, p in off_reactor if p.startswith(str(PACKAGE_TEMPLATES))]
