"""Shared pieces of the closer tests: a plan built from plain rows, a StubTreq over the closer, and
an HTML parser that records every link with the section heading it sits under."""

from __future__ import annotations

import datetime as _dt
import random
from html.parser import HTMLParser
from urllib.parse import urlsplit

from treq.testing import StubTreq
from twisted.python.failure import Failure

from admin import closer
from admin.web.framework import SiteRoot
from dnsd.config import parse_config
from dnsd.plan import build_plan, row
from tests.webfakes import make_ctx

T0 = _dt.datetime(2026, 11, 21, 9, 0, 0)
HOUR = _dt.timedelta(hours=1)

# Serving, with the URLs each offers; de3/de4 do not serve (out of sync, disabled by probes).
SERVING_WEB = {
    "de1": "https://de1.example.org/dist/",
    "de2": "https://de2.example.net/pub/apache/",
    "at1": "https://at1.example.at/apache/",
    "fr1": "https://fr1.example.fr/mirrors/apache/",
    "us1": "https://us1.example.com/",
    "us2": "http://us2.example.com/apache/",
}
BACKUPS = {"bk1": "https://backup1.example.org/dist/", "bk2": "https://backup2.example.org/dist/"}
UNHEALTHY = {"de3": "https://de3.example.org/dist/", "de4": "https://de4.example.org/dist/"}


def standard_rows() -> list[dict]:
    r = []
    add = r.append
    add(row(id=1, ipv4="192.0.2.1", name="de1", hostname="de1.example.org", country="DE",
            https_url=SERVING_WEB["de1"], http_url="http://de1.example.org/dist/",
            last_probe_at=T0, last_ok_at=T0, last_sync_at=T0 - HOUR))
    add(row(id=2, ipv4="192.0.2.2", name="de2", hostname="de2.example.net", country="DE",
            https_url=SERVING_WEB["de2"], http_url="", last_sync_at=T0 - HOUR,
            last_probe_at=T0, last_ok_at=T0))
    add(row(id=3, ipv4="192.0.2.3", name="de3", hostname="de3.example.org", country="DE",
            https_url=UNHEALTHY["de3"], last_probe_at=T0, last_ok_at=T0,
            last_sync_at=T0 - 31 * HOUR))                                    # out of sync
    add(row(id=4, ipv4="192.0.2.4", name="de4", hostname="de4.example.org", country="DE",
            https_url=UNHEALTHY["de4"], status="disabled-by-probes",
            status_reason="3 failed probes"))
    add(row(id=5, ipv4="192.0.2.5", name="at1", hostname="at1.example.at", country="AT", https_url=SERVING_WEB["at1"]))
    add(row(id=6, ipv4="192.0.2.6", name="fr1", hostname="fr1.example.fr", country="FR",
            https_url=SERVING_WEB["fr1"], ftp_url="ftp://fr1.example.fr/mirrors/apache/"))
    add(row(id=7, ipv4="192.0.2.7", name="us1", hostname="us1.example.com", country="US", https_url=SERVING_WEB["us1"]))
    add(row(id=8, ipv4="192.0.2.8", name="us2", hostname="us2.example.com", country="US",
            http_url=SERVING_WEB["us2"]))                                     # plain http only
    add(row(id=9, ipv4="192.0.2.9", name=None, hostname="backup1.example.org", country="US", backup=True,
            https_url=BACKUPS["bk1"]))
    add(row(id=10, ipv4="192.0.2.10", name=None, hostname="backup2.example.org", country="DE", backup=True,
            https_url=BACKUPS["bk2"]))
    return r


class Holder:
    """dnsd's plan holder: `.current` is the live plan."""

    def __init__(self, plan):
        self.current = plan


def make_plan(rows, cfg):
    return build_plan({"version": 7, "mirrors": rows}, cfg, T0)


class DictGeo:
    """`.country(ip)` from a dict; the end-to-end test uses the real dnsd.geo over an mmdb."""

    def __init__(self, table=None):
        self.table = table or {}
        self.asked = []

    def country(self, ip):
        self.asked.append(ip)
        return self.table.get(ip)


