"""The public pages over HTTP (treq StubTreq): mirror list, /mirrors.json, the application form and
the applicant's private link. Time comes from a Clock; the visitor's country from dnsd's
GeoLocator over the test mmdb; the visitor's address from X-Forwarded-For via a trusted proxy."""

from __future__ import annotations

import datetime as _dt
import json
import re
from email import message_from_bytes

import pytest
import sqlalchemy as sa
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource

from admin import store
from admin.web import public
from dnsd.geo import GeoLocator
from dnsd.models import applications, audit, mirror_health, mirrors, outbox
from dnsd.plan import build_plan, load_rows
from dnsd.validation import Rules
from tests.webfakes import T0, make_ctx

BASE = "http://mirrors.test"
XFF_CONFIG = """
[admin]
trusted_proxies = ["127.0.0.1"]
base_url = "https://mirrors.example.org"
public_title = "Example Mirrors"
apply_rate_limit = 4
apply_rate_window = 600
"""


class PlanHolder:
    def __init__(self, plan):
        self.current = plan


_n = [0]


def add(conn, country, host, **kw):
    """A mirror with a pinned (documentation) address that passed a probe at T0."""
    _n[0] += 1
    m = store.add_mirror(conn, actor="test", mail=None, country=country, hostname=host,
                         http_url=f"http://{host}/", ipv4=f"192.0.2.{_n[0]}",
                         rules=Rules(allow_private=True), **kw)
    conn.execute(mirror_health.insert().values(mirror_id=m.id, last_probe_at=T0, last_ok_at=T0,
                                               last_sync_at=T0 - _dt.timedelta(hours=1),
                                               ipv4_up=True))
    return m


@pytest.fixture
def geo(test_mmdb):
    return GeoLocator(test_mmdb)              # dnsd's own locator, as the tac hands it in


def _seed(engine):
    with engine.begin() as conn:
        add(conn, "DE", "de1.example.net", provider_name="Uni Berlin",
            provider_url="https://uni.example/", provider_logo="https://uni.example/logo.png",
            https_url="https://de1.example.net/")
        add(conn, "DE", "de2.example.net", provider_name="Off Line GmbH")
        add(conn, "FR", "fr1.example.net", provider_name="Paris Net")
        us1 = add(conn, "US", "us1.example.net", provider_name="<script>alert(1)</script>")
        # the table refuses such links (dnsd.validation); pages must not trust it anyway
        conn.execute(mirrors.update().where(mirrors.c.id == us1.id).values(
            provider_url="javascript:alert(2)", provider_logo="javascript:alert(3)"))
        add(conn, "US", "us2.example.net", provider_name="Stale Inc")
        add(conn, "BR", "br1.example.net", provider_name="Backup Brasil", backup=True)
        add(conn, "JP", "jp1.example.net", provider_name="Pending", status="pending")
        store.disable(conn, "de2", "test", "hardware move", None)
        us2 = conn.execute(sa.select(mirrors.c.id).where(mirrors.c.name == "us2")).scalar()
        conn.execute(mirror_health.update().where(mirror_health.c.mirror_id == us2).values(
            last_sync_at=T0 - _dt.timedelta(days=3)))


class Base(SynchronousTestCase):
    config = XFF_CONFIG
    engine = None
    geo = None
    plan = None

    def setUp(self):
        self.ctx = make_ctx(self.engine, self.config, geo=self.geo, plan=self.plan)
        self.root = resource.Resource()
        self.pages = public.mount(self.root, self.ctx)
        self.stub = StubTreq(self.root)

    def get(self, path, ip=None, **kw):
        headers = {"X-Forwarded-For": ip} if ip else {}
        r = self.successResultOf(self.stub.get(BASE + path, headers=headers, **kw))
        return r, self.successResultOf(r.content())

    def post(self, path, data, ip=None):
        headers = {"X-Forwarded-For": ip} if ip else {}
        r = self.successResultOf(self.stub.post(BASE + path, data=data, headers=headers,
                                                allow_redirects=False))
        return r, self.successResultOf(r.content())


