"""The maintainer pages under /maintainer: a login by mailed link, then one's own mirrors only.

- ``/maintainer/login``: a public form asking for an address. Whatever the address, the answer is
  the same page ("if it is listed, a link is on its way"), given before the table is even asked
  (the work runs after the answer, so its time says nothing either); admin.maintainers mails the
  link only to a contact of a live mirror. Limits: `maintainer_link_rate_limit` requests per
  visitor address and `maintainer_link_address_limit` links per address per window (over the
  latter the page is the same and nothing is mailed).
- ``/maintainer/login/<token>``: GET shows a page with one button and spends nothing (mail
  scanners fetch links); its POST (signed double-submit CSRF, as the admin login form) uses the
  link once and starts a maintainer session (admin.web.sessions: HttpOnly, SameSite=Strict,
  Secure under https, like the admins'). Failed uses from one address slow down like failed
  logins (admin.web.clients.Backoff, the login back-off's rule and settings).
- ``/maintainer/`` and ``/maintainer/mirrors/<id>...``: the mirrors that list the session's
  address *now* (dnsd.recipients.contact_mirrors), asked at every request; any other id, real
  or not, is the same 404. The changes go through admin.store / admin.maintainers, which check
  the address again in their transaction (admin.store.own_mirror).

A maintainer may change the display fields, addresses and URLs (admin.store.MAINTAINER_EDITABLE,
checked by the admin edit's own `validate_fields`), add notes, and see the page the admins see
minus what is the admins' (audit, mails, score weights): graphs, recent probe results per
vantage, and whether the DNS serves the mirror and why not (the plan's verdict, dnsd.serving).
"""

from __future__ import annotations

import functools

from twisted.logger import Logger

from admin import maintainers, store
from admin.web import plans, queries
from admin.web.admin_pages import (
    LABELS,
    mirror_graphs,
    note_from_form,
    plan_window,
    probe_request_state,
    validate_fields,
)
from admin.web.auth import throttled_message
from admin.web.clients import Backoff, RateLimiter, address_key, client_ip
from admin.web.csrf import SignedTokens
from admin.web.framework import (
    ID,
    NO_STORE,
    HTTPError,
    Response,
    Router,
    WebContext,
    form_value,
    redirect,
)
from admin.web.sessions import (
    create_maintainer_session,
    end_maintainer_session,
    load_maintainer_session,
)
from dnsd import recipients, validation
from dnsd.errors import Invalid, NotFound, Refused
from dnsd.errors import sentence as _sentence
from probes import history

_log = Logger(namespace="admin.web.maintainer")

FORM_COOKIE = b"mirrordns_mlogin"
FORM_PATH = b"/maintainer/login"
FORM_MAX_AGE = 3600
TOKEN = r"[A-Za-z0-9_-]{20,64}"
FIELDS = store.MAINTAINER_EDITABLE
HINTS = {
    "ipv4": "pinned: the DNS answers this; empty = the probes resolve the host name",
    "ipv6": "pinned, as IPv4; empty = resolved from the host name",
    "provider_logo": "https URL of a small image",
}
DONE = {"saved": "Changes saved; the list and your co-maintainers have been told.",
        "unchanged": "Nothing changed.", "note": "Note added.",
        "probe": "Probe requested: every probe node probes your mirror within seconds (at most "
                 "once a minute each); reload to see the results below.",
        "maintenance": "Maintenance planned; the mirror leaves the DNS answers one TTL before "
                       "it starts, and returns after it once a probe passed.",
        "maintenance-cancelled": "Maintenance cancelled."}
GONE = ("This login link is unknown, used or expired. Links work once, for a few minutes: "
        "ask for a new one.")


