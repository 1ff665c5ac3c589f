"""HTTP tests of the admin pages through treq's StubTreq (no sockets, no threads; STYLE E13)."""

from __future__ import annotations

import datetime as _dt
import email
import email.policy
import json
import re

import pytest
import sqlalchemy as sa
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from admin import store
from admin.web import build_root
from dnsd.models import (
    applications,
    audit,
    current_version,
    maintainers,
    maintenance_windows,
    mirror_health,
    mirrors,
    notes,
    outbox,
    probe_results,
    sessions,
    users,
)
from dnsd.validation import Rules
from tests.webfakes import T0, add_user, csrf_of, login, make_ctx

BASE = "http://admin.test"
PW = "pw-" + "x" * 12
MAIL = store.MailSettings(sender="mirrors@example.org", list="mirrors@lists.example.org")


def add_mirror(engine, country="DE", hostname="mirror.example.de", **kw):
    kw.setdefault("http_url", f"http://{hostname}/")
    kw.setdefault("ipv4", "192.0.2.10")
    with engine.begin() as conn:
        return store.add_mirror(conn, actor="setup", mail=None, country=country,
                                hostname=hostname, rules=LAB, **kw)


LAB = Rules(allow_private=True)           # documentation addresses are not public ones


class AdminWebCase(SynchronousTestCase):
    """A fresh SQLite table per test, an admin and a helper user, and a StubTreq on the root."""

    config = "[probes]\nallow_private = true\n"

    @pytest.fixture(autouse=True)
    def _engine(self, sqlite_engine):
        self.engine = sqlite_engine

    def setUp(self):
        add_user(self.engine, "alice", PW, "admin")
        add_user(self.engine, "hugo", PW, "helper")
        self.ctx = make_ctx(self.engine, self.config)
        self.stub = StubTreq(build_root(self.ctx))

    def get(self, path, **kw):
        kw.setdefault("allow_redirects", False)
        r = self.successResultOf(self.stub.get(BASE + path, **kw))
        return r, self.successResultOf(r.content()).decode()

    def post(self, path, data, **kw):
        kw.setdefault("allow_redirects", False)
        r = self.successResultOf(self.stub.post(BASE + path, data=data, **kw))
        return r, self.successResultOf(r.content()).decode()

    def login(self, user="alice", password=PW) -> str:
        return login(self, self.stub, user, password, BASE)

    def q(self, stmt):
        with self.engine.connect() as conn:
            return conn.execute(stmt).all()


class LoginTests(AdminWebCase):
    def test_pages_need_login(self):
        for path in ("/admin/", "/admin/mirrors/1", "/admin/mail", "/admin/applications"):
            r, _ = self.get(path)
            self.assertEqual(r.code, 303, path)
            self.assertTrue(r.headers.getRawHeaders("location")[0].startswith("/admin/login?next="))

    def test_post_without_login_is_403(self):
        m = add_mirror(self.engine)
        r, _ = self.post(f"/admin/mirrors/{m.id}/disable", {"reason": "x", "csrf": "x"})
        self.assertEqual(r.code, 403)
        self.assertEqual(self.q(sa.select(mirrors.c.status))[0][0], "active")

    def test_login_sets_hardened_cookie_and_stores_only_hash(self):
        r, body = self.get("/admin/login")
        token = csrf_of(body.encode())
        r = self.successResultOf(self.stub.post(BASE + "/admin/login", data={
            "csrf": token, "username": "alice", "password": PW, "next": "/admin/mail"},
            allow_redirects=False))
        self.assertEqual(r.code, 303)
        self.assertEqual(r.headers.getRawHeaders("location"), ["/admin/mail"])
        cookies = [c for c in r.headers.getRawHeaders("set-cookie")
                   if c.startswith("mirrordns_session=")]
        self.assertEqual(len(cookies), 1)
        c = cookies[0]
        self.assertIn("HttpOnly", c)
        self.assertIn("SameSite=strict", c)
        self.assertNotIn("Secure", c)                       # plain http in this config
        value = c.split(";")[0].split("=", 1)[1]
        ids = [row[0] for row in self.q(sa.select(sessions.c.id))]
        self.assertEqual(len(ids), 1)
        self.assertNotEqual(ids[0], value)
        import hashlib
        self.assertEqual(ids[0], hashlib.sha256(value.encode()).hexdigest())

    def test_login_csrf_required(self):
        self.get("/admin/login")
        r, _ = self.post("/admin/login", {"csrf": "forged", "username": "alice", "password": PW})
        self.assertEqual(r.code, 403)
        self.assertEqual(self.q(sa.select(sessions.c.id)), [])

    def test_wrong_password(self):
        _, body = self.get("/admin/login")
        r, body = self.post("/admin/login", {"csrf": csrf_of(body.encode()), "username": "alice",
                                              "password": "nope"})
        self.assertEqual(r.code, 403)
        self.assertIn("Wrong user name or password", body)

    def test_unknown_user_same_message(self):
        _, body = self.get("/admin/login")
        r, body = self.post("/admin/login", {"csrf": csrf_of(body.encode()), "username": "mallory",
                                              "password": "nope"})
        self.assertEqual(r.code, 403)
        self.assertIn("Wrong user name or password", body)

    def _try(self, username, password, ip=None):
        headers = {"X-Forwarded-For": ip} if ip else {}
        _, body = self.get("/admin/login", headers=headers)
        return self.post("/admin/login", {"csrf": csrf_of(body.encode()), "username": username,
                                          "password": password}, headers=headers)

    def test_failures_slow_down_and_never_lock_out(self):
        """After the free failures each attempt waits twice as long as the one before; once the
        wait is over the right password works at once: nothing is ever locked."""
        free = self.ctx.cfg.admin.login_free_failures
        for _ in range(free):
            r, _ = self._try("alice", "nope")
            self.assertEqual(r.code, 403)
        for wait in (1, 2, 4):
            r, body = self._try("alice", PW)
            self.assertEqual(r.code, 429)                 # even the right password waits
            self.assertIn("Too many failed attempts", body)
            self.assertEqual(r.headers.getRawHeaders(b"retry-after"), [str(wait + 1).encode()])
            self.ctx.clock.advance(wait)
            r, _ = self._try("alice", "still wrong")
            self.assertEqual(r.code, 403)
        self.ctx.clock.advance(8)
        self.login()

    def test_unknown_user_is_throttled_the_same_way(self):
        free = self.ctx.cfg.admin.login_free_failures
        answers = {}
        for name in ("alice", "mallory"):
            for _ in range(free):
                self._try(name, "nope")
            r, body = self._try(name, "nope")
            answers[name] = (r.code, re.sub(r'name="(csrf|username)" value="[^"]*"', "", body))
        self.assertEqual(answers["alice"], answers["mallory"])
        self.assertEqual(answers["alice"][0], 429)