@pytest.fixture
def injected(request, sqlite_engine, geo):
    request.cls.engine = sqlite_engine
    request.cls.geo = geo


@pytest.mark.usefixtures("injected")
class TestMirrorList(Base):
    def setUp(self):
        _seed(self.engine)
        super().setUp()

    def test_serving_only_close_first(self):
        r, body = self.get("/", ip="127.0.1.9")          # a visitor in DE
        assert r.code == 200
        html = body.decode()
        close = html.split('id="close"')[1].split("</section>")[0]
        assert "de1.example.net" in close and "You seem to be in Germany" in close
        assert "fr1" not in close                         # the country tier is not empty
        for shown in ("de1.example.net", "fr1.example.net", "us1.example.net", "br1.example.net"):
            assert shown in html
        for hidden in ("de2.example.net", "us2.example.net", "jp1.example.net"):
            assert hidden not in html                     # disabled, out of sync, pending
        assert 'src="https://uni.example/logo.png"' in html
        rest = html.split("All mirrors by country")[1]
        assert rest.index("Brazil") < rest.index("France") < rest.index("Germany") \
            < rest.index("United States")

    def test_close_falls_back_to_region_then_continent(self):
        _r, body = self.get("/", ip="127.0.5.1")          # Austria: Western Europe
        close = body.decode().split('id="close"')[1].split("</section>")[0]
        assert "de1.example.net" in close and "fr1.example.net" in close
        assert "No mirror in your country" in close
        _r, body = self.get("/", ip="127.0.4.1")          # Japan: nothing in Asia serves
        close = body.decode().split('id="close"')[1].split("</section>")[0]
        assert "No mirror is serving near Japan" in close

    def test_unknown_visitor_and_untrusted_forwarded_for(self):
        _r, body = self.get("/")                          # 127.0.0.1 is not in the geo database
        assert "We could not tell where you are" in body.decode()
        self.ctx.cfg = type(self.ctx.cfg)(admin=type(self.ctx.cfg.admin)())  # no trusted proxies
        _r, body = self.get("/", ip="127.0.1.9")
        assert "We could not tell where you are" in body.decode()   # X-Forwarded-For ignored

    def test_hostile_provider_fields_are_escaped(self):
        _r, body = self.get("/", ip="127.0.2.1")
        html = body.decode()
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "javascript:" not in html

    def test_json(self):
        r, body = self.get("/mirrors.json", ip="127.0.1.9")
        assert r.code == 200
        assert r.headers.getRawHeaders("content-type") == ["application/json"]
        data = json.loads(body)
        assert data["your_country"] == "DE" and data["close"] == ["de1"]
        names = [m["name"] for m in data["mirrors"]]
        assert names == ["br1", "fr1", "de1", "us1"]
        de1 = data["mirrors"][2]
        assert de1["provider"] == {"name": "Uni Berlin", "url": "https://uni.example/",
                                   "logo": "https://uni.example/logo.png"}
        assert de1["urls"] == {"http": "http://de1.example.net/",
                               "https": "https://de1.example.net/"}
        us1 = data["mirrors"][3]
        assert us1["provider"]["url"] is None and us1["provider"]["logo"] is None

    def test_live_plan_decides_what_serves(self):
        # A plan in which fr1 is out (as if the probes had just failed it): the page follows it.
        with self.engine.connect() as conn:
            rows = load_rows(conn)
        rows["mirrors"] = [r.replace(failures_in_row=5) if r["name"] == "fr1" else r
                           for r in rows["mirrors"]]
        self.ctx.plan = PlanHolder(build_plan(rows, self.ctx.cfg, T0))
        _r, body = self.get("/mirrors.json")
        assert [m["name"] for m in json.loads(body)["mirrors"]] == ["br1", "de1", "us1"]

    def test_waiting_counts_under_country_heading(self):
        with self.engine.begin() as conn:
            for i in range(2):
                conn.execute(applications.insert().values(
                    token=f"tok{i}" + "x" * 20, name="A", email="a@example.org", country="DE",
                    hostname=f"m{i}.example.org"))
        _r, body = self.get("/")
        assert re.search(r"Germany <span class=\"muted\">\(1, 2 offers waiting\)", body.decode())