def make_stub(config_text: str = "", rows=None, *, geo=None, seed: int = 1, head=None,
              run_in_thread=None):
    """(StubTreq over a root with the closer mounted, the Closer, ctx).

    run_in_thread: the context's thread runner (default: webfakes' inline one)."""
    cfg = parse_config(config_text)
    plan = make_plan(standard_rows() if rows is None else rows, cfg)
    ctx = make_ctx(None, config_text, plan=Holder(plan), geo=geo if geo is not None else DictGeo())
    if run_in_thread is not None:
        ctx.run_in_thread = run_in_thread
    root = SiteRoot(ctx)
    pages = closer.mount(root, ctx, rng=random.Random(seed), head=head)
    # the dist index refresher, as admin.makeService starts it: with ctx's inline thread runner
    # the first walk is done when startService returns
    closer.refresher(root).startService()
    return StubTreq(root), pages.closer, ctx


def fired(d):
    """The result of a Deferred that must already have fired (StubTreq runs no threads)."""
    out = []
    d.addBoth(out.append)
    assert out, "the Deferred did not fire"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def get(stub, path: str, headers=None):
    """(response, body text) for a GET on the stub; redirects are not followed."""
    resp = fired(stub.get("http://closer.test" + path, headers=headers or {},
                          allow_redirects=False))
    body = fired(resp.content()).decode("utf-8")
    return resp, body


def header(resp, name: str) -> str | None:
    v = resp.headers.getRawHeaders(name)
    return v[0] if v else None


class PageParser(HTMLParser):
    """Records links (a href, option value, form action, img src) with the id of the heading
    above them, strong texts, and the element nesting problems the parser can see."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.section = ""
        self.links: list[tuple[str, str, str]] = []      # (kind, url, section)
        self.options: list[tuple[str, str]] = []         # (value, text)
        self.forms: list[dict] = []
        self.selects: list[str] = []
        self.strong: list[tuple[str, str]] = []          # (text, section)
        self.scripts = 0
        self.event_handlers = []
        self._in_strong = None
        self._in_option = None
        self._text = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in a:
            if k.startswith("on"):
                self.event_handlers.append((tag, k))
        if tag in ("h1", "h2", "h3") and a.get("id"):
            self.section = a["id"]
        if tag == "script":
            self.scripts += 1
        if tag == "a" and "href" in a:
            self.links.append(("a", a["href"], self.section))
        if tag == "img" and "src" in a:
            self.links.append(("img", a["src"], self.section))
        if tag == "form":
            self.forms.append(a)
        if tag == "select":
            self.selects.append(a.get("name", ""))
        if tag == "option":
            self._in_option = a.get("value", "")
            self._otext = []
        if tag == "strong":
            self._in_strong = []

    def handle_endtag(self, tag):
        if tag == "strong" and self._in_strong is not None:
            self.strong.append(("".join(self._in_strong).strip(), self.section))
            self._in_strong = None
        if tag == "option" and self._in_option is not None:
            self.options.append((self._in_option, "".join(self._otext).strip()))
            self._in_option = None

    def handle_data(self, data):
        self._text.append(data)
        if self._in_strong is not None:
            self._in_strong.append(data)
        if self._in_option is not None:
            self._otext.append(data)

    @property
    def text(self) -> str:
        return "".join(self._text)

    def hrefs(self, section: str | None = None) -> list[str]:
        return [u for k, u, s in self.links if k == "a" and (section is None or s == section)]


def parse(html: str) -> PageParser:
    p = PageParser()
    p.feed(html)
    p.close()
    return p


def well_formed(url: str) -> bool:
    """An absolute mirror URL with a host and no doubled slash, quote or space in its path."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https", "ftp") or not u.netloc:
        return False
    bad = set(' "\'<>\\')
    return "//" not in u.path and not (bad & set(url))
