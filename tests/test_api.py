"""The JSON API over HTTP (treq StubTreq): token auth, role rules, each operation, error shapes,
and the OpenAPI document describing it (validated as OpenAPI 3 and checked against real answers)."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource

from admin import store
from admin.web import api
from dnsd.models import audit, mirror_health, mirrors, notes, outbox, users
from dnsd.plan import build_plan, load_rows
from tests.webfakes import T0, add_user, make_ctx

BASE = "http://admin.test/api"
CONFIG = '[mail]\nlist = "mirrors@lists.example.org"\n'


def mounted(ctx):
    root = resource.Resource()
    root.putChild(b"api", api.build(ctx))
    return root


class PlanHolder:
    def __init__(self, plan):
        self.current = plan


class APICase(SynchronousTestCase):
    @pytest.fixture(autouse=True)
    def _engine(self, sqlite_engine):
        self.engine = sqlite_engine

    def setUp(self):
        add_user(self.engine, "alice", role="admin")
        add_user(self.engine, "hugo", role="helper")
        with self.engine.begin() as conn:
            self.admin_token = api.issue_token(conn, "alice")
            self.helper_token = api.issue_token(conn, "hugo")
            for cc, host, kw in (("DE", "a.example.de", {"provider_name": "<b>A</b>",
                                                         "maintainers_": ["Ann <ann@example.de>"]}),
                                 ("FR", "b.example.fr", {}),
                                 ("FR", "c.example.fr", {"status": "pending"})):
                store.add_mirror(conn, actor="t", mail=None, country=cc, hostname=host,
                                 http_url=f"http://{host}/", **kw)
        self.ctx = make_ctx(self.engine, CONFIG)
        self.stub = StubTreq(mounted(self.ctx))

    def call(self, method, path, token=None, body=None, raw=None, ctype="application/json",
             headers=None):
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None:
            h["Content-Type"] = ctype
        r = self.successResultOf(self.stub.request(method, BASE + path, headers=h, data=data,
                                                   allow_redirects=False))
        text = self.successResultOf(r.content())
        return r, (json.loads(text) if text and r.code != 405 else None)

    def q(self, stmt):
        with self.engine.connect() as conn:
            return conn.execute(stmt).all()


class AuthTests(APICase):
    def test_no_token(self):
        r, data = self.call("GET", "/mirrors")
        assert r.code == 401 and "Bearer" in data["error"]
        assert r.headers.getRawHeaders("www-authenticate") == ['Bearer realm="mirrordns"']

    def test_wrong_tokens(self):
        for bad in ("mdns_nope", "x" * 300, self.admin_token + "x", "é"):
            r, _data = self.call("GET", "/mirrors", headers={"Authorization": f"Bearer {bad}"}
                                if bad != "é" else {"Authorization": b"Bearer \xe9"})
            assert r.code == 401, bad
        r, _ = self.call("GET", "/mirrors", headers={"Authorization": f"Basic {self.admin_token}"})
        assert r.code == 401

    def test_token_is_stored_hashed_and_replaceable(self):
        (h,) = self.q(sa.select(users.c.api_token_hash).where(users.c.username == "alice"))[0]
        assert h == api.hash_token(self.admin_token) and self.admin_token not in h
        with self.engine.begin() as conn:
            new = api.issue_token(conn, "alice")
        r, _ = self.call("GET", "/mirrors", self.admin_token)
        assert r.code == 401                                  # the old one is gone
        r, _ = self.call("GET", "/mirrors", new)
        assert r.code == 200
        with self.engine.begin() as conn:
            assert api.revoke_token(conn, "alice")
            with pytest.raises(store.StoreError):
                api.issue_token(conn, "nobody")
        r, _ = self.call("GET", "/mirrors", new)
        assert r.code == 401
        assert self.q(sa.select(audit.c.action).where(audit.c.action == "user-api-token"))

    def test_openapi_needs_no_token(self):
        r, doc = self.call("GET", "/openapi.json")
        assert r.code == 200 and doc["openapi"].startswith("3.")


class OperationTests(APICase):
    def test_list_and_filters(self):
        r, data = self.call("GET", "/mirrors", self.helper_token)
        assert r.code == 200
        assert [m["name"] for m in data["mirrors"]] == ["de1", "fr1", "fr2"]
        assert data["mirrors"][0]["provider_name"] == "<b>A</b>"   # JSON, not HTML: verbatim
        _r, data = self.call("GET", "/mirrors?country=fr&status=pending", self.helper_token)
        assert [m["name"] for m in data["mirrors"]] == ["fr2"]
        for bad in ("?country=France", "?status=sleeping", "?country=%FF"):
            r, data = self.call("GET", "/mirrors" + bad, self.helper_token)
            assert r.code == 400 and data["error"], bad

    def test_show(self):
        r, m = self.call("GET", "/mirrors/de1", self.helper_token)
        assert r.code == 200
        assert m["hostname"] == "a.example.de" and m["status"] == "active"
        assert m["maintainers"] == [{"name": "Ann", "email": "ann@example.de"}]
        assert m["health"] is None and m["serving"] is False
        assert m["not_serving_reason"] == "never probed"
        _r, by_id = self.call("GET", f"/mirrors/{m['id']}", self.helper_token)
        assert by_id["name"] == "de1"
        for missing in ("/mirrors/de9", "/mirrors/999", "/mirrors/DE1", "/mirrors/%3Cx%3E"):
            r, data = self.call("GET", missing, self.helper_token)
            assert r.code == 404 and "no mirror" in data["error"], missing

    def test_serving_from_live_plan(self):
        with self.engine.begin() as conn:
            for mid, v4 in ((1, "93.184.216.34"), (2, "93.184.216.35")):
                conn.execute(mirror_health.insert().values(
                    mirror_id=mid, last_probe_at=T0, last_ok_at=T0, last_sync_at=T0,
                    probed_ipv4=v4, ipv4_up=True))
        with self.engine.connect() as conn:
            self.ctx.plan = PlanHolder(build_plan(load_rows(conn), self.ctx.cfg, T0))
        _r, data = self.call("GET", "/mirrors", self.admin_token)
        assert [(m["name"], m["serving"]) for m in data["mirrors"]] == \
            [("de1", True), ("fr1", True), ("fr2", False)]
        assert data["mirrors"][2]["not_serving_reason"] == "pending, not active yet"

    def test_helper_disables_and_notes_but_cannot_enable(self):
        r, m = self.call("POST", "/mirrors/de1/disable", self.helper_token,
                         {"reason": "disk <full>"})
        assert r.code == 200 and m["status"] == "disabled-by-admin"
        assert m["status_reason"] == "disk <full>"
        assert m["notes"][0]["author"] == "hugo"
        (st,) = self.q(sa.select(mirrors.c.status).where(mirrors.c.name == "de1"))[0]
        assert st == "disabled-by-admin"
        (mail,) = self.q(sa.select(outbox.c.recipients, outbox.c.author))
        assert mail == ("mirrors@lists.example.org,ann@example.de", "hugo")
        r, data = self.call("POST", "/mirrors/de1/disable", self.helper_token, {"reason": "again"})
        assert r.code == 409 and "already disabled" in data["error"]
        r, data = self.call("POST", "/mirrors/de1/enable", self.helper_token, {})
        assert r.code == 403 and "admin" in data["error"]
        r, note = self.call("POST", "/mirrors/de1/notes", self.helper_token, {"text": "called"})
        assert r.code == 201 and note == {"mirror": "de1", "author": "hugo", "text": "called"}
        assert ("hugo", "called") in self.q(sa.select(notes.c.author, notes.c.text))

    def test_admin_enables(self):
        r, m = self.call("POST", "/mirrors/fr2/enable", self.admin_token, {"reason": "ready"})
        assert r.code == 200 and m["status"] == "active"
        r, _data = self.call("POST", "/mirrors/fr2/enable", self.admin_token, {})
        assert r.code == 409
        r, _data = self.call("POST", "/mirrors/fr9/enable", self.admin_token, {})
        assert r.code == 404

    def test_bad_bodies(self):
        cases = [
            ({"raw": b"{nope"}, 400), ({"raw": b"[1]"}, 400), ({"raw": b"\xff"}, 400),
            ({"body": {"reason": 5}}, 400), ({"body": {"reason": "  "}}, 400),
            ({"body": {}}, 400), ({"body": {"reason": "x" * 1001}}, 400),
            ({"body": {"reason": "ok"}, "ctype": "text/plain"}, 415),
            ({"raw": b"{}" + b" " * api.MAX_BODY}, 413),
        ]
        for kw, code in cases:
            r, data = self.call("POST", "/mirrors/de1/disable", self.admin_token, **kw)
            assert r.code == code, (kw, r.code, data)
            assert data["error"]
        r, _ = self.call("POST", "/mirrors/de1/notes", self.admin_token, {"text": ""})
        assert r.code == 400
        r, _ = self.call("POST", "/mirrors/de1/disable", None, {"reason": "x"})
        assert r.code == 401                                   # auth before anything else
        assert self.q(sa.select(mirrors.c.status).where(mirrors.c.name == "de1"))[0][0] == "active"

    def test_method_not_allowed(self):
        r, _ = self.call("DELETE", "/mirrors/de1", self.admin_token)
        assert r.code == 405 and r.headers.getRawHeaders("allow") == ["GET, PATCH"]
        r, _ = self.call("GET", "/mirrors/de1/disable", self.admin_token)
        assert r.code == 405


def test_openapi_document_is_valid_and_matches_answers(sqlite_engine):
    """The document is valid OpenAPI 3 (schemathesis loads it) and real answers fit its schemas."""
    import jsonschema_rs
    import schemathesis

    ctx = make_ctx(sqlite_engine)
    doc = api.openapi_document(ctx.cfg)
    schema = schemathesis.openapi.from_dict(doc)
    ops = {f"{op.ok().method.upper()} {op.ok().path}" for op in schema.get_all_operations()}
    assert ops == {"GET /mirrors", "POST /mirrors", "GET /mirrors/{mirror}",
                   "PATCH /mirrors/{mirror}", "POST /mirrors/{mirror}/disable",
                   "POST /mirrors/{mirror}/enable", "POST /mirrors/{mirror}/notes"}
    add_user(sqlite_engine, "alice")
    with sqlite_engine.begin() as conn:
        store.add_mirror(conn, actor="t", mail=None, country="DE", hostname="a.example.de",
                         ipv4="93.184.216.34", http_url="http://a.example.de/")
    stub = StubTreq(mounted(ctx))
    with sqlite_engine.begin() as conn:
        tok = api.issue_token(conn, "alice")
    from twisted.python.failure import Failure

    def fetch(path):
        d = stub.get(BASE + path, headers={"Authorization": f"Bearer {tok}"})
        out = []
        d.addCallback(lambda r: r.json()).addBoth(out.append)
        assert out and not isinstance(out[0], Failure), out
        return out[0]

    def nullable_to_31(s):
        """OpenAPI 3.0 'nullable' -> JSON Schema, for checking with jsonschema."""
        if isinstance(s, dict):
            s = {k: nullable_to_31(v) for k, v in s.items()}
            if s.pop("nullable", False) and "type" in s:
                s["type"] = [s["type"], "null"]
            if "$ref" in s:
                s["$ref"] = s["$ref"].replace("#/components/schemas/", "#/$defs/")
            return s
        if isinstance(s, list):
            return [nullable_to_31(x) for x in s]
        return s

    defs = nullable_to_31(doc["components"]["schemas"])
    for path, name in (("/mirrors/de1", "Mirror"), ("/mirrors", None)):
        data = fetch(path)
        sch = {"$ref": f"#/$defs/{name}"} if name else nullable_to_31(
            doc["paths"]["/mirrors"]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"])
        jsonschema_rs.validate({**sch, "$defs": defs}, data)


def test_mirrorctl_user_token(tmp_path, capsys):
    """`mirrorctl user token NAME` prints a token the API accepts; --revoke makes it useless."""
    from admin.cli import main
    from dnsd.db import make_engine, upgrade

    db = tmp_path / "m.sqlite"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    add_user(engine, "hugo", role="helper")
    cfg = tmp_path / "mirrordns.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{db}"\n')
    assert main(["--config", str(cfg), "user", "token", "hugo"]) == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert token.startswith(api.TOKEN_PREFIX) and "shown once" in out.err
    with engine.connect() as conn:
        h = conn.execute(sa.select(users.c.api_token_hash)).scalar()
    assert h == api.hash_token(token)
    assert main(["--config", str(cfg), "user", "token", "nobody"]) != 0
    assert main(["--config", str(cfg), "user", "token", "hugo", "--revoke"]) == 0
    with engine.connect() as conn:
        assert conn.execute(sa.select(users.c.api_token_hash)).scalar() is None
    engine.dispose()
