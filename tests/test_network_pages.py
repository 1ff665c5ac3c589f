"""The network at a glance over HTTP (treq StubTreq on the whole web tree): the world map on the
public list and the admin dashboard, the country pages, the public status page and the admin's
network overview; and the pure parts (the map of a plan, the history queries) on their own.

The map is read as XML (the inline SVG is well-formed), so each country's element, colour class,
hatching and link are checked one by one, never by counting strings.
"""

from __future__ import annotations

import datetime as _dt
import re
import xml.etree.ElementTree as ET

import pytest
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from admin import store
from admin.web import build_root, network
from dnsd.models import mirror_health, mirrors, probe_results, probe_rollups
from dnsd.plan import build_plan, load_rows, row
from dnsd.validation import Rules
from probes import history
from tests.webfakes import T0, add_user, login, make_ctx

BASE = "http://mirrors.test"
_n = [0]


def add(conn, country, host, *, synced=_dt.timedelta(hours=1), **kw):
    """A mirror with a pinned (documentation) address that passed a probe at T0."""
    _n[0] += 1
    m = store.add_mirror(conn, actor="test", mail=None, country=country, hostname=host,
                         http_url=f"http://{host}/", ipv4=f"192.0.2.{_n[0] % 250 + 1}",
                         rules=Rules(allow_private=True), **kw)
    conn.execute(mirror_health.insert().values(mirror_id=m.id, last_probe_at=T0, last_ok_at=T0,
                                               last_sync_at=T0 - synced, ipv4_up=True))
    return m


def seed(engine) -> dict[str, int]:
    """DE two serving (its own tier at min_candidates 2); FR and SG one each (they borrow); US one
    serving with a hostile provider and name, one stale; GB one disabled by an admin with a
    reason the public must not read."""
    with engine.begin() as conn:
        ids = {}
        for cc, host, kw in [
            ("DE", "de1.example.net", {"provider_name": "Uni Berlin"}),
            ("DE", "de2.example.net", {}),
            ("FR", "fr1.example.net", {"https_url": "https://fr1.example.net/"}),
            ("US", "us1.example.net", {"provider_name": "<script>alert(1)</script>"}),
            ("US", "us2.example.net", {"synced": _dt.timedelta(days=3)}),
            ("GB", "gb1.example.net", {}),
            ("SG", "sg1.example.net", {}),
        ]:
            ids[host.split(".")[0]] = add(conn, cc, host, **kw).id
        store.disable(conn, "gb1", "test", "maintainer owes us money", None)
        # the table refuses such a name (dnsd.validation); the pages must not trust it anyway
        conn.execute(mirrors.update().where(mirrors.c.id == ids["us1"]).values(
            name="<i>us1"))
    return ids


def svg_of(html: str) -> ET.Element:
    start = html.index('<svg class="wm"')
    return ET.fromstring(html[start:html.index("</svg>", start) + len("</svg>")])


def countries_of(svg: ET.Element) -> dict[str, tuple[ET.Element, ET.Element]]:
    """{code: (the <a>, its <path> or <circle>)}."""
    out = {}
    for a in svg.iter("a"):
        shape = a.find("path")
        if shape is None:
            shape = a.find("circle")
        out[a.get("data-cc")] = (a, shape)
    return out


@pytest.fixture
def injected(request, sqlite_engine):
    request.cls.engine = sqlite_engine