class ProxiedLoginTests(AdminWebCase):
    """Visitors come through a trusted proxy, so each test can speak from several addresses."""

    config = '[admin]\ntrusted_proxies = ["127.0.0.1"]\n'

    def _try(self, username, password, ip):
        return LoginTests._try(self, username, password, ip)

    def test_failures_from_one_address_never_delay_another(self):
        for _ in range(self.ctx.cfg.admin.login_free_failures + 3):
            self._try("alice", "nope", "198.51.100.66")
        r, _ = self._try("alice", PW, "198.51.100.66")
        self.assertEqual(r.code, 429)
        r, _ = self._try("alice", PW, "192.0.2.10")             # alice, at home: logged in
        self.assertEqual(r.code, 303)

    def test_guessing_across_accounts_from_one_address_slows_down(self):
        free = self.ctx.cfg.admin.login_address_free_failures
        for i in range(free):
            r, _ = self._try(f"user{i}", "guess", "203.0.113.9")
            self.assertEqual(r.code, 403)
        r, _ = self._try("alice", PW, "203.0.113.9")
        self.assertEqual(r.code, 429)
        r, _ = self._try("alice", PW, "203.0.113.10")
        self.assertEqual(r.code, 303)

    def test_a_proxy_that_does_not_say_who_is_unknown_not_itself(self):
        """No X-Forwarded-For: every such visitor counts as one unknown client, whose failures
        never slow down a visitor the proxy does name."""
        for _ in range(self.ctx.cfg.admin.login_free_failures + 1):
            _, body = self.get("/admin/login")
            self.post("/admin/login", {"csrf": csrf_of(body.encode()), "username": "alice",
                                       "password": "nope"})
        _, body = self.get("/admin/login")
        r, _ = self.post("/admin/login", {"csrf": csrf_of(body.encode()), "username": "alice",
                                          "password": PW})
        self.assertEqual(r.code, 429)
        r, _ = self._try("alice", PW, "192.0.2.10")
        self.assertEqual(r.code, 303)


class LoginMoreTests(AdminWebCase):
    def test_password_is_taken_verbatim(self):
        add_user(self.engine, "spacey", "  two words  ", "admin")
        _, body = self.get("/admin/login")
        r, _ = self.post("/admin/login", {"csrf": csrf_of(body.encode()), "username": "spacey",
                                           "password": "two words"})
        self.assertEqual(r.code, 403)
        self.login("spacey", "  two words  ")

    def test_head_request(self):
        r = self.successResultOf(self.stub.head(BASE + "/admin/login"))
        self.assertEqual(r.code, 200)
        self.assertEqual(self.successResultOf(r.content()), b"")

    def test_login_next_cannot_leave_site(self):
        _, body = self.get("/admin/login")
        r, _ = self.post("/admin/login", {"csrf": csrf_of(body.encode()), "username": "alice",
                                           "password": PW, "next": "https://evil.example/"})
        self.assertEqual(r.headers.getRawHeaders("location"), ["/admin/"])

    def test_logout(self):
        csrf = self.login()
        r, _ = self.post("/admin/logout", {"csrf": "bad"})
        self.assertEqual(r.code, 403)
        r, _ = self.post("/admin/logout", {"csrf": csrf})
        self.assertEqual(r.code, 303)
        self.assertEqual(self.q(sa.select(sessions.c.id)), [])
        r, _ = self.get("/admin/")
        self.assertEqual(r.code, 303)

    def test_session_expires(self):
        self.login()
        self.ctx.clock.advance(self.ctx.cfg.admin.session_hours * 3600 + 1)
        r, _ = self.get("/admin/")
        self.assertEqual(r.code, 303)

    def test_session_ends_after_idleness_and_lives_while_used(self):
        idle = self.ctx.cfg.admin.session_idle_minutes * 60
        self.login()
        for _ in range(5):                              # working: 5 x 0.8 of the idle time
            self.ctx.clock.advance(idle * 0.8)
            r, _ = self.get("/admin/")
            self.assertEqual(r.code, 200)
        self.ctx.clock.advance(idle + 1)                # away
        r, _ = self.get("/admin/")
        self.assertEqual(r.code, 303)

    def test_session_never_outlives_session_hours_however_busy(self):
        self.login()
        step = self.ctx.cfg.admin.session_idle_minutes * 60 / 2
        left = self.ctx.cfg.admin.session_hours * 3600
        while left > step:
            self.ctx.clock.advance(step)
            left -= step
            r, _ = self.get("/admin/")
            self.assertEqual(r.code, 200)
        self.ctx.clock.advance(left + 1)
        r, _ = self.get("/admin/")
        self.assertEqual(r.code, 303)

    def test_login_token_is_signed_not_just_doubled(self):
        """A planted cookie with a form field to match (x/x) no longer logs anyone in."""
        self.stub = StubTreq(build_root(self.ctx))
        r, _ = self.post("/admin/login", {"csrf": "x", "username": "alice", "password": PW},
                         cookies={"mirrordns_login": "x" * 24})
        self.assertEqual(r.code, 403)
        _, body = self.get("/admin/login")
        token = csrf_of(body.encode())
        r, _ = self.post("/admin/login?csrf=" + token, {"username": "alice", "password": PW})
        self.assertEqual(r.code, 403)                   # a token in the query string is not read
        self.assertEqual(self.q(sa.select(sessions.c.id)), [])


class SecureCookieTests(AdminWebCase):
    config = "[admin]\nhttps = true\n"

    def _session_cookie(self):
        r = self.successResultOf(self.stub.get("https://admin.test/admin/login"))
        body = self.successResultOf(r.content()).decode()
        self.assertTrue(all("Secure" in c for c in r.headers.getRawHeaders("set-cookie")))
        r = self.successResultOf(self.stub.post("https://admin.test/admin/login", data={
            "csrf": csrf_of(body.encode()), "username": "alice", "password": PW},
            allow_redirects=False))
        return [c for c in r.headers.getRawHeaders("set-cookie")
                if c.startswith("mirrordns_session")][0]

    def test_secure_flag_under_https(self):
        self.assertIn("Secure", self._session_cookie())


