"""Maintenance windows over HTTP (StubTreq, STYLE E13): the admin mirror page's form (each bad
field's message next to it, the text kept, CSRF, roles), cancelling, and where windows show:
the admin list, the public list, /mirrors.json and /metrics. The clock is the pages' (T0)."""

from __future__ import annotations

import datetime as _dt
import json
import re

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq

from admin import store
from admin.web import build_root
from dnsd.models import audit, maintenance_windows
from tests.test_admin_web import PW, AdminWebCase, add_mirror
from tests.webfakes import T0

H = _dt.timedelta(hours=1)


def samples(text: str) -> dict:
    """{(metric name, sorted labels): value} of a /metrics page."""
    return {(x.name, tuple(sorted(x.labels.items()))): x.value
            for fam in text_string_to_metric_families(text) for x in fam.samples}


def fmt(t: _dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M")


class MaintenanceFormTests(AdminWebCase):
    config = "[probes]\nallow_private = true\nenabled = false\n[dns]\nttl = 150\n"

    def setUp(self):
        super().setUp()
        self.m = add_mirror(self.engine, name="de1")
        self.other = add_mirror(self.engine, hostname="mirror2.example.de", name="de2")

    def windows(self):
        return self.q(sa.select(maintenance_windows.c.id, maintenance_windows.c.mirror_id,
                                maintenance_windows.c.starts_at, maintenance_windows.c.ends_at,
                                maintenance_windows.c.reason, maintenance_windows.c.cancelled_by)
                      .order_by(maintenance_windows.c.id))

    def plan(self, csrf, start, end, reason, mid=None):
        return self.post(f"/admin/mirrors/{mid or self.m.id}/maintenance",
                         {"csrf": csrf, "starts_at": start, "ends_at": end, "reason": reason})

    def test_planning_from_the_mirror_page(self):
        csrf = self.login()
        r, _ = self.plan(csrf, fmt(T0 + H), fmt(T0 + 2 * H), "new disks")
        assert r.code == 303
        assert r.headers.getRawHeaders("location") == [
            f"/admin/mirrors/{self.m.id}?done=maintenance"]
        ((wid, mid, start, end, reason, cancelled),) = self.windows()
        assert (mid, start, end, reason, cancelled) == (self.m.id, T0 + H, T0 + 2 * H,
                                                        "new disks", None)
        (action,) = self.q(sa.select(audit.c.action).where(audit.c.action.like("maint%")))
        assert action == ("maintenance-plan",)
        _r, page = self.get(f"/admin/mirrors/{self.m.id}?done=maintenance")
        assert "Maintenance planned; the mirror leaves the DNS answers one TTL" in page
        row = re.search(r'<tr class="w-planned">(.*?)</tr>', page, re.S).group(1)
        assert "2026-11-21 10:00 UTC" in row and "new disks" in row and "alice" in row
        assert f'action="/admin/mirrors/{self.m.id}/maintenance/{wid}/cancel"' in row
        assert "150 s (the answers' TTL) before it starts" in page

    def test_bad_input_is_shown_by_each_field_and_kept(self):
        csrf = self.login()
        r, page = self.plan(csrf, "tomorrow", fmt(T0 - H), "")
        assert r.code == 400 and self.windows() == []
        for field, message in (("starts_at", "The start is not a time: write it as "
                                             "YYYY-MM-DD HH:MM (UTC)."),
                               ("reason", "The reason is empty.")):
            # the message sits right after the field's own row, tied to it by aria-describedby
            assert f'aria-describedby="err-{field}"' in page
            assert f'<p class="field-error" id="err-{field}">{message}</p>' in page
        assert 'value="tomorrow"' in page                           # nothing typed is lost
        r, page = self.plan(csrf, fmt(T0 + H), fmt(T0 + H), "a <b>reason</b>")
        assert r.code == 400
        assert ('<p class="field-error" id="err-ends_at">The end must be after the start.</p>'
                in page)
        assert 'value="a &lt;b&gt;reason&lt;/b&gt;"' in page        # kept, and escaped
        assert "err-starts_at" not in page
        r, page = self.plan(csrf, fmt(T0 - H), fmt(T0 + H), "r")
        assert '<p class="field-error" id="err-starts_at">The start is in the past.</p>' in page
        r, page = self.plan(csrf, fmt(T0 + H), fmt(T0 + 200 * H), "r")
        assert "A window is at most 7 days long" in page and self.windows() == []

    def test_an_overlapping_window_is_refused_by_the_start_field(self):
        csrf = self.login()
        self.plan(csrf, fmt(T0 + H), fmt(T0 + 3 * H), "first")
        r, page = self.plan(csrf, fmt(T0 + 2 * H), fmt(T0 + 4 * H), "second")
        assert r.code == 400 and len(self.windows()) == 1
        assert re.search(r'id="err-starts_at">The mirror already has maintenance planned from '
                         r'2026-11-21 10:00 UTC to 2026-11-21 12:00 UTC \(window #\d+\); cancel '
                         r'it first', page)
        assert 'value="second"' in page

    def test_csrf_and_roles(self):
        csrf = self.login()
        r, _ = self.plan("not-the-token", fmt(T0 + H), fmt(T0 + 2 * H), "r")
        assert r.code == 403
        r, _ = self.post(f"/admin/mirrors/{self.m.id}/maintenance",
                         {"starts_at": fmt(T0 + H), "ends_at": fmt(T0 + 2 * H), "reason": "r"})
        assert r.code == 403 and self.windows() == []
        self.plan(csrf, fmt(T0 + H), fmt(T0 + 2 * H), "r")
        ((wid, *_),) = self.windows()
        r, _ = self.post(f"/admin/mirrors/{self.m.id}/maintenance/{wid}/cancel", {})
        assert r.code == 403 and self.windows()[0].cancelled_by is None
        self.stub = StubTreq(build_root(self.ctx))       # a fresh cookie jar
        hugo = self.login("hugo", PW)                   # a helper may neither plan nor cancel
        r, _ = self.plan(hugo, fmt(T0 + 3 * H), fmt(T0 + 4 * H), "r")
        assert r.code == 403
        r, _ = self.post(f"/admin/mirrors/{self.m.id}/maintenance/{wid}/cancel", {"csrf": hugo})
        assert r.code == 403 and len(self.windows()) == 1
        _r, page = self.get(f"/admin/mirrors/{self.m.id}")
        assert "Plan maintenance" not in page and "/cancel" not in page

    def test_cancel_and_another_mirrors_window(self):
        csrf = self.login()
        self.plan(csrf, fmt(T0 + H), fmt(T0 + 2 * H), "mine")
        self.plan(csrf, fmt(T0 + H), fmt(T0 + 2 * H), "theirs", mid=self.other.id)
        (mine, theirs) = self.windows()
        r, page = self.post(f"/admin/mirrors/{self.m.id}/maintenance/{theirs.id}/cancel",
                            {"csrf": csrf})
        assert r.code == 409 and f"there is no maintenance window #{theirs.id}" in page
        assert self.windows()[1].cancelled_by is None
        r, _ = self.post(f"/admin/mirrors/{self.m.id}/maintenance/{mine.id}/cancel",
                         {"csrf": csrf})
        assert r.code == 303 and self.windows()[0].cancelled_by == "alice"
        _r, page = self.get(f"/admin/mirrors/{self.m.id}")
        assert '<tr class="w-cancelled">' in page and "by alice" in page

    def test_windows_show_on_the_lists_json_and_metrics(self):
        csrf = self.login()
        self.plan(csrf, fmt(T0 + H), fmt(T0 + 2 * H), "new disks")
        _r, page = self.get("/admin/")
        assert 'title="new disks">maintenance 2026-11-21 10:00 UTC</span>' in page
        _r, public = self.get("/")
        section = re.search(r'<section class="card maintenance" id="maintenance">(.*?)</section>',
                            public, re.S).group(1)
        assert "de1" in section and "2026-11-21 10:00 UTC" in section and "planned" in section
        _r, body = self.get("/mirrors.json")
        (n,) = json.loads(body)["maintenance"]
        assert n == {"name": "de1", "hostname": "mirror.example.de",
                     "starts_at": "2026-11-21T10:00:00Z", "ends_at": "2026-11-21T11:00:00Z",
                     "state": "planned", "reason": "new disks"}
        _r, metrics = self.get("/metrics")
        got = samples(metrics)
        assert got[("mirrordns_mirror_maintenance_start_timestamp_seconds",
                    (("mirror", "de1"),))] == (T0 + H).replace(tzinfo=_dt.UTC).timestamp()
        assert not [k for k in got if k[0] == "mirrordns_mirror_maintenance"]   # no phase yet

    def test_in_a_window_the_pages_and_metrics_say_so(self):
        with self.engine.begin() as conn:               # planned earlier, running at T0
            store.plan_maintenance(conn, "de1", "ada", starts_at=T0 - H, ends_at=T0 + H,
                                   reason="new disks", now=T0 - 2 * H)
        self.login()
        _r, page = self.get(f"/admin/mirrors/{self.m.id}")
        assert '<span class="badge s-maintenance">in maintenance</span>' in page
        assert "in maintenance until 2026-11-21 10:00 UTC: new disks" in page
        assert '<tr class="w-in-progress">' in page and ">End now</button>" in page
        _r, page = self.get("/admin/")
        assert '<span class="badge s-maintenance">in maintenance</span>' in page
        _r, public = self.get("/")
        assert "mirror.example.de</span></td>" in public              # in the notice ...
        assert "<b>de1</b>" not in public.split('id="all"')[1]         # ... not in the list
        _r, metrics = self.get("/metrics")
        got = samples(metrics)
        assert got[("mirrordns_mirror_maintenance", (("country", "DE"), ("mirror", "de1"),
                                                     ("phase", "maintenance")))] == 1
        assert got[("mirrordns_mirror_serving", (("country", "DE"), ("mirror", "de1")))] == 0