@pytest.mark.usefixtures("injected")
class TestMapAndCountryPages(SynchronousTestCase):
    config = ""

    def setUp(self):
        self.ids = seed(self.engine)
        self.ctx = make_ctx(self.engine, self.config)
        self.stub = StubTreq(build_root(self.ctx))

    def get(self, path):
        r = self.successResultOf(self.stub.get(BASE + path))
        return r.code, self.successResultOf(r.content()).decode()

    def test_public_map_has_every_country_coloured_and_linked(self):
        code, html = self.get("/")
        assert code == 200
        svg = svg_of(html)
        shapes = countries_of(svg)
        o = network.outlines()
        # one path per outline, and a dot only for the small country that has mirrors (SG)
        paths = {cc for cc, (_a, s) in shapes.items() if s.tag == "path"}
        dots = {cc for cc, (_a, s) in shapes.items() if s.tag == "circle"}
        assert paths == set(o.shapes) and dots == {"SG"}
        assert len(svg.findall(".//path")) == len(o.shapes)
        for cc, (a, _s) in shapes.items():
            assert a.get("href") == f"/country/{cc.lower()}"
        de_a, de = shapes["DE"]
        assert de.get("class") == "n2" and de.get("fill") is None       # its own tier
        assert de_a.find("title").text == "Germany: 2 serving mirrors"
        fr_a, fr = shapes["FR"]
        assert fr.get("class") == "n1 borrows hatch" and fr.get("fill") == "url(#wm-h-n1)"
        assert fr_a.find("title").text == ("France: 1 serving mirror; answered from its region, "
                                           "Western Europe")
        gb_a, gb = shapes["GB"]
        assert gb.get("class") == "n0 borrows hatch"
        assert "0 serving mirrors of 1" in gb_a.find("title").text
        assert shapes["AT"][1].get("class") == "n0 borrows hatch"        # no mirror at all
        assert shapes["SG"][1].get("class") == "n1 dot borrows"
        us_title = shapes["US"][0].find("title").text
        assert us_title.endswith("answered from mirrors anywhere in the world")
        # every hatch the paths use is defined
        defined = {p.get("id") for p in svg.iter("pattern")}
        used = {s.get("fill")[5:-1] for _a, s in shapes.values() if s.get("fill")}
        assert used and used <= defined

    def test_admin_dashboard_map_links_to_the_country_list(self):
        add_user(self.engine, "alice")
        login(self, self.stub, "alice", base=BASE)
        r = self.successResultOf(self.stub.get(BASE + "/admin/"))
        html = self.successResultOf(r.content()).decode()
        shapes = countries_of(svg_of(html))
        assert shapes["DE"][0].get("href") == "/admin/?country=DE"
        assert shapes["FR"][1].get("class") == "n1 borrows hatch"
        assert "<b>4</b> countries have a serving mirror" in html       # DE FR US SG
        assert "<b>4</b> have mirrors but fewer than 2 serving" in html  # FR US GB SG

    def test_country_page_lists_mirrors_and_their_state(self):
        code, html = self.get("/country/de")
        assert code == 200
        assert "Mirrors in Germany" in html and "2 of 2 mirrors serving" in html
        assert "are answered from these mirrors" in html
        assert html.count('<tr class="serving">') == 2
        assert self.get("/country/DE")[1] == html                        # either case

    def test_country_page_of_a_borrower_and_of_a_country_without_mirrors(self):
        _c, fr = self.get("/country/fr")
        assert "fewer than the 2 a country needs" in fr
        assert "answered from its region, Western Europe (3 mirrors)" in fr
        _c, at = self.get("/country/at")
        assert "No mirror in Austria yet" in at
        assert "answered from its region, Western Europe (3 mirrors)" in at
        assert 'href="/apply"' in at

    def test_country_page_shows_states_but_not_what_admins_typed(self):
        _c, gb = self.get("/country/gb")
        assert "not serving" in gb and "disabled by admin" in gb
        assert "owes us money" not in gb
        _c, us = self.get("/country/us")
        assert "out of sync 3 days" in us                                 # the plan's reason
        assert "<script>alert(1)" not in us and "&lt;script&gt;alert(1)&lt;/script&gt;" in us
        assert "<i>us1" not in us and "&lt;i&gt;us1" in us

    def test_unknown_country_is_a_404(self):
        for path in ("/country/zz", "/country/eu", "/country/deu", "/country/", "/country/d1"):
            code, html = self.get(path)
            assert code == 404, path
        assert "There is no such country." in self.get("/country/zz")[1]

    def test_map_is_rendered_once_for_what_it_shows(self):
        calls = []
        run = self.ctx.run_in_thread

        def counting(f, *a, **kw):
            calls.append(getattr(f, "__name__", ""))
            return run(f, *a, **kw)

        self.ctx.run_in_thread = counting

        def plan_now():
            with self.engine.connect() as conn:
                return build_plan(load_rows(conn), self.ctx.cfg, T0)

        plan = plan_now()
        pages = network.of(self.ctx)
        first = self.successResultOf(pages.map_for(plan))
        assert self.successResultOf(pages.map_for(plan)) is first     # same plan: no work at all
        assert calls.count("build") == 1
        admin = self.successResultOf(pages.map_for(plan, "admin"))     # other links, other map
        assert admin != first and 'href="/admin/?country=DE"' in admin
        # another plan showing the same: the views are worked out again, the SVG is not
        assert self.successResultOf(pages.map_for(plan_now())) is first
        with self.engine.begin() as conn:
            store.disable(conn, "de2", "test", "moving", None)
        changed = self.successResultOf(pages.map_for(plan_now()))
        assert changed != first
        de = countries_of(svg_of(str(changed)))["DE"][1]
        assert de.get("class") == "n1 borrows hatch"