class SecureByBaseURLTests(SecureCookieTests):
    """base_url says https (a proxy terminates TLS) and [admin] https is not set: still Secure."""

    config = '[admin]\nbase_url = "https://mirrors.example.org"\n'


class MirrorListTests(AdminWebCase):
    def test_list_grouped_with_totals_and_filters(self):
        de = add_mirror(self.engine, "DE", "a.example.de")
        add_mirror(self.engine, "DE", "b.example.de")
        us = add_mirror(self.engine, "US", "a.example.com", ipv4="198.51.100.5")
        with self.engine.begin() as conn:
            store.disable(conn, f"#{us.id}", "alice", "hardware move", None)
            store.add_note(conn, f"#{de.id}", "alice", "talked to the admin")
            conn.execute(mirror_health.insert().values(
                mirror_id=de.id, uptime_7d=0.987, last_probe_at=T0 - _dt.timedelta(minutes=5),
                last_ok_at=T0 - _dt.timedelta(minutes=5), last_sync_at=T0 - _dt.timedelta(hours=3)))
        self.login()
        r, body = self.get("/admin/")
        self.assertEqual(r.code, 200)
        self.assertIn("Germany", body)
        self.assertIn("United States", body)
        self.assertLess(body.index("Germany"), body.index("United States"))
        self.assertIn("disabled by admin", body)
        self.assertIn("hardware move", body)
        self.assertIn("98.7%", body)
        self.assertIn("5 min ago", body)
        self.assertIn("3 h", body)
        self.assertIn("talked to the admin", body)
        # serving is the DNS's verdict: de1 passed a probe; b.example.de was never probed
        self.assertRegex(body, r"<b>1</b><span>serving \(in DNS answers\)</span>")
        self.assertRegex(body, r"<b>2</b><span>active</span>")
        self.assertIn("not serving: never probed", body)
        self.assertIn("(DE) · 1 serving of 2", body)
        self.assertRegex(body, r"<b>1</b><span>disabled by admins</span>")
        self.assertRegex(body, r"<b>3</b><span>total</span>")
        r, body = self.get("/admin/?country=US")
        self.assertNotIn("a.example.de", body)
        self.assertIn("a.example.com", body)
        r, body = self.get("/admin/?status=active")
        self.assertIn("a.example.de", body)
        self.assertNotIn("a.example.com", body)

    def test_hostile_provider_name_is_escaped(self):
        add_mirror(self.engine, provider_name="<script>alert(1)</script>")
        self.login()
        _, body = self.get("/admin/")
        self.assertNotIn("<script>alert(1)</script>", body)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", body)

    def test_security_headers(self):
        self.login()
        r, _ = self.get("/admin/")
        csp = r.headers.getRawHeaders("content-security-policy")[0]
        self.assertIn("default-src 'none'", csp)
        self.assertNotIn("script-src", csp)
        self.assertEqual(r.headers.getRawHeaders("x-frame-options"), ["DENY"])

    def test_stylesheet_served(self):
        r, body = self.get("/static/style.css")
        self.assertEqual(r.code, 200)
        self.assertIn("text/css", r.headers.getRawHeaders("content-type")[0])
        self.assertIn(".badge", body)
        r, _ = self.get("/static/style.css", headers={"if-none-match": r.headers.getRawHeaders("etag")})
        self.assertEqual(r.code, 304)
        for bad in ("/static/../framework.py", "/static/nothing.css", "/static/"):
            r, _ = self.get(bad)
            self.assertEqual(r.code, 404, bad)


