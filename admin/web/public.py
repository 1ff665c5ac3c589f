"""The public pages (no login): the mirror list, /mirrors.json, and the application form.

The mirror list shows serving mirrors only: the serving entries of the plan that answers
(admin.web.plans: the live plan, else one built on the spot by dnsd.plan's pure builder), which
carry the display fields too. The visitor's country comes from ctx.geo on the address `client_ip`
believes (X-Forwarded-For only from [admin] trusted_proxies); "close to you" is the nearest
non-empty tier of the picker's own tiers (dnsd.picker.tiers_for: country, UN sub-region,
continent), sorted by distance.

The application form asks for the mirror's host, addresses, URLs and the people who run it;
admin.waitinglist checks it with dnsd.validation and keeps the applicant's private link open
until the mirror serves.

The application form is public, so there is no session to hang a CSRF token on: it uses the
site's signed double-submit token (admin.web.csrf.SignedTokens, path /apply, fresh for one day).
Spam defences: a honeypot field (filled = "thanks", nothing stored) and a
per-address rate limit on POSTs kept in memory and driven by the reactor's clock (IPv6 per /64).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from twisted.logger import Logger

from admin import waitinglist
from admin.web import plans, sorting
from admin.web.clients import RateLimiter, client_ip
from admin.web.csrf import SignedTokens
from admin.web.framework import (
    HTTPError,
    Response,
    Router,
    WebContext,
    form_dict,
    form_value,
    form_values,
    redirect,
)
from dnsd import countries, maintenance, picker, statuses, validation
from dnsd.errors import Refused
from dnsd.records._base import iso

_log = Logger(namespace="admin.web.public")

FORM_COOKIE = b"mirrordns_form"
HONEYPOT = "website"                 # a field people never see; bots fill in anything named so
FORM_MAX_AGE = 86400                 # seconds a form token stays valid
CLOSE_LIMIT = 6                      # mirrors in the "close to you" box


# --- serving mirrors and their order -------------------------------------------------------------

@dataclass(frozen=True)
class PublicMirror:
    name: str | None
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
    lat: float | None = None
    lon: float | None = None

    @property
    def label(self) -> str:
        return self.name or self.hostname

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


def _safe_url(u: str | None) -> str:
    return u if u and validation.is_web_url(u) else ""


def _safe_logo(u: str | None) -> str:
    """Logos over https only: the pages' Content-Security-Policy allows no other images."""
    return u if u and u.startswith("https://") and validation.is_web_url(u) else ""


def public_mirror(e) -> PublicMirror:
    """A serving plan entry as the public list shows it."""
    c = countries.get(e.country)
    return PublicMirror(
        name=e.name, hostname=e.hostname, country=e.country,
        country_name=c.name if c else e.country, provider_name=e.provider_name or "",
        provider_url=_safe_url(e.provider_url), provider_logo=_safe_logo(e.provider_logo),
        http_url=_safe_url(e.http), https_url=_safe_url(e.https), ftp_url=e.ftp or "",
        rsync_url=e.rsync or "", ipv6=not e.family_problem("AAAA"), backup=e.backup,
        lat=e.lat, lon=e.lon)


def serving_mirrors(plan) -> list[PublicMirror]:
    return [public_mirror(e) for e in plan.serving]


@dataclass(frozen=True)
class PublicMaintenance:
    """A maintenance window in progress or ahead, as the public list shows it."""

    name: str | None
    hostname: str
    country_name: str
    starts_at: _dt.datetime
    ends_at: _dt.datetime
    state: str                       # dnsd.maintenance's word: planned, in progress, ...
    reason: str

    def as_json(self) -> dict:
        return {"name": self.name, "hostname": self.hostname, "starts_at": iso(self.starts_at),
                "ends_at": iso(self.ends_at), "state": self.state, "reason": self.reason}


def maintenance_notices(plan, now: _dt.datetime) -> list[PublicMaintenance]:
    """The windows not ended yet of the active mirrors in the plan, soonest first."""
    out = []
    for e in plan.mirrors:
        if e.status != statuses.ACTIVE:
            continue
        for w in e.windows:
            c = countries.get(e.country)
            out.append(PublicMaintenance(e.name, e.hostname, c.name if c else e.country,
                                         w.starts_at, w.ends_at,
                                         maintenance.status_of(w, now, plan.ttl).word,
                                         w.reason))
    return sorted(out, key=lambda n: (n.starts_at, sorting.natural(n.name or n.hostname)))