def build(ctx: WebContext) -> Router:
    """Every answer is private to its visitor (no-store), as the admin pages'."""
    r = Router(ctx, login_url="/maintainer/login", cache_control=NO_STORE,
               session=load_maintainer_session)
    p = MaintainerPages(ctx)
    r.add("GET", r"login", p.login_form, login=False)
    r.add("POST", r"login", p.ask_for_link, login=False, csrf=False)        # SignedTokens
    r.add("GET", rf"login/(?P<token>{TOKEN})", p.link_page, login=False)
    r.add("POST", rf"login/(?P<token>{TOKEN})", p.use_link, login=False, csrf=False)
    r.add("POST", r"logout", p.logout)
    r.add("GET", r"", p.home)
    mid = rf"mirrors/(?P<mid>{ID})"
    r.add("GET", mid, p.own(p.mirror_page))
    r.add("GET", mid + "/edit", p.own(p.edit_form))
    r.add("POST", mid + "/edit", p.own(p.edit))
    r.add("POST", mid + "/notes", p.own(p.add_note))
    r.add("POST", mid + "/probe", p.own(p.probe_now))
    r.add("POST", mid + "/maintenance", p.own(p.plan_maintenance))
    r.add("POST", mid + rf"/maintenance/(?P<wid>{ID})/cancel", p.own(p.cancel_maintenance))
    return r


def _address(request) -> str:
    return request.mirrordns_session.email


