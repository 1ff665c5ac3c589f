"""Every Apache template fixture rendered by the closer, checked with an HTML parser: the preferred
mirror and the lists where the original put them, links well-formed in both link styles, hostile
input escaped or refused.

The fixtures sit in a document root the way the ASF laid them out: dyn/closer.html and
dyn/archive.html, and project pages (<folder>/download.md) answered as <folder>/download.cgi.
Markdown pages go through markdown first and EZT second, as the ASF site build did.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.closer_support import BACKUPS, SERVING_WEB, get, header, make_stub, parse, well_formed

FIX = Path(__file__).parent / "fixtures"
FR = SERVING_WEB["fr1"]
FTP = "ftp://fr1.example.fr/mirrors/apache/"
FILE = "httpd/httpd-2.4.66.tar.gz"


@pytest.fixture
def site(tmp_path):
    doc = tmp_path / "www"
    for src, dst in [
        ("apache-closer-default-template.ezt.html", "dyn/closer.html"),
        ("apache-closer-archive-template.ezt.html", "dyn/archive.html"),
        ("apache-httpd-download-page-2021-06-24.ezt.md", "httpd/download.md"),
        ("apache-httpd-download-page-2025-12-04.ezt.md", "httpd2025/download.md"),
        ("apache-libapreq-download-page-2021-06-24.ezt.md", "apreq/download.md"),
        ("apache-closer-default-template.ezt.md", "mdsite/closer.md"),
    ]:
        (doc / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIX / src, doc / dst)
    dist = tmp_path / "dist"
    (dist / "httpd").mkdir(parents=True)
    (dist / FILE).write_bytes(b"x")
    cfg = (f'[closer]\ndocument_root = "{doc}"\ndist_root = "{dist}"\n'
           f'archive_url = "https://archive.example.org/dist/"\n')
    stub, _c, _ctx = make_stub(cfg)
    return stub


def lists(stub, cca2="de", extra=""):
    import json
    _r, body = get(stub, f"/dyn/closer/?as_json=1&cca2={cca2}{extra}")
    return json.loads(body)


def page(stub, path):
    resp, body = get(stub, path)
    assert resp.code == 200, body[:500]
    assert header(resp, "content-type").startswith("text/html")
    return parse(body), body


def mirror_hrefs(p, section=None):
    bases = tuple(SERVING_WEB.values()) + tuple(BACKUPS.values()) + (FTP,)
    return [u for u in p.hrefs(section) if u.startswith(bases)]


def no_leftovers(body):
    for directive in ("[preferred]", "[path_info]", "[if-any", "[for ", "[end]", "[http]",
                      "[location]", "%5Bpreferred%5D"):
        assert directive not in body, directive


def check_default_closer(p, body, d, path):
    """The original's layout: the preferred link first (before any heading), then an HTTP, an
    FTP and a Backup Sites section, each mirror linked to <mirror><path>."""
    no_leftovers(body)
    pref = d["preferred"] + path
    assert p.hrefs("")[:1] == [pref] or pref in p.hrefs("")
    assert p.strong[0] == (pref, "")
    assert mirror_hrefs(p, "http") == [u + path for u in d["http"]]
    assert mirror_hrefs(p, "ftp") == [u + path for u in d["ftp"]]
    assert mirror_hrefs(p, "backup") == [u + path for u in d["backup"]]
    assert all(well_formed(u) for u in mirror_hrefs(p))
    # the strong texts under each section show the same URLs as the links
    assert [t for t, s in p.strong if s == "http"] == [u + path for u in d["http"]]


def test_default_closer_html_template(site):
    d = lists(site)
    p, body = page(site, f"/dyn/closer.cgi/{FILE}?cca2=de&Preferred={quote(d['preferred'])}")
    check_default_closer(p, body, d, FILE)
    assert "[HashAlgorithm]" in p.text          # a bracket that is not EZT stays as it was
    assert "Apache Download Mirrors" not in body   # the html include has no front matter


def test_default_closer_markdown_template(site):
    d = lists(site, "fr")
    p, body = page(site, f"/mdsite/closer.cgi/{FILE}?cca2=fr&Preferred={quote(FR)}")
    check_default_closer(p, body, {**d, "preferred": FR}, FILE)
    assert "<title>Apache Download Mirrors · " in body          # the markdown Title: header
    assert "{#http}" not in body


def test_archive_template_for_a_path_not_in_dist(site):
    resp, body = get(site, "/dyn/closer.cgi/httpd/httpd-2.2.34.tar.gz?cca2=de")
    assert resp.code == 404
    p = parse(body)
    no_leftovers(body)
    assert "on the mirrors" in " ".join(p.text.split())
    assert "https://archive.example.org/dist/httpd/httpd-2.2.34.tar.gz" in p.hrefs()
    # hostile and missing: the archive link and text are escaped
    resp, body = get(site, "/dyn/closer.cgi/%22%3E%3Cscript%3Ealert(1)%3C/script%3E?cca2=de")
    assert resp.code == 404
    p = parse(body)
    assert p.scripts == 0 and "<script>" not in body
    assert all(well_formed(u) for u in p.hrefs() if u.startswith("https://archive."))


def _project_checks(p, body, pref, location):
    no_leftovers(body)
    links = [u for u in p.hrefs() if u.startswith(pref)]
    assert links, "no [preferred] link rendered"
    assert all(well_formed(u) for u in links)
    assert p.forms and p.forms[0]["action"] == location and p.forms[0]["method"] == "get"
    assert p.selects == ["Preferred"]
    return links


def test_httpd_2021_page_with_the_old_link_style(site):
    d = lists(site, "de", f"&Preferred={quote(FR)}")
    p, body = page(site, f"/httpd/download.cgi?cca2=de&Preferred={quote(FR)}")
    links = _project_checks(p, body, FR, "/httpd/download.cgi")
    # '[preferred]/httpd/...' with a preferred ending in '/' gives one slash
    assert FR + "httpd/httpd-2.4.48.tar.bz2" in links
    assert FR + "httpd/binaries/win32/README.html" in links
    assert FR + "httpd/" in links
    # the mirror section names the preferred mirror in bold
    assert (FR, "mirror") in p.strong
    # the select offers http, then ftp, then the backups marked as such, in the original's order
    values = [v for v, _t in p.options]
    assert values == d["http"] + d["ftp"] + d["backup"]
    assert [t for v, t in p.options if v in d["backup"]] == [u + " (backup)" for u in d["backup"]]
    assert all(well_formed(v) for v in values)


def test_httpd_2025_page_with_the_new_link_style_gives_the_same_urls(site):
    p21, _ = page(site, f"/httpd/download.cgi?cca2=de&Preferred={quote(FR)}")
    p25, body = page(site, f"/httpd2025/download.cgi?cca2=de&Preferred={quote(FR)}")
    no_leftovers(body)
    links = [u for u in p25.hrefs() if u.startswith(FR)]
    assert FR + "httpd/httpd-2.4.66.tar.bz2" in links and FR + "httpd/CHANGES_2.4" in links
    assert all(well_formed(u) for u in links)
    # both styles produce the same URL for the files both pages link
    for f in ("httpd/CHANGES_2.4", "httpd/binaries/win32/README.html", "httpd/patches/", "httpd/"):
        assert FR + f in p21.hrefs() and FR + f in links, f


def test_libapreq_page(site):
    d = lists(site, "us")
    p, body = page(site, "/apreq/download.cgi?cca2=us")
    pref = [v for v in d["http"] + d["backup"] if any(u.startswith(v) for u in p.hrefs())]
    assert len(pref) == 1, pref
    links = _project_checks(p, body, pref[0], "/apreq/download.cgi")
    assert pref[0] + "httpd/libapreq/libapreq2-2.16.tar.gz" in links
    assert pref[0] + "httpd/libapreq/" in links
    assert (pref[0], "mirror") in p.strong or (pref[0], "Mirror") in p.strong


def test_preferred_from_the_select_form_comes_back(site):
    """Submitting the page's own form (GET location?Preferred=<option>) keeps that mirror."""
    p, _ = page(site, "/httpd/download.cgi?cca2=de")
    for value, _text in p.options:
        p2, _ = page(site, f"{p.forms[0]['action']}?cca2=de&Preferred={quote(value)}")
        assert (value, "mirror") in p2.strong


