"""The JSON API for scripts: list, show, add, edit, disable, enable and note, described at
/api/openapi.json.

Authentication is a bearer token per user (`Authorization: Bearer <token>`), made by
`mirrorctl user token USERNAME`; the table keeps only its sha256 (users.api_token_hash), so a leaked
database hands out no working tokens, and a new token replaces the old one. The API never reads
the session cookie, so a browser cannot be tricked into calling it (no CSRF surface); every request
stands alone. Role rules are the pages' rules: helpers may disable and add notes, only admins
enable, add and edit. Changes go through admin.store like the pages and mirrorctl (audit row,
version bump and the mail to the list in one transaction), with dnsd.validation's rules, and the
answer waits until the live DNS plan has the change (admin.web.plans): `serving` in it is what the
DNS answers, with `not_serving_reason` when it does not.

Errors are JSON `{"error": "...", "field": "..."}` with the usual codes: 400 bad input (the field
named), 401 no or unknown token, 403 role, 404 unknown mirror, 409 a refused change (already
disabled, retired, a host name another mirror has, ...).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets

import sqlalchemy as sa
from twisted.logger import Logger

from admin import store
from admin.web import plans
from admin.web.framework import HTTPError, Response, Router, WebContext, json_object
from admin.web.limits import query_args
from dnsd import countries, validation
from dnsd.errors import Invalid, NotFound, Refused
from dnsd.models import STATUSES, audit, users, utcnow
from dnsd.records._base import iso

_log = Logger(namespace="admin.web.api")

TOKEN_PREFIX = "mdns_"
REF_PATTERN = r"^(?:[a-z]{2}[0-9]{1,6}|[0-9]{1,9})$"       # a mirror name (de2) or its id
# Characters a reason or note may not hold are dnsd.validation's (the same classes go into the
# OpenAPI patterns, so the document says exactly what is accepted).
_BAD_LINE = validation.BAD_LINE_CHARS
_BAD_MULTI = validation.BAD_MULTI_CHARS


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
                           .where(users.c.api_token_hash == h,
                                  users.c.disabled.is_(False))).first()
        # the lookup is by index; compare_digest is belt and braces against a collation surprise
        if row is None or not hmac.compare_digest(row.api_token_hash, h):
            return None
        return {"id": row.id, "username": row.username, "role": row.role}
    return thd


# --- JSON shapes ---------------------------------------------------------------------------------

_iso = iso

SUMMARY_FIELDS = ("id", "name", "hostname", "country", "status", "status_reason", "status_since",
                  "backup", "weight", "provider_name")
DETAIL_FIELDS = SUMMARY_FIELDS + (
    "ipv4", "ipv6", "http_url", "https_url", "ftp_url", "rsync_url", "provider_url",
    "provider_logo", "bandwidth_mbit", "cores", "memory_gb", "disk_gb", "has_ipv6", "has_https",
    "created_at", "updated_at")
HEALTH_FIELDS = ("last_probe_at", "last_ok_at", "last_sync_at", "last_error", "failures_in_row",
                 "ipv4_up", "ipv6_up", "https_ok", "probed_ipv4", "probed_ipv6", "uptime_24h",
                 "uptime_7d", "uptime_30d", "rtt_p50_ms", "rtt_p95_ms", "geo_check")
# what POST /mirrors and PATCH /mirrors/{ref} take besides `maintainers` (and `status` on add)
INPUT_FIELDS = ("name", "hostname", "country", *validation.ADDRESS_FIELDS,
                "http_url", "https_url", "ftp_url", "rsync_url", "provider_name",
                "provider_url", "provider_logo", "backup", "weight", "bandwidth_mbit", "cores",
                "memory_gb", "disk_gb", "has_ipv6", "has_https")


_S, _NS = (str,), (str, type(None))
INPUT_TYPES = {"name": _NS, "hostname": _S, "country": _S, "ipv4": _NS, "ipv6": _NS,
               "http_url": _NS, "https_url": _NS, "ftp_url": _NS, "rsync_url": _NS,
               "provider_name": _S, "provider_url": _S, "provider_logo": _S, "status": _S,
               "backup": (bool,), "has_ipv6": (bool,), "has_https": (bool,),
               "weight": (int, float), "bandwidth_mbit": (int, type(None)),
               "cores": (int, type(None)), "memory_gb": (int, type(None)),
               "disk_gb": (int, type(None))}
INPUT_TYPE_WORDS = {_S: "a string", _NS: "a string or null", (bool,): "true or false",
                    (int, float): "a number", (int, type(None)): "a whole number or null"}


def _serving(plan, mirror_id: int):
    e = plan.by_id.get(mirror_id) if plan is not None else None
    if e is None:
        return False, "not in the DNS plan yet"
    return e.serving, e.reason


def mirror_summary(m, plan=None) -> dict:
    out = {k: _iso(getattr(m, k)) for k in SUMMARY_FIELDS}
    out["serving"], out["not_serving_reason"] = _serving(plan, m.id)
    return out


def mirror_detail(d, plan=None) -> dict:
    """A store.MirrorDetail as JSON."""
    out = {k: _iso(getattr(d.mirror, k)) for k in DETAIL_FIELDS}
    out["serving"], out["not_serving_reason"] = _serving(plan, d.mirror.id)
    out["maintainers"] = [{"name": x.name, "email": x.email} for x in d.maintainers]
    h = d.health
    out["health"] = None if h.last_probe_at is None and not h.probed_ipv4 and not h.probed_ipv6 \
        else {k: _iso(getattr(h, k)) for k in HEALTH_FIELDS}
    out["notes"] = [{"author": n.author, "created_at": _iso(n.created_at), "text": n.text}
                    for n in d.notes]
    return out


# --- the resource --------------------------------------------------------------------------------

class APIError(Exception):
    def __init__(self, code: int, message: str, field: str = ""):
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


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
        r.add("POST", "mirrors", self._h(self.add, admin=True), login=False, csrf=False)
        r.add("GET", ref, self._h(self.show), login=False)
        r.add("PATCH", ref, self._h(self.edit, admin=True), login=False, csrf=False)
        r.add("POST", ref + "/disable", self._h(self.disable), login=False, csrf=False)
        r.add("POST", ref + "/enable", self._h(self.enable, admin=True), login=False, csrf=False)
        r.add("POST", ref + "/notes", self._h(self.note), login=False, csrf=False)
        return r

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
                body = {"error": e.message, **({"field": e.field} if e.field else {})}
                return _json(body, e.code, hdr)
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
            return json_object(request)
        except HTTPError as e:
            raise APIError(e.code, e.message) from None

    @staticmethod
    def _text(data: dict, key: str, required: bool, limit: int, lines: bool = False) -> str:
        """A string field, checked by dnsd.validation.text (the rule the OpenAPI patterns
        state): no control characters, one line unless `lines` (a reason ends up in a mail's
        Subject header), not blank if required."""
        if key not in data and not required:
            return ""
        v = data.get(key)
        if not isinstance(v, str):
            raise APIError(400, f"'{key}' must be a string", key)
        try:
            return validation.text(v, key, limit=limit, required=required, lines=lines,
                                   what=f"'{key}'")
        except Invalid as e:
            raise APIError(400, e.message, key) from None

    async def _change(self, fn):
        """Run a store operation, then wait for the live plan (admin.web.plans.change): a bad
        field is 400, an unknown mirror 404, any other refusal 409."""
        try:
            return await plans.change(self.ctx, fn)
        except Invalid as e:
            raise APIError(400, e.message, e.field) from None
        except NotFound as e:
            raise APIError(404, e.message) from None
        except Refused as e:
            raise APIError(409, e.message, e.field) from None

    async def _get(self, ref: str):
        try:
            return await self.ctx.pool.run_readonly(lambda conn: store.get_mirror(conn, ref))
        except Refused as e:
            raise APIError(404, str(e)) from None

    async def _answer(self, ref: str, code: int = 200) -> Response:
        d = await self._get(ref)
        return _json(mirror_detail(d, await plans.current(self.ctx)), code)

    @staticmethod
    def _fields(data: dict, allowed: tuple) -> tuple[dict, list | None]:
        """The mirror fields of a JSON body (unknown keys and wrong JSON types refused, as the
        OpenAPI document states them) and its maintainers; the values' rules are
        dnsd.validation's, applied by admin.store."""
        unknown = set(data) - set(allowed) - {"maintainers"}
        if unknown:
            raise APIError(400, f"unknown field '{sorted(unknown)[0][:40]}'",
                           sorted(unknown)[0][:40])
        for k, v in data.items():
            kinds = INPUT_TYPES.get(k)
            if kinds is not None and not (isinstance(v, kinds) and not (
                    isinstance(v, bool) and bool not in kinds)):
                raise APIError(400, f"'{k}' must be {INPUT_TYPE_WORDS[kinds]}", k)
        people = data.get("maintainers")
        if "maintainers" in data:
            if not isinstance(people, list) or len(people) > validation.MAX_MAINTAINERS or not all(
                    isinstance(p, dict) and set(p) <= {"name", "email"}
                    and all(isinstance(v, str) for v in p.values()) for p in people):
                raise APIError(400, "maintainers: a list of at most "
                               f"{validation.MAX_MAINTAINERS} {{\"name\", \"email\"}} objects",
                               "maintainers")
        return {k: data[k] for k in allowed if k in data}, people

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
        plan = await plans.current(self.ctx)
        return _json({"mirrors": [mirror_summary(d.mirror, plan) for d in rows]})

    async def show(self, request, user, ref):
        return await self._answer(ref)

    async def add(self, request, user):
        data = self._body(request)
        fields, people = self._fields(data, (*INPUT_FIELDS, "status"))
        status = fields.pop("status", None)
        if status not in (None, "active", "pending"):
            raise APIError(400, "status: active or pending", "status")
        for k in ("hostname", "country"):
            if k not in fields:
                raise APIError(400, f"'{k}' is needed", k)
        country, hostname = fields.pop("country"), fields.pop("hostname")
        name = fields.pop("name", None)
        mail = store.MailSettings.from_config(self.ctx.cfg)
        rules = validation.Rules.from_config(self.ctx.cfg)
        m = await self._change(lambda conn: store.add_mirror(
            conn, actor=user["username"], mail=mail, country=country, hostname=hostname,
            name=name, status=status, maintainers_=people or (), rules=rules, **fields))
        return await self._answer(f"#{m.id}", 201)

    async def edit(self, request, user, ref):
        data = self._body(request)
        fields, people = self._fields(data, INPUT_FIELDS)
        if not fields and people is None:
            raise APIError(400, "nothing to change: give at least one field")
        rules = validation.Rules.from_config(self.ctx.cfg)
        actor = user["username"]

        def op(conn):
            mid = store.find(conn, ref).id
            if fields:
                store.edit_mirror(conn, f"#{mid}", actor, rules=rules, **fields)
            if people is not None:
                store.set_maintainers(conn, f"#{mid}", actor, people)
            return mid
        mid = await self._change(op)
        return await self._answer(f"#{mid}")

    async def disable(self, request, user, ref):
        data = self._body(request)
        reason = self._text(data, "reason", True, validation.MAX_LEN["reason"])
        mail = store.MailSettings.from_config(self.ctx.cfg)
        await self._change(lambda conn: store.disable(conn, ref, user["username"], reason, mail))
        return await self._answer(ref)

    async def enable(self, request, user, ref):
        data = self._body(request)
        reason = self._text(data, "reason", False, validation.MAX_LEN["reason"])
        mail = store.MailSettings.from_config(self.ctx.cfg)
        await self._change(lambda conn: store.enable(conn, ref, user["username"], mail, reason))
        return await self._answer(ref)

    async def note(self, request, user, ref):
        data = self._body(request)
        text = self._text(data, "text", True, validation.MAX_LEN["note"], lines=True)
        await self._change(lambda conn: store.add_note(conn, ref, user["username"], text))
        m = await self._get(ref)
        return _json({"mirror": m.mirror.name, "author": user["username"], "text": text}, 201)


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
            "serving": b, "not_serving_reason": s,
        },
    }
    health = {"type": "object", "nullable": True, "properties": {
        "last_probe_at": _nullable(dt), "last_ok_at": _nullable(dt),
        "last_sync_at": _nullable(dt), "last_error": s, "failures_in_row": i,
        "ipv4_up": _nullable(b), "ipv6_up": _nullable(b), "https_ok": _nullable(b),
        "probed_ipv4": _nullable(s), "probed_ipv6": _nullable(s),
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
    person = {"type": "object", "required": ["email"], "additionalProperties": False,
              "properties": {"name": {"type": "string", "maxLength": 255},
                             "email": {"type": "string", "maxLength": 254}}}
    def url_s(scheme):
        return {"type": "string", "maxLength": 512, "nullable": True,
                "description": f"a {scheme}:// base URL; null or '' clears it"}
    mirror_input = {
        "type": "object", "additionalProperties": False,
        "description": "fields as mirrorctl add/edit take them, checked by the same rules "
                       "(dnsd.validation), which say more than a schema can: a URL or an "
                       "address is needed; private addresses are refused unless [probes] "
                       "allow_private; a host name belongs to one live mirror; a mirror with "
                       "no http or https URL cannot be active. A body this schema accepts can "
                       "still be refused with 400 (the field named) or 409.",
        "properties": {
            "name": {"type": "string", "nullable": True, "maxLength": 32,
                     "description": "ccN, like de2; null or '' for none"},
            "hostname": {"type": "string", "maxLength": 254},
            "country": {"type": "string", "maxLength": 64,
                        "description": "ISO 3166-1 alpha-2, like DE"},
            "ipv4": {"type": "string", "nullable": True, "maxLength": 64,
                     "description": "pinned; null or '' clears it (the probes then resolve the "
                                    "host name)"},
            "ipv6": {"type": "string", "nullable": True, "maxLength": 64},
            "http_url": url_s("http"), "https_url": url_s("https"), "ftp_url": url_s("ftp"),
            "rsync_url": url_s("rsync"),
            "provider_name": {"type": "string", "maxLength": 255},
            "provider_url": {"type": "string", "maxLength": 512},
            "provider_logo": {"type": "string", "maxLength": 512},
            "backup": b, "weight": {"type": "number", "minimum": 0, "maximum": 1000},
            "bandwidth_mbit": _nullable(i), "cores": _nullable(i), "memory_gb": _nullable(i),
            "disk_gb": _nullable(i), "has_ipv6": b, "has_https": b,
            "maintainers": {"type": "array", "maxItems": validation.MAX_MAINTAINERS,
                            "items": person},
            "status": {"type": "string", "enum": ["active", "pending"],
                       "description": "on add only (default: active, or pending for a mirror "
                                      "without an http or https URL)"},
        },
    }
    input_body = {"required": True, "content": {"application/json": {
        "example": {"hostname": "mirror.example.dk", "country": "DK",
                    "https_url": "https://mirror.example.dk/pub/",
                    "maintainers": [{"name": "Ada Admin", "email": "ada@example.dk"}]},
        "schema": {"$ref": "#/components/schemas/MirrorInput"}}}}
    edit_body = {"required": True, "content": {"application/json": {
        "example": {"ipv4": "", "https_url": "https://mirror.example.dk/pub/"},
        "schema": {"$ref": "#/components/schemas/MirrorEdit"}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": f"{cfg.admin.public_title} mirror API", "version": "1",
                 "description": "List, show, add, edit, disable, enable and annotate mirrors. "
                                "Authenticate with `Authorization: Bearer <token>` "
                                "(`mirrorctl user token USERNAME`). Helpers may disable and add "
                                "notes; enabling, adding and editing need an admin. `serving` "
                                "is whether the DNS answers with the mirror now."},
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
                    "400": err, "401": err}},
                "post": {
                    "operationId": "addMirror", "summary": "add a mirror (admins)",
                    "requestBody": input_body,
                    "responses": {**ok("Mirror", "201", "the new mirror"), **common, "403": err,
                                  "409": err}}},
            "/mirrors/{mirror}": {"get": {
                "operationId": "showMirror", "summary": "one mirror with health and notes",
                "parameters": [ref_param],
                "responses": {**ok("Mirror", what="the mirror"), "401": err, "404": err}},
                "patch": {
                    "operationId": "editMirror",
                    "summary": "change a mirror's fields; maintainers replace the list (admins)",
                    "parameters": [ref_param], "requestBody": edit_body,
                    "responses": {**ok("Mirror"), **common, "403": err, "409": err}}},
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
                          "properties": {"error": s, "field": s}},
                "MirrorInput": mirror_input,
                "MirrorEdit": {**mirror_input, "properties": {
                    k: v for k, v in mirror_input["properties"].items() if k != "status"}},
                "MirrorSummary": summary,
                "Mirror": detail,
            },
        },
    }