class MaintainerPages:
    def __init__(self, ctx: WebContext):
        self.ctx = ctx
        a = ctx.cfg.admin
        self.tokens = SignedTokens(ctx.clock, ctx.secret, purpose="maintainer-login",
                                   cookie=FORM_COOKIE, path=FORM_PATH, max_age=FORM_MAX_AGE)
        self.per_visitor = RateLimiter(ctx.clock, a.maintainer_link_rate_limit,
                                       a.maintainer_link_window)
        self.per_address = RateLimiter(ctx.clock, a.maintainer_link_address_limit,
                                       a.maintainer_link_window)
        self.per_address.key = recipients.address_key
        self.failed_links = Backoff(ctx.clock, a.login_address_free_failures, a.login_max_delay)

    @property
    def rules(self) -> validation.Rules:
        return validation.Rules.from_config(self.ctx.cfg)

    def _page(self, template: str, request, code: int = 200, **values) -> Response:
        return Response(self.ctx.render(template, request, **values), code=code)

    # --- the login by link ------------------------------------------------------------------

    def _login_page(self, request, *, address: str = "", error: str = "", field_error: str = "",
                    code: int = 200):
        return self._page("maintainer/login.html", request, code, title="Maintainer login",
                          form_token=self.tokens.issue(self.ctx, request), address=address,
                          error=error, field_error=field_error)

    async def login_form(self, request):
        if await load_maintainer_session(self.ctx, request) is not None:
            return redirect("/maintainer/")
        return self._login_page(request)

    async def ask_for_link(self, request):
        address = form_value(request, "email")
        if not self.tokens.valid(request):
            return self._login_page(request, address=address, code=403,
                                    error="This form has expired; please send it again.")
        try:
            address = validation.email(address)
        except Invalid as e:
            return self._login_page(request, address=address, code=400,
                                    field_error=_sentence(e.message))
        ip = client_ip(self.ctx, request)
        wait = self.per_visitor.hit(ip)
        if wait:
            _log.info("maintainer link requests from {ip} over the limit", ip=ip)
            resp = self._login_page(request, address=address, code=429,
                                    error="Too many requests from your address; please try "
                                          "again later.")
            resp.headers[b"retry-after"] = str(int(wait) + 1).encode()
            return resp
        if self.per_address.hit(address):
            _log.info("maintainer links to one address over the limit (asked from {ip})", ip=ip)
        else:
            settings, now = maintainers.LinkSettings.from_config(self.ctx.cfg), self.ctx.now()
            d = self.ctx.pool.run(lambda conn: maintainers.request_link(conn, address, settings,
                                                                        now))
            d.addErrback(lambda f: _log.failure("queueing a maintainer login link", f))
        return self._page("maintainer/link_sent.html", request, title="Check your mail",
                          address=address,
                          minutes=self.ctx.cfg.admin.maintainer_link_minutes)

    async def link_page(self, request, token):
        now = self.ctx.now()
        if not await self.ctx.pool.run_readonly(
                lambda conn: maintainers.link_is_open(conn, token, now)):
            return self._page("maintainer/link.html", request, 404, title="Link not valid",
                              gone=GONE, token="", form_token="")
        return self._page("maintainer/link.html", request, title="Log in", gone="",
                          token=token, form_token=self.tokens.issue(self.ctx, request))

    async def use_link(self, request, token):
        key = address_key(client_ip(self.ctx, request))
        wait = self.failed_links.wait(key)
        if wait:
            resp = self._page("maintainer/link.html", request, 429, title="Wait",
                              gone=throttled_message(wait), token="", form_token="")
            resp.headers[b"retry-after"] = str(int(wait) + 1).encode()
            return resp
        if not self.tokens.valid(request):
            return self._page("maintainer/link.html", request, 403, title="Log in",
                              gone="", token=token, form_token=self.tokens.issue(self.ctx, request),
                              error="The page has expired; press the button again.")
        self.failed_links.attempt(key)
        now = self.ctx.now()
        address = await self.ctx.pool.run(lambda conn: maintainers.use_link(conn, token, now))
        if address is None:
            _log.info("unusable maintainer login link from {ip}", ip=key)
            return self._page("maintainer/link.html", request, 404, title="Link not valid",
                              gone=GONE, token="", form_token="")
        self.failed_links.succeeded(key)
        await create_maintainer_session(self.ctx, request, address)
        self.tokens.clear(self.ctx, request)
        _log.info("maintainer login by link for {address}", address=address)
        return redirect("/maintainer/")

    async def logout(self, request):
        await end_maintainer_session(self.ctx, request)
        return redirect("/maintainer/login")

    # --- one's own mirrors -------------------------------------------------------------------

    def own(self, handler):
        """The route's mirror must list the session's address now; else 404, the same answer
        as for an id nobody has (nothing about other mirrors leaks)."""
        @functools.wraps(handler)
        async def guarded(request, mid, **more):
            address = _address(request)
            scope = await self.ctx.pool.run_readonly(
                lambda conn: recipients.contact_mirrors(conn, address))
            if int(mid) not in scope:
                raise HTTPError(404, "No such mirror among yours.")
            return await handler(request, int(mid), **more)
        return guarded

    async def home(self, request):
        address = _address(request)
        plan = plans.live(self.ctx)
        cfg, now = self.ctx.cfg, self.ctx.now()

        def thd(conn):
            scope = recipients.contact_mirrors(conn, address)
            return [queries.mirror_page(i, plan=plan, cfg=cfg, now=now)(conn)
                    for i in sorted(scope)]
        ms = await self.ctx.pool.run_readonly(thd)
        return self._page("maintainer/home.html", request, title="Your mirrors", mirrors=ms,
                          maintainer=address)

    async def _load(self, mid: int):
        m = await self.ctx.pool.run_readonly(queries.mirror_page(
            mid, plan=plans.live(self.ctx), cfg=self.ctx.cfg, now=self.ctx.now()))
        if m is None:
            raise HTTPError(404, "No such mirror among yours.")
        return m

    async def mirror_page(self, request, mid, *, code: int = 200, form: dict | None = None,
                          error: str = ""):
        m = await self._load(mid)
        by_vantage = await self.ctx.pool.run_readonly(
            lambda conn: history.recent_by_vantage(conn, mid))
        done = DONE.get(form_value(request, "done"), "") if request.method == b"GET" else ""
        html = await self.ctx.render_threaded(
            "maintainer/mirror.html", request, title=m.name or m.hostname, m=m,
            maintainer=_address(request), by_vantage=by_vantage, flash=error or done,
            flash_kind="bad" if error else "ok",
            form=form or {}, max_age=float(self.ctx.cfg.dns.max_sync_age), labels=LABELS,
            fields=FIELDS, **await mirror_graphs(self.ctx, mid),
            **await probe_request_state(self.ctx, mid))
        return Response(html, code=code)

    async def _edit_page(self, request, m, form: dict, errors: dict, code: int):
        html = await self.ctx.render_threaded(
            "maintainer/edit.html", request, title=f"Edit {m.name or m.hostname}", m=m,
            maintainer=_address(request), form=form, errors=errors, labels=LABELS, hints=HINTS,
            fields=FIELDS, countries=())
        return Response(html, code=code)

    async def edit_form(self, request, mid):
        m = await self._load(mid)
        form = {k: getattr(m, k) or "" for k in FIELDS}
        return await self._edit_page(request, m, form, {}, 200)

    async def edit(self, request, mid):
        m = await self._load(mid)
        form = {k: form_value(request, k) for k in FIELDS}
        values, errors = validate_fields(form, FIELDS, self.rules)
        if not errors:
            address, rules = _address(request), self.rules
            mail = store.MailSettings.from_config(self.ctx.cfg)
            try:
                res = await plans.change(self.ctx, lambda conn: store.edit_by_maintainer(
                    conn, mid, address, mail, rules=rules, **values))
            except NotFound:
                raise HTTPError(404, "No such mirror among yours.") from None
            except Refused as e:
                errors[e.field if e.field in form else "_"] = _sentence(e.message)
            else:
                return redirect(f"/maintainer/mirrors/{mid}",
                                done="saved" if res.changed else "unchanged")
        return await self._edit_page(request, m, form, errors, 400)

    async def add_note(self, request, mid):
        text, refused = note_from_form(request)
        if refused:
            return await self.mirror_page(request, mid, code=400, form=refused)
        address = _address(request)
        try:
            await self.ctx.pool.run(lambda conn: maintainers.add_note(conn, mid, address, text))
        except NotFound:
            raise HTTPError(404, "No such mirror among yours.") from None
        return redirect(f"/maintainer/mirrors/{mid}", done="note")

    async def probe_now(self, request, mid):
        """Ask every probe node to probe the mirror once, now (probes.requests, as the admin's
        button)."""
        address, now = _address(request), self.ctx.now()
        try:
            await self.ctx.pool.run(lambda conn: maintainers.request_probe(conn, mid, address,
                                                                           now))
        except NotFound:
            raise HTTPError(404, "No such mirror among yours.") from None
        return redirect(f"/maintainer/mirrors/{mid}", done="probe")

    async def plan_maintenance(self, request, mid):
        """A window on one's own mirror: the admins' planning (admin.store.plan_maintenance),
        under the maintainer's address, with the admin page's form rules (plan_window)."""
        address, now = _address(request), self.ctx.now()
        mail = store.MailSettings.from_config(self.ctx.cfg)
        try:
            refused = await plan_window(self.ctx, request, lambda conn, start, end, reason: (
                maintainers.plan_maintenance(conn, mid, address, mail, starts_at=start,
                                             ends_at=end, reason=reason, now=now)))
        except NotFound:
            raise HTTPError(404, "No such mirror among yours.") from None
        if refused:
            return await self.mirror_page(request, mid, code=400, form=refused)
        return redirect(f"/maintainer/mirrors/{mid}", done="maintenance")

    async def cancel_maintenance(self, request, mid, wid):
        """Cancel a planned window (or end one in progress) of one's own mirror; a window of
        another mirror is the same 404 as a mirror that is not theirs."""
        address, now = _address(request), self.ctx.now()
        mail = store.MailSettings.from_config(self.ctx.cfg)
        try:
            await plans.change(self.ctx, lambda conn: maintainers.cancel_maintenance(
                conn, mid, int(wid), address, mail, now))
        except NotFound:
            raise HTTPError(404, "No such maintenance window of yours.") from None
        except Refused as e:
            return await self.mirror_page(request, mid, code=409, error=_sentence(e.message))
        return redirect(f"/maintainer/mirrors/{mid}", done="maintenance-cancelled")