def probe(conn, mid, at, ok=True, sync_age=3600, vantage=""):
    conn.execute(probe_results.insert().values(
        mirror_id=mid, at=at, vantage=vantage, url="http://x/TIME", ok=ok,
        sync_age=sync_age if ok else None, error_class="" if ok else "timeout",
        total_ms=50.0 if ok else None))


@pytest.mark.usefixtures("injected")
class TestStatusPage(SynchronousTestCase):
    def setUp(self):
        self.ids = seed(self.engine)
        self.ctx = make_ctx(self.engine, "[probes]\nenabled = false\n")
        self.stub = StubTreq(build_root(self.ctx))

    def get(self, path):
        r = self.successResultOf(self.stub.get(BASE + path))
        return r.code, self.successResultOf(r.content()).decode()

    def rows(self, html):
        body = html.split("<tbody>")[1].split("</tbody>")[0]
        return {tr.split("<b>")[1].split("</b>")[0]: tr for tr in body.split("<tr>")[1:]}

    def test_every_serving_mirror_with_its_sync_age(self):
        code, html = self.get("/status")
        assert code == 200
        rows = self.rows(html)
        assert set(rows) == {"de1", "de2", "fr1", "&lt;i&gt;us1", "sg1"}  # serving ones
        assert '<span class="age fresh">1 h</span>' in rows["de1"]
        assert "2 more mirrors are listed but not serving" in html       # us2 stale, gb1
        assert "Probes are off in this network" in html

    def test_history_bar_of_recent_probes(self):
        de1, fr1 = self.ids["de1"], self.ids["fr1"]
        with self.engine.begin() as conn:
            probe(conn, de1, T0 - _dt.timedelta(minutes=15), sync_age=3600)
            probe(conn, de1, T0 - _dt.timedelta(minutes=10), ok=False)
            probe(conn, de1, T0 - _dt.timedelta(minutes=5), sync_age=30 * 3600)
            probe(conn, de1, T0 - _dt.timedelta(days=3))                 # outside the window
            for i in range(30):                                          # more than a bar holds
                probe(conn, fr1, T0 - _dt.timedelta(minutes=5 * (30 - i)), sync_age=8 * 3600)
        rows = self.rows(self.get("/status")[1])
        cells = re.findall(r'<i class="([a-z]+)" title="([^"]*)"></i>', rows["de1"])
        assert cells == [("fresh", "08:45 fresh, 60 min"), ("fail", "08:50 failed: timeout"),
                         ("old", "08:55 old, 30 h")]
        assert len(re.findall('<i class="oldish"', rows["fr1"])) == network.HISTORY_PROBES
        assert "no probes yet" in rows["sg1"]

    def test_rendered_once_per_half_minute(self):
        r = self.successResultOf(self.stub.get(BASE + "/status"))
        assert r.headers.getRawHeaders(b"cache-control") == [b"public, max-age=30"]
        with self.engine.begin() as conn:
            probe(conn, self.ids["sg1"], T0 - _dt.timedelta(minutes=1))
        assert "no probes yet" in self.rows(self.get("/status")[1])["sg1"]   # as rendered
        self.ctx.clock.advance(network.STATUS_TTL)
        assert "no probes yet" not in self.rows(self.get("/status")[1])["sg1"]
        with self.engine.begin() as conn:                                   # a new version
            store.disable(conn, "sg1", "test", "moving", None)
        assert "sg1" not in self.rows(self.get("/status")[1])