@pytest.mark.parametrize("url", [
    "/httpd/download.cgi?cca2=de&Preferred=" + quote('"><script>alert(1)</script>'),
    "/httpd/download.cgi?cca2=de&Preferred=" + quote("javascript:alert(1)"),
    "/dyn/closer.cgi/httpd/?cca2=de&path=" + quote("httpd/<img src=x onerror=alert(1)>"),
    "/mdsite/closer.cgi/" + quote("httpd/\"'><svg onload=alert(1)>") + "?cca2=fr",
])
def test_hostile_input_in_templates_is_escaped(site, url):
    resp, body = get(site, url)
    assert resp.code in (200, 404)
    p = parse(body)
    assert p.scripts == 0 and p.event_handlers == []
    assert "javascript:" not in body and "<svg" not in body and "<img src=x" not in body
    assert all(well_formed(u) for u in mirror_hrefs(p))


@pytest.mark.parametrize("url", ["/httpd/download.cgi?cca2=%3Cb%3E", "/dyn/closer.cgi/a/../../b"])
def test_hostile_input_in_templates_is_refused(site, url):
    resp, body = get(site, url)
    assert resp.code == 400 and "<b>" not in body


def test_missing_project_page_uses_the_default_template(site):
    p, _body = page(site, f"/httpd/nosuchpage.cgi/{FILE}?cca2=de")
    # falls back to the built-in default (mirrordns' own closer page)
    assert p.strong and p.strong[0][0].endswith(FILE)
    assert all(well_formed(u) for u in mirror_hrefs(p))


