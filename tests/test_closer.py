"""The closer's behaviour over HTTP (StubTreq, no sockets): parameters, location and the
X-Forwarded-For rule, the download redirect's health guarantees, fallbacks and the JSON fields."""

from __future__ import annotations

import json
import random
from collections import Counter
from urllib.parse import quote

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from admin.closer import choice as closer_choice
from admin.closer import dist as closer_dist
from admin.closer import heads as closer_heads
from admin.closer import params as closer_params
from dnsd.config import parse_config
from dnsd.plan import row
from tests.closer_support import (
    BACKUPS,
    HOUR,
    SERVING_WEB,
    T0,
    UNHEALTHY,
    DictGeo,
    get,
    header,
    make_stub,
    parse,
    standard_rows,
    well_formed,
)
from tests.webfakes import inline

WESTERN_EUROPE = {SERVING_WEB[n] for n in ("de1", "de2", "at1", "fr1")}
ALL_SERVING = set(SERVING_WEB.values()) | {"ftp://fr1.example.fr/mirrors/apache/"}


def js(stub, path, headers=None):
    resp, body = get(stub, path, headers)
    assert resp.code == 200, body
    assert header(resp, "content-type") == "application/json"
    return json.loads(body)


# --- the three script names and the data model --------------------------------------------------

@pytest.mark.parametrize("script", ["/dyn/closer", "/dyn/closer.cgi", "/dyn/closer.lua"])
def test_every_script_name_answers_with_the_path(script):
    stub, _c, _ctx = make_stub()
    d = js(stub, f"{script}/httpd/httpd-2.4.66.tar.gz?cca2=de&as_json=1")
    assert d["path_info"] == "httpd/httpd-2.4.66.tar.gz"
    assert d["preferred"] in {SERVING_WEB["de1"], SERVING_WEB["de2"]}


def test_json_fields_and_lists():
    stub, _c, _ctx = make_stub()
    d = js(stub, "/dyn/closer/httpd/?cca2=DE&asjson=1")
    # closer.lua's fields, mirrors.cgi's `location`, and https, rsync, origin
    assert set(d) == {"path_info", "preferred", "http", "https", "ftp", "backup", "cca2", "in_dist",
                      "in_attic", "location", "rsync", "origin"}
    assert d["cca2"] == "de" and d["in_dist"] is True and d["path_info"] == "httpd/"
    # http: every serving mirror's web URL (https when it has one), nearest first
    assert d["http"][:2] == [SERVING_WEB["de1"], SERVING_WEB["de2"]]
    assert set(d["http"]) == set(SERVING_WEB.values())
    assert set(d["https"]) == {u for u in SERVING_WEB.values() if u.startswith("https:")}
    assert d["ftp"] == ["ftp://fr1.example.fr/mirrors/apache/"]
    assert set(d["backup"]) == set(BACKUPS.values())
    for lst in ("http", "https", "ftp", "backup"):
        assert all(u.endswith("/") for u in d[lst])
    # neither unhealthy mirror is offered anywhere
    assert not set(UNHEALTHY.values()) & set(d["http"] + d["https"] + d["backup"])
    assert d["preferred"] in d["https"]


def test_without_http_allowed_plain_http_mirrors_are_not_offered():
    stub, _c, _ctx = make_stub("[closer]\nallow_http = false\n")
    d = js(stub, "/dyn/closer/?cca2=us&as_json=1")
    assert SERVING_WEB["us2"] not in d["http"]
    assert all(u.startswith("https://") for u in d["http"])


# --- parameters ----------------------------------------------------------------------------------

def test_preferred_is_accepted_only_when_listed():
    stub, _c, _ctx = make_stub()
    fr = SERVING_WEB["fr1"]
    for _ in range(5):
        assert js(stub, f"/dyn/closer/x?cca2=us&as_json=1&Preferred={quote(fr)}")["preferred"] == fr
    # lower-case spelling, and without the trailing slash (the original added it)
    assert js(stub, f"/dyn/closer/x?cca2=us&as_json=1&preferred={quote(fr[:-1])}")["preferred"] == fr
    # an unlisted, unhealthy or hostile URL is ignored, not echoed
    for bad in (UNHEALTHY["de3"], "https://evil.example/", "javascript:alert(1)//",
                '"><script>alert(1)</script>'):
        resp, body = get(stub, f"/dyn/closer/x?cca2=us&Preferred={quote(bad)}")
        assert resp.code == 200
        assert bad not in body and "evil.example" not in body and "<script>" not in body
        d = js(stub, f"/dyn/closer/x?cca2=us&as_json=1&Preferred={quote(bad)}")
        assert d["preferred"] in {SERVING_WEB["us1"], SERVING_WEB["us2"]}     # the picker's own


