"""An admin plans and cancels maintenance in headless Debian Chromium (playwright), against the
whole process run as operators run it (tests/test_browser_admin.py's stack: twistd, its DNS
listener asked with dnspython). Probes are off there, so a window that starts within the answers'
TTL takes the mirror out at once and cancelling it brings it back at once; the ttl-early leave
and the return after a passed probe are shown on a stepped clock in tests/test_maintenance_e2e.py.
Screenshots go to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import datetime as _dt

from playwright.sync_api import expect

from dnsd.models import utcnow
from tests.browser_support import ARTIFACTS, screenshot, wait_until
from tests.test_browser_admin import ZONE, a_records, login, stack  # noqa: F401  (the fixture)


def _at(minutes: int) -> str:
    return (utcnow() + _dt.timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M")


def test_admin_plans_maintenance_and_the_dns_follows(stack, page):  # noqa: F811 (stack)
    base, port = stack["base"], stack["dns_port"]
    us1 = "198.51.100.5"
    name = f"us.{ZONE}"
    wait_until(lambda: us1 in a_records(port, name), "us1 in the answer")
    login(page, base)
    page.goto(f"{base}/admin/mirrors/{stack['ids']['us1']}")
    form = page.locator("form.plan-window")
    form.locator("input[name=starts_at]").fill("soon")
    form.locator("input[name=ends_at]").fill(_at(-60))
    page.click("button:has-text('Plan maintenance')")
    expect(page.locator("#err-starts_at")).to_have_text(
        "The start is not a time: write it as YYYY-MM-DD HH:MM (UTC).")
    expect(page.locator("#err-reason")).to_have_text("The reason is empty.")
    expect(page.locator("input[name=starts_at]")).to_have_value("soon")   # nothing lost
    expect(page.locator("input[name=starts_at]")).to_have_attribute("aria-invalid", "true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("section.maintenance").screenshot(
        path=str(ARTIFACTS / "admin-maintenance-errors.png"))

    page.fill("input[name=starts_at]", _at(2))
    page.fill("input[name=ends_at]", _at(62))
    page.fill("form.plan-window input[name=reason]", "new disks")
    page.click("button:has-text('Plan maintenance')")
    expect(page.locator(".flash")).to_contain_text("Maintenance planned")
    # it starts within the TTL: out of the answers already, in the plan that answers
    expect(page.locator("section.maintenance .badge")).to_have_text("leaving for maintenance")
    expect(page.locator("p.plan").first).to_contain_text("Not serving in the DNS plan")
    expect(page.locator("table.windows")).to_contain_text("leaving the answers")
    assert us1 not in a_records(port, name)
    screenshot(page, "admin-maintenance.png")
    page.goto(f"{base}/")
    expect(page.locator("section#maintenance")).to_contain_text("new disks")
    screenshot(page, "public-maintenance.png")

    page.goto(f"{base}/admin/mirrors/{stack['ids']['us1']}")
    page.click("table.windows button:has-text('Cancel')")
    expect(page.locator(".flash")).to_contain_text("Maintenance cancelled")
    expect(page.locator("table.windows")).to_contain_text("cancelled")
    expect(page.locator("p.plan").first).to_contain_text("Serving in the DNS plan")
    assert us1 in a_records(port, name)
