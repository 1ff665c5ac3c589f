"""Reports from downloaders on the web: the public form, the JSON endpoint, the admin list.

- ``GET /report?mirror=de1``: the form (the mirror, a reason, an optional text), linked from
  every row of the public list and from the closer's pages ([report]); ``POST /report`` takes
  it. Like the application form it has no session, so its CSRF token is the site's signed
  double-submit one (admin.web.csrf.SignedTokens, cookie on /report only, fresh for a day), and a
  honeypot field. A mistake re-renders the form with the message by its field and the text kept.
- ``POST /report.json`` with ``{"mirror": "de1", "reason": "outdated", "text": "..."}``: 200
  ``{"ok": true, "mirror": "de1", "counted": true, "probe_requested": true}``; 400 with
  ``{"error", "field"}``; 415 unless Content-Type is application/json; 413 over 4 KiB; 429 with
  Retry-After. It reads no cookie and nothing authenticates it, so a forged request from another
  site can do nothing the visitor could not do by hand, and the Content-Type rule means a
  browser sends it cross-site only after a CORS preflight, which this site never grants.
- ``GET /admin/reports``: every reported mirror, the most reported lately first (any logged-in
  user; the mirror page shows its own).

Both public ways share one limit per visitor network (`[reports] rate_limit` per
`rate_window`, IPv4 /24, IPv6 /56, counted in this node's memory on the reactor's clock, the
visitor's address from admin.web.clients.client_ip), and admin.mirror_reports does the rest in
one transaction (what is stored, the probe, the mail).
"""

from __future__ import annotations

import json

from twisted.logger import Logger

from admin import mirror_reports
from admin.web import plans
from admin.web.clients import RateLimiter, client_ip
from admin.web.csrf import SignedTokens
from admin.web.framework import (
    HTTPError,
    Response,
    Router,
    WebContext,
    form_dict,
    form_value,
    json_object,
    redirect,
)
from admin.web.limits import FormError, body_bytes
from dnsd import validation
from dnsd.errors import Invalid, NotFound, sentence

_log = Logger(namespace="admin.web.reports")

FORM_COOKIE = b"mirrordns_report"
HONEYPOT = "website"
FORM_MAX_AGE = 86400
JSON_MAX_BODY = 4096
JSON_KEYS = ("mirror", "reason", "text")


def _json(data: dict, code: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(data), code=code, content_type=b"application/json",
                    headers={b"cache-control": b"no-store", **(headers or {})})


