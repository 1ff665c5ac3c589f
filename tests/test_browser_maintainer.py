"""A maintainer looks after their mirror in headless Debian Chromium (playwright), against the
whole process run as operators run it (`twistd -n -y twistd.tac`), with probes on against real
HTTP mirrors on 127.0.0.x, its DNS listener asked with dnspython and aiosmtpd as the mail server.

The maintainer asks for a login link, reads it from the mail the SMTP server received, logs in,
is refused a bad address by the field, edits their mirror (the list hears of it), plans a
maintenance window and watches the mirror leave the DNS answer before the window starts, stay
out after it ended until a probe passed (they ask for one with "Probe now"), and come
back. Screenshots go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import datetime as _dt
import re

import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import expect

from admin import store
from dnsd.db import make_engine, upgrade
from dnsd.models import mirror_health, utcnow
from dnsd.validation import Rules
from tests.browser_support import ROOT, screenshot, serve_mirror, twistd, wait_until
from tests.helpers import MailRecorder, free_port
from tests.test_browser_admin import a_records

ZONE = "mirrors.example.org"
TTL = 3                      # [dns] ttl: the mirror leaves the answers this long before a window
JANE = "jane@example.de"
LINK_RE = re.compile(r"(http://127\.0\.0\.1:\d+/maintainer/login/[A-Za-z0-9_-]+)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, test_mmdb):
    d = tmp_path_factory.mktemp("maintainer")
    dns_port, web_port, smtp_port = free_port(), free_port(), free_port()
    mirrors_ = {"de1": serve_mirror("127.0.0.21"), "de2": serve_mirror("127.0.0.22")}
    cfg = d / "mirrordns.toml"
    cfg.write_text(f"""