def close_to(plan, cc: str | None, limit: int = CLOSE_LIMIT) -> tuple[str, list[PublicMirror]]:
    """The nearest non-empty tier of the picker (country, sub-region, continent; never the world)
    for a visitor in country cc: (tier word, mirrors by distance)."""
    here = countries.get(cc) if cc else None
    if here is None:
        return "none", []
    loc = picker.Location.of_country(here.alpha2)
    point = loc.point()
    for level, key in picker.tiers_for(loc):
        if level == "world":
            break
        entries = plan.pool(None, level, key)
        if entries:
            def dist(e):
                if point is None or e.lat is None:
                    return 0.0
                return countries.haversine_km(point[0], point[1], e.lat, e.lon)
            ordered = sorted(entries, key=lambda e: (dist(e), e.country, sorting.natural(e.label)))
            return level, [public_mirror(e) for e in ordered[:limit]]
    return "none", []


PUBLIC_SORT = sorting.Table((
    sorting.Column("country", lambda m: (m.country_name, sorting.natural(m.label))),
    sorting.Column("name", lambda m: sorting.natural(m.label)),
    sorting.Column("host", lambda m: sorting.natural(m.hostname)),
    sorting.Column("provider", lambda m: sorting.natural(m.provider_name)
                   if m.provider_name else None),
), default="country")
"""The public list's columns: by country (grouped under each country's heading, the default),
else one list."""


