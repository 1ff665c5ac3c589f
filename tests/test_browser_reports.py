"""A downloader reports a mirror, an admin sees it: in headless Debian Chromium (playwright).

The whole process runs as operators run it (`twistd -n -y twistd.tac`) with probes on, against a
real HTTP "mirror" on 127.0.1.41 (a timestamp file served by http.server) and aiosmtpd for mail.
The probe cycle is a day long and the mirrors' health is seeded as passed, so the probe a report
asks for is told apart from the cycle's by its log line: the downloader picks a mirror from the
public list, reports it ("outdated", with a text), sees the
thanks page; the probe node probes the mirror within seconds; with `[reports] threshold = 1` the
maintainer gets the mail; the admin logs in, finds the report on the Reports page and on the
mirror's page with the request served by the probe node. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from playwright.sync_api import expect

from admin import store
from admin.passwords import hash_password
from dnsd.db import make_engine, upgrade
from dnsd.models import mirror_health, probe_results, utcnow
from dnsd.validation import Rules
from tests.browser_support import ROOT, screenshot, serve_mirror, twistd, wait_until
from tests.helpers import MailRecorder, free_port

PW = "browser-test-password"
MIRROR_IP = "127.0.1.41"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, test_mmdb):
    d = tmp_path_factory.mktemp("reports")
    mirror = serve_mirror(MIRROR_IP)
    mport = mirror.server_address[1]
    dns_port, web_port, smtp_port = free_port(), free_port(), free_port()
    cfg = d / "mirrordns.toml"
    cfg.write_text(f"""
[database]
url = "sqlite:///{d}/mirrors.sqlite"
[dns]
zone = "mirrors.example.org"
zone_file = "{ROOT}/zones/mirrors.example.org.zone"
listen = ["127.0.0.1:{dns_port}"]
min_candidates = 1
[geoip]
database = "{test_mmdb}"
[admin]
listen = "127.0.0.1:{web_port}"
base_url = "http://127.0.0.1:{web_port}"
[probes]
allow_private = true
interval = 86400
timeout = 3
request_poll = 0.5
vantage = "probe-fra"
[reports]
threshold = 1
[mail]
poll_interval = 0.5
smtp = "127.0.0.1:{smtp_port}"
""")
    engine = make_engine(f"sqlite:///{d}/mirrors.sqlite")
    upgrade(engine)
    with engine.begin() as conn:
        store.add_user(conn, "alice", hash_password(PW), "admin")
        for cc, host, ip in (("DE", "mirror.example.de", MIRROR_IP),
                             ("FR", "miroir.example.fr", "127.0.1.42")):
            m = store.add_mirror(conn, actor="setup", mail=None, country=cc, hostname=host,
                                 ipv4=ip, http_url=f"http://{host}:{mport}/pub/", status="active",
                                 maintainers_=[f"Ops <ops@{host}>"],
                                 rules=Rules(allow_private=True))
            now = utcnow()                                # a passed probe a minute ago
            conn.execute(mirror_health.insert().values(
                mirror_id=m.id, passes_in_row=3, last_probe_at=now, last_ok_at=now,
                last_sync_at=now, ipv4_up=True, updated_at=now))
    smtp = Controller(MailRecorder(), hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    base = f"http://127.0.0.1:{web_port}"
    try:
        with twistd(cfg, f"{base}/admin/login", d / "twistd.log"):
            yield {"base": base, "engine": engine, "mails": smtp.handler.messages,
                   "log": d / "twistd.log"}
    finally:
        smtp.stop()
        mirror.shutdown()
        engine.dispose()


def probes_of(engine, host) -> int:
    with engine.connect() as c:
        return c.execute(sa.text(
            "SELECT count(*) FROM probe_results r JOIN mirrors m ON m.id = r.mirror_id "
            "WHERE m.hostname = :h"), {"h": host}).scalar()


def on_request(log) -> list[str]:
    return [line for line in log.read_text().splitlines() if "on request" in line]


def test_a_downloader_reports_a_mirror_and_an_admin_sees_it(stack, page):
    base, engine = stack["base"], stack["engine"]
    host = "mirror.example.de"
    page.goto(f"{base}/")
    row = page.locator("table.public-mirrors tr", has_text=host)
    expect(row).to_have_count(1)
    before = probes_of(engine, host)
    assert on_request(stack["log"]) == []
    row.locator("a.report-link").click()
    expect(page.locator("h1")).to_have_text("Report a problem with a mirror")
    expect(page.locator("select[name=mirror]")).to_have_value("de1")
    page.click("button:has-text('Send the report')")                 # no reason chosen
    expect(page.locator("#err-reason")).to_have_text("Please choose one of the reasons.")
    page.check("input[name=reason][value=outdated]")
    page.fill("textarea[name=text]", "httpd-2.4.66 is missing <b>since Monday</b>")
    screenshot(page, "public-report-form.png")
    page.click("button:has-text('Send the report')")
    expect(page.locator("h1")).to_have_text("Thank you!")
    expect(page.locator("main")).to_contain_text("Your report about de1 is in")
    # the probe node probes it within seconds (not at its next daily cycle)
    (line,) = wait_until(lambda: on_request(stack["log"]), "the probe the report asked for")
    assert "probe de1 on request: report: outdated (by public, 1 request(s))" in line
    wait_until(lambda: probes_of(engine, host) > before, "its result recorded")
    sent = wait_until(lambda: [m for r, m in stack["mails"] if r == [f"ops@{host}"]],
                      "the maintainer's mail")
    assert sent[0]["subject"] == "Downloaders report problems with de1"
    assert "since Monday" in sent[0].get_content()
    # the admin sees it
    page.goto(f"{base}/admin/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PW)
    page.click("button:has-text('Log in')")
    page.click("nav a:has-text('Reports')")
    expect(page.locator("h1")).to_have_text("Reports from downloaders")
    line = page.locator("table.reports-table tbody tr")
    expect(line).to_have_count(1)
    expect(line).to_contain_text("de1")
    expect(line).to_contain_text("1 × outdated")
    expect(line).to_contain_text("httpd-2.4.66 is missing <b>since Monday</b>")   # as text
    screenshot(page, "admin-reports.png")
    line.locator("a", has_text="de1").click()
    card = page.locator("section#reports")
    expect(card).to_contain_text("1 in the last 1 h")
    expect(card).to_contain_text("Its files are out of date")
    expect(card).to_contain_text("maintainers mailed")
    expect(page.locator("p.probe-request")).to_contain_text("report: outdated")
    expect(page.locator("p.probe-request")).to_contain_text("served by probe-fra")
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(probe_results).where(
            probe_results.c.vantage == "probe-fra", probe_results.c.ok)).scalar() >= 1
    card.scroll_into_view_if_needed()
    screenshot(page, "admin-mirror-reports.png", full_page=False)
