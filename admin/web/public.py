"""The public pages (no login): the mirror list, /mirrors.json, and the application form.

The mirror list shows serving mirrors only. "Serving" is what the DNS answers from: the serving
entries of the live plan when dnsd hands one in (ctx.plan.current), else of a plan built on the spot
from the table by dnsd.plan's pure builder (the web running alone).
Display fields (provider, logo) come from the table, read off the reactor thread. The visitor's
country comes from ctx.geo on the address `client_ip` believes (X-Forwarded-For only from
[admin] trusted_proxies); "close to you" is the nearest non-empty tier (country, UN sub-region,
continent), sorted by distance, as the picker would tier them.

The application form is public, so there is no session to hang a CSRF token on: it uses the
site's signed double-submit token (admin.web.csrf.SignedTokens, path /apply, fresh for one day).
Spam defences: a honeypot field (filled = "thanks", nothing stored) and a
per-address rate limit on POSTs kept in memory and driven by the reactor's clock (IPv6 per /64).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import sqlalchemy as sa
from twisted.logger import Logger

from admin import waitinglist
from admin.web.clients import RateLimiter, client_ip
from admin.web.csrf import SignedTokens
from admin.web.framework import (
    HTTPError,
    Response,
    Router,
    WebContext,
    form_dict,
    form_value,
    redirect,
)
from dnsd import countries
from dnsd.models import ACTIVE, mirrors
from dnsd.plan import build_plan, load_rows

_log = Logger(namespace="admin.web.public")

FORM_COOKIE = b"mirrordns_form"
HONEYPOT = "website"                 # a field people never see; bots fill in anything named so
FORM_MAX_AGE = 86400                 # seconds a form token stays valid
CLOSE_LIMIT = 6                      # mirrors in the "close to you" box


# --- serving mirrors and their order -------------------------------------------------------------

@dataclass(frozen=True)
class PublicMirror:
    name: str
    hostname: str
    country: str
    country_name: str
    provider_name: str
    provider_url: str
    provider_logo: str
    http_url: str
    https_url: str
    ftp_url: str
    rsync_url: str
    ipv6: bool
    backup: bool

    def as_json(self) -> dict:
        return {
            "name": self.name, "hostname": self.hostname, "country": self.country,
            "country_name": self.country_name, "provider": {
                "name": self.provider_name, "url": self.provider_url or None,
                "logo": self.provider_logo or None},
            "urls": {k: v for k, v in (("http", self.http_url), ("https", self.https_url),
                                       ("ftp", self.ftp_url), ("rsync", self.rsync_url)) if v},
            "ipv6": self.ipv6, "backup": self.backup,
        }


def plan_serving_names(plan) -> set[str]:
    """Names of the mirrors a dnsd.plan.ResolutionPlan calls serving."""
    return {e.name for e in plan.mirrors if e.serving and e.name}


def _safe_url(u: str | None) -> str:
    return u if u and waitinglist.is_web_url(u) else ""


def _safe_logo(u: str | None) -> str:
    """Logos over https only: the pages' Content-Security-Policy allows no other images."""
    return u if u and u.startswith("https://") and waitinglist.is_web_url(u) else ""


def load_mirrors_thd(cfg, now, with_plan: bool):
    """thd: (active named mirrors as PublicMirror, serving names or None, waiting-list counts).

    Without a live plan (the web running alone) the serving names come from a plan built here from
    the same rows by dnsd.plan's pure builder, so the page and the DNS never disagree on the rule.
    """
    def thd(conn):
        m = mirrors.c
        rows = conn.execute(
            sa.select(m.name, m.hostname, m.country, m.provider_name, m.provider_url,
                      m.provider_logo, m.http_url, m.https_url, m.ftp_url, m.rsync_url, m.ipv6,
                      m.has_ipv6, m.backup)
            .where(m.status == ACTIVE, m.name.is_not(None))
            .order_by(m.country, m.name)
        ).mappings().all()
        out = []
        for r in rows:
            c = countries.get(r["country"])
            out.append(PublicMirror(
                name=r["name"], hostname=r["hostname"], country=r["country"],
                country_name=c.name if c else r["country"],
                provider_name=r["provider_name"] or "", provider_url=_safe_url(r["provider_url"]),
                provider_logo=_safe_logo(r["provider_logo"]),
                http_url=_safe_url(r["http_url"]), https_url=_safe_url(r["https_url"]),
                ftp_url=r["ftp_url"] or "", rsync_url=r["rsync_url"] or "",
                ipv6=bool(r["ipv6"]) or bool(r["has_ipv6"]), backup=bool(r["backup"])))
        names = None
        if not with_plan:
            names = plan_serving_names(build_plan(load_rows(conn), cfg, now))
        return out, names, waitinglist.waiting_counts(conn)
    return thd


