"""Browser tests of the admin in headless Debian Chromium (playwright; never `playwright install`).

The whole process runs as operators run it (`twistd -n -y twistd.tac`, config from
$MIRRORDNS_CONFIG) on a SQLite file seeded here; dnspython asks its real DNS listener and aiosmtpd
stands in for the mail server. The tests log in, disable a mirror with a reason and watch it leave
the DNS answer (and the mail go out), change an address and see the answer follow, add a note as a
helper, apply as a visitor and accept the application as an admin, and save screenshots of the
mirror list and a mirror page under tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import datetime as _dt

import dns.message
import dns.query
import dns.rdatatype
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from playwright.sync_api import expect

from admin import store
from admin.passwords import hash_password
from admin.web import sorting
from dnsd.db import make_engine, upgrade
from dnsd.models import (
    applications,
    maintainers,
    mirror_health,
    mirrors,
    probe_results,
    probe_rollups,
    utcnow,
)
from dnsd.validation import Rules
from tests.browser_support import ARTIFACTS, ROOT, twistd, wait_until
from tests.helpers import MailRecorder, free_port

PW = "browser-test-password"
ZONE = "mirrors.example.org"


def _seed(engine) -> dict:
    now = utcnow()
    h = hash_password(PW)
    ids = {}
    with engine.begin() as conn:
        store.add_user(conn, "alice", h, "admin", email="alice@example.org")
        store.add_user(conn, "hugo", h, "helper")
        specs = [
            ("DE", "mirror.uni-example.de", "192.0.2.10", "2001:db8:de::10", "Example University",
             10000, 16, 64),
            ("DE", "ftp.hoster-example.de", "192.0.2.11", None, "<script>alert('x')</script> GmbH",
             1000, 4, 8),
            ("US", "mirror.example.com", "198.51.100.5", "2001:db8:5::5", "Example Networks",
             2000, 8, 32),
            ("FR", "miroir.example.fr", "203.0.113.7", None, "Exemple SARL", 500, 2, 4),
        ]
        for cc, host, v4, v6, prov, bw, cores, mem in specs:
            m = store.add_mirror(
                conn, actor="setup", mail=None, country=cc, hostname=host, ipv4=v4, ipv6=v6,
                http_url=f"http://{host}/pub/", https_url=f"https://{host}/pub/",
                provider_name=prov, provider_url=f"https://{host.split('.', 1)[1]}/",
                bandwidth_mbit=bw, cores=cores, memory_gb=mem, disk_gb=4000,
                maintainers_=[f"Admin <admin@{host.split('.', 1)[1]}>"],
                rules=Rules(allow_private=True))                  # documentation addresses
            ids[m.name] = m.id
        store.add_note(conn, f"#{ids['de1']}", "alice", "Upgraded to 10 Gbit/s in October.")
        store.disable(conn, f"#{ids['fr1']}", "alice", "provider moving racks", None)
        # history for the graphs: 14 days raw, older days rolled up
        for name, mid in ids.items():
            seed = sum(map(ord, name))
            rows = []
            for i in range(14 * 24):
                at = now - _dt.timedelta(hours=i, minutes=3)
                ok = (i * 7 + seed) % 23 != 0
                rows.append({"mirror_id": mid, "at": at, "url": f"http://x/{name}/TIME",
                             "address": "192.0.2.10", "family": 4, "http_status": 200 if ok else 503,
                             "ttfb_ms": 40 + (i * seed) % 60, "total_ms": 60 + (i * seed) % 90,
                             "ok": ok, "sync_age": 1800 + (i * 97) % 3000,
                             "error_class": "" if ok else "http-status",
                             "vantage": "probe-1"})
            conn.execute(probe_results.insert(), rows)
            start = (now - _dt.timedelta(days=90)).replace(hour=0, minute=0, second=0, microsecond=0)
            roll = []
            for d in range(90 - 14):
                passes = 288 if (d + seed) % 17 else 200 + (d * 13) % 80
                roll.append({"mirror_id": mid, "period": "day",
                             "start": start + _dt.timedelta(days=d), "probes": 288,
                             "passes": passes, "rtt_avg_ms": 90.0, "rtt_max_ms": 300.0})
            conn.execute(probe_rollups.insert(), roll)
            conn.execute(mirror_health.insert().values(
                mirror_id=mid, last_probe_at=now - _dt.timedelta(minutes=3),
                last_ok_at=now - _dt.timedelta(minutes=3), last_sync_at=now - _dt.timedelta(hours=1),
                ipv4_up=True, ipv6_up=True, https_ok=True, uptime_24h=0.99, uptime_7d=0.971,
                uptime_30d=0.965, rtt_p50_ms=80.0, rtt_p95_ms=140.0))
    return ids


@pytest.fixture(scope="module")
def stack(tmp_path_factory, test_mmdb):
    """The whole process as operators run it: `twistd -n -y twistd.tac` on a seeded SQLite file."""
    d = tmp_path_factory.mktemp("stack")
    dns_port, web_port, smtp_port = free_port(), free_port(), free_port()
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
poll_interval = 0.2
[geoip]
database = "{test_mmdb}"
[admin]
listen = "127.0.0.1:{web_port}"
base_url = "http://127.0.0.1:{web_port}"
[probes]
enabled = false
allow_private = true
[mail]
poll_interval = 0.5
smtp = "127.0.0.1:{smtp_port}"
from = "mirrors@example.org"
list = "mirrors@lists.example.org"
""")
    engine = make_engine(f"sqlite:///{d}/mirrors.sqlite")
    upgrade(engine)
    ids = _seed(engine)
    smtp = Controller(MailRecorder(), hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    base = f"http://127.0.0.1:{web_port}"
    try:
        with twistd(cfg, f"{base}/admin/login", d / "twistd.log"):
            yield {"base": base, "dns_port": dns_port, "engine": engine, "ids": ids,
                   "log": d / "twistd.log", "mails": smtp.handler.messages}
    finally:
        smtp.stop()
        engine.dispose()




def login(page, base, user="alice"):
    page.goto(f"{base}/admin/")
    expect(page.locator("h1")).to_have_text("Log in")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PW)
    page.click("button:has-text('Log in')")
    expect(page.locator("h1").first).to_contain_text("Mirrors")