def test_preferred_true_is_the_bare_url_as_text():
    stub, _c, _ctx = make_stub()
    resp, body = get(stub, "/dyn/closer/?preferred=true&cca2=fr")
    assert resp.code == 200
    assert header(resp, "content-type").startswith("text/plain")
    assert body in WESTERN_EUROPE
    resp, body = get(stub, f"/dyn/closer/?preferred=true&cca2=fr&Preferred={quote(SERVING_WEB['us1'])}")
    # preferred=true and Preferred=<url> share a name in the original; a listed URL still wins
    assert body in WESTERN_EUROPE | {SERVING_WEB["us1"]}


def test_cca2_chooses_as_if_from_that_country():
    stub, _c, _ctx = make_stub(geo=DictGeo({"127.0.0.1": "US"}))
    assert js(stub, "/dyn/closer/?as_json=1")["cca2"] == "us"
    d = js(stub, "/dyn/closer/?as_json=1&cca2=fr")
    assert d["cca2"] == "fr" and d["preferred"] in WESTERN_EUROPE
    assert js(stub, "/dyn/closer/?as_json=1&cca2=uk")["cca2"] == "gb"     # the ASF spelling


@pytest.mark.parametrize("bad", ["zz", "deu", "d", "<script>", "de%00", "1e", "d%C3%A9"])
def test_hostile_or_unknown_cca2_is_refused(bad):
    stub, _c, _ctx = make_stub()
    resp, body = get(stub, f"/dyn/closer/?cca2={bad}")
    assert resp.code == 400
    assert header(resp, "content-type").startswith("text/plain")
    assert "<" not in body


def test_path_parameter_overrides_the_url_path():
    stub, _c, _ctx = make_stub()
    d = js(stub, "/dyn/closer/ignored/file?as_json=1&cca2=de&path=/httpd/KEYS")
    assert d["path_info"] == "httpd/KEYS"


def test_as_json_zero_means_html():
    stub, _c, _ctx = make_stub()
    resp, _body = get(stub, "/dyn/closer/?cca2=de&as_json=0")
    assert header(resp, "content-type").startswith("text/html")
    resp, _ = get(stub, "/dyn/closer/?cca2=de&asjson")                 # bare flag counts
    assert header(resp, "content-type") == "application/json"


def test_download_redirects_to_the_preferred_mirror_file():
    stub, _c, _ctx = make_stub()
    resp, _ = get(stub, "/dyn/closer.lua?action=download&filename=httpd/httpd-2.4.66.tar.gz&cca2=de")
    assert resp.code == 302
    loc = header(resp, "location")
    assert loc in {u + "httpd/httpd-2.4.66.tar.gz" for u in (SERVING_WEB["de1"], SERVING_WEB["de2"])}
    # leading slash in filename: still one slash; the path after the script works too
    resp, _ = get(stub, "/dyn/closer/httpd/README.txt?action=download&cca2=at")
    assert well_formed(header(resp, "location"))
    assert header(resp, "location").endswith("/httpd/README.txt")
    resp, _ = get(stub, f"/dyn/closer?action=download&filename=/httpd/README.txt&Preferred="
                        f"{quote(SERVING_WEB['us1'])}")
    assert header(resp, "location") == SERVING_WEB["us1"] + "httpd/README.txt"


@pytest.mark.parametrize("fname", ["../../etc/passwd", "httpd/../../x", "a%0d%0aSet-Cookie:%20x=1",
                                   "a%00b", "a%5Cb"])
def test_download_refuses_hostile_filenames(fname):
    stub, _c, _ctx = make_stub()
    resp, _body = get(stub, f"/dyn/closer?action=download&filename={fname}&cca2=de")
    assert resp.code == 400
    assert header(resp, "location") is None and header(resp, "set-cookie") is None


