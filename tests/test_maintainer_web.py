"""The maintainer pages over HTTP (StubTreq, no sockets; STYLE E13): the login by mailed link and
what a maintainer's session may reach.

The last classes are the authorisation tests of issue 15: every maintainer route, every admin
route and every API route, GET and POST, with another maintainer's mirror, a retired one, ids
nobody has and ids too large for the table, answer 403/404 (or the admin's login) and leave the
table exactly as it was.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re

import pytest
import sqlalchemy as sa
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from admin import store
from admin.web import build_root
from dnsd.models import (
    audit,
    login_links,
    maintainers,
    maintenance_windows,
    mirrors,
    notes,
    outbox,
    probe_requests,
    probe_results,
    sessions,
    users,
)
from dnsd.validation import Rules
from tests.webfakes import T0, add_user, csrf_of, make_ctx

BASE = "https://admin.test"          # base_url is https: cookies are Secure
LAB = Rules(allow_private=True)
CONFIG = """
[probes]
allow_private = true
[admin]
base_url = "https://mirrors.example.org"
maintainer_link_rate_limit = 5
maintainer_link_address_limit = 3
[mail]
list = "mirrors@lists.example.org"
"""
LINK_RE = re.compile(r"https://mirrors\.example\.org/maintainer/login/([A-Za-z0-9_-]+)")


def add_mirror(engine, country, hostname, people, **kw):
    kw.setdefault("http_url", f"http://{hostname}/")
    kw.setdefault("ipv4", "192.0.2.10")
    with engine.begin() as conn:
        return store.add_mirror(conn, actor="setup", mail=None, country=country,
                                hostname=hostname, rules=LAB, maintainers_=people, **kw)


class MaintainerCase(SynchronousTestCase):
    """Jane looks after de1 (with Joe); Bob after us1; a retired mirror still lists Jane."""

    @pytest.fixture(autouse=True)
    def _engine(self, sqlite_engine):
        self.engine = sqlite_engine

    def setUp(self):
        add_user(self.engine, "alice", role="admin")
        self.ctx = make_ctx(self.engine, CONFIG)
        self.stub = StubTreq(build_root(self.ctx))
        self.de = add_mirror(self.engine, "DE", "mirror.example.de",
                             ["Jane Doe <Jane@Example.DE>", "Joe <joe@example.de>"])
        self.us = add_mirror(self.engine, "US", "mirror.example.com", ["Bob <bob@example.com>"],
                             ipv4="198.51.100.5")
        self.old = add_mirror(self.engine, "FR", "old.example.fr", ["Jane <jane@example.de>"],
                              ipv4="203.0.113.5")
        with self.engine.begin() as conn:
            store.retire(conn, f"#{self.old.id}", "alice", "gone", None)

    # -- helpers --
    def get(self, path, stub=None, **kw):
        kw.setdefault("allow_redirects", False)
        r = self.successResultOf((stub or self.stub).get(BASE + path, **kw))
        return r, self.successResultOf(r.content()).decode()

    def post(self, path, data, stub=None, **kw):
        kw.setdefault("allow_redirects", False)
        r = self.successResultOf((stub or self.stub).post(BASE + path, data=data, **kw))
        return r, self.successResultOf(r.content()).decode()

    def q(self, stmt):
        with self.engine.connect() as conn:
            return conn.execute(stmt).all()

    def ask(self, address, stub=None, **kw):
        _, body = self.get("/maintainer/login", stub, **kw)
        return self.post("/maintainer/login", {"csrf": csrf_of(body.encode()), "email": address},
                         stub, **kw)

    def mailed_links(self) -> list[tuple[list[str], str]]:
        out = []
        for rcpts, raw in self.q(sa.select(outbox.c.recipients, outbox.c.message)
                                 .where(outbox.c.kind == "maintainer-login")
                                 .order_by(outbox.c.id)):
            msg = email.message_from_bytes(bytes(raw), policy=email.policy.default)
            out.append((rcpts.split(","), LINK_RE.search(msg.get_content()).group(1)))
        return out

    def use(self, token, stub=None):
        r, body = self.get(f"/maintainer/login/{token}", stub)
        if r.code != 200:
            return r, body
        return self.post(f"/maintainer/login/{token}", {"csrf": csrf_of(body.encode())}, stub)

    def log_in(self, address="jane@example.de", stub=None) -> str:
        """Ask for a link, use it; returns the session cookie's value."""
        self.ask(address, stub)
        token = self.mailed_links()[-1][1]
        r, _ = self.use(token, stub)
        self.assertEqual(r.code, 303)
        self.assertEqual(r.headers.getRawHeaders("location"), ["/maintainer/"])
        cookie = [c for c in r.headers.getRawHeaders("set-cookie")
                  if c.startswith("mirrordns_maintainer=")][0]
        return cookie.split(";")[0].split("=", 1)[1]

    def csrf(self, stub=None) -> str:
        _, body = self.get("/maintainer/", stub)
        return csrf_of(body.encode())