def by_country(mirrors_: list[PublicMirror], order: sorting.Order | None = None
               ) -> list[tuple[str, str, list[PublicMirror]]]:
    """[(country code, country name, mirrors)] by country name, names as people sort them; with
    an `order` by another column, one group ("", "", every mirror in that order)."""
    order = order or PUBLIC_SORT.default_order()
    ordered = order.apply(mirrors_)
    if not order.is_default:
        return [("", "", ordered)] if ordered else []
    groups: dict[str, list[PublicMirror]] = {}
    for mm in ordered:
        groups.setdefault(mm.country, []).append(mm)
    return [(cc, ms[0].country_name, ms) for cc, ms in groups.items()]


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
    async def _serving(self):
        plan = await plans.current(self.ctx)
        counts = await self.ctx.pool.run_readonly(waitinglist.waiting_counts)
        return plan, serving_mirrors(plan), counts

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
        from admin.web import network

        plan, ms, counts = await self._serving()
        _ip, cc = self._visitor(request)
        tier, close = close_to(plan, cc)
        here = countries.get(cc) if cc else None
        order = PUBLIC_SORT.order(request)
        world = await network.of(self.ctx).map_for(plan)
        return await self.ctx.render_threaded(       # a long list: jinja off the reactor thread
            "public/mirrors.html", request, title=self.ctx.cfg.admin.public_title,
            close=close, tier=tier, visitor_country=here, groups=by_country(ms, order),
            total=len(ms), waiting=counts, order=order, world_map=world,
            maintenance=maintenance_notices(plan, self.ctx.now()))

    async def mirrors_json(self, request):
        import json
        plan, ms, _counts = await self._serving()
        _ip, cc = self._visitor(request)
        tier, close = close_to(plan, cc)
        body = {
            "generated_at": self.ctx.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "plan_version": plan.version,
            "your_country": cc, "close_tier": tier, "close": [m.label for m in close],
            "mirrors": [m.as_json() for _cc, _n, group in by_country(ms) for m in group],
            "maintenance": [n.as_json() for n in maintenance_notices(plan, self.ctx.now())],
        }
        return Response(json.dumps(body, indent=1), content_type=b"application/json",
                        headers={b"access-control-allow-origin": b"*",
                                 b"cache-control": b"public, max-age=60"})

    # -- the application form --
    def _country_choices(self):
        return sorted(((c.alpha2, c.name) for c in countries.all_countries()), key=lambda t: t[1])

    async def _form_page(self, request, *, values=None, errors=None, message="", code=200,
                         template="public/apply.html", people=None, **extra):
        counts = await self.ctx.pool.run_readonly(waitinglist.waiting_counts)
        waiting = sorted(((cc, (countries.get(cc).name if countries.get(cc) else cc), n)
                          for cc, n in counts.items()), key=lambda t: t[1])
        rows = list(people or [])[:waitinglist.EXTRA_PEOPLE]
        rows += [("", "")] * (waitinglist.EXTRA_PEOPLE - len(rows))
        html = await self.ctx.render_threaded(
            template, request, title="Offer a mirror", values=values or {}, errors=errors or {},
            message=message, form_token=self.tokens.issue(self.ctx, request),
            country_choices=self._country_choices(), waiting=waiting, honeypot=HONEYPOT,
            int_fields=waitinglist.INT_FIELDS, people=rows, **extra)
        return Response(html, code=code, headers={b"cache-control": b"no-store"})

    async def apply_form(self, request):
        return await self._form_page(request)

    async def apply_sent(self, request):
        return self.ctx.render("public/apply_sent.html", request, title="Thank you")

    def _form(self, request) -> dict[str, str]:
        return form_dict(request)

    @staticmethod
    def _people(request) -> list[tuple[str, str]]:
        """The extra maintainer rows of the form (m_name / m_email, in order)."""
        names = form_values(request, "m_name", strip=False)
        mails = form_values(request, "m_email", strip=False)
        n = min(max(len(names), len(mails)), waitinglist.EXTRA_PEOPLE)
        names += [""] * n
        mails += [""] * n
        return list(zip(names[:n], mails[:n]))

    @property
    def rules(self) -> validation.Rules:
        return validation.Rules.from_config(self.ctx.cfg)

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
        people = self._people(request)
        v = waitinglist.validate(form, people, self.rules)
        if not v.ok:
            return await self._form_page(request, values=form, errors=v.errors, code=400,
                                         people=people,
                                         message="Please correct the fields marked below.")
        cfg = self.ctx.cfg
        ip = client_ip(self.ctx, request)
        now = self.ctx.now()
        await self.ctx.pool.run(lambda conn: waitinglist.create(
            conn, v, source_ip=ip, base_url=waitinglist.public_base_url(cfg),
            sender=cfg.mail.from_, reply_to=cfg.mail.reply_to, title=cfg.admin.public_title,
            now=now))
        return redirect("/apply/sent")

    # -- the applicant's private link --
    async def _mirror_state(self, app) -> tuple[bool | None, str]:
        """(serving, why not) of the mirror an accepted offer became (None: it has none)."""
        if app.mirror_id is None:
            return None, ""
        plan = await plans.current(self.ctx)
        e = plan.by_id.get(app.mirror_id)
        if e is None:
            return False, "not in the DNS plan yet"
        return e.serving, e.reason

    async def _manage_page(self, request, token, app, **kw):
        serving, why = await self._mirror_state(app)
        return await self._form_page(
            request, template="public/apply_manage.html", app=app, token=token,
            done=kw.pop("done", ""), mirror_serving=serving, mirror_reason=why,
            link_open=waitinglist.link_open(app, serving), waiting_statuses=waitinglist.WAITING,
            people=kw.pop("people", [(p.name, p.email) for p in app.maintainers[1:]]), **kw)

    async def manage_form(self, request, token):
        app = await self.ctx.pool.run_readonly(lambda conn: waitinglist.by_token(conn, token))
        if app is None:
            raise HTTPError(404, "There is no application behind this link.")
        done = form_value(request, "done")
        values = {k: ("" if getattr(app, k) is None else str(getattr(app, k))) for k in
                  (*waitinglist.TEXT_FIELDS, *waitinglist.INT_FIELDS)}
        values.update({k: "on" if getattr(app, k) else "" for k in waitinglist.BOOL_FIELDS})
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
        people = self._people(request)
        if not self.tokens.valid(request):
            return await self._manage_page(
                request, token, app, values=form, code=403, people=people,
                message="This form has expired or did not come from this site; please submit it "
                        "again.")
        serving, _why = await self._mirror_state(app)
        if not waitinglist.link_open(app, serving):
            return await self._manage_page(request, token, app, values=form, code=409,
                                           people=people,
                                           message="This application is closed; it can no "
                                                   "longer be changed.")
        action = form.get("action", "")
        now = self.ctx.now()
        if action in ("confirm", "withdraw") and app.status not in waitinglist.WAITING:
            raise HTTPError(400, "Unknown action.")
        if action == "confirm":
            await self.ctx.pool.run(lambda conn: waitinglist.confirm(conn, token, now))
            return redirect(f"/apply/{token}", done="confirmed")
        if action == "withdraw":
            await self.ctx.pool.run(lambda conn: waitinglist.withdraw(conn, token, now))
            return redirect(f"/apply/{token}", done="withdrawn")
        if action != "update":
            raise HTTPError(400, "Unknown action.")
        v = waitinglist.validate(form, people, self.rules)
        if not v.ok:
            return await self._manage_page(request, token, app, values=form, errors=v.errors,
                                           code=400, people=people,
                                           message="Please correct the fields marked below.")
        rules = self.rules
        try:
            await plans.change(self.ctx, lambda conn: waitinglist.update(
                conn, token, v, mirror_serving=serving, rules=rules, now=now))
        except Refused as e:                        # a rule of the table (a host taken, ...)
            return await self._manage_page(
                request, token, app, values=form, code=409, people=people,
                errors={e.field if e.field in form else "hostname": e.message},
                message="Please correct the fields marked below.")
        return redirect(f"/apply/{token}", done="updated")


def mount(root, ctx: WebContext) -> PublicPages:
    """Called by admin.web.build_root: put the public pages on the root resource."""
    pages = PublicPages(ctx)
    pages.mount(root)
    return pages