@pytest.mark.usefixtures("injected")
class TestAdminNetwork(SynchronousTestCase):
    def setUp(self):
        self.ids = seed(self.engine)
        self.ctx = make_ctx(self.engine, "")
        self.stub = StubTreq(build_root(self.ctx))
        add_user(self.engine, "hugo", role="helper")
        login(self, self.stub, "hugo", base=BASE)

    def page(self):
        r = self.successResultOf(self.stub.get(BASE + "/admin/network"))
        assert r.code == 200
        return self.successResultOf(r.content()).decode()

    def test_thin_countries(self):
        html = self.page()
        body = html.split('<table class="thin">')[1].split("</table>")[0]
        listed = [tr.split('?country=')[1][:2] for tr in body.split("<tr>")[2:]]
        assert listed == ["GB", "US", "FR", "SG"]    # fewest serving, most listed, then by name
        assert "DE" not in listed
        gb = body.split("?country=GB")[1].split("</tr>")[0]
        assert "its continent, Europe" in gb                # Northern Europe has none
        assert "nothing: no mirror serves over IPv6" in gb  # no mirror has an IPv6 address
        assert countries_of(svg_of(html))["DE"][0].get("href") == "/admin/?country=DE"

    def test_thirty_days_of_health_and_past_days_read_once(self):
        de1, fr1 = self.ids["de1"], self.ids["fr1"]
        old = (T0 - _dt.timedelta(days=20)).replace(hour=3, minute=0)
        with self.engine.begin() as conn:
            probe(conn, de1, T0 - _dt.timedelta(hours=2))
            probe(conn, de1, T0 - _dt.timedelta(hours=1), ok=False)
            probe(conn, fr1, T0 - _dt.timedelta(hours=1))
            conn.execute(probe_rollups.insert().values(
                mirror_id=de1, period="hour", start=old, probes=12, passes=3))
        html = self.page()
        assert "2026-11-21: 66.7% up (2/3 probes)" in html
        assert "2026-11-01: 25.0% up (3/12 probes)" in html
        assert "2026-11-21: 1 up, 1 part, 0 down" in html
        assert "2026-11-01: 0 up, 0 part, 1 down" in html
        assert "2026-11-02: no probes" in html
        with self.engine.begin() as conn:
            conn.execute(probe_rollups.delete())
            probe(conn, fr1, T0 - _dt.timedelta(minutes=30))
        html = self.page()
        assert "2026-11-01: 25.0% up (3/12 probes)" in html               # a past day: kept
        assert "2026-11-21: 66.7% up (2/3 probes)" in html                 # today: for a minute
        self.ctx.clock.advance(network.TODAY_TTL)
        html = self.page()
        assert "2026-11-01: 25.0% up (3/12 probes)" in html
        assert "2026-11-21: 75.0% up (3/4 probes)" in html                 # then read again


# --- the pure parts -------------------------------------------------------------------------


def test_colour_classes():
    assert [network.colour_class(n) for n in (0, 1, 2, 3, 4, 5, 9, 10, 500)] == [
        "n0", "n1", "n2", "n3", "n3", "n5", "n5", "n10", "n10"]


def test_world_map_follows_min_candidates():
    rows = {"version": 3, "mirrors": [row(id=1, name="fr1", country="FR", ipv4="192.0.2.1"),
                                      row(id=2, name="de1", country="DE", ipv4="192.0.2.2",
                                          status="disabled-by-admin")]}
    for minc, borrows in ((1, False), (2, True)):
        cfg = make_ctx(None, f"[dns]\nmin_candidates = {minc}\n").cfg
        m = network.world_map(build_plan(rows, cfg, T0))
        fr = m.countries["FR"]
        assert (fr.serving, fr.listed, fr.borrows) == (1, 1, borrows)
        assert m.countries["DE"].answered.tier == ("subregion" if minc == 1 else "world")
        assert m.min_candidates == minc


def test_history_queries_on_every_database(engine):
    ids = seed(engine)
    de1, fr1 = ids["de1"], ids["fr1"]
    with engine.begin() as conn:
        for i in range(5):
            probe(conn, de1, T0 - _dt.timedelta(minutes=10 * i), ok=i != 1)
        probe(conn, fr1, T0 - _dt.timedelta(days=1, hours=1))
        conn.execute(probe_rollups.insert().values(
            mirror_id=fr1, period="hour", start=T0 - _dt.timedelta(days=1, hours=5), probes=10,
            passes=7))
    with engine.connect() as conn:
        recent = history.recent_by_mirror(conn, T0 - _dt.timedelta(hours=1), 3)
        day = history.network_day(conn, (T0 - _dt.timedelta(days=1)).date())
        today = history.network_day(conn, T0.date())
    assert set(recent) == {de1}
    assert [p.at for p in recent[de1]] == [T0 - _dt.timedelta(minutes=20),
                                           T0 - _dt.timedelta(minutes=10), T0]
    assert [p.ok for p in recent[de1]] == [True, False, True]
    assert day.per_mirror == ((fr1, 11, 8),) and (day.probes, day.passes) == (11, 8)
    assert today.per_mirror == ((de1, 5, 4),)


def test_status_rows_are_the_plans_serving_mirrors_by_country(sqlite_engine):
    """The status page lists the plan's serving mirrors (never a status restated), by country
    name, then name."""
    seed(sqlite_engine)
    ctx = make_ctx(sqlite_engine, "")
    with sqlite_engine.connect() as conn:
        plan = build_plan(load_rows(conn), ctx.cfg, T0)
    rows = network.status_rows(plan, {}, ctx.cfg)
    assert [r.label for r in rows] == ["fr1", "de1", "de2", "sg1", "<i>us1"]
    assert {r.label for r in rows} == {e.label for e in plan.serving}
    assert all(r.cells == () and r.last_probe is None for r in rows)