class LinkTests(MaintainerCase):
    def test_a_listed_address_gets_a_link_and_the_table_keeps_only_its_hash(self):
        r, body = self.ask("JANE@example.de")
        self.assertEqual(r.code, 200)
        self.assertIn("is listed for a mirror, a login link is on its way", body)
        [(rcpts, token)] = self.mailed_links()
        self.assertEqual(rcpts, ["JANE@example.de"])
        [row] = self.q(sa.select(login_links))
        self.assertEqual(row.token_hash, hashlib.sha256(token.encode()).hexdigest())
        self.assertNotIn(token, repr(tuple(row)))
        self.assertEqual((row.expires_at - row.created_at).total_seconds(), 15 * 60)
        self.assertIsNone(row.used_at)
        [raw] = self.q(sa.select(outbox.c.message).where(outbox.c.kind == "maintainer-login"))
        msg = email.message_from_bytes(bytes(raw[0]), policy=email.policy.default)
        self.assertIn("de1 (mirror.example.de)", msg.get_content())   # the live mirror only
        self.assertNotIn("old.example.fr", msg.get_content())
        self.assertEqual(msg["Auto-Submitted"], "auto-generated")

    def test_the_answer_is_the_same_whatever_the_address(self):
        answers = {}
        for addr in ("jane@example.de", "nobody@example.org", "formerly@example.fr"):
            r, body = self.ask(addr, StubTreq(build_root(self.ctx)))
            answers[addr] = (r.code, re.sub(r'value="[^"]*"', "", body.replace(addr, "ADDR")))
        self.assertEqual(len(set(answers.values())), 1, answers)
        self.assertEqual(len(self.mailed_links()), 1)               # only the contact got one
        self.assertEqual(len(self.q(sa.select(login_links))), 1)

    def test_a_retired_mirrors_contact_gets_nothing(self):
        with self.engine.begin() as conn:
            store.set_maintainers(conn, f"#{self.old.id}", "alice", ["Only <only@example.fr>"])
        r, _ = self.ask("only@example.fr")
        self.assertEqual(r.code, 200)
        self.assertEqual(self.mailed_links(), [])

    def test_a_malformed_address_is_refused_by_the_field(self):
        r, body = self.ask("jane at example.de")
        self.assertEqual(r.code, 400)
        self.assertIn('id="err-email"', body)
        self.assertIn('value="jane at example.de"', body)            # kept
        self.assertEqual(self.mailed_links(), [])

    def test_the_form_needs_its_signed_token(self):
        self.get("/maintainer/login")
        r, _ = self.post("/maintainer/login", {"csrf": "forged", "email": "jane@example.de"})
        self.assertEqual(r.code, 403)
        self.assertEqual(self.mailed_links(), [])

    def test_requests_are_limited_per_visitor_and_per_address(self):
        for i in range(3):
            self.assertEqual(self.ask("jane@example.de")[0].code, 200)
        r, _ = self.ask("jane@example.de")                         # 4th link to one address
        self.assertEqual(r.code, 200)                              # the same answer ...
        self.assertEqual(len(self.mailed_links()), 3)              # ... and no fourth mail
        r, body = self.ask("bob@example.com")                      # 5th request of this visitor
        self.assertEqual(r.code, 200)
        r, body = self.ask("bob@example.com")                      # 6th: the visitor waits
        self.assertEqual(r.code, 429)
        self.assertIn("Too many requests", body)
        self.assertTrue(r.headers.getRawHeaders("retry-after"))
        self.assertEqual(len(self.mailed_links()), 4)
        self.ctx.clock.advance(3601)                               # the window has passed
        self.assertEqual(self.ask("jane@example.de")[0].code, 200)
        self.assertEqual(len(self.mailed_links()), 5)

    def test_opening_the_link_spends_nothing_and_the_button_logs_in_once(self):
        self.ask("jane@example.de")
        [(_, token)] = self.mailed_links()
        for _ in range(3):                                         # a mail scanner, the person
            r, body = self.get(f"/maintainer/login/{token}")
            self.assertEqual(r.code, 200)
            self.assertIn('action="/maintainer/login/', body)
        self.assertIsNone(self.q(sa.select(login_links.c.used_at))[0][0])
        r, _ = self.post(f"/maintainer/login/{token}", {"csrf": csrf_of(body.encode())})
        self.assertEqual(r.code, 303)
        cookie = [c for c in r.headers.getRawHeaders("set-cookie")
                  if c.startswith("mirrordns_maintainer=")][0]
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=strict", cookie)
        self.assertIn("Path=/maintainer", cookie)
        self.assertIn("Secure", cookie)                            # base_url is https
        value = cookie.split(";")[0].split("=", 1)[1]
        [s] = self.q(sa.select(sessions))
        self.assertEqual(s.id, hashlib.sha256(value.encode()).hexdigest())
        self.assertEqual((s.user_id, s.maintainer_email), (None, "jane@example.de"))
        # once only: the same link again, from another browser, is refused
        other = StubTreq(build_root(self.ctx))
        r, body = self.get(f"/maintainer/login/{token}", other)
        self.assertEqual(r.code, 404)
        self.assertIn("unknown, used or expired", body)
        r, _ = self.post(f"/maintainer/login/{token}", {"csrf": "x"}, other)
        self.assertIn(r.code, (403, 404))
        self.assertEqual(len(self.q(sa.select(sessions))), 1)

    def test_a_link_used_twice_in_a_row_logs_in_once(self):
        self.ask("jane@example.de")
        [(_, token)] = self.mailed_links()
        _, body = self.get(f"/maintainer/login/{token}")
        token_field = csrf_of(body.encode())
        r1, _ = self.post(f"/maintainer/login/{token}", {"csrf": token_field})
        r2, _ = self.post(f"/maintainer/login/{token}", {"csrf": token_field})
        self.assertEqual(r1.code, 303)
        self.assertIn(r2.code, (403, 404))        # the form's cookie went with the first use
        other = StubTreq(build_root(self.ctx))    # and a fresh form for it is no better
        self.assertEqual(self.use(token, other)[0].code, 404)
        self.assertEqual(len(self.q(sa.select(sessions))), 1)

    def test_an_expired_link_is_refused(self):
        self.ask("jane@example.de")
        [(_, token)] = self.mailed_links()
        _, body = self.get(f"/maintainer/login/{token}")
        self.ctx.clock.advance(15 * 60 + 1)
        r, _ = self.post(f"/maintainer/login/{token}", {"csrf": csrf_of(body.encode())})
        self.assertEqual(r.code, 404)
        r, _ = self.get(f"/maintainer/login/{token}")
        self.assertEqual(r.code, 404)
        self.assertEqual(self.q(sa.select(sessions)), [])

    def test_forged_tokens_are_refused(self):
        self.ask("jane@example.de")
        [(_, token)] = self.mailed_links()
        _, body = self.get(f"/maintainer/login/{token}")
        form = {"csrf": csrf_of(body.encode())}
        for forged in (token[:-1] + ("A" if token[-1] != "A" else "B"), "x" * 43,
                       hashlib.sha256(token.encode()).hexdigest()):    # the stored hash itself
            r, _ = self.post(f"/maintainer/login/{forged}", form)
            self.assertEqual(r.code, 404, forged)
        for bad in ("short", "a" * 65, "%00" * 30, "../" * 10):
            r, _ = self.post(f"/maintainer/login/{bad}", form)
            self.assertEqual(r.code, 404, bad)
        self.assertEqual(self.q(sa.select(sessions)), [])
        self.assertIsNone(self.q(sa.select(login_links.c.used_at))[0][0])   # still usable
        self.assertEqual(self.use(token)[0].code, 303)

    def test_the_button_needs_its_signed_token(self):
        self.ask("jane@example.de")
        [(_, token)] = self.mailed_links()
        self.get(f"/maintainer/login/{token}")
        r, _ = self.post(f"/maintainer/login/{token}", {"csrf": "forged"})
        self.assertEqual(r.code, 403)
        self.assertEqual(self.q(sa.select(sessions)), [])
        self.assertIsNone(self.q(sa.select(login_links.c.used_at))[0][0])

    def test_using_one_link_spends_the_addresses_other_links(self):
        self.ask("jane@example.de")
        self.ask("jane@example.de")
        (_, first), (_, second) = self.mailed_links()
        self.assertEqual(self.use(second)[0].code, 303)
        self.assertEqual(self.use(first, StubTreq(build_root(self.ctx)))[0].code, 404)

    def test_failed_uses_from_one_address_slow_down(self):
        self.ask("jane@example.de")
        [(_, token)] = self.mailed_links()
        _, body = self.get(f"/maintainer/login/{token}")
        form = {"csrf": csrf_of(body.encode())}
        free = self.ctx.cfg.admin.login_address_free_failures
        for i in range(free):
            self.assertEqual(self.post(f"/maintainer/login/{'x' * 40}{i:03d}", form)[0].code, 404)
        r, body = self.post(f"/maintainer/login/{token}", form)   # even the right one waits
        self.assertEqual(r.code, 429)
        self.assertIn("Wait", body)
        self.ctx.clock.advance(2)
        self.assertEqual(self.post(f"/maintainer/login/{token}", form)[0].code, 303)

    def test_a_link_whose_address_left_the_mirror_logs_nobody_in(self):
        self.ask("bob@example.com")
        [(_, token)] = self.mailed_links()
        with self.engine.begin() as conn:
            store.set_maintainers(conn, f"#{self.us.id}", "alice", ["New <new@example.com>"])
        self.assertEqual(self.use(token)[0].code, 404)
        self.assertEqual(self.q(sa.select(sessions)), [])

    def test_logout_ends_the_session(self):
        self.log_in()
        r, _ = self.post("/maintainer/logout", {"csrf": self.csrf()})
        self.assertEqual(r.code, 303)
        self.assertEqual(self.q(sa.select(sessions)), [])
        r, _ = self.get("/maintainer/")
        self.assertEqual(r.code, 303)
        self.assertTrue(r.headers.getRawHeaders("location")[0].startswith("/maintainer/login"))

    def test_a_maintainer_session_ends_after_idleness(self):
        self.log_in()
        self.ctx.clock.advance(61 * 60)
        r, _ = self.get("/maintainer/")
        self.assertEqual(r.code, 303)