class MirrorPageTests(AdminWebCase):
    def setUp(self):
        super().setUp()
        self.m = add_mirror(self.engine, "DE", "mirror.example.de", ipv6="2001:db8:de::10",
                            provider_name="<b>Hoster</b>", bandwidth_mbit=1000,
                            maintainers_=["Jane <jane@example.de>"])
        self.url = f"/admin/mirrors/{self.m.id}"

    def test_page_shows_everything(self):
        with self.engine.begin() as conn:
            for i in range(60):
                conn.execute(probe_results.insert().values(
                    mirror_id=self.m.id, at=T0 - _dt.timedelta(hours=i), url="http://x/TIME",
                    ok=i % 10 != 3, ttfb_ms=100 + i, total_ms=150 + i, http_status=200 if i % 10 != 3 else 503,
                    error_class="" if i % 10 != 3 else "http-status"))
            store.add_note(conn, f"#{self.m.id}", "alice", "first note")
            store.add_note(conn, f"#{self.m.id}", "hugo", "second note")
        self.login()
        r, body = self.get(self.url)
        self.assertEqual(r.code, 200)
        self.assertIn("mirror.example.de", body)
        self.assertIn("&lt;b&gt;Hoster&lt;/b&gt;", body)
        self.assertIn("Jane &lt;jane@example.de&gt;", body)
        self.assertLess(body.index("second note"), body.index("first note"))    # newest first
        self.assertIn("Last 50 probe results", body)
        self.assertEqual(body.count("http://x/TIME"), 50)
        self.assertIn('<svg class="graph uptime"', body)
        self.assertIn('<svg class="graph rtt"', body)
        self.assertIn("<polyline", body)
        self.assertIn("score", body.lower())
        self.assertIn("bandwidth 1.00", body)
        self.assertIn("no geo database", body)               # no locator handed in
        self.assertIn("<b>add</b>", body)                    # the audit row of the addition
        self.assertIn("2026-11-20: 87.5% up (21/24 probes)", body)

    def test_unsafe_provider_url_is_not_a_link(self):
        with self.engine.begin() as conn:
            conn.execute(mirrors.update().values(provider_url="javascript:alert(1)"))
        self.login()
        _, body = self.get(self.url)
        self.assertNotIn('href="javascript:', body)
        self.assertIn("javascript:alert(1)", body)

    def test_geo_check(self):
        class Geo:
            def country(self, ip):
                return {"192.0.2.10": "DE", "2001:db8:de::10": "US"}.get(ip)
        self.ctx.geo = Geo()
        self.login()
        _, body = self.get(self.url)
        self.assertIn("DE ✓", body)
        self.assertIn("US, listed as DE", body)

    def test_live_plan_shown(self):
        from types import SimpleNamespace

        from dnsd.plan import build_plan, load_rows

        with self.engine.begin() as conn:
            conn.execute(mirror_health.insert().values(
                mirror_id=self.m.id, last_sync_at=T0 - _dt.timedelta(days=3),
                last_probe_at=T0, last_ok_at=T0 - _dt.timedelta(days=2)))
        with self.engine.connect() as conn:
            plan = build_plan(load_rows(conn), self.ctx.cfg, T0)
        self.ctx.plan = SimpleNamespace(current=plan)
        self.login()
        _, body = self.get(self.url)
        self.assertIn("Not serving</span> in the DNS plan", body)
        self.assertIn("out of sync 3 days", body)
        _, body = self.get("/admin/")
        self.assertIn("not serving: out of sync 3 days", body)

    def test_missing_mirror_404(self):
        self.login()
        r, _ = self.get("/admin/mirrors/999")
        self.assertEqual(r.code, 404)

    def test_unknown_path_404_and_wrong_method_405(self):
        self.login()
        r, body = self.get("/admin/nothing-here")
        self.assertEqual(r.code, 404)
        self.assertIn("<h1>Not found</h1>", body)             # in the layout, with navigation
        self.assertIn('href="/admin/applications"', body)
        r, _ = self.get(self.url + "/disable")
        self.assertEqual(r.code, 405)

    def test_disable_with_reason(self):
        csrf = self.login("hugo")                              # helpers may disable
        v0 = self._version()
        r, _ = self.post(self.url + "/disable", {"csrf": csrf, "reason": "disk failure"})
        self.assertEqual(r.code, 303)
        self.assertEqual(r.headers.getRawHeaders("location"), [self.url + "?done=disabled"])
        row = self.q(sa.select(mirrors.c.status, mirrors.c.status_reason))[0]
        self.assertEqual(tuple(row), ("disabled-by-admin", "disk failure"))
        self.assertGreater(self._version(), v0)
        actors = [a for (a,) in self.q(sa.select(audit.c.actor).where(audit.c.action == "disable"))]
        self.assertEqual(actors, ["hugo"])
        r, body = self.get(self.url + "?done=disabled")
        self.assertIn("Mirror disabled", body)

    def test_disable_needs_reason(self):
        csrf = self.login()
        r, body = self.post(self.url + "/disable", {"csrf": csrf, "reason": "  "})
        self.assertEqual(r.code, 400)
        self.assertIn("Please give a reason", body)
        self.assertEqual(self.q(sa.select(mirrors.c.status))[0][0], "active")

    def test_bad_reasons_refused_by_the_form_and_kept(self):
        csrf = self.login()
        for path in ("/disable", "/retire"):
            r, body = self.post(self.url + path, {"csrf": csrf, "reason": "x" * 501})
            self.assertEqual(r.code, 400, path)
            self.assertIn("The reason is longer than 500 characters.", body)
            self.assertIn('value="' + "x" * 501 + '"', body)       # nothing typed is lost
            r, body = self.post(self.url + path, {"csrf": csrf,
                                                  "reason": "two\nBcc: x@example.org"})
            self.assertEqual(r.code, 400, path)
            self.assertIn("The reason must not hold control characters or line breaks.", body)
        self.assertEqual(self.q(sa.select(mirrors.c.status))[0][0], "active")
        self.assertEqual(self.q(sa.select(outbox.c.id)), [])

    def test_csrf_rejected(self):
        self.login()
        for path, data in ((self.url + "/disable", {"reason": "x"}),
                           (self.url + "/notes", {"text": "x"}),
                           (self.url + "/enable", {}),
                           (self.url + "/retire", {"reason": "x"}),
                           (self.url + "/edit", {"hostname": "x.example"}),
                           ("/admin/mail", {"target": "list", "subject": "s", "body": "b",
                                            "action": "send"})):
            for bad in ({}, {"csrf": "wrong"}):
                r, _ = self.post(path, {**data, **bad})
                self.assertEqual(r.code, 403, (path, bad))
        self.assertEqual(self.q(sa.select(mirrors.c.status))[0][0], "active")
        self.assertEqual(self.q(sa.select(notes.c.id)), [])
        self.assertEqual(self.q(sa.select(outbox.c.id)), [])

    def test_csrf_of_another_session_rejected(self):
        other = self.login("hugo")
        self.stub = StubTreq(build_root(self.ctx))            # a fresh cookie jar
        self.login("alice")
        r, _ = self.post(self.url + "/notes", {"csrf": other, "text": "x"})
        self.assertEqual(r.code, 403)

    def test_helper_cannot_enable_retire_edit_or_mail(self):
        with self.engine.begin() as conn:
            store.disable(conn, f"#{self.m.id}", "alice", "x", None)
        csrf = self.login("hugo")
        for path, data in ((self.url + "/enable", {}), (self.url + "/retire", {"reason": "x"}),
                           (self.url + "/edit", {"hostname": "x.example"}),
                           ("/admin/mail", {"target": "list", "subject": "s", "body": "b",
                                            "action": "send"}),
                           ("/admin/mirrors/new", {"hostname": "n.example"})):
            r, body = self.post(path, {**data, "csrf": csrf})
            self.assertEqual(r.code, 403, path)
            self.assertIn("helpers may disable mirrors and add notes", body)
        self.assertEqual(self.q(sa.select(mirrors.c.status))[0][0], "disabled-by-admin")
        for path in (self.url + "/edit", "/admin/mirrors/new"):
            r, _ = self.get(path)
            self.assertEqual(r.code, 403, path)
        _, body = self.get(self.url)
        self.assertNotIn("/enable", body)                      # the page hides what it cannot do
        self.assertNotIn("/retire", body)
        self.assertNotIn("/edit", body)

    def test_helper_adds_note(self):
        csrf = self.login("hugo")
        r, _ = self.post(self.url + "/notes", {"csrf": csrf, "text": "<script>x()</script> hi"})
        self.assertEqual(r.code, 303)
        _, body = self.get(self.url)
        self.assertIn("&lt;script&gt;x()&lt;/script&gt; hi", body)
        self.assertNotIn("<script>x()", body)
        r, body = self.post(self.url + "/notes", {"csrf": csrf, "text": ""})
        self.assertEqual(r.code, 400)
        self.assertIn("The note is empty.", body)

    def test_enable_and_retire(self):
        with self.engine.begin() as conn:
            store.disable(conn, f"#{self.m.id}", "alice", "x", None)
        csrf = self.login()
        r, _ = self.post(self.url + "/enable", {"csrf": csrf})
        self.assertEqual(r.code, 303)
        self.assertEqual(self.q(sa.select(mirrors.c.status))[0][0], "active")
        r, body = self.post(self.url + "/enable", {"csrf": csrf})
        self.assertEqual(r.code, 409)
        self.assertIn("already active", body)
        r, body = self.post(self.url + "/retire", {"csrf": csrf, "reason": ""})
        self.assertEqual(r.code, 400)
        r, _ = self.post(self.url + "/retire", {"csrf": csrf, "reason": "provider closed"})
        self.assertEqual(r.code, 303)
        self.assertEqual(tuple(self.q(sa.select(mirrors.c.status, mirrors.c.status_reason))[0]),
                         ("retired", "provider closed"))
        # status changes are mailed to the list and the maintainers
        subjects = [s for (s,) in self.q(sa.select(outbox.c.subject))]
        self.assertTrue(any("enabled by alice" in s for s in subjects), subjects)
        self.assertTrue(any("retired by alice" in s for s in subjects), subjects)

    def _version(self):
        with self.engine.connect() as conn:
            return current_version(conn)


