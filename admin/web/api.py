"""The JSON API for scripts: list, show, disable, enable and note, described at /api/openapi.json.

Authentication is a bearer token per user (`Authorization: Bearer <token>`), made by
`mirrorctl user token USERNAME`; the table keeps only its sha256 (users.api_token_hash), so a leaked
database hands out no working tokens, and a new token replaces the old one. The API never reads
the session cookie, so a browser cannot be tricked into calling it (no CSRF surface); every request
stands alone. Role rules are the pages' rules: helpers may disable and add notes, only admins
enable. Changes go through admin.store like the pages and mirrorctl (audit row, version bump and
the mail to the list in one transaction).

Errors are JSON `{"error": "..."}` with the usual codes: 400 bad input, 401 no or unknown token,
403 role, 404 unknown mirror, 409 a refused change (already disabled, retired, ...).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import re
import secrets

import sqlalchemy as sa
from twisted.logger import Logger

from admin import store
from admin.web.framework import HTTPError, Response, Router, WebContext
from admin.web.limits import FormError, body_bytes, query_args
from dnsd import countries
from dnsd.models import STATUSES, audit, users, utcnow

_log = Logger(namespace="admin.web.api")

TOKEN_PREFIX = "mdns_"
REF_PATTERN = r"^(?:[a-z]{2}[0-9]{1,6}|[0-9]{1,9})$"       # a mirror name (de2) or its id
# Characters a reason or note may not hold: C0/C1 controls, DEL and the Unicode line and paragraph
# separators; notes may keep \n and \t. The same classes go into the OpenAPI patterns, so the
# document says exactly what is accepted. Lone surrogates (JSON can carry them, UTF-8 cannot) are
# refused as well, outside the patterns: JSON Schema regexes cannot name them.
_BAD_LINE = r"\u0000-\u001f\u007f-\u009f\u2028\u2029"
_BAD_MULTI = r"\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029"
_SURROGATE = re.compile("[\ud800-\udfff]")


def _text_pattern(bad: str, required: bool = True) -> str:
    """Only allowed characters and, when required, at least one that is not white space."""
    if not required:
        return f"^[^{bad}]*$"
    return f"^[^{bad}]*[^{bad}\\s][^{bad}]*$"


# --- tokens (also used by `mirrorctl user token`) --------------------------------------------------

def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(conn: sa.Connection, username: str, actor: str = "") -> str:
    """A new API token for `username` (replacing any old one); returns it once, stores its hash."""
    u = (username or "").strip().lower()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    res = conn.execute(users.update().where(users.c.username == u)
                       .values(api_token_hash=hash_token(token)))
    if res.rowcount == 0:
        raise store.StoreError(f"no user named {username}")
    conn.execute(audit.insert().values(at=utcnow(), actor=actor or u, action="user-api-token",
                                       before="", after=json.dumps({"username": u})))
    return token


def revoke_token(conn: sa.Connection, username: str) -> bool:
    res = conn.execute(users.update().where(users.c.username == (username or "").lower())
                       .values(api_token_hash=None))
    return res.rowcount > 0


def _user_by_token_hash(h: str):
    def thd(conn):
        row = conn.execute(sa.select(users.c.id, users.c.username, users.c.role,
                                     users.c.api_token_hash)
                           .where(users.c.api_token_hash == h)).first()
        # the lookup is by index; compare_digest is belt and braces against a collation surprise
        if row is None or not hmac.compare_digest(row.api_token_hash, h):
            return None
        return {"id": row.id, "username": row.username, "role": row.role}
    return thd


# --- JSON shapes ---------------------------------------------------------------------------------

def _iso(v):
    return v.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(v, _dt.datetime) else v


SUMMARY_FIELDS = ("id", "name", "hostname", "country", "status", "status_reason", "status_since",
                  "backup", "weight", "provider_name")
DETAIL_FIELDS = SUMMARY_FIELDS + (
    "ipv4", "ipv6", "http_url", "https_url", "ftp_url", "rsync_url", "provider_url",
    "provider_logo", "bandwidth_mbit", "cores", "memory_gb", "disk_gb", "has_ipv6", "has_https",
    "created_at", "updated_at")
HEALTH_FIELDS = ("last_probe_at", "last_ok_at", "last_sync_at", "last_error", "failures_in_row",
                 "ipv4_up", "ipv6_up", "https_ok", "uptime_24h", "uptime_7d", "uptime_30d",
                 "rtt_p50_ms", "rtt_p95_ms", "geo_check")


def _serving(plan, m: dict):
    e = plan.by_id.get(m["id"]) if plan is not None else None
    if e is None:
        return None, ""
    return e.serving, e.reason


def mirror_summary(m: dict, plan=None) -> dict:
    out = {k: _iso(m[k]) for k in SUMMARY_FIELDS}
    out["serving"], out["not_serving_reason"] = _serving(plan, m)
    return out


def mirror_detail(m: dict, plan=None) -> dict:
    out = {k: _iso(m[k]) for k in DETAIL_FIELDS}
    out["serving"], out["not_serving_reason"] = _serving(plan, m)
    out["maintainers"] = [{"name": x["name"], "email": x["email"]} for x in m["maintainers"]]
    h = m.get("health")
    out["health"] = None if h is None else {k: _iso(h[k]) for k in HEALTH_FIELDS}
    out["notes"] = [{"author": n["author"], "created_at": _iso(n["created_at"]), "text": n["text"]}
                    for n in m.get("notes", [])]
    return out


# --- the resource --------------------------------------------------------------------------------

class APIError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _json(data, code: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(data, indent=1), code=code,
                    content_type=b"application/json",
                    headers={b"cache-control": b"no-store", **(headers or {})})


class API:
    def __init__(self, ctx: WebContext):
        self.ctx = ctx

    def build(self) -> Router:
        r = Router(self.ctx, errors="json")          # JSON clients: JSON error answers
        ref = r"mirrors/(?P<ref>[^/]+)"
        r.add("GET", "openapi.json", self.openapi, login=False)
        r.add("GET", "mirrors", self._h(self.list_mirrors), login=False)
        r.add("GET", ref, self._h(self.show), login=False)
        r.add("POST", ref + "/disable", self._h(self.disable), login=False, csrf=False)
        r.add("POST", ref + "/enable", self._h(self.enable, admin=True), login=False, csrf=False)
        r.add("POST", ref + "/notes", self._h(self.note), login=False, csrf=False)
        return r

    @property
    def plan(self):
        return getattr(self.ctx.plan, "current", None) if self.ctx.plan is not None else None

    # -- plumbing: auth, JSON errors --
    def _h(self, handler, admin: bool = False):
        async def run(request, **groups):
            try:
                user = await self._auth(request)
                if admin and user["role"] != "admin":
                    raise APIError(403, "this needs an admin; helpers may disable mirrors and "
                                        "add notes only")
                if "ref" in groups:
                    groups["ref"] = self._ref(groups["ref"])
                return await handler(request, user, **groups)
            except APIError as e:
                hdr = {b"www-authenticate": b'Bearer realm="mirrordns"'} if e.code == 401 else {}
                return _json({"error": e.message}, e.code, hdr)
            except HTTPError as e:
                return _json({"error": e.message}, e.code)
        return run

    async def _auth(self, request) -> dict:
        raw = request.getHeader(b"authorization") or b""
        scheme, _, token = raw.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            raise APIError(401, "send Authorization: Bearer <token> (mirrorctl user token NAME)")
        try:
            tok = token.strip().decode("ascii")
        except UnicodeDecodeError:
            raise APIError(401, "unknown or revoked token") from None
        user = await self.ctx.pool.run_readonly(_user_by_token_hash(hash_token(tok)))
        if user is None:
            raise APIError(401, "unknown or revoked token")
        return user

    @staticmethod
    def _ref(ref: str) -> str:
        if not re.match(REF_PATTERN, ref):
            raise APIError(404, f"no mirror named {ref[:40]}")
        return ref if not ref.isdigit() else f"#{ref}"

    @staticmethod
    def _body(request) -> dict:
        try:
            raw = body_bytes(request)        # the listener has refused bodies over [admin] max_body
        except FormError:
            raise APIError(413, "request body too large") from None
        ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if ctype != b"application/json":
            raise APIError(415, "send the body as application/json")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise APIError(400, "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise APIError(400, "the body must be a JSON object")
        return data

    @staticmethod
    def _text(data: dict, key: str, required: bool, limit: int, lines: bool = False) -> str:
        """A string field checked with the very pattern the OpenAPI document states: valid
        Unicode (JSON may carry lone surrogates, UTF-8 cannot), no control characters, one line
        unless `lines` (a reason ends up in a mail's Subject header), not blank if required."""
        if key not in data and not required:
            return ""
        v = data.get(key)
        if not isinstance(v, str):
            raise APIError(400, f"'{key}' must be a string")
        if len(v) > limit:
            raise APIError(400, f"'{key}' is longer than {limit} characters")
        if _SURROGATE.search(v) or not re.search(
                _text_pattern(_BAD_MULTI if lines else _BAD_LINE, required), v):
            raise APIError(400, f"'{key}' must not be blank, hold control characters"
                           + ("" if lines else " or line breaks") + ", or be invalid Unicode")
        return v.strip()

    async def _change(self, fn):
        """Run a store operation; a StoreError becomes 404 (unknown mirror) or 409 (refused)."""
        try:
            return await self.ctx.pool.run(fn)
        except store.StoreError as e:
            msg = str(e)
            raise APIError(404 if msg.startswith("no mirror named") else 409, msg) from None

    async def _get(self, ref: str) -> dict:
        try:
            return await self.ctx.pool.run_readonly(lambda conn: store.get_mirror(conn, ref))
        except store.StoreError as e:
            raise APIError(404, str(e)) from None

    # -- operations --
    async def openapi(self, request):
        return _json(openapi_document(self.ctx.cfg))

    async def list_mirrors(self, request, user):
        def arg(name):
            v = (query_args(request).get(name.encode()) or [b""])[0]
            try:
                return v.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise APIError(400, f"'{name}' is not UTF-8") from None
        country, status = arg("country").upper(), arg("status")
        # a filter that is there must be well-formed; a well-formed code of no country with
        # mirrors simply matches nothing
        if b"country" in query_args(request) and not (
                len(country) == 2 and country.isalpha() and country.isascii()):
            raise APIError(400, "country: an ISO 3166-1 alpha-2 code such as DE")
        if b"status" in query_args(request) and status not in STATUSES:
            raise APIError(400, f"status: one of {', '.join(STATUSES)}")
        if country and not countries.is_country(country):
            return _json({"mirrors": []})
        rows = await self.ctx.pool.run_readonly(
            lambda conn: store.list_mirrors(conn, country or None, status or None))
        plan = self.plan
        return _json({"mirrors": [mirror_summary(m, plan) for m in rows]})

    async def show(self, request, user, ref):
        return _json(mirror_detail(await self._get(ref), self.plan))

    async def disable(self, request, user, ref):
        data = self._body(request)
        reason = self._text(data, "reason", True, 1000)
        mail = store.MailSettings.from_config(self.ctx.cfg)
        await self._change(lambda conn: store.disable(conn, ref, user["username"], reason, mail))
        return _json(mirror_detail(await self._get(ref), self.plan))

    async def enable(self, request, user, ref):
        data = self._body(request)
        reason = self._text(data, "reason", False, 1000)
        mail = store.MailSettings.from_config(self.ctx.cfg)
        await self._change(lambda conn: store.enable(conn, ref, user["username"], mail, reason))
        return _json(mirror_detail(await self._get(ref), self.plan))

    async def note(self, request, user, ref):
        data = self._body(request)
        text = self._text(data, "text", True, 10000, lines=True)
        await self._change(lambda conn: store.add_note(conn, ref, user["username"], text))
        m = await self._get(ref)
        return _json({"mirror": m["name"], "author": user["username"], "text": text}, 201)


def build(ctx: WebContext) -> Router:
    """The /api resource, for admin.web.build_root."""
    return API(ctx).build()


# --- the OpenAPI document ------------------------------------------------------------------------

def _nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


def openapi_document(cfg) -> dict:
    """OpenAPI 3.0 for the API above; tests fuzz the API against it with schemathesis."""
    s, i, b, n = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "number"}
    dt = {"type": "string", "format": "date-time"}
    err = {"description": "error", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}
    ref_param = {"name": "mirror", "in": "path", "required": True,
                 "description": "the mirror's name (de2) or numeric id", "example": "de1",
                 "schema": {"type": "string", "pattern": REF_PATTERN}}
    line_body = {"type": "string", "minLength": 1, "pattern": _text_pattern(_BAD_LINE)}
    multi_body = {"type": "string", "minLength": 1, "pattern": _text_pattern(_BAD_MULTI)}

    def body(props: dict, required: list[str], example: dict) -> dict:
        return {"required": True, "content": {"application/json": {"example": example, "schema": {
            "type": "object", "properties": props, "required": required}}}}

    def ok(schema_ref: str, code: str = "200", what: str = "the mirror after the change") -> dict:
        return {code: {"description": what, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}}

    common = {"400": err, "401": err, "404": err, "413": err, "415": err}
    summary = {
        "type": "object",
        "required": ["id", "name", "hostname", "country", "status", "status_reason",
                     "status_since", "backup", "weight", "provider_name", "serving",
                     "not_serving_reason"],
        "properties": {
            "id": i, "name": _nullable(s), "hostname": s, "country": s,
            "status": {"type": "string", "enum": list(STATUSES)}, "status_reason": s,
            "status_since": dt, "backup": b, "weight": n, "provider_name": s,
            "serving": _nullable(b), "not_serving_reason": s,
        },
    }
    health = {"type": "object", "nullable": True, "properties": {
        "last_probe_at": _nullable(dt), "last_ok_at": _nullable(dt),
        "last_sync_at": _nullable(dt), "last_error": s, "failures_in_row": i,
        "ipv4_up": _nullable(b), "ipv6_up": _nullable(b), "https_ok": _nullable(b),
        "uptime_24h": _nullable(n), "uptime_7d": _nullable(n), "uptime_30d": _nullable(n),
        "rtt_p50_ms": _nullable(n), "rtt_p95_ms": _nullable(n), "geo_check": s}}
    detail = {
        "allOf": [{"$ref": "#/components/schemas/MirrorSummary"}, {
            "type": "object",
            "required": ["maintainers", "health", "notes"],
            "properties": {
                "ipv4": _nullable(s), "ipv6": _nullable(s), "http_url": _nullable(s),
                "https_url": _nullable(s), "ftp_url": _nullable(s), "rsync_url": _nullable(s),
                "provider_url": s, "provider_logo": s, "bandwidth_mbit": _nullable(i),
                "cores": _nullable(i), "memory_gb": _nullable(i), "disk_gb": _nullable(i),
                "has_ipv6": b, "has_https": b, "created_at": dt, "updated_at": dt,
                "maintainers": {"type": "array", "items": {
                    "type": "object", "required": ["name", "email"],
                    "properties": {"name": s, "email": s}}},
                "health": health,
                "notes": {"type": "array", "items": {
                    "type": "object", "required": ["author", "created_at", "text"],
                    "properties": {"author": s, "created_at": dt, "text": s}}},
            }}],
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": f"{cfg.admin.public_title} mirror API", "version": "1",
                 "description": "List, show, disable, enable and annotate mirrors. "
                                "Authenticate with `Authorization: Bearer <token>` "
                                "(`mirrorctl user token USERNAME`). Helpers may disable and add "
                                "notes; enabling needs an admin."},
        "servers": [{"url": "/api"}],
        "security": [{"bearer": []}],
        "paths": {
            "/mirrors": {"get": {
                "operationId": "listMirrors", "summary": "every mirror, by country and name",
                "parameters": [
                    {"name": "country", "in": "query", "required": False,
                     "schema": {"type": "string", "pattern": "^[A-Za-z]{2}$"}},
                    {"name": "status", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": list(STATUSES)}}],
                "responses": {"200": {"description": "the mirrors", "content": {
                    "application/json": {"schema": {
                        "type": "object", "required": ["mirrors"],
                        "properties": {"mirrors": {"type": "array", "items": {
                            "$ref": "#/components/schemas/MirrorSummary"}}}}}}},
                    "400": err, "401": err}}},
            "/mirrors/{mirror}": {"get": {
                "operationId": "showMirror", "summary": "one mirror with health and notes",
                "parameters": [ref_param],
                "responses": {**ok("Mirror", what="the mirror"), "401": err, "404": err}}},
            "/mirrors/{mirror}/disable": {"post": {
                "operationId": "disableMirror",
                "summary": "take a mirror out of every answer (admins and helpers)",
                "parameters": [ref_param],
                "requestBody": body({"reason": {**line_body, "maxLength": 1000}}, ["reason"],
                                    {"reason": "disk full, back tomorrow"}),
                "responses": {**ok("Mirror"), **common, "409": err}}},
            "/mirrors/{mirror}/enable": {"post": {
                "operationId": "enableMirror", "summary": "make a mirror active again (admins)",
                "parameters": [ref_param],
                "requestBody": body({"reason": {
                    "type": "string", "maxLength": 1000,
                    "pattern": _text_pattern(_BAD_LINE, required=False)}}, [],
                    {"reason": "disk replaced"}),
                "responses": {**ok("Mirror"), **common, "403": err, "409": err}}},
            "/mirrors/{mirror}/notes": {"post": {
                "operationId": "addNote", "summary": "append a note to a mirror's log",
                "parameters": [ref_param],
                "requestBody": body({"text": {**multi_body, "maxLength": 10000}}, ["text"],
                                    {"text": "Called the maintainer; new disk on Monday."}),
                "responses": {"201": {"description": "the note", "content": {
                    "application/json": {"schema": {
                        "type": "object", "required": ["mirror", "author", "text"],
                        "properties": {"mirror": _nullable(s), "author": s, "text": s}}}}},
                    **common}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": s}},
                "MirrorSummary": summary,
                "Mirror": detail,
            },
        },
    }