def a_records(port: int, name: str) -> set[str]:
    q = dns.message.make_query(name, "A")
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=3)
    return {rr.address for rrset in r.answer if rrset.rdtype == dns.rdatatype.A for rr in rrset}


def test_disable_mirror_leaves_dns_answer(stack, page):
    base, port = stack["base"], stack["dns_port"]
    name = f"de.{ZONE}"
    wait_until(lambda: a_records(port, name) == {"192.0.2.10", "192.0.2.11"},
               "both German mirrors in the answer")
    login(page, base)
    page.click("a:has-text('de1')")
    expect(page.locator("h1")).to_contain_text("mirror.uni-example.de")
    expect(page.locator("p.plan")).to_contain_text("Serving in the DNS plan")
    page.fill("form[action$='/disable'] input[name=reason]", "hardware move to a new rack")
    page.click("button:has-text('Disable')")
    expect(page.locator(".flash")).to_contain_text("Mirror disabled")
    expect(page.locator("h1 .badge")).to_have_text("disabled by admin")
    # the page after the disable already comes from the plan that answers: not one more second
    # of "serving", and the DNS has stopped answering with it by the time the page is shown
    expect(page.locator("p.plan")).to_contain_text("Not serving in the DNS plan (version")
    assert a_records(port, name) == {"192.0.2.11"}
    # the maintainers and the list hear about it, through the outbox and real SMTP
    sent = wait_until(lambda: [m for m in stack["mails"] if "disabled by alice" in m[1]["subject"]],
                      "the disable mail")
    rcpt, msg = sent[0]
    assert set(rcpt) == {"mirrors@lists.example.org", "admin@uni-example.de"}
    assert "hardware move to a new rack" in msg.get_content()
    page.reload()
    expect(page.locator("p.plan")).to_contain_text(
        "Not serving in the DNS plan (version")
    expect(page.locator("p.plan")).to_contain_text("disabled by admin: hardware move to a new rack")
    with stack["engine"].connect() as conn:
        row = conn.execute(sa.select(mirrors.c.status, mirrors.c.status_reason)
                           .where(mirrors.c.name == "de1")).one()
    assert tuple(row) == ("disabled-by-admin", "hardware move to a new rack")
    # and back: enabling brings it back into the answer
    page.click("form[action$='/enable'] button")
    expect(page.locator(".flash")).to_contain_text("Mirror enabled")
    expect(page.locator("p.plan")).to_contain_text("Serving in the DNS plan")
    assert a_records(port, name) == {"192.0.2.10", "192.0.2.11"}