class OwnMirrorTests(MaintainerCase):
    def setUp(self):
        super().setUp()
        self.log_in("jane@example.de")

    def test_home_lists_the_live_mirrors_of_the_address(self):
        r, body = self.get("/maintainer/")
        self.assertEqual(r.code, 200)
        self.assertIn(f'href="/maintainer/mirrors/{self.de.id}"', body)
        self.assertNotIn("mirror.example.com", body)
        self.assertNotIn("old.example.fr", body)                  # retired
        self.assertIn("The mirrors that list jane@example.de", body)

    def test_the_mirror_page_shows_health_graphs_probes_per_vantage_and_the_reason(self):
        with self.engine.begin() as conn:
            for i, (vantage, ok) in enumerate((("probe-eu", True), ("probe-us", False))):
                conn.execute(probe_results.insert().values(
                    mirror_id=self.de.id, at=T0, vantage=vantage, url="http://m/TIME", ok=ok,
                    error_class="" if ok else "timeout", error="" if ok else "no answer in 15 s",
                    http_status=200 if ok else None, ttfb_ms=40.0, sync_age=1800))
            store.disable(conn, f"#{self.de.id}", "alice", "moving racks", None)
        r, body = self.get(f"/maintainer/mirrors/{self.de.id}")
        self.assertEqual(r.code, 200)
        self.assertIn("Not serving</span> in the DNS plan", body)
        self.assertIn("disabled by admin: moving racks", body)      # the plan's reason
        self.assertIn('svg class="graph uptime"', body)
        self.assertIn('svg class="graph rtt"', body)
        self.assertIn("probe-eu", body)
        self.assertIn("probe-us", body)
        self.assertIn("no answer in 15 s", body)
        self.assertNotIn("<h2>Audit</h2>", body)                   # the admins' own

    def test_edit_saves_audits_and_tells_the_list_and_the_co_maintainers(self):
        r, body = self.get(f"/maintainer/mirrors/{self.de.id}/edit")
        self.assertEqual(r.code, 200)
        for f in ("ipv4", "ipv6", "http_url", "https_url", "ftp_url", "rsync_url",
                  "provider_name", "provider_url", "provider_logo"):
            self.assertIn(f'name="{f}"', body)
        for f in ("hostname", "country", "weight", "maintainers", "backup"):
            self.assertNotIn(f'name="{f}"', body)
        r, _ = self.post(f"/maintainer/mirrors/{self.de.id}/edit", {
            "csrf": csrf_of(body.encode()), "ipv4": "192.0.2.99", "ipv6": "",
            "http_url": "http://mirror.example.de/", "https_url": "https://mirror.example.de/",
            "ftp_url": "", "rsync_url": "", "provider_name": "Example e.V.",
            "provider_url": "", "provider_logo": "",
            "hostname": "evil.example.org", "weight": "1000"})            # not theirs: ignored
        self.assertEqual(r.code, 303)
        self.assertEqual(r.headers.getRawHeaders("location"),
                         [f"/maintainer/mirrors/{self.de.id}?done=saved"])
        m = self.q(sa.select(mirrors).where(mirrors.c.id == self.de.id))[0]
        self.assertEqual((m.ipv4, m.https_url, m.provider_name, m.hostname, m.weight),
                         ("192.0.2.99", "https://mirror.example.de/", "Example e.V.",
                          "mirror.example.de", 1.0))
        [a] = self.q(sa.select(audit).where(audit.c.action == "maintainer-edit"))
        self.assertEqual(a.actor, "jane@example.de")
        self.assertIn("192.0.2.99", a.after)
        [mail] = self.q(sa.select(outbox).where(outbox.c.kind == "maintainer-edit"))
        self.assertEqual(set(mail.recipients.split(",")),
                         {"mirrors@lists.example.org", "Jane@Example.DE", "joe@example.de"})
        self.assertIn("changed by its maintainer jane@example.de", mail.subject)
        body = email.message_from_bytes(bytes(mail.message),
                                        policy=email.policy.default).get_content()
        self.assertIn("ipv4: 192.0.2.10 -> 192.0.2.99", body)
        _, page = self.get(f"/maintainer/mirrors/{self.de.id}?done=saved")
        self.assertIn("Changes saved", page)

    def test_bad_input_is_refused_by_the_field_and_nothing_changes(self):
        before = self.q(sa.select(mirrors))
        _, body = self.get(f"/maintainer/mirrors/{self.de.id}/edit")
        token = csrf_of(body.encode())
        form = {"csrf": token, "ipv4": "999.1.1.1", "ipv6": "", "http_url": "javascript:x",
                "https_url": "", "ftp_url": "", "rsync_url": "", "provider_name": "",
                "provider_url": "", "provider_logo": ""}
        r, body = self.post(f"/maintainer/mirrors/{self.de.id}/edit", form)
        self.assertEqual(r.code, 400)
        self.assertIn('id="err-ipv4"', body)
        self.assertIn('id="err-http_url"', body)
        self.assertIn('value="999.1.1.1"', body)                     # what was typed is kept
        # nothing left to reach it by: the same rule as the admin's edit
        form.update(ipv4="", http_url="")
        r, body = self.post(f"/maintainer/mirrors/{self.de.id}/edit", form)
        self.assertEqual(r.code, 400)
        self.assertIn('id="err-http_url"', body)
        # an active mirror needs an http(s) URL: the store's rule, shown on the form
        form.update(ipv4="192.0.2.10", ftp_url="ftp://mirror.example.de/")
        r, body = self.post(f"/maintainer/mirrors/{self.de.id}/edit", form)
        self.assertEqual(r.code, 400)
        self.assertIn("cannot be active", body)
        self.assertEqual(self.q(sa.select(mirrors)), before)
        self.assertEqual(self.q(sa.select(outbox).where(outbox.c.kind == "maintainer-edit")), [])

    def test_a_note_is_signed_with_the_address(self):
        r, _ = self.post(f"/maintainer/mirrors/{self.de.id}/notes",
                         {"csrf": self.csrf(), "text": "New disks on <Monday>"})
        self.assertEqual(r.code, 303)
        [n] = self.q(sa.select(notes.c.author, notes.c.text).where(notes.c.mirror_id == self.de.id))
        self.assertEqual(tuple(n), ("jane@example.de", "New disks on <Monday>"))
        _, body = self.get(f"/maintainer/mirrors/{self.de.id}")
        self.assertIn("New disks on &lt;Monday&gt;", body)
        r, body = self.post(f"/maintainer/mirrors/{self.de.id}/notes",
                            {"csrf": self.csrf(), "text": "  "})
        self.assertEqual(r.code, 400)
        self.assertIn("field-error", body)

    def test_probe_now_asks_every_probe_node_once(self):
        for _ in range(2):
            r, _ = self.post(f"/maintainer/mirrors/{self.de.id}/probe", {"csrf": self.csrf()})
            self.assertEqual(r.code, 303)
        self.assertEqual(r.headers.getRawHeaders("location"),
                         [f"/maintainer/mirrors/{self.de.id}?done=probe"])
        [row] = self.q(sa.select(probe_requests))
        self.assertEqual((row.mirror_id, row.reason, row.requested_by, row.requests),
                         (self.de.id, "maintainer", "jane@example.de", 2))   # coalesced
        _, body = self.get(f"/maintainer/mirrors/{self.de.id}?done=probe")
        self.assertIn("Probe requested: every probe node", body)
        self.assertIn("by jane@example.de; 2 requests in one", body)
        self.assertIn("no probe node has served it yet", body)

    def plan(self, start="2026-11-22 10:00", end="2026-11-22 12:00", reason="new disks"):
        return self.post(f"/maintainer/mirrors/{self.de.id}/maintenance", {
            "csrf": self.csrf(), "starts_at": start, "ends_at": end, "reason": reason})

    def test_plan_a_window_on_ones_own_mirror_as_the_admins_do(self):
        r, _ = self.plan()
        self.assertEqual(r.code, 303)
        self.assertEqual(r.headers.getRawHeaders("location"),
                         [f"/maintainer/mirrors/{self.de.id}?done=maintenance"])
        [w] = self.q(sa.select(maintenance_windows))
        self.assertEqual((w.mirror_id, w.reason, w.created_by, str(w.starts_at)),
                         (self.de.id, "new disks", "jane@example.de", "2026-11-22 10:00:00"))
        [a] = self.q(sa.select(audit.c.actor).where(audit.c.action == "maintenance-plan"))
        self.assertEqual(a[0], "jane@example.de")
        [to] = self.q(sa.select(outbox.c.recipients).where(outbox.c.kind == "maintenance-planned"))
        self.assertEqual(set(to[0].split(",")),
                         {"mirrors@lists.example.org", "Jane@Example.DE", "joe@example.de"})
        _, body = self.get(f"/maintainer/mirrors/{self.de.id}?done=maintenance")
        self.assertIn("Maintenance planned", body)
        self.assertIn("new disks", body)
        self.assertIn(f'action="/maintainer/mirrors/{self.de.id}/maintenance/{w.id}/cancel"', body)
        # an overlapping one is refused by its start field, the text kept
        r, body = self.plan("2026-11-22 11:00", "2026-11-22 13:00", "again")
        self.assertEqual(r.code, 400)
        self.assertIn('id="err-starts_at"', body)
        self.assertIn('value="again"', body)
        # and cancelled
        r, _ = self.post(f"/maintainer/mirrors/{self.de.id}/maintenance/{w.id}/cancel",
                         {"csrf": self.csrf()})
        self.assertEqual(r.code, 303)
        [w] = self.q(sa.select(maintenance_windows))
        self.assertEqual(w.cancelled_by, "jane@example.de")
        r, body = self.post(f"/maintainer/mirrors/{self.de.id}/maintenance/{w.id}/cancel",
                            {"csrf": self.csrf()})
        self.assertEqual(r.code, 409)                          # cancelled already: said so
        self.assertIn('class="flash bad"', body)

    def test_bad_windows_are_refused_by_each_field(self):
        r, body = self.plan("yesterday", "2026-11-20 10:00", "")
        self.assertEqual(r.code, 400)
        for f in ("starts_at", "reason"):
            self.assertIn(f'id="err-{f}"', body)
        self.assertIn('value="yesterday"', body)
        r, body = self.plan("2026-11-22 10:00", "2026-11-22 09:00", "x")
        self.assertEqual(r.code, 400)
        self.assertIn('id="err-ends_at"', body)
        self.assertEqual(self.q(sa.select(maintenance_windows)), [])

    def test_another_mirrors_window_cannot_be_cancelled_through_ones_own(self):
        with self.engine.begin() as conn:
            w = store.plan_maintenance(conn, f"#{self.us.id}", "alice",
                                       starts_at="2026-11-22 10:00", ends_at="2026-11-22 11:00",
                                       reason="bob's", now=T0)
        r, _ = self.post(f"/maintainer/mirrors/{self.de.id}/maintenance/{w.id}/cancel",
                         {"csrf": self.csrf()})
        self.assertEqual(r.code, 404)
        self.assertIsNone(self.q(sa.select(maintenance_windows.c.cancelled_at))[0][0])

    def test_taking_the_address_off_the_mirror_ends_the_access_at_once(self):
        self.assertEqual(self.get(f"/maintainer/mirrors/{self.de.id}")[0].code, 200)
        with self.engine.begin() as conn:
            store.set_maintainers(conn, f"#{self.de.id}", "alice", ["Joe <joe@example.de>"])
        self.assertEqual(self.get(f"/maintainer/mirrors/{self.de.id}")[0].code, 404)
        r, body = self.get("/maintainer/")
        self.assertEqual(r.code, 200)
        self.assertIn("No mirror lists this address any more", body)
        before = self.q(sa.select(mirrors)), self.q(sa.select(notes))
        r, _ = self.post(f"/maintainer/mirrors/{self.de.id}/notes",
                         {"csrf": self.csrf(), "text": "still here?"})
        self.assertEqual(r.code, 404)
        self.assertEqual((self.q(sa.select(mirrors)), self.q(sa.select(notes))), before)

    def test_the_store_checks_the_address_again_in_its_transaction(self):
        with self.engine.begin() as conn:
            with self.assertRaises(store.NotFound):
                store.edit_by_maintainer(conn, self.us.id, "jane@example.de", None,
                                         provider_name="mine now")
            with self.assertRaises(store.Invalid):
                store.edit_by_maintainer(conn, self.de.id, "jane@example.de", None,
                                         weight=1000)
        self.assertEqual(self.q(sa.select(mirrors.c.provider_name)
                                .where(mirrors.c.id == self.us.id))[0][0], "")