def test_dot_folders_are_not_served(site):
    resp, _ = get(site, "/dyn/.hidden/x.cgi")
    assert resp.code == 404


def test_builtin_templates_render_without_a_document_root():
    stub, _c, _ctx = make_stub()
    p, body = page(stub, f"/dyn/closer/{FILE}?cca2=de")
    no_leftovers(body)
    d = lists(stub)
    assert mirror_hrefs(p, "https") == [u + FILE for u in d["https"]]
    assert mirror_hrefs(p, "http") == [u + FILE for u in d["http"]]
    assert mirror_hrefs(p, "backup") == [u + FILE for u in d["backup"]]
    assert p.forms[0]["action"] == f"/dyn/closer/{FILE}"


def test_a_broken_project_template_is_a_logged_500(tmp_path):
    from twisted.logger import capturedLogs
    doc = tmp_path / "www"
    (doc / "proj").mkdir(parents=True)
    (doc / "proj" / "download.html").write_text("<p>[if-any http] unclosed</p>")
    stub, _c, _ctx = make_stub(f'[closer]\ndocument_root = "{doc}"\n')
    with capturedLogs() as events:
        resp, body = get(stub, "/proj/download.cgi?cca2=de")
    assert resp.code == 500 and str(doc) not in body
    assert any("download.html" in e.get("err", "") for e in events)


def test_top_level_page_and_template_changes_are_picked_up(tmp_path):
    import os
    doc = tmp_path / "www"
    doc.mkdir()
    (doc / "download.html").write_text('<p><a href="[preferred]KEYS">KEYS</a></p>')
    stub, _c, ctx = make_stub(f'[closer]\ndocument_root = "{doc}"\n')
    p, _ = page(stub, "/download.cgi?cca2=de&Preferred=" + quote(FR))
    assert mirror_hrefs(p) == [FR + "KEYS"]
    (doc / "download.html").write_text('<p><a href="[preferred]/README">README</a></p>')
    st = (doc / "download.html").stat()
    os.utime(doc / "download.html", (st.st_atime, st.st_mtime + 10))
    p, _ = page(stub, "/download.cgi?cca2=de&Preferred=" + quote(FR))
    assert mirror_hrefs(p) == [FR + "KEYS"]           # checked at most every few seconds
    ctx.clock.advance(6)
    p, _ = page(stub, "/download.cgi?cca2=de&Preferred=" + quote(FR))
    assert mirror_hrefs(p) == [FR + "README"]