def close_to(mirrors_: list[PublicMirror], cc: str | None,
             limit: int = CLOSE_LIMIT) -> tuple[str, list[PublicMirror]]:
    """The nearest non-empty tier for a visitor in country cc: (tier word, mirrors by distance)."""
    here = countries.get(cc) if cc else None
    if here is None:
        return "none", []
    tiers = (("country", lambda c: c.alpha2 == here.alpha2),
             ("subregion", lambda c: bool(here.subregion) and c.subregion == here.subregion),
             ("continent", lambda c: c.continent == here.continent))
    for word, same in tiers:
        picked = []
        for mm in mirrors_:
            c = countries.get(mm.country)
            if c is not None and same(c) and not mm.backup:
                picked.append((countries.distance_km(here, c) or 0.0, mm.country, mm.name, mm))
        if picked:
            picked.sort(key=lambda t: t[:3])
            return word, [t[3] for t in picked[:limit]]
    return "none", []


def by_country(mirrors_: list[PublicMirror]) -> list[tuple[str, str, list[PublicMirror]]]:
    """[(country code, country name, mirrors)] sorted by country name."""
    groups: dict[str, list[PublicMirror]] = collections.defaultdict(list)
    for mm in mirrors_:
        groups[mm.country].append(mm)
    out = [(cc, ms[0].country_name, sorted(ms, key=lambda x: _name_key(x.name)))
           for cc, ms in groups.items()]
    return sorted(out, key=lambda g: g[1])


def _name_key(name: str):
    head = name.rstrip("0123456789")
    tail = name[len(head):]
    return head, int(tail) if tail else 0