class ReportPages:
    def __init__(self, ctx: WebContext):
        self.ctx = ctx
        r = ctx.cfg.reports
        self.tokens = SignedTokens(ctx.clock, ctx.secret, purpose="report", cookie=FORM_COOKIE,
                                   path=b"/report", max_age=FORM_MAX_AGE)
        self.limiter = RateLimiter(ctx.clock, r.rate_limit, r.rate_window, key=lambda ip: (
            mirror_reports.network(ip, r.ipv4_prefix, r.ipv6_prefix)))

    def mount(self, root) -> None:
        if not self.ctx.cfg.reports.enabled:
            return
        form = Router(self.ctx)
        form.add("GET", "", self.form, login=False)
        form.add("POST", "", self.post, login=False, csrf=False)     # SignedTokens instead
        form.add("GET", "sent", self.sent, login=False)
        root.putChild(b"report", form)
        api = Router(self.ctx, errors="json")
        api.add("POST", "", self.post_json, login=False, csrf=False)  # see the module docstring
        root.putChild(b"report.json", api)

    # -- the form --

    async def _choices(self, chosen: str) -> list[tuple[str, str]]:
        """(value, label) of the serving mirrors, and the one asked for when it is reportable
        but not serving (a downloader may have been sent there just before it left)."""
        plan = await plans.current(self.ctx)
        out = {(e.name or e.hostname): f"{e.name or e.hostname} ({e.hostname})"
               for e in plan.serving}
        if chosen and chosen not in out:
            try:
                m = await self.ctx.pool.run_readonly(
                    lambda conn: mirror_reports.reportable(conn, chosen))
            except NotFound:
                m = None
            label = m.name or m.hostname if m is not None else ""
            if label and label not in out:
                out[label] = f"{label} ({m.hostname})"
        return sorted(out.items(), key=lambda kv: kv[0])

    async def _page(self, request, *, values: dict, errors: dict | None = None, message="",
                    code=200) -> Response:
        chosen = values.get("mirror", "")
        html = await self.ctx.render_threaded(
            "public/report.html", request, title="Report a problem with a mirror",
            values=values, errors=errors or {}, message=message,
            choices=await self._choices(chosen), reasons=validation.REPORT_REASONS,
            form_token=self.tokens.issue(self.ctx, request), honeypot=HONEYPOT,
            max_text=validation.MAX_LEN["report_text"])
        return Response(html, code=code, headers={b"cache-control": b"no-store"})

    async def form(self, request):
        return await self._page(request, values={"mirror": form_value(request, "mirror")})

    async def sent(self, request):
        return self.ctx.render("public/report_sent.html", request, title="Thank you",
                               mirror=form_value(request, "mirror")[:80])

    def _limited(self, request) -> float:
        ip = client_ip(self.ctx, request)
        wait = self.limiter.hit(ip)
        if wait:
            _log.info("report rate limit for {net}", net=self.limiter.key(ip))
        return wait

    async def _take(self, request, values: dict) -> mirror_reports.Outcome:
        cfg, ip, now = self.ctx.cfg, client_ip(self.ctx, request), self.ctx.now()
        return await self.ctx.pool.run(lambda conn: mirror_reports.add_report(
            conn, cfg, values.get("mirror", ""), values.get("reason", ""),
            values.get("text", ""), ip, now))

    async def post(self, request):
        values = {k: v for k, v in form_dict(request).items() if k in (*JSON_KEYS, HONEYPOT)}
        wait = self._limited(request)
        if wait:
            html = self.ctx.render(
                "public/message.html", request, title="Too many reports",
                message="Too many reports from your network; please try again later.")
            return Response(html, code=429, headers={b"retry-after": str(int(wait) + 1).encode()})
        if not self.tokens.valid(request):
            return await self._page(
                request, values=values, code=403,
                message="This form has expired or did not come from this site; please check the "
                        "fields and send it again (the form needs cookies to be allowed).")
        if values.get(HONEYPOT, "").strip():
            return redirect("/report/sent")
        try:
            out = await self._take(request, values)
        except Invalid as e:
            return await self._page(request, values=values, errors={e.field: sentence(e.message)},
                                    code=400, message="Please correct the field marked below.")
        except NotFound as e:
            return await self._page(request, values=values, errors={"mirror": e.message},
                                    code=400, message="Please correct the field marked below.")
        return redirect("/report/sent", mirror=out.label)

    # -- JSON --

    async def post_json(self, request):
        try:
            if len(body_bytes(request)) > JSON_MAX_BODY:
                raise FormError("too large")
        except FormError:
            return _json({"error": f"the body is over {JSON_MAX_BODY} bytes"}, 413)
        try:
            data = json_object(request)
        except HTTPError as e:
            return _json({"error": e.message}, e.code)
        wait = self._limited(request)
        if wait:
            return _json({"error": "too many reports from your network; try again later"}, 429,
                         {b"retry-after": str(int(wait) + 1).encode()})
        extra = sorted(k for k in data if k not in JSON_KEYS)
        if extra:
            return _json({"error": f"unknown field {extra[0][:40]!r} (fields: "
                                   f"{', '.join(JSON_KEYS)})", "field": extra[0][:40]}, 400)
        for k in JSON_KEYS:
            if k in data and not isinstance(data[k], str):
                return _json({"error": f"{k} must be a string", "field": k}, 400)
        try:
            out = await self._take(request, data)
        except Invalid as e:
            return _json({"error": sentence(e.message), "field": e.field}, 400)
        except NotFound as e:
            return _json({"error": e.message, "field": "mirror"}, 400)
        return _json({"ok": True, "mirror": out.label, "counted": out.new,
                      "probe_requested": out.probe is not None})

async def admin_list(ctx: WebContext, request):
    """/admin/reports (mounted by admin_pages.build): every reported mirror."""
    cfg, now = ctx.cfg, ctx.now()
    rows = await ctx.pool.run_readonly(lambda conn: mirror_reports.summaries(conn, cfg, now))
    return await ctx.render_threaded(
        "admin/reports.html", request, title="Reports", rows=rows,
        reasons=validation.REPORT_REASONS, window=cfg.reports.window,
        threshold=cfg.reports.threshold, keep_days=cfg.reports.keep_days)


def mount(root, ctx: WebContext) -> ReportPages:
    pages = ReportPages(ctx)
    pages.mount(root)
    return pages