# --- authorisation: no route, no id ----------------------------------------------------------------

def _fill(pattern: str, values: dict) -> str:
    """A route pattern with its groups filled in (alternatives: the first one).

    A group that is neither given nor a list of alternatives is an error, so a new route with a
    new id cannot slip through as a pattern that matches nothing (a 404 instead of the check)."""
    def one(g):
        name, body = g.group(1), g.group(2)
        if name in values:
            return values[name]
        if "|" not in body and not re.fullmatch(r"[\w-]+", body):
            raise KeyError(f"no value for the route group {name!r} in {pattern!r}")
        return body.split("|")[0]
    return re.sub(r"\(\?P<(\w+)>([^)]*)\)", one, pattern)


class AuthorisationTests(MaintainerCase):
    """Jane, logged in as a maintainer, tries every route with every id that is not hers."""

    FORM = {"reason": "x", "text": "x", "starts_at": "2026-11-25 10:00",
            "ends_at": "2026-11-25 11:00", "hostname": "evil.example.org", "country": "DE",
            "ipv4": "192.0.2.66", "http_url": "http://evil.example.org/", "target": "list",
            "subject": "s", "body": "b", "action": "send", "status": "declined", "name": "fr9",
            "current": "x", "new": "a new and long password", "again": "a new and long password",
            "provider_name": "pwned", "role": "admin", "email": "jane@example.de"}
    TABLES = (mirrors, maintainers, notes, outbox, audit, sessions, users, login_links,
              probe_requests, maintenance_windows)

    def setUp(self):
        super().setUp()
        with self.engine.begin() as conn:           # windows of another mirror, and of hers
            self.bobs = store.plan_maintenance(conn, f"#{self.us.id}", "alice", now=T0,
                                               starts_at="2026-11-22 10:00",
                                               ends_at="2026-11-22 11:00", reason="bob's")
            self.janes = store.plan_maintenance(conn, f"#{self.de.id}", "alice", now=T0,
                                                starts_at="2026-11-23 10:00",
                                                ends_at="2026-11-23 11:00", reason="jane's")
        self.cookie = self.log_in("jane@example.de")
        self.token = self.csrf()
        self.foreign = [str(self.us.id), str(self.old.id), "0", "99999", "999999999",
                        "1000000000", "9" * 30, "-1", "1e3", "0x1", " 1"]

    def snapshot(self):
        return [self.q(sa.select(t).order_by(*t.primary_key.columns)) for t in self.TABLES]

    def test_every_maintainer_route_refuses_other_mirrors(self):
        from admin.web import maintainer_pages

        routes = [r for r in maintainer_pages.build(self.ctx).routes if "mid" in r.pattern.pattern]
        self.assertGreaterEqual(len(routes), 7)
        before = self.snapshot()
        wids = [str(self.bobs.id), str(self.janes.id), "99999", "999999999"]
        for route in routes:
            for mid in self.foreign:
                for wid in wids if "wid" in route.pattern.pattern else wids[:1]:
                    path = "/maintainer/" + _fill(route.pattern.pattern,
                                                  {"mid": mid, "wid": wid})
                    if route.method == b"GET":
                        r, body = self.get(path)
                    else:
                        r, body = self.post(path, {**self.FORM, "csrf": self.token})
                    self.assertIn(r.code, (404, 405), (route.method, path))
                    self.assertNotIn("mirror.example.com", body)
                    self.assertNotIn("old.example.fr", body)
        # her own mirror with Bob's window, or one nobody has: refused the same way
        for wid in (str(self.bobs.id), "99999"):
            r, _ = self.post(f"/maintainer/mirrors/{self.de.id}/maintenance/{wid}/cancel",
                             {"csrf": self.token})
            self.assertEqual(r.code, 404)
        self.assertEqual(self.snapshot(), before)
        # and her own mirror through the same routes works, so the test tests something
        r, _ = self.get(f"/maintainer/mirrors/{self.de.id}")
        self.assertEqual(r.code, 200)

    def test_no_admin_route_takes_a_maintainers_session(self):
        from admin.web import admin_pages

        routes = [r for r in admin_pages.build(self.ctx).routes if r.login]
        self.assertGreaterEqual(len(routes), 20)
        before = self.snapshot()
        browsers = {   # the cookie as the browser holds it, and planted under the admin's name
            "maintainer": {"mirrordns_maintainer": self.cookie},
            "planted": {"mirrordns_session": self.cookie, "mirrordns_maintainer": self.cookie},
        }
        for name, cookies in browsers.items():
            for route in routes:
                for mid in [str(self.us.id), str(self.de.id), "99999", "999999999"]:
                    path = "/admin/" + _fill(route.pattern.pattern, {
                        "mid": mid, "aid": "1", "oid": "1", "wid": "1", "uname": "alice"})
                    stub = StubTreq(build_root(self.ctx))
                    if route.method == b"GET":
                        r, body = self.get(path, stub, cookies=cookies)
                        self.assertEqual(r.code, 303, (name, path))
                        self.assertTrue(r.headers.getRawHeaders("location")[0]
                                        .startswith("/admin/login"), path)
                    else:
                        r, body = self.post(path, {**self.FORM, "csrf": self.token}, stub,
                                            cookies=cookies)
                        self.assertEqual(r.code, 403, (name, path))
                    self.assertNotIn("mirror.example.com", body)
                    self.assertNotIn("mirror.example.de", body)
        self.assertEqual(self.snapshot(), before)

    def test_no_api_route_takes_a_maintainers_session(self):
        from admin.web import api

        routes = api.build(self.ctx).routes
        before = self.snapshot()
        cookies = {"mirrordns_session": self.cookie, "mirrordns_maintainer": self.cookie}
        for route in routes:
            for ref in (str(self.us.id), str(self.de.id), "de1", "99999"):
                path = "/api/" + _fill(route.pattern.pattern.strip("^$"), {"ref": ref})
                for auth in ({}, {"Authorization": f"Bearer {self.cookie}"}):
                    d = self.stub.request(route.method.decode(), BASE + path, cookies=cookies,
                                          headers=auth, data=b"{}" if route.method != b"GET"
                                          else None)
                    r = self.successResultOf(d)
                    body = self.successResultOf(r.content()).decode()
                    if path.endswith("openapi.json"):
                        continue                                    # public by design
                    self.assertIn(r.code, (401, 403, 404, 405), (route.method, path, auth))
                    self.assertNotIn("mirror.example.com", body)
        self.assertEqual(self.snapshot(), before)

    def test_an_admin_keeps_everything(self):
        """The other side: an admin sees and changes every mirror, Jane's included."""
        from tests.webfakes import login

        admin = StubTreq(build_root(self.ctx))
        token = login(self, admin, "alice", base=BASE)
        for m in (self.de, self.us, self.old):
            self.assertEqual(self.get(f"/admin/mirrors/{m.id}", admin)[0].code, 200)
        r, _ = self.post(f"/admin/mirrors/{self.us.id}/notes", {"csrf": token, "text": "ok"},
                         admin)
        self.assertEqual(r.code, 303)
