"""Reports from downloaders over HTTP (StubTreq through the whole tree): the public form (CSRF,
errors by their field with the input kept, the thanks page), the JSON endpoint (200, 400, 413,
415, 429), the limit per visitor network behind a trusted proxy, the links on the public list
and the closer's page, and the admin's reports list and mirror page."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from admin import store
from admin.web import build_root
from dnsd.models import mirror_reports, outbox, probe_requests
from dnsd.validation import Rules
from tests.webfakes import add_user, login, make_ctx

BASE = "http://mirrors.test"
LAB = Rules(allow_private=True)
TOKEN_RE = re.compile(r'name="csrf" value="([^"]+)"')
CONFIG = """
[admin]
trusted_proxies = ["127.0.0.1", "::1"]
[probes]
allow_private = true
enabled = false
[reports]
threshold = 2
rate_limit = 3
"""


class ReportCase(SynchronousTestCase):
    config = CONFIG

    @pytest.fixture(autouse=True)
    def _engine(self, sqlite_engine):
        self.engine = sqlite_engine

    def setUp(self):
        with self.engine.begin() as conn:
            self.de1 = store.add_mirror(
                conn, actor="setup", mail=None, country="DE", hostname="mirror.example.de",
                ipv4="192.0.2.10", http_url="http://mirror.example.de/pub/", status="active",
                maintainers_=["Jane <jane@example.de>"], rules=LAB)
            self.de2 = store.add_mirror(
                conn, actor="setup", mail=None, country="DE", hostname="pending.example.de",
                ipv4="192.0.2.11", http_url="http://pending.example.de/pub/", status="pending",
                rules=LAB)
        self.ctx = make_ctx(self.engine, self.config)
        self.stub = StubTreq(build_root(self.ctx))

    def req(self, method, path, visitor="192.0.2.50", **kw):
        kw.setdefault("allow_redirects", False)
        headers = {"X-Forwarded-For": visitor, **kw.pop("headers", {})}
        r = self.successResultOf(getattr(self.stub, method)(BASE + path, headers=headers, **kw))
        return r, self.successResultOf(r.content()).decode()

    def token(self, path="/report?mirror=de1", visitor="192.0.2.50") -> str:
        r, body = self.req("get", path, visitor)
        assert r.code == 200, body
        return TOKEN_RE.search(body).group(1)

    def send(self, data: dict, visitor="192.0.2.50"):
        return self.req("post", "/report", visitor, data={"csrf": self.token(visitor=visitor),
                                                          **data})

    def post_json(self, body, visitor="192.0.2.50", ctype="application/json"):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        r, text = self.req("post", "/report.json", visitor, data=raw,
                           headers={"Content-Type": ctype})
        return r, (json.loads(text) if r.headers.getRawHeaders("content-type") == [
            "application/json"] else text)

    def stored(self):
        with self.engine.connect() as c:
            return c.execute(sa.select(mirror_reports.c.mirror_id, mirror_reports.c.reason,
                                       mirror_reports.c.text, mirror_reports.c.repeats)
                             .order_by(mirror_reports.c.id)).all()


class FormTests(ReportCase):
    def test_the_form_takes_a_report(self):
        r, body = self.req("get", "/report?mirror=de1")
        self.assertEqual(r.code, 200)
        self.assertIn('<option value="de1" selected>de1 (mirror.example.de)</option>', body)
        self.assertNotIn("pending.example.de", body)                # not public
        self.assertIn('value="outdated"', body)
        self.assertEqual(r.headers.getRawHeaders("cache-control"), ["no-store"])
        r, _ = self.send({"mirror": "de1", "reason": "outdated", "text": "TIME is 3 days old"})
        self.assertEqual(r.code, 303)
        self.assertEqual(r.headers.getRawHeaders("location"), ["/report/sent?mirror=de1"])
        self.assertEqual([tuple(x) for x in self.stored()],
                         [(self.de1.id, "outdated", "TIME is 3 days old", 0)])
        with self.engine.connect() as c:                       # and the probes are asked
            self.assertEqual(c.execute(sa.select(probe_requests.c.reason)).scalar(),
                             "report: outdated")
        r, body = self.req("get", "/report/sent?mirror=de1")
        self.assertIn("Your report about <b>de1</b> is in", body)

    def test_a_bad_reason_is_shown_by_its_field_and_the_text_kept(self):
        r, body = self.send({"mirror": "de1", "reason": "hacked", "text": "kept <b>as typed</b>"})
        self.assertEqual(r.code, 400)
        self.assertIn('<span class="field-error" id="err-reason">', body)
        self.assertIn("is not one of the reasons", body)
        self.assertIn("kept &lt;b&gt;as typed&lt;/b&gt;</textarea>", body)
        self.assertEqual(self.stored(), [])

    def test_missing_reason_and_oversized_text(self):
        r, body = self.send({"mirror": "de1", "text": "x"})
        self.assertEqual(r.code, 400)
        self.assertIn("Please choose one of the reasons.", body)
        long = "é" * 1001
        r, body = self.send({"mirror": "de1", "reason": "slow", "text": long})
        self.assertEqual(r.code, 400)
        self.assertIn('id="err-text">The text is longer than 1,000 characters.', body)
        self.assertIn(long + "</textarea>", body)
        self.assertIn('value="slow" checked', body)
        self.assertEqual(self.stored(), [])

    def test_unknown_or_pending_mirror_is_refused_by_the_field(self):
        for ref in ("de9", "de2", ""):
            r, body = self.send({"mirror": ref, "reason": "slow"})
            self.assertEqual(r.code, 400, ref)
            self.assertIn('id="err-mirror"', body)
        self.assertEqual(self.stored(), [])

    def test_without_the_signed_token_nothing_is_stored(self):
        self.token()                                              # the cookie is there
        r, body = self.req("post", "/report", data={"csrf": "1.forged", "mirror": "de1",
                                                    "reason": "slow", "text": "kept"})
        self.assertEqual(r.code, 403)
        self.assertIn("did not come from this site", body)
        self.assertIn("kept</textarea>", body)
        fresh = StubTreq(build_root(self.ctx))                   # a token without its cookie
        tok = self.token()
        r = self.successResultOf(fresh.post(BASE + "/report", data={
            "csrf": tok, "mirror": "de1", "reason": "slow"}, allow_redirects=False))
        self.assertEqual(r.code, 403)
        self.assertEqual(self.stored(), [])

    def test_honeypot_is_thanked_and_dropped(self):
        r, _ = self.send({"mirror": "de1", "reason": "slow", "website": "http://spam"})
        self.assertEqual(r.code, 303)
        self.assertEqual(self.stored(), [])

    def test_the_limit_counts_a_network_not_an_address(self):
        for i in range(3):
            r, _ = self.send({"mirror": "de1", "reason": "slow"}, visitor=f"198.51.100.{i + 1}")
            self.assertEqual(r.code, 303)
        r, body = self.send({"mirror": "de1", "reason": "slow"}, visitor="198.51.100.200")
        self.assertEqual(r.code, 429)
        self.assertIn("Too many reports from your network", body)
        self.assertTrue(int(r.headers.getRawHeaders("retry-after")[0]) > 0)
        r, _ = self.send({"mirror": "de1", "reason": "slow"}, visitor="198.51.101.1")
        self.assertEqual(r.code, 303)                             # another /24
        self.assertEqual(len(self.stored()), 2)       # the first /24 counted once, the other


class JSONTests(ReportCase):
    def test_ok(self):
        r, out = self.post_json({"mirror": "mirror.example.de", "reason": "corrupt",
                                 "text": "sha512 differs"})
        self.assertEqual(r.code, 200)
        self.assertEqual(out, {"ok": True, "mirror": "de1", "counted": True,
                               "probe_requested": True})
        r, out = self.post_json({"mirror": "de1", "reason": "slow"}, visitor="192.0.2.51")
        self.assertEqual((r.code, out["counted"], out["probe_requested"]), (200, False, False))
        r, out = self.post_json({"mirror": "de1", "reason": "slow"}, visitor="2001:db8::1")
        self.assertEqual((r.code, out["counted"]), (200, True))
        with self.engine.connect() as c:                          # threshold 2: one mail
            self.assertEqual(c.execute(sa.select(outbox.c.recipients)
                                       .where(outbox.c.kind == "reports")).scalars().all(),
                             ["jane@example.de"])

    def test_bad_input_is_400_with_the_field(self):
        for body, field, words in (
                ({"mirror": "de1", "reason": "nope"}, "reason", "is not one of the reasons"),
                ({"mirror": "de1", "reason": "slow", "text": "x" * 1001}, "text", "longer than"),
                ({"mirror": "de1", "reason": "other"}, "text", "empty"),
                ({"mirror": "de9", "reason": "slow"}, "mirror", "no mirror called de9"),
                ({"mirror": "de1", "reason": 3}, "reason", "must be a string"),
                ({"mirror": "de1", "reason": "slow", "email": "x"}, "email", "unknown field")):
            r, out = self.post_json(body, visitor=f"10.{len(words)}.{len(field)}.1")
            self.assertEqual(r.code, 400, body)
            self.assertEqual(out["field"], field)
            self.assertIn(words, out["error"])
        for raw, words in ((b"{not json", "not valid JSON"), (b"[1, 2]", "a JSON object")):
            r, out = self.post_json(raw, visitor="10.99.0.1")
            self.assertEqual((r.code, words in out["error"]), (400, True))
        self.assertEqual(self.stored(), [])

    def test_not_json_is_415_and_a_large_body_413(self):
        r, out = self.post_json(b"mirror=de1&reason=slow",
                                ctype="application/x-www-form-urlencoded")
        self.assertEqual((r.code, out), (415, {"error": "send the body as application/json"}))
        r, out = self.post_json(b"mirror=de1", ctype="text/plain")
        self.assertEqual(r.code, 415)
        r, out = self.post_json({"mirror": "de1", "reason": "slow", "text": "x" * 5000})
        self.assertEqual(r.code, 413)
        self.assertEqual(self.stored(), [])

    def test_429_with_retry_after(self):
        for _ in range(3):
            r, _ = self.post_json({"mirror": "de1", "reason": "slow"})
            self.assertEqual(r.code, 200)
        r, out = self.post_json({"mirror": "de1", "reason": "slow"})
        self.assertEqual(r.code, 429)
        self.assertIn("too many reports", out["error"])
        self.assertTrue(r.headers.getRawHeaders("retry-after"))

    def test_get_is_405_and_no_cookie_is_set(self):
        r, _ = self.req("get", "/report.json")
        self.assertEqual(r.code, 405)
        r, _ = self.post_json({"mirror": "de1", "reason": "slow"})
        self.assertIsNone(r.headers.getRawHeaders("set-cookie"))


class LinksTests(ReportCase):
    def test_the_public_list_links_every_mirror(self):
        r, body = self.req("get", "/")
        self.assertEqual(r.code, 200)
        self.assertIn('href="/report?mirror=de1"', body)

    def test_disabled_reports_have_no_pages_and_no_links(self):
        ctx = make_ctx(self.engine, CONFIG.replace("threshold = 2", "enabled = false"))
        stub = StubTreq(build_root(ctx))
        body = self.successResultOf(self.successResultOf(stub.get(BASE + "/")).content())
        self.assertNotIn(b"/report?", body)
        r = self.successResultOf(stub.get(BASE + "/report"))
        self.assertEqual(r.code, 404)


class AdminTests(ReportCase):
    def setUp(self):
        super().setUp()
        add_user(self.engine, "alice", role="admin")
        add_user(self.engine, "hugo", role="helper")

    def test_admin_sees_reports_grouped_per_mirror(self):
        self.post_json({"mirror": "de1", "reason": "corrupt",
                        "text": "<script>alert(1)</script> bad hash"})
        self.post_json({"mirror": "de1", "reason": "slow"}, visitor="198.51.100.9")
        r, _ = self.req("get", "/admin/reports")
        self.assertEqual(r.code, 303)                              # not logged in
        login(self, self.stub, "hugo", base=BASE)                  # helpers see them too
        r, body = self.req("get", "/admin/reports")
        self.assertEqual(r.code, 200)
        self.assertIn(f'href="/admin/mirrors/{self.de1.id}#reports"', body)
        self.assertIn("<td class=\"num\">2</td>", body)           # in the window
        self.assertIn("1 × slow, 1 × corrupt", body)               # ties: the newest first
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt; bad hash", body)
        self.assertNotIn("<script>alert(1)", body)
        r, body = self.req("get", f"/admin/mirrors/{self.de1.id}")
        self.assertIn('<section class="card" id="reports">', body)
        self.assertIn("<b>2</b> in the last 1 h", body)
        self.assertIn("maintainers mailed", body)                  # threshold 2 was reached
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt; bad hash", body)
        self.assertIn("Probe requested", body)                     # the reports asked for it


def test_the_closer_pages_link_the_report_form_for_their_mirror():
    """The built-in page and the demo's shipped httpd page (markdown) carry [report]."""
    from pathlib import Path

    from tests.closer_support import get, make_stub

    stub, _c, _ctx = make_stub()
    _r, body = get(stub, "/dyn/closer/x?cca2=fr")
    preferred = re.search(r'<p class="preferred"><a href="https://([a-z0-9]+)\.', body).group(1)
    assert f'Trouble with this mirror? <a href="/report?mirror={preferred}">' in body
    docroot = Path(__file__).resolve().parents[1] / "demo" / "www"
    stub, _c, _ctx = make_stub(f'[closer]\ndocument_root = "{docroot}"\n')
    r, body = get(stub, "/httpd/download.cgi?cca2=fr")
    assert r.code == 200, body
    assert re.search(r'<a href="/report\?mirror=[a-z]{2}[0-9]+">Report a problem with it</a>',
                     body)
    stub, _c, _ctx = make_stub("[reports]\nenabled = false\n")
    _r, body = get(stub, "/dyn/closer/x?cca2=fr")
    assert "/report?" not in body