class EditTests(AdminWebCase):
    def setUp(self):
        super().setUp()
        self.m = add_mirror(self.engine, "DE", "mirror.example.de",
                            maintainers_=["Jane <jane@example.de>"])
        self.url = f"/admin/mirrors/{self.m.id}/edit"

    def form(self, **over):
        f = {"name": self.m.name, "hostname": "mirror.example.de", "country": "DE",
             "ipv4": "192.0.2.10", "ipv6": "", "http_url": "http://mirror.example.de/",
             "https_url": "", "ftp_url": "", "rsync_url": "", "weight": "1",
             "provider_name": "", "provider_url": "", "provider_logo": "",
             "maintainers": "Jane <jane@example.de>", "bandwidth_mbit": "", "cores": "",
             "memory_gb": "", "disk_gb": ""}
        f.update(over)
        return f

    def test_form_prefilled(self):
        self.login()
        r, body = self.get(self.url)
        self.assertEqual(r.code, 200)
        self.assertIn('value="192.0.2.10"', body)
        self.assertIn("Jane &lt;jane@example.de&gt;", body)

    def test_validation_messages_by_field(self):
        csrf = self.login()
        r, body = self.post(self.url, {**self.form(ipv4="300.1.2.3", country="XX", name="germany1",
                                                   weight="-2", provider_url="javascript:alert(1)",
                                                   maintainers="not an address", cores="many"),
                                       "csrf": csrf})
        self.assertEqual(r.code, 400)
        for f in ("ipv4", "country", "name", "weight", "provider_url", "maintainers", "cores"):
            self.assertIn(f'id="err-{f}"', body, f)
        self.assertIn("is not an IPv4 address", body)
        # nothing was written
        self.assertEqual(self.q(sa.select(mirrors.c.ipv4))[0][0], "192.0.2.10")

    def test_save_changes_dns_fields_and_maintainers(self):
        csrf = self.login()
        v0 = self._version()
        r, _ = self.post(self.url, {**self.form(ipv4="192.0.2.99", backup="1", weight="2.5",
                                                provider_name="<i>Uni</i>",
                                                maintainers="Jane <jane@example.de>\nbob@example.de"),
                                    "csrf": csrf})
        self.assertEqual(r.code, 303)
        row = self.q(sa.select(mirrors.c.ipv4, mirrors.c.backup, mirrors.c.weight,
                               mirrors.c.provider_name))[0]
        self.assertEqual(tuple(row), ("192.0.2.99", True, 2.5, "<i>Uni</i>"))
        self.assertGreater(self._version(), v0)
        self.assertEqual(sorted(e for (e,) in self.q(sa.select(maintainers.c.email))),
                         ["bob@example.de", "jane@example.de"])
        actions = [a for (a,) in self.q(sa.select(audit.c.action))]
        self.assertIn("edit", actions)
        self.assertIn("maintainers", actions)
        _, body = self.get(f"/admin/mirrors/{self.m.id}")
        self.assertIn("&lt;i&gt;Uni&lt;/i&gt;", body)

    def test_name_taken(self):
        other = add_mirror(self.engine, "DE", "other.example.de")
        csrf = self.login()
        r, body = self.post(self.url, {**self.form(name=other.name), "csrf": csrf})
        self.assertEqual(r.code, 400)
        self.assertIn('id="err-name"', body)
        self.assertIn("already used", body)

    def test_add_mirror(self):
        csrf = self.login()
        r, body = self.get("/admin/mirrors/new")
        self.assertEqual(r.code, 200)
        r, body = self.post("/admin/mirrors/new", {**self.form(name="", hostname="new.example.fr",
                                                               country="FR", ipv4="203.0.113.4",
                                                               http_url="http://new.example.fr/"),
                                                   "csrf": csrf})
        self.assertEqual(r.code, 303, body)
        row = self.q(sa.select(mirrors.c.name, mirrors.c.status)
                     .where(mirrors.c.hostname == "new.example.fr"))[0]
        self.assertEqual(tuple(row), ("fr1", "pending"))

    def _version(self):
        with self.engine.connect() as conn:
            return current_version(conn)