def test_a_whole_page_template_is_sent_as_it_is(tmp_path):
    doc = tmp_path / "www"
    (doc / "proj").mkdir(parents=True)
    (doc / "proj" / "get.html").write_text(
        "<!doctype html><html><head><title>Own</title></head><body>"
        "<a href=\"[preferred][path_info]\">[preferred][path_info]</a></body></html>")
    stub, _c, _ctx = make_stub(f'[closer]\ndocument_root = "{doc}"\n')
    p, body = page(stub, f"/proj/get.cgi/{FILE}?cca2=de&Preferred={quote(FR)}")
    assert body.startswith("<!doctype html><html><head><title>Own</title>")
    assert "topbar" not in body and p.hrefs() == [FR + FILE]


def test_the_demo_document_root_serves_the_httpd_page():
    """demo/mirrordns.toml's [closer]: what `make run` shows at /httpd/download.cgi."""
    import random

    from treq.testing import StubTreq

    from admin import closer
    from admin.web.framework import SiteRoot, WebContext
    from dnsd.config import load_config
    from tests.closer_support import Holder, make_plan, standard_rows
    from tests.webfakes import SyncPool, inline, make_clock

    cfg = load_config(str(Path(__file__).parent.parent / "demo" / "mirrordns.toml"))
    clock = make_clock()
    ctx = WebContext(cfg=cfg, pool=SyncPool(None), reactor=clock, clock=clock, run_in_thread=inline,
                     plan=Holder(make_plan(standard_rows(), cfg)))
    root = SiteRoot(ctx)
    closer.mount(root, ctx, rng=random.Random(1))
    closer.refresher(root).startService()
    stub = StubTreq(root)
    p, body = page(stub, f"/httpd/download.cgi?cca2=fr&Preferred={quote(FR)}")
    no_leftovers(body)
    assert FR + "httpd/httpd-2.4.66.tar.gz" in p.hrefs()
    # checksums, signatures and KEYS from the origin ([origin]), never the mirror
    assert {"https://downloads.apache.org/httpd/KEYS",
            "https://downloads.apache.org/httpd/httpd-2.4.66.tar.gz.asc",
            "https://downloads.apache.org/httpd/httpd-2.4.66.tar.gz.sha512"} <= set(p.hrefs())
    assert not any(h.startswith(FR) and h.endswith((".asc", ".sha512", "KEYS")) for h in p.hrefs())
    resp, _ = get(stub, "/dyn/closer/httpd/httpd-2.4.66.tar.gz?cca2=fr")
    assert resp.code == 200
    resp, _ = get(stub, "/dyn/closer/httpd/httpd-2.2.0.tar.gz?cca2=fr")
    assert resp.code == 404


def test_the_preferred_mirrors_provider_logo_and_link(tmp_path):
    """[if-any logo] shows the preferred mirror's provider logo, linked to [link] (from the table)."""
    from tests.closer_support import standard_rows

    doc = tmp_path / "www"
    (doc / "dyn").mkdir(parents=True)
    shutil.copyfile(FIX / "apache-closer-default-template.ezt.html", doc / "dyn/closer.html")
    rows = [r if r["name"] != "fr1" else r.replace(provider_url="https://provider.example.fr/",
                                                   provider_logo="https://provider.example.fr/l.png")
            for r in standard_rows()]
    stub, _c, _ctx = make_stub(f'[closer]\ndocument_root = "{doc}"\n', rows)
    p, _body = page(stub, f"/dyn/closer.cgi/{FILE}?cca2=fr&Preferred={quote(FR)}")
    assert ("a", "https://provider.example.fr/", "") in p.links
    assert ("img", "https://provider.example.fr/l.png", "") in p.links
    p, body = page(stub, f"/dyn/closer.cgi/{FILE}?cca2=us")      # a mirror without a logo
    assert not [u for k, u, _s in p.links if k == "img"]