[database]
url = "sqlite:///{d}/mirrors.sqlite"
[dns]
zone = "{ZONE}"
zone_file = "{ROOT}/zones/mirrors.example.org.zone"
listen = ["127.0.0.1:{dns_port}"]
min_candidates = 1
answers = 4
ttl = {TTL}
poll_interval = 0.2
[geoip]
database = "{test_mmdb}"
[admin]
listen = "127.0.0.1:{web_port}"
base_url = "http://127.0.0.1:{web_port}"
[probes]
enabled = true
allow_private = true
interval = 3600
timeout = 2.0
connect_timeout = 1.0
pass_after = 1
request_poll = 0.3
request_gap = 0
[mail]
poll_interval = 0.3
smtp = "127.0.0.1:{smtp_port}"
from = "mirrors@example.org"
list = "mirrors@lists.example.org"
""")
    engine = make_engine(f"sqlite:///{d}/mirrors.sqlite")
    upgrade(engine)
    ids, now = {}, utcnow()
    with engine.begin() as conn:
        # Bob's mirror first: the probe loop's first round starts the second mirror (Jane's)
        # half an interval (30 min) in, so only "Probe now" probes it while this test runs
        for name, (srv, people) in {"de2": (mirrors_["de2"], ["Bob <bob@example.com>"]),
                                    "de1": (mirrors_["de1"], [f"Jane Doe <{JANE}>"])}.items():
            host, port = srv.server_address
            m = store.add_mirror(
                conn, actor="setup", mail=None, country="DE", hostname=f"{name}.example.de",
                name=name, ipv4=host, http_url=f"http://{name}.example.de:{port}/pub/",
                provider_name=f"{name} hosting", maintainers_=people,
                rules=Rules(allow_private=True))
            ids[name] = m.id
            # a probe passed a minute ago: both serve from the start
            conn.execute(mirror_health.insert().values(
                mirror_id=m.id, passes_in_row=1, last_probe_at=now - _dt.timedelta(minutes=1),
                last_ok_at=now - _dt.timedelta(minutes=1),
                last_sync_at=now - _dt.timedelta(minutes=5), ipv4_up=True))
    smtp = Controller(MailRecorder(), hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    base = f"http://127.0.0.1:{web_port}"
    try:
        with twistd(cfg, f"{base}/maintainer/login", d / "twistd.log"):
            yield {"base": base, "dns_port": dns_port, "engine": engine, "ids": ids,
                   "mails": smtp.handler.messages, "log": d / "twistd.log"}
    finally:
        smtp.stop()
        for srv in mirrors_.values():
            srv.shutdown()
        engine.dispose()


def _at(t: _dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


def test_a_maintainer_logs_in_by_link_edits_and_plans_a_window(stack, page):
    base, port = stack["base"], stack["dns_port"]
    name = f"de.{ZONE}"
    wait_until(lambda: a_records(port, name) == {"127.0.0.21", "127.0.0.22"},
               "both German mirrors in the answer")

    # -- the link, by mail --
    page.goto(f"{base}/")
    page.click("nav a:has-text('Maintainers')")
    expect(page.locator("h1")).to_have_text("Look after your mirror")
    page.fill("input[name=email]", "jane@example")           # the browser lets it through
    page.click("button:has-text('Mail me a link')")
    expect(page.locator("#err-email")).to_be_visible()            # by the field, text kept
    expect(page.locator("input[name=email]")).to_have_value("jane@example")
    page.fill("input[name=email]", JANE)
    page.click("button:has-text('Mail me a link')")
    expect(page.locator("h1")).to_have_text("Check your mail")
    screenshot(page, "maintainer-link-sent.png")
    mails = wait_until(lambda: [m for rcpt, m in stack["mails"] if rcpt == [JANE]],
                       "the login link in Jane's mailbox")
    link = LINK_RE.search(mails[0].get_content()).group(1)
    page.goto(link)
    expect(page.locator("h1")).to_have_text("Log in")
    page.click("button:has-text('Log in')")
    expect(page.locator("h1")).to_have_text("Your mirrors")
    expect(page.locator("table")).not_to_contain_text("de2")      # Bob's mirror is not hers
    page.click("a:has-text('de1')")
    expect(page.locator("p.plan").first).to_contain_text("Serving in the DNS plan")
    expect(page.locator("svg.graph.uptime > rect")).to_have_count(90)      # one per day
    screenshot(page, "maintainer-mirror-page.png")
    # the link worked once: opening it again says so
    other = page.context.browser.new_context().new_page()
    other.goto(link)
    expect(other.locator("h1")).to_have_text("Link not valid")
    other.context.close()

    # -- an edit: refused by the field, then saved, and the list told --
    page.click("a.button:has-text('Edit')")
    page.fill("input[name=ipv4]", "999.1.1.1")
    page.click("button:has-text('Save')")
    expect(page.locator("#err-ipv4")).to_contain_text("not an IPv4 address")
    screenshot(page, "maintainer-edit-error.png")
    page.fill("input[name=ipv4]", "127.0.0.21")
    page.fill("input[name=provider_name]", "Jane's own hosting")
    page.click("button:has-text('Save')")
    expect(page.locator(".flash")).to_contain_text("Changes saved")
    expect(page.locator("dl.details")).to_contain_text("Jane's own hosting")
    told = wait_until(lambda: [(r, m) for r, m in stack["mails"]
                               if "changed by its maintainer" in m["subject"]], "the list's mail")
    assert set(told[0][0]) == {"mirrors@lists.example.org", JANE}

    # -- a window: out before it starts, back after it ended and a probe passed --
    start = utcnow().replace(microsecond=0) + _dt.timedelta(seconds=TTL + 6)
    end = start + _dt.timedelta(seconds=4)
    form = page.locator("form.plan-window")
    form.locator("input[name=starts_at]").fill(_at(start))
    form.locator("input[name=ends_at]").fill(_at(end))
    form.locator("input[name=reason]").fill("new disks")
    form.locator("button").click()
    expect(page.locator(".flash")).to_contain_text("Maintenance planned")
    expect(page.locator("table.windows")).to_contain_text("new disks")
    wait_until(lambda: a_records(port, name) == {"127.0.0.22"}, "de1 out of the answer", 30)
    assert utcnow() < start                       # it left before the window began
    page.reload()
    screenshot(page, "maintainer-leaving.png")
    wait_until(lambda: utcnow() > end + _dt.timedelta(seconds=1), "the window's end", 30)
    page.reload()
    expect(page.locator("p.plan").first).to_contain_text("Not serving")
    assert a_records(port, name) == {"127.0.0.22"}   # over, but no probe has passed since
    screenshot(page, "maintainer-returning.png")
    page.click("button:has-text('Probe now')")
    expect(page.locator(".flash")).to_contain_text("probe")
    wait_until(lambda: a_records(port, name) == {"127.0.0.21", "127.0.0.22"},
               "de1 back in the answer after a passed probe", 30)

    def page_says_serving():
        # the DNS processes and the web's own plan follow the table each on its own poll, so
        # the page may lag the answer by a poll: reload until it has the same plan
        page.reload()
        return page.locator("p.plan").first.inner_text().startswith("Serving in the DNS plan")

    wait_until(page_says_serving, "the mirror page says it serves again", 30)
    screenshot(page, "maintainer-back.png")