class PublicPages:
    """The public resources, mounted by build_root: `/`, `/mirrors.json`, `/apply...`."""

    def __init__(self, ctx: WebContext):
        self.ctx = ctx
        self.tokens = SignedTokens(ctx.clock, ctx.secret, purpose="apply", cookie=FORM_COOKIE,
                                   path=b"/apply", max_age=FORM_MAX_AGE)
        a = ctx.cfg.admin
        self.limiter = RateLimiter(ctx.clock, a.apply_rate_limit, a.apply_rate_window)
        # the private link's POSTs (update, confirm, withdraw) get their own, looser budget, so
        # an applicant who just applied can still fix a typo
        self.manage_limiter = RateLimiter(ctx.clock, 3 * a.apply_rate_limit, a.apply_rate_window)

    # -- mounting --
    def mount(self, root) -> None:
        home = Router(self.ctx)
        home.add("GET", "", self.mirror_list, login=False)
        root.putChild(b"", home)
        js = Router(self.ctx)
        js.add("GET", "", self.mirrors_json, login=False)
        root.putChild(b"mirrors.json", js)
        apply = Router(self.ctx)
        apply.add("GET", "", self.apply_form, login=False)
        apply.add("POST", "", self.apply_post, login=False, csrf=False)   # SignedTokens instead
        apply.add("GET", "sent", self.apply_sent, login=False)
        apply.add("GET", r"(?P<token>[A-Za-z0-9_-]{16,64})", self.manage_form, login=False)
        apply.add("POST", r"(?P<token>[A-Za-z0-9_-]{16,64})", self.manage_post, login=False,
                  csrf=False)
        root.putChild(b"apply", apply)

    # -- the mirror list --
    async def _serving(self) -> tuple[list[PublicMirror], dict[str, int]]:
        ctx = self.ctx
        plan = getattr(ctx.plan, "current", None) if ctx.plan is not None else None
        rows, names, counts = await ctx.pool.run_readonly(
            load_mirrors_thd(ctx.cfg, ctx.now(), with_plan=plan is not None))
        if plan is not None:
            names = plan_serving_names(plan)
        return [m for m in rows if m.name in names], counts

    def _visitor(self, request) -> tuple[str, str | None]:
        ip = client_ip(self.ctx, request)
        cc = None
        if self.ctx.geo is not None and ip:
            try:
                cc = self.ctx.geo.country(ip)
            except Exception:
                _log.failure("geo lookup of {ip}", ip=ip)
        return ip, cc

    async def mirror_list(self, request):
        ms, counts = await self._serving()
        _ip, cc = self._visitor(request)
        tier, close = close_to(ms, cc)
        here = countries.get(cc) if cc else None
        return await self.ctx.render_threaded(       # a long list: jinja off the reactor thread
            "public/mirrors.html", request, title=self.ctx.cfg.admin.public_title,
            close=close, tier=tier, visitor_country=here, groups=by_country(ms), total=len(ms),
            waiting=counts)

    async def mirrors_json(self, request):
        import json
        ms, _counts = await self._serving()
        _ip, cc = self._visitor(request)
        tier, close = close_to(ms, cc)
        body = {
            "generated_at": self.ctx.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "your_country": cc, "close_tier": tier, "close": [m.name for m in close],
            "mirrors": [m.as_json() for _cc, _n, group in by_country(ms) for m in group],
        }
        return Response(json.dumps(body, indent=1), content_type=b"application/json",
                        headers={b"access-control-allow-origin": b"*",
                                 b"cache-control": b"public, max-age=60"})

    # -- the application form --
    def _country_choices(self):
        return sorted(((c.alpha2, c.name) for c in countries.all_countries()), key=lambda t: t[1])

    async def _form_page(self, request, *, values=None, errors=None, message="", code=200,
                         template="public/apply.html", **extra):
        counts = await self.ctx.pool.run_readonly(waitinglist.waiting_counts)
        waiting = sorted(((cc, (countries.get(cc).name if countries.get(cc) else cc), n)
                          for cc, n in counts.items()), key=lambda t: t[1])
        html = await self.ctx.render_threaded(
            template, request, title="Offer a mirror", values=values or {}, errors=errors or {},
            message=message, form_token=self.tokens.issue(self.ctx, request),
            country_choices=self._country_choices(), waiting=waiting, honeypot=HONEYPOT,
            int_fields=waitinglist.INT_FIELDS, **extra)
        return Response(html, code=code, headers={b"cache-control": b"no-store"})

    async def apply_form(self, request):
        return await self._form_page(request)

    async def apply_sent(self, request):
        return self.ctx.render("public/apply_sent.html", request, title="Thank you")

    def _form(self, request) -> dict[str, str]:
        return form_dict(request)

    def _rate_limited(self, request, limiter: RateLimiter) -> Response | None:
        ip = client_ip(self.ctx, request)
        wait = limiter.hit(ip)
        if not wait:
            return None
        _log.info("application form rate limit for {ip}", ip=ip)
        html = self.ctx.render("public/message.html", request, title="Too many submissions",
                               message="Too many submissions from your address; please try "
                                       "again later.")
        return Response(html, code=429, headers={b"retry-after": str(int(wait) + 1).encode()})

    async def apply_post(self, request):
        limited = self._rate_limited(request, self.limiter)
        if limited:
            return limited
        form = self._form(request)
        if not self.tokens.valid(request):
            return await self._form_page(
                request, values=form, code=403,
                message="This form has expired or did not come from this site; please check the "
                        "fields and submit it again (the form needs cookies to be allowed).")
        if form.get(HONEYPOT, "").strip():
            _log.info("application form honeypot filled from {ip}", ip=client_ip(self.ctx, request))
            return redirect("/apply/sent")
        v = waitinglist.validate(form)
        if not v.ok:
            return await self._form_page(request, values=form, errors=v.errors, code=400,
                                         message="Please correct the fields marked below.")
        cfg = self.ctx.cfg
        ip = client_ip(self.ctx, request)
        now = self.ctx.now()
        await self.ctx.pool.run(lambda conn: waitinglist.create(
            conn, v.values, source_ip=ip, base_url=waitinglist.public_base_url(cfg),
            sender=cfg.mail.from_, reply_to=cfg.mail.reply_to, title=cfg.admin.public_title,
            now=now))
        return redirect("/apply/sent")

    # -- the applicant's private link --
    async def _manage_page(self, request, token, app, **kw):
        return await self._form_page(request, template="public/apply_manage.html", app=app,
                                     token=token, done=kw.pop("done", ""), **kw)

    async def manage_form(self, request, token):
        app = await self.ctx.pool.run_readonly(lambda conn: waitinglist.by_token(conn, token))
        if app is None:
            raise HTTPError(404, "There is no application behind this link.")
        done = form_value(request, "done")
        values = {k: ("" if app[k] is None else str(app[k])) for k in
                  (*waitinglist.TEXT_FIELDS, *waitinglist.INT_FIELDS)}
        values.update({k: "on" if app[k] else "" for k in waitinglist.BOOL_FIELDS})
        return await self._manage_page(request, token, app, values=values,
                                       done=done if done in ("updated", "confirmed",
                                                             "withdrawn") else "")

    async def manage_post(self, request, token):
        limited = self._rate_limited(request, self.manage_limiter)
        if limited:
            return limited
        app = await self.ctx.pool.run_readonly(lambda conn: waitinglist.by_token(conn, token))
        if app is None:
            raise HTTPError(404, "There is no application behind this link.")
        form = self._form(request)
        if not self.tokens.valid(request):
            return await self._manage_page(
                request, token, app, values=form, code=403,
                message="This form has expired or did not come from this site; please submit it "
                        "again.")
        if app["status"] not in waitinglist.WAITING:
            return await self._manage_page(request, token, app, values=form, code=409,
                                           message="This application is closed; it can no "
                                                   "longer be changed.")
        action = form.get("action", "")
        now = self.ctx.now()
        if action == "confirm":
            await self.ctx.pool.run(lambda conn: waitinglist.confirm(conn, token, now))
            return redirect(f"/apply/{token}", done="confirmed")
        if action == "withdraw":
            await self.ctx.pool.run(lambda conn: waitinglist.withdraw(conn, token, now))
            return redirect(f"/apply/{token}", done="withdrawn")
        if action != "update":
            raise HTTPError(400, "Unknown action.")
        v = waitinglist.validate(form)
        if not v.ok:
            return await self._manage_page(request, token, app, values=form, errors=v.errors,
                                           code=400,
                                           message="Please correct the fields marked below.")
        await self.ctx.pool.run(lambda conn: waitinglist.update(conn, token, v.values, now))
        return redirect(f"/apply/{token}", done="updated")


def mount(root, ctx: WebContext) -> PublicPages:
    """Called by admin.web.build_root: put the public pages on the root resource."""
    pages = PublicPages(ctx)
    pages.mount(root)
    return pages