class MailTests(AdminWebCase):
    config = '[mail]\nfrom = "mirrors@example.org"\nlist = "mirrors@lists.example.org"\n'

    def setUp(self):
        super().setUp()
        self.a = add_mirror(self.engine, "DE", "a.example.de", maintainers_=["A <a@example.de>"])
        self.b = add_mirror(self.engine, "US", "b.example.com",
                            maintainers_=["B <b@example.com>", "c@example.com"])

    def test_preview_then_send_to_one_mirror(self):
        csrf = self.login()
        data = {"csrf": csrf, "target": "mirror", "mirror": str(self.b.id),
                "subject": "Your mirror", "body": "Hello <there>", "action": "preview"}
        r, body = self.post("/admin/mail", data)
        self.assertEqual(r.code, 200)
        self.assertIn("Preview", body)
        self.assertIn("b@example.com", body)
        self.assertIn("Hello &lt;there&gt;", body)
        self.assertEqual(self.q(sa.select(outbox.c.id).where(outbox.c.kind == "admin-mail")), [])
        r, _ = self.post("/admin/mail", {**data, "action": "send"})
        self.assertEqual(r.code, 303)
        rows = self.q(sa.select(outbox.c.recipients, outbox.c.author, outbox.c.mirror_id,
                                outbox.c.message).where(outbox.c.kind == "admin-mail"))
        self.assertEqual(len(rows), 1)
        # SMTP gets bare addresses; the To: header the (name, address) pairs, encoded
        self.assertEqual(rows[0][0], "b@example.com,c@example.com")
        self.assertEqual(rows[0][1:3], ("alice", self.b.id))
        msg = email.message_from_bytes(rows[0][3], policy=email.policy.default)
        self.assertEqual([(a.display_name, a.addr_spec) for a in msg["To"].addresses],
                         [("B", "b@example.com"), ("", "c@example.com")])
        self.assertNotIn(b"Auto-Submitted", rows[0][3])        # written by a person
        _, body = self.get("/admin/mail")
        self.assertIn("Your mirror", body)                      # the record of what was sent
        self.assertIn("alice", body)

    def test_all_maintainers_one_mail_per_mirror(self):
        csrf = self.login()
        r, _ = self.post("/admin/mail", {"csrf": csrf, "target": "all", "subject": "News",
                                         "body": "b", "action": "send"})
        self.assertEqual(r.code, 303)
        rows = sorted(x for (x,) in self.q(sa.select(outbox.c.recipients)
                                           .where(outbox.c.kind == "admin-mail")))
        self.assertEqual(rows, ["a@example.de", "b@example.com,c@example.com"])

    def test_list(self):
        csrf = self.login()
        r, _ = self.post("/admin/mail", {"csrf": csrf, "target": "list", "subject": "Hi",
                                         "body": "b", "action": "send"})
        self.assertEqual(r.code, 303)
        self.assertEqual(self.q(sa.select(outbox.c.recipients)
                                .where(outbox.c.kind == "admin-mail-list"))[0][0],
                         "mirrors@lists.example.org")

    def _broken_contacts(self):
        """c.example.fr has a maintainer whose stored address fails validation (an old row)
        beside a good one; d.example.fr has none."""
        c = add_mirror(self.engine, "FR", "c.example.fr", ipv4="192.0.2.30",
                       maintainers_=["Good <good@example.fr>"])
        d = add_mirror(self.engine, "FR", "d.example.fr", ipv4="192.0.2.31")
        with self.engine.begin() as conn:
            conn.execute(maintainers.insert().values(mirror_id=c.id, name="Old",
                                                     email="old at example.fr"))
        return c, d

    def test_the_form_says_who_will_not_receive_it_before_sending(self):
        c, d = self._broken_contacts()
        csrf = self.login()
        r, body = self.get(f"/admin/mail?target=mirror&mirror={c.id}")   # "write to them"
        self.assertEqual(r.code, 200)
        left = body.split('id="left-out"')[1].split("</ul>")[0]
        self.assertIn("Old &lt;old at example.fr&gt;", left)
        self.assertIn("does not look like a mail address", left)
        self.assertIn("Good &lt;good@example.fr&gt;", body.split("Who gets it")[1])
        r, body = self.post("/admin/mail", {"csrf": csrf, "target": "all", "subject": "News",
                                            "body": "b", "action": "preview"})
        self.assertEqual(r.code, 200)
        left = body.split('id="left-out"')[1].split("</ul>")[0]
        self.assertIn(f"<b>{d.name}</b>: the maintainers <span class=\"no\">no maintainer is "
                      "listed for this mirror</span>", left)
        self.assertIn("old at example.fr", left)
        self.assertIn("Send 3 mails", body)                  # a, b and c; not d
        r, _ = self.post("/admin/mail", {"csrf": csrf, "target": "all", "subject": "News",
                                         "body": "b", "action": "send"})
        self.assertEqual(r.code, 303)
        rows = sorted(x for (x,) in self.q(sa.select(outbox.c.recipients)
                                           .where(outbox.c.kind == "admin-mail")))
        self.assertEqual(rows, ["a@example.de", "b@example.com,c@example.com",
                                "good@example.fr"])

    def test_a_mirror_nobody_can_be_written_to_is_refused_with_the_reason(self):
        _c, d = self._broken_contacts()
        csrf = self.login()
        r, body = self.post("/admin/mail", {"csrf": csrf, "target": "mirror",
                                            "mirror": str(d.id), "subject": "Hi", "body": "b",
                                            "action": "send"})
        self.assertEqual(r.code, 400)
        self.assertIn("Nobody to send to: the maintainers: no maintainer is listed for this "
                      "mirror.", body)
        self.assertEqual(self.q(sa.select(outbox.c.id).where(outbox.c.kind == "admin-mail")), [])

    def test_validation(self):
        csrf = self.login()
        r, body = self.post("/admin/mail", {"csrf": csrf, "target": "mirror", "subject": "",
                                            "body": "", "action": "send"})
        self.assertEqual(r.code, 400)
        self.assertIn("The subject is empty.", body)
        self.assertIn("The text is empty.", body)
        self.assertIn("Choose a mirror.", body)
        self.assertEqual(self.q(sa.select(outbox.c.id).where(outbox.c.kind == "admin-mail")), [])