def test_edit_address_changes_dns_answer(stack, page):
    base, port = stack["base"], stack["dns_port"]
    name = f"us.{ZONE}"
    wait_until(lambda: a_records(port, name) == {"198.51.100.5"}, "us1 in the answer")
    login(page, base)
    page.goto(f"{base}/admin/mirrors/{stack['ids']['us1']}/edit")
    page.fill("input[name=ipv4]", "198.51.100.77")
    page.click("button:has-text('Save')")
    expect(page.locator(".flash")).to_contain_text("Changes saved")
    expect(page.locator("dd.mono").first).to_have_text("198.51.100.77")
    assert a_records(port, name) == {"198.51.100.77"}          # the plan has it already
    # and put it back for the other tests
    page.goto(f"{base}/admin/mirrors/{stack['ids']['us1']}/edit")
    page.fill("input[name=ipv4]", "198.51.100.5")
    page.click("button:has-text('Save')")
    wait_until(lambda: a_records(port, name) == {"198.51.100.5"}, "the old address back")


def test_helper_adds_note_and_cannot_enable(stack, page):
    base = stack["base"]
    login(page, base, "hugo")
    page.goto(f"{base}/admin/mirrors/{stack['ids']['us1']}")
    expect(page.locator("a:has-text('Edit')")).to_have_count(0)
    page.fill("textarea[name=text]", "Maintainer says: <b>new</b> disks next week")
    page.click("button:has-text('Add note')")
    expect(page.locator(".flash")).to_contain_text("Note added")
    first = page.locator("ul.notes li").first
    expect(first).to_contain_text("Maintainer says: <b>new</b> disks next week")
    expect(first).to_contain_text("hugo")


def test_visitor_applies_and_admin_accepts(stack, browser, page):
    base = stack["base"]
    visitor = browser.new_context().new_page()
    visitor.goto(f"{base}/apply")
    visitor.fill("input[name=name]", "Anna Applicant")
    visitor.fill("input[name=email]", "anna@example.at")
    visitor.select_option("select[name=country]", "AT")
    visitor.fill("input[name=hostname]", "mirror.example.at")
    visitor.fill("input[name=http_url]", "http://mirror.example.at/pub/")
    visitor.fill("input[name=ipv4]", "192.0.2.77")
    visitor.fill("input[name=m_name] >> nth=0", "Doe, John")
    visitor.fill("input[name=m_email] >> nth=0", "john@example.at")
    visitor.fill("input[name=provider_name]", "Example Hosting Austria")
    visitor.fill("input[name=bandwidth_mbit]", "1000")
    visitor.check("input[name=has_https]")
    visitor.click("form button[type=submit]")
    expect(visitor.locator("h1")).to_have_text("Thank you!")
    visitor.context.close()
    with stack["engine"].connect() as conn:
        assert conn.execute(sa.select(applications.c.status)
                            .where(applications.c.email == "anna@example.at")).scalar_one() == "new"

    login(page, base)
    page.click("nav a:has-text('Waiting list')")
    expect(page.locator("#cc-AT")).to_contain_text("1 waiting")
    page.click("a:has-text('Anna Applicant')")
    expect(page.locator("input[name=name]")).to_have_value("at1")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "admin-application.png"), full_page=True)
    page.click("button:has-text('Accept')")
    expect(page.locator(".flash")).to_contain_text("Application accepted")
    expect(page.locator("h1")).to_contain_text("at1")
    expect(page.locator("h1 .badge")).to_have_text("active")
    expect(page.locator("dd", has_text="Anna Applicant <anna@example.at>")).to_be_visible()
    expect(page.locator("dd", has_text="Doe, John <john@example.at>")).to_be_visible()
    # probes are off here, so the admins' word and the pinned address are enough to serve
    expect(page.locator("p.plan")).to_contain_text("Serving in the DNS plan")
    assert a_records(stack["dns_port"], f"at.{ZONE}") == {"192.0.2.77"}