# --- the application form ------------------------------------------------------------------------

VALID = {"name": "Jane Doe", "email": "jane@example.org", "country": "DE",
         "hostname": "mirror.example.de", "http_url": "http://mirror.example.de/pub/",
         "provider_name": "Example e.V.",
         "provider_url": "https://example.de/", "bandwidth_mbit": "1000", "cores": "8",
         "memory_gb": "16", "disk_gb": "2000", "has_ipv6": "on", "comments": "happy to help"}

TOKEN_RE = re.compile(rb'name="csrf" value="([^"]+)"')


@pytest.mark.usefixtures("injected")
class TestApplicationForm(Base):
    def form_token(self, path="/apply", ip=None):
        r, body = self.get(path, ip=ip)
        assert r.code == 200
        return TOKEN_RE.search(body).group(1).decode()

    def apps(self):
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(applications))]

    def mails(self):
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(outbox))]

    def test_form_page(self):
        r, body = self.get("/apply")
        html = body.decode()
        assert r.code == 200
        assert 'name="website"' in html and 'class="hp"' in html   # the honeypot, hidden
        cookie = r.headers.getRawHeaders("set-cookie")[0]
        assert "mirrordns_form=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Path=/apply" in cookie

    def test_valid_application_is_stored_and_mailed(self):
        token = self.form_token()
        r, _ = self.post("/apply", {**VALID, "csrf": token}, ip="192.0.2.7")
        assert r.code == 303 and r.headers.getRawHeaders("location") == ["/apply/sent"]
        (app,) = self.apps()
        assert (app["name"], app["email"], app["country"], app["hostname"], app["status"]) == \
            ("Jane Doe", "jane@example.org", "DE", "mirror.example.de", "new")
        assert (app["bandwidth_mbit"], app["cores"], app["has_ipv6"], app["has_https"]) == \
            (1000, 8, True, False)
        assert app["source_ip"] == "192.0.2.7" and app["created_at"] == T0
        (mail,) = self.mails()
        assert mail["recipients"] == "jane@example.org" and mail["kind"] == "application"
        msg = message_from_bytes(mail["message"])
        body = msg.get_payload(decode=True).decode()
        assert f"https://mirrors.example.org/apply/{app['token']}" in body
        assert msg["Auto-Submitted"] == "auto-generated"
        r, body = self.get("/apply/sent")
        assert r.code == 200 and b"private link" in body

    def test_forged_host_header_stays_out_of_the_mail(self):
        """Without [admin] base_url the link names this listener, never the Host header a visitor
        sent (else anyone could have our mail point a victim at a site of their choosing)."""
        self.config = XFF_CONFIG.replace('base_url = "https://mirrors.example.org"\n', "")
        self.setUp()
        token = self.form_token()
        r = self.successResultOf(self.stub.post(
            BASE + "/apply", data={**VALID, "csrf": token},
            headers={"Host": "evil.example"}, allow_redirects=False))
        assert r.code == 303
        (mail,) = self.mails()
        body = message_from_bytes(mail["message"]).get_payload(decode=True).decode()
        (url,) = re.findall(r"\S+/apply/\S+", body)
        assert url == f"http://{self.ctx.cfg.admin.listen}/apply/{self.apps()[0]['token']}"

    def test_validation_messages_next_to_fields(self):
        token = self.form_token()
        bad = {**VALID, "csrf": token, "email": "not-an-address", "country": "XX",
               "hostname": "no spaces allowed", "cores": "-3", "provider_url": "javascript:x",
               "name": "<script>alert('x')</script>"}
        r, body = self.post("/apply", bad)
        html = body.decode()
        assert r.code == 400
        assert re.search(r'name="email"[^>]*aria-invalid="true".*?does not look like a mail '
                         r'address', html, re.DOTALL)
        assert "is not an ISO 3166-1 alpha-2 country code (like DE, US, GB)." in html
        assert "is not a host name (like mirror.example.net)." in html
        assert "The number of cores must be a whole number (or empty)." in html
        assert "An http:// or https:// address, please." in html
        assert "<script>alert" not in html and "&lt;script&gt;alert(&#39;x&#39;)" in html
        assert 'value="Jane' not in html and 'value="not-an-address"' in html   # values kept
        assert self.apps() == [] and self.mails() == []

    def test_missing_fields(self):
        r, body = self.post("/apply", {"csrf": self.form_token()})
        assert r.code == 400
        for msg in (b"Your name is empty.", b"A mail address is needed (like name@example.org).",
                    b"A host name is needed (like mirror.example.net).",
                    b"An http:// or https:// URL is needed, so that the probes can check"):
            assert msg in body

    def test_post_without_or_with_forged_token_is_refused(self):
        r, body = self.post("/apply", VALID)
        assert r.code == 403 and b"expired or did not come from this site" in body
        r, _ = self.post("/apply", {**VALID, "csrf": "1700000000.deadbeef"})
        assert r.code == 403
        token = self.form_token()
        self.stub = StubTreq(self.root)                   # a new browser: no cookie
        r, _ = self.post("/apply", {**VALID, "csrf": token})
        assert r.code == 403
        assert self.apps() == []

    def test_token_expires(self):
        token = self.form_token()
        self.ctx.clock.advance(public.FORM_MAX_AGE + 1)
        r, _ = self.post("/apply", {**VALID, "csrf": token})
        assert r.code == 403 and self.apps() == []

    def test_honeypot(self):
        token = self.form_token()
        r, _ = self.post("/apply", {**VALID, "csrf": token, "website": "http://spam.example/"})
        assert r.code == 303                              # looks like success to the bot
        assert self.apps() == [] and self.mails() == []

    def test_rate_limit_per_address_with_clock(self):
        token = self.form_token()
        for i in range(4):                                # apply_rate_limit = 4 per 600 s
            r, _ = self.post("/apply", {**VALID, "csrf": token, "hostname": f"m{i}.example.de"},
                             ip="198.51.100.1")
            assert r.code == 303
        r, body = self.post("/apply", {**VALID, "csrf": token}, ip="198.51.100.1")
        assert r.code == 429 and b"Too many submissions" in body
        assert int(r.headers.getRawHeaders("retry-after")[0]) > 0
        r, _ = self.post("/apply", {**VALID, "csrf": token}, ip="198.51.100.2")
        assert r.code == 303                              # another address is not affected
        self.ctx.clock.advance(601)
        r, _ = self.post("/apply", {**VALID, "csrf": token}, ip="198.51.100.1")
        assert r.code == 303
        assert len(self.apps()) == 6

    def test_waiting_counts_on_form(self):
        token = self.form_token()
        self.post("/apply", {**VALID, "csrf": token})
        self.post("/apply", {**VALID, "csrf": token, "country": "FR"})
        _r, body = self.get("/apply")
        html = body.decode()
        assert re.search(r"<td>France</td><td class=\"num\">1</td>", html)
        assert re.search(r"<td>Germany</td><td class=\"num\">1</td>", html)

    # -- the private link --
    def _apply(self):
        self.post("/apply", {**VALID, "csrf": self.form_token()})
        return self.apps()[0]["token"]

    def test_private_link_shows_and_updates(self):
        tok = self._apply()
        r, body = self.get(f"/apply/{tok}")
        assert r.code == 200 and b'value="mirror.example.de"' in body
        assert r.headers.getRawHeaders("cache-control") == ["no-store"]
        self.ctx.clock.advance(86400)
        csrf = self.form_token(f"/apply/{tok}")
        r, _ = self.post(f"/apply/{tok}", {**VALID, "csrf": csrf, "action": "update",
                                           "hostname": "new.example.de", "cores": ""})
        assert r.code == 303
        assert r.headers.getRawHeaders("location") == [f"/apply/{tok}?done=updated"]
        (app,) = self.apps()
        assert app["hostname"] == "new.example.de" and app["cores"] is None
        assert app["confirmed_at"] == T0 + _dt.timedelta(days=1)
        _r, body = self.get(f"/apply/{tok}?done=updated")
        assert b"Your changes are saved" in body

    def test_private_link_validation_and_unknown(self):
        tok = self._apply()
        csrf = self.form_token(f"/apply/{tok}")
        r, body = self.post(f"/apply/{tok}", {**VALID, "csrf": csrf, "action": "update",
                                              "email": ""})
        assert r.code == 400 and b"A mail address is needed" in body
        assert self.apps()[0]["email"] == "jane@example.org"
        r, _ = self.get("/apply/" + "A" * 43)
        assert r.code == 404
        r, _ = self.post("/apply/" + "A" * 43, {"csrf": csrf, "action": "withdraw"})
        assert r.code == 404
        r, _ = self.post(f"/apply/{tok}", {"csrf": csrf, "action": "explode"})
        assert r.code == 400
        r, _ = self.post(f"/apply/{tok}", {"action": "withdraw"})      # no token
        assert r.code == 403 and self.apps()[0]["status"] == "new"

    def test_confirm_and_withdraw(self):
        tok = self._apply()
        csrf = self.form_token(f"/apply/{tok}")
        self.ctx.clock.advance(3600)
        r, _ = self.post(f"/apply/{tok}", {"csrf": csrf, "action": "confirm"})
        assert r.code == 303 and self.apps()[0]["confirmed_at"] == T0 + _dt.timedelta(hours=1)
        r, _ = self.post(f"/apply/{tok}", {"csrf": csrf, "action": "withdraw"})
        assert r.code == 303 and self.apps()[0]["status"] == "withdrawn"
        _r, body = self.get(f"/apply/{tok}")
        assert b"This offer is closed" in body and b'name="action"' not in body
        r, _ = self.post(f"/apply/{tok}", {"csrf": csrf, "action": "confirm"})
        assert r.code == 409