def test_download_needs_a_file():
    stub, _c, _ctx = make_stub()
    resp, _ = get(stub, "/dyn/closer?action=download&cca2=de")
    assert resp.code == 400


def test_download_quotes_odd_but_legal_names():
    stub, _c, _ctx = make_stub()
    resp, _ = get(stub, "/dyn/closer?action=download&cca2=de&filename=" + quote('a b/"x"<y>.tgz'))
    loc = header(resp, "location")
    assert resp.code == 302 and well_formed(loc) and loc.endswith("/a%20b/%22x%22%3Cy%3E.tgz")


def test_unknown_action_is_refused():
    stub, _c, _ctx = make_stub()
    resp, _ = get(stub, "/dyn/closer?action=catlog")
    assert resp.code == 400


def test_info_explains_the_choice():
    stub, _c, _ctx = make_stub(geo=DictGeo({"127.0.0.1": "NL"}))
    resp, body = get(stub, "/dyn/closer/?action=info")
    assert resp.code == 200 and header(resp, "content-type").startswith("text/plain")
    assert "127.0.0.1 -> NL" in body
    assert "location: NL (Western Europe, EU)" in body
    assert "tier: subregion Western Europe" in body
    lines = body.splitlines()
    # every mirror is listed once, with a weight share or the reason it is out
    for name in ("de1", "de2", "at1", "fr1"):
        assert any(ln.split()[:1] == [name] and "25.0%" in ln for ln in lines), name
    assert any(ln.split()[:1] == ["de3"] and "out of sync 31 h" in ln for ln in lines)
    assert any(ln.split()[:1] == ["de4"] and "disabled by probes" in ln for ln in lines)
    assert any(ln.split()[:1] == ["us2"] and "no https URL" in ln for ln in lines)
    assert any("backup1.example.org" in ln and "backup mirror" in ln for ln in lines)


# --- hostile input in the path ---------------------------------------------------------------------

@pytest.mark.parametrize("path", ["%3Cscript%3Ealert(1)%3C/script%3E", "x%22%20onmouseover=%22alert(1)",
                                  "a'b/c%3E%3Cimg%20src=x%20onerror=alert(1)%3E"])
def test_hostile_path_is_escaped_in_pages(path):
    stub, _c, _ctx = make_stub()
    resp, body = get(stub, f"/dyn/closer/{path}?cca2=de")
    assert resp.code == 200
    page = parse(body)
    assert page.scripts == 0 and page.event_handlers == []
    assert "<script>" not in body and "<img src=x" not in body
    mirror_links = [u for u in page.hrefs() if u.startswith(("http:", "https:", "ftp:"))]
    assert mirror_links and all(well_formed(u) for u in mirror_links)


@pytest.mark.parametrize("path", ["..%2F..%2Fetc%2Fpasswd", "a/%2E%2E/%2E%2E/b", "a%00b"])
def test_path_escaping_the_tree_is_refused(path):
    stub, _c, _ctx = make_stub()
    resp, _ = get(stub, f"/dyn/closer/{path}?cca2=de&as_json=1")
    assert resp.code == 400


# --- location: the connecting address, X-Forwarded-For only from trusted proxies ------------------

def test_location_comes_from_the_connecting_address():
    geo = DictGeo({"127.0.0.1": "FR", "198.51.100.7": "US"})
    stub, _c, _ctx = make_stub(geo=geo)
    d = js(stub, "/dyn/closer/?as_json=1", headers={"X-Forwarded-For": "198.51.100.7"})
    assert d["cca2"] == "fr"                       # the header is ignored: no trusted proxies
    assert geo.asked == ["127.0.0.1"]