class ApplicationTests(AdminWebCase):
    def add_app(self, **kw):
        vals = {"token": "t" + kw.get("email", "x"), "status": "new", "name": "Ann",
                "email": "ann@example.fr", "country": "FR", "hostname": "mirror.example.fr",
                "provider_name": "<script>bad()</script>", "bandwidth_mbit": 1000, "cores": 8,
                "has_https": True, "http_url": "http://mirror.example.fr/"}
        vals.update(kw)
        with self.engine.begin() as conn:
            return conn.execute(applications.insert().values(**vals)).inserted_primary_key[0]

    def test_list_with_counts(self):
        self.add_app()
        self.add_app(email="b@example.fr", status="contacted")
        self.add_app(email="c@example.de", country="DE", status="declined")
        self.login()
        r, body = self.get("/admin/applications")
        self.assertEqual(r.code, 200)
        self.assertIn("France", body)
        self.assertIn("2 waiting", body)
        self.assertNotIn("c@example.de", body)                  # declined is not waiting
        self.assertIn("&lt;script&gt;bad()&lt;/script&gt;", body)
        r, body = self.get("/admin/applications?status=all")
        self.assertIn("c@example.de", body)

    def test_accept_creates_an_active_mirror_that_serves_after_a_probe(self):
        aid = self.add_app()
        add_mirror(self.engine, "FR", "old.example.fr")           # fr1 is taken
        csrf = self.login()
        r, body = self.get(f"/admin/applications/{aid}")
        self.assertEqual(r.code, 200)
        self.assertIn('value="fr2"', body)                       # proposed name
        r, _ = self.post(f"/admin/applications/{aid}/accept", {"csrf": csrf, "name": "fr2"})
        self.assertEqual(r.code, 303)
        m = self.q(sa.select(mirrors.c.id, mirrors.c.name, mirrors.c.status,
                             mirrors.c.bandwidth_mbit).where(mirrors.c.name == "fr2"))[0]
        self.assertEqual(tuple(m[1:]), ("fr2", "active", 1000))
        _, page = self.get(f"/admin/mirrors/{m[0]}")
        self.assertIn("Not serving</span> in the DNS plan (version", page)
        self.assertIn("never probed", page)
        self.assertEqual(r.headers.getRawHeaders("location")[0], f"/admin/mirrors/{m[0]}?done=accepted")
        app = self.q(sa.select(applications.c.status, applications.c.mirror_id))[0]
        self.assertEqual(tuple(app), ("accepted", m[0]))
        self.assertEqual(self.q(sa.select(maintainers.c.email)
                                .where(maintainers.c.mirror_id == m[0]))[0][0], "ann@example.fr")
        r, body = self.post(f"/admin/applications/{aid}/accept", {"csrf": csrf, "name": "fr3"})
        self.assertEqual(r.code, 409)

    def test_accept_with_taken_name(self):
        aid = self.add_app()
        add_mirror(self.engine, "FR", "old.example.fr")
        csrf = self.login()
        r, body = self.post(f"/admin/applications/{aid}/accept", {"csrf": csrf, "name": "fr1"})
        self.assertEqual(r.code, 409)
        self.assertIn("already used", body)

    def test_status_change_and_roles(self):
        aid = self.add_app()
        csrf = self.login("hugo")
        r, _ = self.post(f"/admin/applications/{aid}/status", {"csrf": csrf, "status": "declined"})
        self.assertEqual(r.code, 403)
        r, _ = self.post(f"/admin/applications/{aid}/accept", {"csrf": csrf})
        self.assertEqual(r.code, 403)
        self.stub = StubTreq(build_root(self.ctx))
        csrf = self.login("alice")
        r, _ = self.post(f"/admin/applications/{aid}/status", {"csrf": "x", "status": "declined"})
        self.assertEqual(r.code, 403)
        r, _ = self.post(f"/admin/applications/{aid}/status", {"csrf": csrf, "status": "bogus"})
        self.assertEqual(r.code, 400)
        r, _ = self.post(f"/admin/applications/{aid}/status", {"csrf": csrf, "status": "contacted"})
        self.assertEqual(r.code, 303)
        self.assertEqual(self.q(sa.select(applications.c.status))[0][0], "contacted")
        row = self.q(sa.select(audit.c.actor, audit.c.after)
                     .where(audit.c.action == "application-status"))[0]
        self.assertEqual(row[0], "alice")
        self.assertEqual(json.loads(row[1])["status"], "contacted")
        _, body = self.get(f"/admin/applications/{aid}")
        self.assertIn("new → <b>contacted</b>", body)


class EveryPageTests(AdminWebCase):
    """Every GET page renders for both roles on a table with something in every corner."""

    config = '[mail]\nlist = "mirrors@lists.example.org"\n'

    def setUp(self):
        super().setUp()
        mail = store.MailSettings.from_config(self.ctx.cfg)
        a = add_mirror(self.engine, "DE", "a.example.de", maintainers_=["A <a@example.de>"],
                       provider_logo="https://a.example.de/logo.png", backup=True)
        b = add_mirror(self.engine, "US", "b.example.com", ipv4="198.51.100.9")
        with self.engine.begin() as conn:
            store.disable(conn, f"#{b.id}", "alice", "gone", mail)
            store.retire(conn, f"#{b.id}", "alice", "really gone", mail)
            store.add_note(conn, f"#{a.id}", "hugo", "multi\nline <note>")
            conn.execute(mirror_health.insert().values(
                mirror_id=a.id, last_probe_at=T0, last_ok_at=T0, last_error="timeout",
                last_sync_at=T0 - _dt.timedelta(days=2), ipv4_up=False, ipv6_up=None,
                https_ok=True, uptime_24h=0.5, uptime_7d=0.75, uptime_30d=0.9, rtt_p50_ms=10.0,
                rtt_p95_ms=2000.0, geo_check="192.0.2.10 in US, not DE"))
            conn.execute(probe_results.insert().values(
                mirror_id=a.id, at=T0, url="http://a/TIME", ok=False, error_class="timeout",
                error="no answer in 15 s", sync_age=90000))
            for i, st in enumerate(("new", "contacted", "accepted", "declined", "withdrawn")):
                conn.execute(applications.insert().values(
                    token=f"tok{i}", status=st, name=f"App {st}", email=f"{st}@example.org",
                    country="FR", hostname=f"{st}.example.fr", comments="<b>hi</b>",
                    http_url=f"http://{st}.example.fr/"))
            store.accept_application(conn, 2, "alice", None, mail)
        self.a, self.b = a, b

    def pages(self):
        yield "/admin/", 200, 200
        yield "/admin/?country=DE&status=active", 200, 200
        yield "/admin/?country=XX&status=bogus", 200, 200
        yield f"/admin/mirrors/{self.a.id}", 200, 200
        yield f"/admin/mirrors/{self.b.id}", 200, 200
        yield f"/admin/mirrors/{self.a.id}/edit", 200, 403
        yield "/admin/mirrors/new?country=DE", 200, 403
        yield "/admin/mail", 200, 200
        yield f"/admin/mail?target=mirror&mirror={self.a.id}", 200, 200
        for st in ("", "all", "new", "contacted", "accepted", "declined", "withdrawn", "x"):
            yield f"/admin/applications?status={st}", 200, 200
        for aid in range(1, 6):
            yield f"/admin/applications/{aid}", 200, 200
        yield "/admin/applications/99", 404, 404
        yield "/admin/account", 200, 200
        yield "/admin/outbox", 200, 403
        for st in ("pending", "failed", "sent", "discarded", "x"):
            yield f"/admin/outbox?state={st}", 200, 403
        yield "/admin/users", 200, 403

    def test_every_page_both_roles(self):
        for user, col in (("alice", 1), ("hugo", 2)):
            self.stub = StubTreq(build_root(self.ctx))
            self.login(user)
            for page in self.pages():
                r, body = self.get(page[0])
                self.assertEqual(r.code, page[col], (user, page[0]))
                self.assertNotIn("<note>", body)
                self.assertNotIn("<b>hi</b>", body)
        _, body = self.get("/admin/applications/2")                # accepted in setUp
        self.assertIn("Accepted as", body)
        self.assertIn("contacted → <b>accepted</b>", body)
        _, body = self.get(f"/admin/mirrors/{self.a.id}")
        self.assertIn("192.0.2.10 in US, not DE", body)
        self.assertIn('<img class="logo" src="https://a.example.de/logo.png"', body)
        self.assertIn('<dd class="no">2 d</dd>', body)             # sync age past the limit
        _, body = self.get(f"/admin/mirrors/{self.b.id}")
        self.assertIn("retired by alice", body)                # the mail record on the page
        self.assertIn("really gone", body)


    def test_every_post_route_needs_the_csrf_token(self):
        """Taken from the route table, so a POST added later cannot miss the check."""
        from admin.web import admin_pages

        self.login("alice")
        routes = [r for r in admin_pages.build(self.ctx).routes
                  if r.method == b"POST" and r.login]
        self.assertGreaterEqual(len(routes), 10)
        ids = {"mid": str(self.a.id), "aid": "1", "oid": "1", "uname": "hugo", "wid": "1"}
        tables = (mirrors, notes, outbox, audit, applications, sessions, users,
                  maintenance_windows)

        def snapshot():
            return [self.q(sa.select(t)) for t in tables]
        before = snapshot()
        form = {"reason": "x", "text": "x", "hostname": "n.example.de", "country": "DE",
                "http_url": "http://n.example.de/", "target": "list", "subject": "s",
                "body": "b", "action": "send", "status": "declined", "name": "fr9",
                "current": PW, "new": "a new and long password",
                "again": "a new and long password"}
        for route in routes:
            path = "/admin/" + re.sub(
                r"\(\?P<(\w+)>([^)]*)\)",
                lambda g: ids.get(g.group(1)) or g.group(2).split("|")[0], route.pattern.pattern)
            for bad in ({}, {"csrf": "wrong"}):
                r, _ = self.post(path, {**form, **bad})
                self.assertEqual(r.code, 403, (path, bad))
        self.assertEqual(snapshot(), before)