def test_rate_limiter_folds_ipv6_to_64():
    from twisted.internet.task import Clock
    lim = public.RateLimiter(Clock(), limit=2, window=60)
    assert lim.hit("2001:db8:1:2::1") == 0 and lim.hit("2001:db8:1:2::ffff") == 0
    assert lim.hit("2001:db8:1:2:aaaa::1") > 0            # same /64
    assert lim.hit("2001:db8:1:3::1") == 0                # another /64
    assert lim.key("::ffff:192.0.2.1") == "192.0.2.1"


def test_rate_limiter_memory_is_bounded():
    from twisted.internet.task import Clock
    clock = Clock()
    lim = public.RateLimiter(clock, limit=1, window=10, max_keys=3)
    for i in range(3):
        lim.hit(f"192.0.2.{i}")
    clock.advance(11)
    lim.hit("192.0.2.99")                                 # sweeps the expired ones
    assert set(lim._hits) == {"192.0.2.99"}


def test_public_query_on_every_database(engine):
    """The mirror list's query and its fallback plan run on SQLite and PostgreSQL alike."""
    _seed(engine)
    ctx = make_ctx(engine)
    with engine.connect() as conn:
        plan = build_plan(load_rows(conn), ctx.cfg, T0)
    assert {m.name for m in public.serving_mirrors(plan)} == {"de1", "fr1", "us1", "br1"}
    assert {e.name: e.reason for e in plan.mirrors if not e.serving} == {
        "de2": "disabled by admin: hardware move", "us2": "out of sync 3 days",
        "jp1": "pending, not active yet"}


