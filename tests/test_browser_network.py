"""The network at a glance in headless Debian Chromium (playwright; never `playwright install`).

The whole process runs as operators run it (`twistd -n -y twistd.tac`) on a SQLite file holding
the demo's 88 php.net mirrors and an hour or two of probe history. A visitor sees the world map
with every country drawn, clicks Germany and lands on its page, and reads the status page with
its history bars; an admin sees the map on the dashboard, clicks a country into the filtered
list, and opens the network overview. Screenshots go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import datetime as _dt
import importlib.util

import pytest
from playwright.sync_api import expect

from admin import store
from admin.demo import demo_entries, load_demo
from admin.passwords import hash_password
from admin.web import network
from dnsd import countries
from dnsd.config import load_config
from dnsd.db import make_engine, upgrade
from dnsd.models import mirror_health, mirrors, probe_results, utcnow
from dnsd.plan import build_plan, load_rows
from tests.browser_support import ARTIFACTS, ROOT, screenshot, twistd
from tests.helpers import free_port

PW = "browser-test-password"


def _seed(engine, now) -> None:
    with engine.begin() as conn:
        load_demo(conn, demo_entries())
        store.add_user(conn, "alice", hash_password(PW), "admin", email="alice@example.org")
        ids = list(conn.execute(mirrors.select().with_only_columns(mirrors.c.id)).scalars())
        rows, health = [], []
        for k, mid in enumerate(ids):
            for i in range(24):
                ok = (k + i) % 11 != 0
                rows.append({"mirror_id": mid, "at": now - _dt.timedelta(minutes=5 * (24 - i)),
                             "url": "http://x/TIME", "vantage": "", "ok": ok,
                             "sync_age": (k * 1700 + i * 600) % (30 * 3600) if ok else None,
                             "error_class": "" if ok else "timeout", "total_ms": 80.0})
            health.append({"mirror_id": mid, "last_probe_at": now, "last_ok_at": now,
                           "last_sync_at": now - _dt.timedelta(seconds=(k * 1700) % (20 * 3600)),
                           "ipv4_up": True, "ipv6_up": True})
        conn.execute(probe_results.insert(), rows)
        conn.execute(mirror_health.insert(), health)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("network")
    dns_port, web_port = free_port(), free_port()
    cfg = d / "mirrordns.toml"
    cfg.write_text(f"""
[database]
url = "sqlite:///{d}/mirrors.sqlite"
[dns]
zone = "mirrors.example.org"
zone_file = "{ROOT}/zones/mirrors.example.org.zone"
listen = ["127.0.0.1:{dns_port}"]
poll_interval = 0.2
[admin]
listen = "127.0.0.1:{web_port}"
base_url = "http://127.0.0.1:{web_port}"
[probes]
enabled = false
allow_private = true
[mail]
smtp = "127.0.0.1:{free_port()}"
""")
    engine = make_engine(f"sqlite:///{d}/mirrors.sqlite")
    upgrade(engine)
    _seed(engine, utcnow())
    base = f"http://127.0.0.1:{web_port}"
    try:
        with twistd(cfg, f"{base}/status", d / "twistd.log"):
            yield {"base": base, "engine": engine, "cfg": load_config(str(cfg))}
    finally:
        engine.dispose()


def _projection():
    """The map's projection, from the script that drew the outlines."""
    spec = importlib.util.spec_from_file_location("make_world_map",
                                                  ROOT / "scripts" / "make-world-map.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.project


def click_country(page, cc: str) -> None:
    """Click where a person would: on the country's point (dnsd.countries: its capital), not the
    middle of its outline's box (France's holds French Guiana and the Atlantic between)."""
    c = countries.get(cc)
    x, y = _projection()(c.lon, c.lat)
    o = network.outlines()
    box = page.locator("svg.wm").bounding_box()
    page.mouse.click(box["x"] + x * box["width"] / o.width, box["y"] + y * box["height"] / o.height)


def _plan(stack):
    with stack["engine"].connect() as conn:
        return build_plan(load_rows(conn), stack["cfg"], utcnow())


def test_visitor_sees_the_map_and_clicks_a_country(stack, page):
    base = stack["base"]
    world = network.world_map(_plan(stack))
    page.goto(f"{base}/")
    svg = page.locator("svg.wm")
    expect(svg).to_be_visible()
    box = svg.bounding_box()
    assert box["width"] > 1000 and box["height"] > 400          # drawn at the page's width
    countries = page.locator("svg.wm a.wm-c")
    expect(countries).to_have_count(len(world.shapes))
    assert len(world.shapes) > 175                               # every outline, and dots
    de = world.countries["DE"]
    expect(page.locator('svg.wm a[data-cc="DE"] path')).to_have_class(
        de.cls + (" borrows hatch" if de.borrows else ""))
    expect(page.locator(".wm-legend")).to_contain_text("Serving mirrors per country")
    screenshot(page, "network-public-list.png")
    page.locator("#map").screenshot(path=str(ARTIFACTS / "network-map.png"))
    click_country(page, "DE")
    expect(page).to_have_url(f"{base}/country/de")
    expect(page.locator("h1")).to_have_text("Mirrors in Germany")
    expect(page.locator("table.country-mirrors tbody tr")).to_have_count(de.listed)
    screenshot(page, "network-country-de.png")
    # a country without mirrors says where it is answered from, and links to the offer form
    page.goto(f"{base}/")
    click_country(page, "EG")
    expect(page).to_have_url(f"{base}/country/eg")
    expect(page.locator("p.lead")).to_contain_text("No mirror in Egypt yet")
    expect(page.locator("p.lead")).to_contain_text("answered from")


def test_status_page_shows_ages_and_history_bars(stack, page):
    base = stack["base"]
    serving = len(_plan(stack).serving)
    page.goto(f"{base}/")
    page.click("nav a:has-text('Status')")
    expect(page.locator("h1")).to_have_text("Mirror status")
    rows = page.locator("table.status tbody tr")
    expect(rows).to_have_count(serving)
    first = rows.first
    expect(first.locator(".hb i")).to_have_count(network.HISTORY_PROBES)
    expect(first.locator(".hb")).to_be_visible()
    assert page.locator("table.status .hb i.fail").count() > 0
    assert page.locator("table.status .age.fresh").count() > 0
    screenshot(page, "network-status.png")
    screenshot(page, "network-status-top.png", full_page=False)


def test_admin_map_and_network_overview(stack, page):
    base = stack["base"]
    page.goto(f"{base}/admin/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PW)
    page.click("button:has-text('Log in')")
    expect(page.locator("h1").first).to_contain_text("Mirrors")
    expect(page.locator("svg.wm")).to_be_visible()
    screenshot(page, "network-admin-dashboard.png", full_page=False)
    click_country(page, "FR")
    expect(page).to_have_url(f"{base}/admin/?country=FR")
    expect(page.locator("select[name=country]")).to_have_value("FR")
    page.click("nav a:has-text('Network')")
    expect(page.locator("h1").first).to_have_text("Network")
    world = network.world_map(_plan(stack))
    thin = [c for c in world.countries.values() if c.listed and c.borrows]
    expect(page.locator("table.thin tbody tr")).to_have_count(len(thin))
    expect(page.locator("svg.graph.uptime")).to_be_visible()
    screenshot(page, "network-admin-overview.png")