def test_forwarded_for_is_believed_from_a_trusted_proxy():
    geo = DictGeo({"127.0.0.1": "FR", "198.51.100.7": "US", "10.1.2.3": "DE"})
    stub, _c, _ctx = make_stub('[admin]\ntrusted_proxies = ["127.0.0.1", "10.0.0.0/8"]\n', geo=geo)
    d = js(stub, "/dyn/closer/?as_json=1", headers={"X-Forwarded-For": "198.51.100.7"})
    assert d["cca2"] == "us"
    # a chain: the nearest untrusted hop counts; a spoofed first entry does not
    d = js(stub, "/dyn/closer/?as_json=1",
           headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.7, 10.1.2.3"})
    assert d["cca2"] == "us"
    # proxies that add the port, IPv4 and IPv6
    d = js(stub, "/dyn/closer/?as_json=1", headers={"X-Forwarded-For": "198.51.100.7:4711"})
    assert d["cca2"] == "us"
    geo.table["2001:db8:de::1"] = "DE"
    d = js(stub, "/dyn/closer/?as_json=1", headers={"X-Forwarded-For": "[2001:db8:de::1]:4711"})
    assert d["cca2"] == "de"
    d = js(stub, "/dyn/closer/?as_json=1", headers={"X-Forwarded-For": "2001:db8:de::1"})
    assert d["cca2"] == "de"
    # garbage from a trusted proxy, or no header at all: an unknown visitor (never the proxy's
    # own address, which geolocates to FR here)
    d = js(stub, "/dyn/closer/?as_json=1", headers={"X-Forwarded-For": "<script>"})
    assert d["cca2"] == ""
    assert js(stub, "/dyn/closer/?as_json=1")["cca2"] == ""


def test_forwarded_for_from_an_untrusted_peer_is_ignored():
    geo = DictGeo({"127.0.0.1": "FR", "198.51.100.7": "US"})
    stub, _c, _ctx = make_stub('[admin]\ntrusted_proxies = ["10.0.0.0/8"]\n', geo=geo)
    d = js(stub, "/dyn/closer/?as_json=1", headers={"X-Forwarded-For": "198.51.100.7"})
    assert d["cca2"] == "fr"


# --- choosing: health, fallbacks, weights ----------------------------------------------------------

def test_download_never_sends_to_an_unhealthy_mirror():
    stub, _c, _ctx = make_stub(seed=7)
    seen = Counter()
    for cc in ("de", "at", "nl", "us", "jp", "br"):
        for _ in range(60):
            resp, _ = get(stub, f"/dyn/closer?action=download&filename=f.tgz&cca2={cc}")
            assert resp.code == 302
            seen[header(resp, "location")[: -len("f.tgz")]] += 1
    assert not set(UNHEALTHY.values()) & set(seen)
    assert set(seen) <= set(SERVING_WEB.values())
    # the unhealthy mirror's URL as Preferred is not listed, so it is ignored
    for _ in range(30):
        resp, _ = get(stub, "/dyn/closer?action=download&filename=f.tgz&cca2=de&Preferred="
                            + quote(UNHEALTHY["de3"]))
        assert not header(resp, "location").startswith(UNHEALTHY["de3"])


def test_a_country_without_healthy_mirrors_gets_its_region():
    # NL has no mirror; DE's healthy ones, AT and FR are its sub-region (Western Europe)
    stub, _c, _ctx = make_stub(seed=3)
    got = {js(stub, "/dyn/closer/?as_json=1&cca2=nl")["preferred"] for _ in range(80)}
    assert got == WESTERN_EUROPE
    # a country whose only mirrors are unhealthy: same (all DE mirrors down but de1)
    rows = [r for r in standard_rows() if r["name"] != "de2"]
    stub, _c, _ctx = make_stub(rows=rows, seed=3)
    got = {js(stub, "/dyn/closer/?as_json=1&cca2=de")["preferred"] for _ in range(80)}
    assert got == WESTERN_EUROPE - {SERVING_WEB["de2"]}


def test_no_healthy_mirror_anywhere_falls_back_to_backups():
    rows = [r if r["backup"] else r.replace(status="disabled-by-admin") for r in standard_rows()]
    stub, _c, _ctx = make_stub(rows=rows, seed=5)
    got = set()
    for _ in range(40):
        resp, _ = get(stub, "/dyn/closer?action=download&filename=f.tgz&cca2=de")
        got.add(header(resp, "location"))
    assert got == {u + "f.tgz" for u in BACKUPS.values()}
    resp, body = get(stub, "/dyn/closer/?action=info&cca2=de")
    assert "tier: backup" in body


def test_no_mirror_at_all_is_a_503_not_a_broken_link():
    rows = [r.replace(status="retired") for r in standard_rows()]
    stub, _c, _ctx = make_stub(rows=rows)
    resp, _ = get(stub, "/dyn/closer?action=download&filename=f.tgz")
    assert resp.code == 503 and header(resp, "location") is None
    resp, _body = get(stub, "/dyn/closer/?preferred=true")
    assert resp.code == 503


def test_nearest_tier_first_then_https():
    # US: us1 (https, and http by default) and us2 (http only). Only one US mirror has https, but
    # two have a web URL: the US tier holds, so US visitors stay in the US instead of crossing
    # the ocean for https; us1 is given by its https URL.
    stub, _c, _ctx = make_stub(seed=11)
    got = {js(stub, "/dyn/closer/?as_json=1&cca2=us")["preferred"] for _ in range(60)}
    assert got == {SERVING_WEB["us1"], SERVING_WEB["us2"]}
    # DE: de1 and de2 both have https, so the https tier is as near as the http one: https wins
    got = {js(stub, "/dyn/closer/?as_json=1&cca2=de")["preferred"] for _ in range(60)}
    assert got == {SERVING_WEB["de1"], SERVING_WEB["de2"]}
    # without plain http, US visitors need the https mirrors of the world tier
    stub, _c, _ctx = make_stub("[closer]\nallow_http = false\n", seed=11)
    got = {js(stub, "/dyn/closer/?as_json=1&cca2=us")["preferred"] for _ in range(60)}
    assert got and all(u.startswith("https://") for u in got) and len(got) > 2
    # only http mirrors left: http is used when allowed, backups otherwise
    rows = [r for r in standard_rows() if r["name"] in ("us2",) or r["backup"]]
    stub, _c, _ctx = make_stub(rows=rows)
    assert js(stub, "/dyn/closer/?as_json=1&cca2=us")["preferred"] == SERVING_WEB["us2"]
    stub, _c, _ctx = make_stub("[closer]\nallow_http = false\n", rows=rows)
    assert js(stub, "/dyn/closer/?as_json=1&cca2=us")["preferred"] in set(BACKUPS.values())


def test_weights_count():
    rows = [
        row(id=1, name="de1", hostname="a.example", country="DE", https_url="https://a.example/",
            ipv4="192.0.2.1",
            weight=3.0),
        row(id=2, name="de2", hostname="b.example", country="DE", https_url="https://b.example/",
            ipv4="192.0.2.2",
            weight=1.0),
    ]
    stub, _c, _ctx = make_stub(rows=rows, seed=42)
    n = Counter(js(stub, "/dyn/closer/?as_json=1&cca2=de")["preferred"] for _ in range(400))
    share = n["https://a.example/"] / 400
    assert 0.65 < share < 0.85, share           # 0.75 expected; the original chose uniformly


def test_a_new_plan_is_used_at_once():
    stub, _c, ctx = make_stub()
    assert js(stub, "/dyn/closer/?as_json=1&cca2=de")["preferred"] in {SERVING_WEB["de1"],
                                                                      SERVING_WEB["de2"]}
    from tests.closer_support import make_plan
    only_fr = [r for r in standard_rows() if r["name"] == "fr1"]
    ctx.plan.current = make_plan(only_fr, ctx.cfg)
    assert js(stub, "/dyn/closer/?as_json=1&cca2=de")["preferred"] == SERVING_WEB["fr1"]


def test_hot_paths_touch_no_database():
    """The JSON, text and redirect answers come from the plan: a pool that fails on use."""
    class NoPool:
        def run(self, thd):
            raise AssertionError("the closer touched the database")
        run_readonly = run

    stub, _c, ctx = make_stub()
    ctx.pool = NoPool()
    for p in ("/dyn/closer/x?as_json=1", "/dyn/closer/x?preferred=true",
              "/dyn/closer?action=download&filename=x", "/dyn/closer/x", "/dyn/closer/x?action=info"):
        resp, _ = get(stub, p)
        assert resp.code in (200, 302), p


def test_without_a_plan_the_closer_says_so():
    stub, _c, ctx = make_stub()
    ctx.plan.current = None
    resp, _ = get(stub, "/dyn/closer?action=download&filename=x")
    assert resp.code == 503


# --- not in the distribution -----------------------------------------------------------------------

def test_not_in_dist_gets_the_archive_page_and_404(tmp_path):
    dist = tmp_path / "dist"
    (dist / "httpd").mkdir(parents=True)
    (dist / "httpd" / "httpd-2.4.66.tar.gz").write_bytes(b"x")
    cfg = f'[closer]\ndist_root = "{dist}"\narchive_url = "https://archive.example.org/dist"\n'
    stub, _c, _ctx = make_stub(cfg)
    assert js(stub, "/dyn/closer/httpd/httpd-2.4.66.tar.gz?as_json=1&cca2=de")["in_dist"] is True
    assert js(stub, "/dyn/closer/httpd/?as_json=1&cca2=de")["in_dist"] is True
    assert js(stub, "/dyn/closer/httpd/httpd-2.2.0.tar.gz?as_json=1&cca2=de")["in_dist"] is False
    resp, body = get(stub, "/dyn/closer/httpd/httpd-2.4.66.tar.gz?cca2=de")
    assert resp.code == 200
    resp, body = get(stub, "/dyn/closer/httpd/httpd-2.2.0.tar.gz?cca2=de")
    assert resp.code == 404
    page = parse(body)
    assert "not on the mirrors" in page.text
    assert "https://archive.example.org/dist/httpd/httpd-2.2.0.tar.gz" in page.hrefs()
    # a download of a file that is not there is not sent to a mirror
    resp, _ = get(stub, "/dyn/closer?action=download&filename=httpd/httpd-2.2.0.tar.gz&cca2=de")
    assert resp.code == 404 and header(resp, "location") is None
    # hostile and missing together: escaped in the archive page too
    resp, body = get(stub, "/dyn/closer/%3Cscript%3Ex%3C/script%3E?cca2=de")
    assert resp.code == 404 and "<script>" not in body and parse(body).scripts == 0


# --- the optional HEAD check ------------------------------------------------------------------------

class FakeHead:
    """HEAD answers by URL prefix; counts the calls. Fires at once (StubTreq runs no threads)."""

    def __init__(self, codes):
        self.codes = codes
        self.calls = Counter()

    def __call__(self, url):
        self.calls[url] += 1
        for prefix, code in self.codes.items():
            if url.startswith(prefix):
                if isinstance(code, Exception):
                    return defer.fail(code)
                return defer.succeed(code)
        return defer.succeed(404)


def test_head_check_only_sends_to_a_mirror_that_has_the_file():
    head = FakeHead({SERVING_WEB["de1"]: 200, SERVING_WEB["de2"]: 404,
                     SERVING_WEB["at1"]: ConnectionRefusedError(), SERVING_WEB["fr1"]: 404})
    stub, _c, ctx = make_stub("[closer]\nhead_check = true\nhead_check_ttl = 120\n", head=head)
    for _ in range(30):
        resp, _ = get(stub, "/dyn/closer?action=download&filename=httpd/new.tgz&cca2=nl")
        assert resp.code == 302
        assert header(resp, "location") == SERVING_WEB["de1"] + "httpd/new.tgz"
    # each mirror was asked once: the answers are cached
    assert max(head.calls.values()) == 1
    ctx.clock.advance(121)
    get(stub, "/dyn/closer?action=download&filename=httpd/new.tgz&cca2=nl")
    assert max(head.calls.values()) == 2


def test_head_check_falls_back_to_a_backup():
    head = FakeHead({})                                # nobody has it
    stub, _c, _ctx = make_stub("[closer]\nhead_check = true\n", head=head)
    resp, _ = get(stub, "/dyn/closer?action=download&filename=httpd/new.tgz&cca2=de")
    assert resp.code == 302
    assert header(resp, "location") in {u + "httpd/new.tgz" for u in BACKUPS.values()}


def test_head_cache_shares_one_request_and_expires():
    clock = Clock()
    pending = []

    def head(url):
        d = defer.Deferred()
        pending.append(d)
        return d

    hc = closer_heads.HeadCache(clock, ttl=60, timeout=1, head=head)
    a, b = hc.check("https://m/x"), hc.check("https://m/x")
    assert len(pending) == 1 and not a.called
    pending[0].callback(200)
    assert a.result is True and b.result is True
    assert hc.cached("https://m/x") is True
    clock.advance(61)
    assert hc.cached("https://m/x") is None


# --- units -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,want", [("", ""), ("/", ""), ("/a//b/", "a/b/"), ("a/b", "a/b"),
                                      ("//x", "x")])