@pytest.mark.usefixtures("injected")
class TestAcceptedApplicant(Base):
    """An accepted applicant's link stays open until the mirror serves: the maintainer finishes
    the set-up themselves (addresses, URLs, people), and the first passed probe closes it."""

    config = XFF_CONFIG + "[probes]\nallow_private = true\n"

    def test_link_open_until_the_mirror_serves(self):
        from dnsd.records import mirrors as _mirrors
        from probes import store as probe_store
        from probes.probe import ProbeResult

        form = {**VALID, "https_url": "", "http_url": "http://mirror.example.de/pub/",
                "m_name": ["Doe, John", ""], "m_email": ["john@example.de", ""]}
        r, _ = self.post("/apply", {**form, "csrf": TestApplicationForm.form_token(self)})
        assert r.code == 303
        with self.engine.begin() as conn:
            tok, app_id = conn.execute(sa.select(applications.c.token, applications.c.id)).one()
            m = store.accept_application(conn, app_id, "alice", None, None)
        assert m.status == "active"
        _r, body = self.get(f"/apply/{tok}")
        html = body.decode()
        assert "not serving yet</strong>: never probed" in html
        assert "Complete your mirror" in html and 'value="john@example.de"' in html
        csrf = TestApplicationForm.form_token(self, f"/apply/{tok}")
        r, body = self.post(f"/apply/{tok}", {**form, "csrf": csrf, "action": "update",
                                              "ipv4": "192.0.2.44"})
        assert r.code == 303, body
        with self.engine.connect() as conn:
            now_m = _mirrors.get(conn, m.id)
            acts = conn.execute(sa.select(audit.c.actor, audit.c.action)
                                .where(audit.c.mirror_id == m.id)).all()
        assert now_m.ipv4 == "192.0.2.44"
        assert ("applicant:1", "applicant-edit") in [tuple(a) for a in acts]
        # the first passed probe: the mirror serves, and the link closes
        with self.engine.begin() as conn:
            t0 = T0.replace(tzinfo=_dt.UTC).timestamp()
            probe_store.record_probe(conn, ProbeResult(
                mirror_id=m.id, at=t0, ok=True, url="http://mirror.example.de/pub/TIME",
                address="192.0.2.44", family=4, http_status=200, timestamp=t0 - 60,
                sync_age=60, ipv4_up=True, probed_ipv4="192.0.2.44"), self.ctx.cfg, T0)
        _r, body = self.get(f"/apply/{tok}")
        html = body.decode()
        assert "Your mirror is serving" in html and "Complete your mirror" not in html
        r, _ = self.post(f"/apply/{tok}", {**form, "csrf": csrf, "action": "update",
                                           "ipv4": "192.0.2.45"})
        assert r.code == 409

    def test_a_taken_host_name_through_the_link_is_a_message_not_an_error(self):
        r, _ = self.post("/apply", {**VALID, "csrf": TestApplicationForm.form_token(self)})
        with self.engine.begin() as conn:
            tok, app_id = conn.execute(sa.select(applications.c.token, applications.c.id)).one()
            store.accept_application(conn, app_id, "alice", None, None)
            store.add_mirror(conn, actor="t", mail=None, country="FR", hostname="taken.example.fr",
                             http_url="http://taken.example.fr/")
        csrf = TestApplicationForm.form_token(self, f"/apply/{tok}")
        r, body = self.post(f"/apply/{tok}", {**VALID, "csrf": csrf, "action": "update",
                                              "hostname": "taken.example.fr"})
        assert r.code == 409 and b"is already in the table as fr1" in body