def test_sort_by_a_click_and_the_mail_form_says_who_is_left_out(stack, page):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = stack["base"]
    login(page, base)
    head = page.locator("table.mirrors thead")
    expect(head.locator("th[aria-sort='ascending']")).to_contain_text("Country")   # default
    page.click("table.mirrors thead a.sort:text-is('host')")
    expect(head.locator("th[aria-sort='ascending']")).to_contain_text("host")
    hosts = page.locator("table.mirrors tbody td:first-child > span.muted.small")
    shown = hosts.all_text_contents()
    assert len(shown) >= 4 and shown == sorted(shown, key=sorting.natural)
    page.click("table.mirrors thead a.sort:text-is('host')")          # again: the other way
    expect(head.locator("th[aria-sort='descending']")).to_contain_text("host")
    assert hosts.all_text_contents() == shown[::-1]
    page.click("table.mirrors thead a.sort:has-text('Score')")         # highest first
    expect(head.locator("th[aria-sort='descending']")).to_contain_text("Score")
    scores = [float(t) for t in page.locator("table.mirrors tbody td:nth-child(7)")
              .all_text_contents() if t.strip() not in ("", "–")]
    assert scores and scores == sorted(scores, reverse=True)
    page.select_option("select[name=country]", "DE")                  # a filter keeps the order
    page.click("button:has-text('Filter')")
    expect(head.locator("th[aria-sort='descending']")).to_contain_text("Score")
    page.screenshot(path=str(ARTIFACTS / "admin-mirror-list-sorted.png"), full_page=True)
    # an old maintainer row whose address the rules refuse: the form says so before sending
    mid = stack["ids"]["de1"]
    with stack["engine"].begin() as conn:
        conn.execute(maintainers.insert().values(mirror_id=mid, name="Old Admin",
                                                 email="old-admin at uni-example.de"))
    page.goto(f"{base}/admin/mirrors/{mid}")
    page.click("a:has-text('write to them')")
    left = page.locator("#left-out + ul")
    expect(left).to_contain_text("old-admin at uni-example.de")
    expect(left).to_contain_text("does not look like a mail address")
    page.screenshot(path=str(ARTIFACTS / "admin-mail-left-out.png"), full_page=True)


def test_screenshots(stack, page):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = stack["base"]
    login(page, base)
    # hostile provider name is shown as text, not run
    expect(page.locator("text=<script>alert('x')</script> GmbH").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "admin-mirror-list.png"), full_page=True)
    page.goto(f"{base}/admin/mirrors/{stack['ids']['us1']}")
    expect(page.locator("svg.graph.uptime > rect")).to_have_count(90)      # one per day
    page.screenshot(path=str(ARTIFACTS / "admin-mirror-page.png"), full_page=True)
    page.goto(f"{base}/admin/mirrors/{stack['ids']['us1']}/edit")
    page.fill("input[name=ipv4]", "999.1.1.1")
    page.click("button:has-text('Save')")
    expect(page.locator("#err-ipv4")).to_contain_text("not an IPv4 address")
    page.screenshot(path=str(ARTIFACTS / "admin-mirror-edit-error.png"), full_page=True)
    page.goto(f"{base}/admin/mail?target=mirror&mirror={stack['ids']['de2']}")
    page.fill("input[name=subject]", "Disk space on your mirror")
    page.fill("textarea[name=body]", "Hello,\n\nyour mirror is running low on disk space.\n")
    page.click("button:has-text('Preview')")
    expect(page.locator("pre.mail")).to_contain_text("Disk space on your mirror")
    page.screenshot(path=str(ARTIFACTS / "admin-mail-preview.png"), full_page=True)
    page.click("button:has-text('Send 1 mail')")
    expect(page.locator(".flash")).to_contain_text("Mail queued")
    expect(page.locator("table").last).to_contain_text("Disk space on your mirror")
    page.goto(f"{base}/admin/applications?status=all")
    page.screenshot(path=str(ARTIFACTS / "admin-waiting-list.png"), full_page=True)
    for f in ("admin-mirror-list.png", "admin-mirror-page.png"):
        assert (ARTIFACTS / f).stat().st_size > 10_000