def test_clean_path(raw, want):
    assert closer_params.clean_path(raw) == want


@pytest.mark.parametrize("raw", ["..", "a/../b", "./a", "a\\b", "a\nb", "x" * 2000])
def test_clean_path_refuses(raw):
    with pytest.raises(closer_params.BadRequest):
        closer_params.clean_path(raw)


def test_dist_index_picks_up_a_new_file_after_the_interval(tmp_path):
    clock = Clock()
    idx = closer_dist.DistIndex(tmp_path, clock=clock, run_in_thread=inline, interval=60)
    svc = idx.service()
    svc.startService()                       # the first walk, at once
    assert "a.txt" not in idx and "" in idx
    (tmp_path / "a.txt").write_text("x")
    clock.advance(59)
    assert "a.txt" not in idx                # the index in use until the next walk
    clock.advance(1)
    assert "a.txt" in idx and idx.built_at == 60
    (tmp_path / "a.txt").unlink()
    clock.advance(60)
    assert "a.txt" not in idx
    svc.stopService()
    (tmp_path / "b.txt").write_text("x")
    clock.advance(600)
    assert "b.txt" not in idx                # stopped: no more walks
    # no dist_root: everything is present, and the service has nothing to do
    none = closer_dist.DistIndex(None, clock=clock, run_in_thread=inline)
    assert "anything" in none
    none.service().startService()
    assert "anything" in none