class AccountTests(AdminWebCase):
    def test_change_password(self):
        other = StubTreq(build_root(self.ctx))                 # hugo logged in elsewhere too
        login(self, other, "hugo", PW, BASE)
        csrf = self.login("hugo")
        r, body = self.get("/admin/account")
        self.assertEqual(r.code, 200)
        self.assertIn("disable mirrors and add notes", body)
        new = "a new and long password"
        r, body = self.post("/admin/account/password", {"csrf": csrf, "current": "wrong",
                                                         "new": new, "again": new + "x"})
        self.assertEqual(r.code, 400)
        self.assertIn('id="err-current"', body)
        self.assertIn('id="err-again"', body)
        r, _ = self.post("/admin/account/password", {"csrf": "bad", "current": PW, "new": new,
                                                      "again": new})
        self.assertEqual(r.code, 403)
        r, _ = self.post("/admin/account/password", {"csrf": csrf, "current": PW, "new": new,
                                                      "again": new})
        self.assertEqual(r.code, 303)
        r, _ = self.get("/admin/account")                      # this browser stays logged in
        self.assertEqual(r.code, 200)
        r = self.successResultOf(other.get(BASE + "/admin/account", allow_redirects=False))
        self.assertEqual(r.code, 303)                          # the other session has ended
        self.assertEqual(len(self.q(sa.select(sessions.c.id))), 1)
        self.stub = StubTreq(build_root(self.ctx))
        self.login("hugo", new)

    def test_password_change_revokes_the_api_token(self):
        from admin.web import api

        csrf = self.login("hugo")
        with self.engine.begin() as conn:
            token = api.issue_token(conn, "hugo")
        auth = {"Authorization": f"Bearer {token}"}
        r, _ = self.get("/api/mirrors", headers=auth)
        self.assertEqual(r.code, 200)
        new = "a new and long password"
        r, _ = self.post("/admin/account/password", {"csrf": csrf, "current": PW, "new": new,
                                                      "again": new})
        self.assertEqual(r.code, 303)
        r, _ = self.get("/api/mirrors", headers=auth)
        self.assertEqual(r.code, 401)                           # made with the old password: gone
        self.assertEqual(self.q(sa.select(users.c.api_token_hash)
                                .where(users.c.username == "hugo")), [(None,)])

    def test_password_form_is_throttled_like_the_login(self):
        """A stolen session cannot be used to guess the current password."""
        csrf = self.login("hugo")
        new = "a new and long password"
        codes = []
        for _ in range(self.ctx.cfg.admin.login_free_failures + 1):
            r, _ = self.post("/admin/account/password", {"csrf": csrf, "current": "guess",
                                                          "new": new, "again": new})
            codes.append(r.code)
        self.assertEqual(codes[-1], 429)
        self.assertEqual(set(codes[:-1]), {400})
        r, body = self.post("/admin/account/password", {"csrf": csrf, "current": PW, "new": new,
                                                         "again": new})
        self.assertEqual(r.code, 429)                           # even the right one waits
        self.assertIn("Too many failed attempts", body)
        self.ctx.clock.advance(2)
        r, _ = self.post("/admin/account/password", {"csrf": csrf, "current": PW, "new": new,
                                                      "again": new})
        self.assertEqual(r.code, 303)

    def test_api_token_shown_once_and_works(self):
        csrf = self.login()
        r, body = self.post("/admin/account/token", {"csrf": csrf, "action": "new"})
        self.assertEqual(r.code, 200)
        self.assertEqual(r.headers.getRawHeaders("cache-control"), ["no-store"])
        token = re.search(r'<pre class="mail mono">([^<]+)</pre>', body).group(1)
        r = self.successResultOf(self.stub.get(BASE + "/api/mirrors", headers={
            "authorization": f"Bearer {token}"}))
        self.assertEqual(r.code, 200)
        _, body = self.get("/admin/account")
        self.assertNotIn(token, body)
        self.assertIn("You have a token.", body)
        r, _ = self.post("/admin/account/token", {"csrf": csrf, "action": "revoke"})
        self.assertEqual(r.code, 303)
        _, body = self.get("/admin/account")
        self.assertIn("You have no token.", body)
        r = self.successResultOf(self.stub.get(BASE + "/api/mirrors", headers={
            "authorization": f"Bearer {token}"}))
        self.assertEqual(r.code, 401)


class ErrorTests(AdminWebCase):
    def test_failure_is_logged_500(self):
        from twisted.logger import capturedLogs

        self.login()

        def boom(*a, **kw):
            raise RuntimeError("db gone")
        self.ctx.pool.run_readonly = boom
        with capturedLogs() as events:
            r, body = self.get("/admin/")
        self.assertEqual(r.code, 500)
        self.assertIn("<h1>Something went wrong on our side</h1>", body)   # the site's own page
        self.assertNotIn("db gone", body)                      # no traceback, no detail
        self.assertTrue(any(e.get("log_failure") is not None for e in events))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