def test_closer_picks_with_a_seeded_rng_reproducibly():
    cfg = parse_config("")
    from tests.closer_support import Holder, make_plan
    plan = make_plan(standard_rows(), cfg)
    a = closer_choice.Closer(cfg, Holder(plan), clock=Clock(), rng=random.Random(9))
    b = closer_choice.Closer(cfg, Holder(plan), clock=Clock(), rng=random.Random(9))
    va, vb = a.view(), b.view()
    assert [a.select(va, "NL").preferred for _ in range(20)] == \
           [b.select(vb, "NL").preferred for _ in range(20)]


def test_stale_mirror_is_out_while_fresh_one_serves():
    # freshness comes from the plan: a sync age over [dns] max_sync_age is not serving
    rows = [row(id=1, name="de1", hostname="a.example", country="DE", https_url="https://a.example/",
            ipv4="192.0.2.1",
                last_probe_at=T0, last_ok_at=T0, last_sync_at=T0 - 2 * HOUR),
            row(id=2, name="de2", hostname="b.example", country="DE", https_url="https://b.example/",
            ipv4="192.0.2.2",
                last_probe_at=T0, last_ok_at=T0, last_sync_at=T0 - 30 * HOUR)]
    stub, _c, _ctx = make_stub(rows=rows)
    for _ in range(20):
        resp, _ = get(stub, "/dyn/closer?action=download&filename=f&cca2=de")
        assert header(resp, "location") == "https://a.example/f"


def test_head_requests_get_the_headers_only():
    stub, _c, _ctx = make_stub()
    from tests.closer_support import fired
    resp = fired(stub.head("http://closer.test/dyn/closer?action=download&filename=f&cca2=de",
                           allow_redirects=False))
    assert resp.code == 302 and header(resp, "location").endswith("/f")
    resp = fired(stub.head("http://closer.test/dyn/closer/x?cca2=de"))
    assert resp.code == 200 and fired(resp.content()) == b""
    assert int(header(resp, "content-length")) > 100


def test_headers_pages_get_the_security_headers_and_nobody_caches():
    stub, _c, _ctx = make_stub()
    for p in ("/dyn/closer/x?cca2=de", "/dyn/closer/x?cca2=de&as_json=1",
              "/dyn/closer/x?cca2=de&preferred=true", "/dyn/closer/x?cca2=zz"):
        resp, _ = get(stub, p)
        assert header(resp, "x-content-type-options") == "nosniff", p
        assert "default-src 'none'" in header(resp, "content-security-policy"), p
        assert header(resp, "cache-control") == "no-store", p
    resp, body = get(stub, "/dyn/closer?action=download&filename=f&cca2=de")
    assert resp.code == 302 and body == "" and header(resp, "cache-control") == "no-store"
