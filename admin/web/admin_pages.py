"""The private admin pages under /admin (login required).

Reading goes through admin.web.queries; every change goes through admin.store, which writes the
audit row, bumps the table version and queues the list mail, all in one transaction, run by
admin.web.plans.change, which then waits until the live DNS plan has the change: the page shown
next says "serving" exactly when the DNS answers with the mirror. Fields are checked by
dnsd.validation, the rules mirrorctl, the API and the importers apply. Roles follow php.net's rule: admins
change anything; helpers may disable a mirror and add notes, nothing else (enforced here per
route, and the pages hide what a helper cannot use).

After a successful POST the browser is redirected (303) with ``?done=<code>``, so a reload does
not repeat the change; a refused change re-renders the page with the message and a 400/409.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import sqlalchemy as sa
from twisted.logger import Logger

from admin import mirror_reports, store
from admin.passwords import hash_password, new_password_problem
from admin.web import graphs, network, plans, queries, report_pages
from admin.web.auth import Busy, LoginPages, PasswordChecks, Throttled, throttled_message
from admin.web.clients import client_ip
from admin.web.framework import (
    ID,
    NO_STORE,
    HTTPError,
    Response,
    Router,
    WebContext,
    form_value,
    parse_id,
    redirect,
)
from admin.web.sessions import create_session
from dnsd import countries, recipients, statuses, validation
from dnsd import outbox as _outbox
from dnsd.errors import Invalid, NotFound, Refused
from dnsd.errors import sentence as _sentence
from dnsd.models import STATUSES, users
from dnsd.outbox import queue_mail
from dnsd.records import maintainers as _maint
from probes import history
from probes import requests as probe_requests

_log = Logger(namespace="admin.web.pages")

DONE = {
    "disabled": "Mirror disabled; it leaves DNS answers within seconds.",
    "enabled": "Mirror enabled; the probes decide when it serves.",
    "retired": "Mirror retired.",
    "note": "Note added.",
    "saved": "Changes saved.",
    "unchanged": "Nothing changed.",
    "queued": "Mail queued in the outbox.",
    "status": "Application status changed.",
    "accepted": "Application accepted: the mirror serves once a probe over it passed.",
    "added": "Mirror added (pending until enabled).",
    "password": "Password changed. Your other logins have ended and your API token is revoked.",
    "revoked": "API token revoked.",
    "retried": "The mail goes out on the sender's next round.",
    "discarded": "The mail is discarded; it will not be sent.",
    "user": "User changed.",
    "deleted": "User deleted.",
    "probe": "Probe requested: every probe node probes this mirror within seconds (at most once "
             "a minute each); reload to see the results below.",
    "maintenance": "Maintenance planned; the mirror leaves the DNS answers one TTL before it "
                   "starts.",
    "maintenance-cancelled": "Maintenance cancelled.",
}

DISPLAY_FIELDS = ("provider_name", "provider_url", "provider_logo")
DNS_FIELDS = ("name", "hostname", "country", "ipv4", "ipv6", "http_url", "https_url", "ftp_url",
              "rsync_url", "backup", "weight")
SPEC_FIELDS = ("bandwidth_mbit", "cores", "memory_gb", "disk_gb", "has_ipv6", "has_https")
BOOL_FIELDS = ("backup", "has_ipv6", "has_https")
LABELS = {
    "provider_name": "Provider name", "provider_url": "Provider URL", "provider_logo": "Logo URL",
    "maintainers": "Maintainers", "name": "Name (ccN)", "hostname": "Host name",
    "country": "Country", "ipv4": "IPv4 address", "ipv6": "IPv6 address",
    "http_url": "HTTP URL", "https_url": "HTTPS URL", "ftp_url": "FTP URL", "rsync_url": "rsync URL",
    "backup": "Backup mirror (answers only when no other tier has mirrors)",
    "weight": "Admin weight", "bandwidth_mbit": "Bandwidth (Mbit/s)", "cores": "CPU cores",
    "memory_gb": "Memory (GB)", "disk_gb": "Disk (GB)", "has_ipv6": "Serves over IPv6",
    "has_https": "Serves over HTTPS",
}
HINTS = {
    "name": "two letters and a number, e.g. de2; empty = no DNS name yet",
    "weight": "multiplies the score; 0 keeps it out of answers, 1 is normal",
    "maintainers": "one per line: Name <address@example.org> (commas in a name are fine)",
    "ipv4": "pinned: the DNS answers this; empty = the probes resolve the host name",
    "provider_logo": "https URL of a small image",
}
MAIL_TARGETS = ("mirror", "list", "all")
MAX_REASON = validation.MAX_LEN["reason"]      # as the page's maxlength


def build(ctx: WebContext) -> Router:
    """Every answer under /admin is private to its user: no cache may keep it (no-store)."""
    r = Router(ctx, login_url="/admin/login", cache_control=NO_STORE)
    checks = PasswordChecks(ctx)
    LoginPages(ctx, checks).install(r)
    p = AdminPages(ctx, checks)
    mid = rf"mirrors/(?P<mid>{ID})"
    aid = rf"applications/(?P<aid>{ID})"
    r.add("GET", r"", p.mirror_list)
    r.add("GET", r"mirrors", p.mirror_list)
    r.add("GET", r"mirrors/new", p.new_form, role="admin")
    r.add("POST", r"mirrors/new", p.new_mirror, role="admin")
    r.add("GET", mid, p.mirror_page)
    r.add("GET", mid + "/edit", p.edit_form, role="admin")
    r.add("POST", mid + "/edit", p.edit, role="admin")
    r.add("POST", mid + "/disable", p.disable)                 # helpers too
    r.add("POST", mid + "/enable", p.enable, role="admin")
    r.add("POST", mid + "/retire", p.retire, role="admin")
    r.add("POST", mid + "/notes", p.add_note)                  # helpers too
    r.add("POST", mid + "/probe", p.probe_now, role="admin")
    r.add("POST", mid + "/maintenance", p.plan_maintenance, role="admin")
    r.add("POST", mid + rf"/maintenance/(?P<wid>{ID})/cancel", p.cancel_maintenance,
          role="admin")
    r.add("GET", r"network", network.of(ctx).admin_network)
    r.add("GET", r"mail", p.mail_form)
    r.add("POST", r"mail", p.mail, role="admin")
    r.add("GET", r"account", p.account)
    r.add("POST", r"account/password", p.change_password)
    r.add("POST", r"account/token", p.api_token)
    r.add("GET", r"applications", p.applications)
    r.add("GET", aid, p.application)
    r.add("POST", aid + "/status", p.application_status, role="admin")
    r.add("POST", aid + "/accept", p.accept, role="admin")
    r.add("GET", r"reports", lambda request: report_pages.admin_list(ctx, request))
    r.add("GET", r"outbox", p.outbox, role="admin")
    r.add("POST", rf"outbox/(?P<oid>{ID})/(?P<op>retry|discard)", p.outbox_change,
          role="admin")
    r.add("GET", r"users", p.users, role="admin")
    r.add("POST", r"users/(?P<uname>[a-z0-9][a-z0-9._-]{0,63})/(?P<op>role|disable|enable|delete)",
          p.user_change, role="admin")
    return r


def _actor(request) -> str:
    return request.mirrordns_session.user.username


def _done(request) -> str:
    return DONE.get(form_value(request, "done"), "")


class AdminPages:
    def __init__(self, ctx: WebContext, checks: PasswordChecks):
        self.ctx = ctx
        self.checks = checks

    @property
    def mail_settings(self) -> store.MailSettings:
        return store.MailSettings.from_config(self.ctx.cfg)

    @property
    def rules(self) -> validation.Rules:
        return validation.Rules.from_config(self.ctx.cfg)

    def _max_age(self) -> float:
        return float(self.ctx.cfg.dns.max_sync_age)

    # --- mirror list -------------------------------------------------------------------------

    async def mirror_list(self, request):
        country = form_value(request, "country").upper()
        status = form_value(request, "status")
        if country and not countries.is_country(country):
            country = ""
        if status not in STATUSES:
            status = ""
        data = await self.ctx.pool.run_readonly(queries.mirror_list(
            country, status, plan=plans.live(self.ctx), cfg=self.ctx.cfg, now=self.ctx.now(),
            order=queries.MIRROR_SORT.order(request)))
        world, world_svg = await network.of(self.ctx).maps.get(data["plan"], "admin")
        return await self.ctx.render_threaded(
            "admin/mirrors.html", request, title="Mirrors", flash=_done(request),
            country=country, status=status, statuses=queries.STATUS_ORDER,
            max_age=self._max_age(), world=world, world_map=world_svg, **data)

    # --- mirror page -------------------------------------------------------------------------

    async def _load(self, mid: str):
        m = await self.ctx.pool.run_readonly(queries.mirror_page(
            int(mid), plan=plans.live(self.ctx), cfg=self.ctx.cfg, now=self.ctx.now()))
        if m is None:
            raise HTTPError(404, "No such mirror.")
        return m

    async def mirror_page(self, request, mid, *, error: str = "", code: int = 200,
                          form: dict | None = None):
        m = await self._load(mid)
        cfg = self.ctx.cfg
        reports = await self.ctx.pool.run_readonly(lambda conn: mirror_reports.of_mirror(
            conn, cfg, m.id, self.ctx.now()))
        html = await self.ctx.render_threaded(
            "admin/mirror.html", request, title=m.name or m.hostname, m=m,
            flash=error or _done(request), flash_kind="bad" if error else "ok",
            geo=self._geo_check(m), **await mirror_graphs(self.ctx, m.id),
            **await probe_request_state(self.ctx, m.id),
            form=form or {}, max_age=self._max_age(), labels=LABELS, reports=reports,
            report_reasons=validation.REPORT_REASONS)
        return Response(html, code=code)

    def _geo_check(self, m) -> list[dict]:
        """Where each address the DNS would answer geolocates, against the listed country."""
        out = []
        a = m.addresses
        for fam, ip in (("IPv4", a.ipv4), ("IPv6", a.ipv6)):
            if not ip:
                continue
            cc = None
            if self.ctx.geo is not None:
                try:
                    cc = self.ctx.geo.country(ip)
                except Exception:
                    _log.failure("geo lookup of {ip}", ip=ip)
            out.append({"family": fam, "address": ip, "country": cc,
                        "known": self.ctx.geo is not None,
                        "ok": cc == m.country if cc else None})
        return out

    # --- edit --------------------------------------------------------------------------------

    async def edit_form(self, request, mid):
        m = await self._load(mid)
        return await self._edit_page(request, m, _form_from_mirror(m), {}, 200)

    async def _edit_page(self, request, m: dict | None, form: dict, errors: dict, code: int):
        """The edit form of mirror m, or the form for a new mirror when m is None."""
        title = "Add a mirror" if m is None else f"Edit {m.name or m.hostname}"
        html = await self.ctx.render_threaded(
            "admin/edit.html", request, title=title, m=m, form=form, errors=errors,
            labels=LABELS, hints=HINTS, display_fields=DISPLAY_FIELDS, dns_fields=DNS_FIELDS,
            spec_fields=SPEC_FIELDS, bool_fields=BOOL_FIELDS,
            countries=countries.all_countries(), new=m is None)
        return Response(html, code=code)

    async def edit(self, request, mid):
        m = await self._load(mid)
        form = _form_from_request(request)
        values, people, errors = validate_mirror_form(form, self.rules)
        if not errors:
            actor = _actor(request)
            rules = self.rules

            def op(conn):
                res = store.edit_mirror(conn, f"#{m.id}", actor, rules=rules, **values)
                changed_people = people != tuple(m.maintainers)
                if changed_people:
                    store.set_maintainers(conn, f"#{m.id}", actor, people)
                return bool(res.changed) or changed_people
            try:
                changed = await plans.change(self.ctx, op)
            except Refused as e:
                errors[e.field if e.field in form else "_"] = str(e)
            else:
                return redirect(f"/admin/mirrors/{m.id}",
                                done="saved" if changed else "unchanged")
        return await self._edit_page(request, m, form, errors, 400)

    async def new_form(self, request):
        form = {k: "" for k in (*DISPLAY_FIELDS, *DNS_FIELDS, *SPEC_FIELDS, "maintainers")}
        form.update(weight="1", country=form_value(request, "country").upper())
        return await self._edit_page(request, None, form, {}, 200)

    async def new_mirror(self, request):
        form = _form_from_request(request)
        values, people, errors = validate_mirror_form(form, self.rules)
        if not errors:
            actor = _actor(request)
            name = values.pop("name")
            country, hostname = values.pop("country"), values.pop("hostname")
            rules = self.rules
            try:
                m = await plans.change(self.ctx, lambda conn: store.add_mirror(
                    conn, actor=actor, mail=self.mail_settings, country=country, hostname=hostname,
                    name=name, auto_name=not name, status="pending", maintainers_=people,
                    rules=rules, **values))
            except Refused as e:
                errors[e.field if e.field in form else "_"] = str(e)
            else:
                return redirect(f"/admin/mirrors/{m.id}", done="added")
        return await self._edit_page(request, None, form, errors, 400)

    # --- status changes and notes ------------------------------------------------------------

    async def _change(self, request, mid, op, done):
        m = await self._load(mid)
        try:
            await plans.change(self.ctx, lambda conn: op(conn, f"#{m.id}"))
        except Refused as e:
            return await self.mirror_page(request, mid, error=str(e), code=409)
        return redirect(f"/admin/mirrors/{m.id}", done=done)

    async def _status(self, request, mid, which: str, op, done: str, missing: str = ""):
        """Disable, enable or retire with the form's reason; a missing (when `missing` says why
        it is needed) or malformed reason re-renders the page with the message by that form and
        the text kept. op(conn, ref, actor, reason) does the change."""
        reason = form_value(request, "reason")
        error = reason_error(reason) or (missing if not reason else "")
        if error:
            return await self.mirror_page(request, mid, code=400, form={
                f"{which}_error": error, f"{which}_reason": reason})
        actor = _actor(request)
        return await self._change(request, mid, lambda conn, ref: op(conn, ref, actor, reason),
                                  done)

    async def disable(self, request, mid):
        return await self._status(
            request, mid, "disable", lambda conn, ref, actor, reason: store.disable(
                conn, ref, actor, reason, self.mail_settings), "disabled",
            "Please give a reason; it is mailed to the maintainers.")

    async def enable(self, request, mid):
        return await self._status(
            request, mid, "enable", lambda conn, ref, actor, reason: store.enable(
                conn, ref, actor, self.mail_settings, reason), "enabled")

    async def retire(self, request, mid):
        return await self._status(
            request, mid, "retire", lambda conn, ref, actor, reason: store.retire(
                conn, ref, actor, reason, self.mail_settings), "retired",
            "Please say why the mirror is retired.")

    async def add_note(self, request, mid):
        text, refused = note_from_form(request)
        if refused:
            return await self.mirror_page(request, mid, code=400, form=refused)
        actor = _actor(request)
        return await self._change(request, mid, lambda conn, ref: store.add_note(
            conn, ref, actor, text), "note")

    async def probe_now(self, request, mid):
        """Ask every probe node to probe this mirror once, now (probes.requests)."""
        m = await self._load(mid)
        actor, now = _actor(request), self.ctx.now()
        try:
            await self.ctx.pool.run(lambda conn: probe_requests.request_probe(
                conn, m.id, "admin", actor, now=now))
        except Refused as e:
            return await self.mirror_page(request, mid, error=str(e), code=409)
        return redirect(f"/admin/mirrors/{m.id}", done="probe")

    # --- maintenance windows -----------------------------------------------------------------

    async def plan_maintenance(self, request, mid):
        m = await self._load(mid)
        actor, now, mail = _actor(request), self.ctx.now(), self.mail_settings
        refused = await plan_window(self.ctx, request, lambda conn, start, end, reason: (
            store.plan_maintenance(conn, f"#{m.id}", actor, starts_at=start, ends_at=end,
                                   reason=reason, mail=mail, now=now)))
        if refused:
            return await self.mirror_page(request, mid, code=400, form=refused)
        return redirect(f"/admin/mirrors/{m.id}", done="maintenance")

    async def cancel_maintenance(self, request, mid, wid):
        actor, now = _actor(request), self.ctx.now()
        return await self._change(request, mid, lambda conn, ref: store.cancel_maintenance(
            conn, int(wid), actor, mirror_ref=ref, mail=self.mail_settings, now=now),
            "maintenance-cancelled")

    # --- form-to-mail ------------------------------------------------------------------------

    async def mail_form(self, request):
        form = {"target": form_value(request, "target") or "mirror",
                "mirror": form_value(request, "mirror"), "subject": "", "body": ""}
        audience = None
        mirror_id = parse_id(form["mirror"])
        if form["target"] == "mirror" and mirror_id is not None:      # from a mirror's page
            audience = await self._audience(form["target"], mirror_id)
        return await self._mail_page(request, form, {}, None, 200, flash=_done(request),
                                     audience=audience)

    async def _audience(self, target: str, mirror_id: int | None) -> list[OutgoingMail]:
        list_addr = self.ctx.cfg.mail.list
        return await self.ctx.pool.run_readonly(lambda conn: _mail_audience(
            conn, target, mirror_id, list_addr))

    async def _mail_page(self, request, form, errors, preview, code, flash="", audience=None):
        choices = await self.ctx.pool.run_readonly(queries.mirror_choices)
        sent = await self.ctx.pool.run_readonly(queries.sent_mails())
        if audience is None and preview is not None:
            audience = preview["audience"]
        left_out = [(m.label, x) for m in audience or () for x in m.left_out]
        html = await self.ctx.render_threaded(
            "admin/mail.html", request, title="Mail", form=form, errors=errors, preview=preview,
            choices=choices, sent=sent, flash=flash, audience=audience, left_out=left_out)
        return Response(html, code=code)

    async def mail(self, request):
        form = {"target": form_value(request, "target"), "mirror": form_value(request, "mirror"),
                "subject": form_value(request, "subject"),
                "body": form_value(request, "body").replace("\r\n", "\n")}
        action = form_value(request, "action")
        errors = {}
        if form["target"] not in MAIL_TARGETS:
            errors["target"] = "Choose who gets the mail."
        for f, fn in (("subject", lambda v: validation.text(
                          v, "subject", required=True, what="the subject")),
                      ("body", lambda v: validation.text(
                          v, "mail_body", required=True, lines=True, what="the text"))):
            try:
                fn(form[f])
            except Invalid as e:
                errors[f] = _sentence(e.message)
        mirror_id = parse_id(form["mirror"])
        if form["target"] == "mirror" and mirror_id is None:
            errors["mirror"] = "Choose a mirror."
        audience: list[OutgoingMail] = []
        if "target" not in errors and "mirror" not in errors:
            audience = await self._audience(form["target"], mirror_id)
        mails = [m for m in audience if m.to]
        if audience and not mails:
            why = ("; ".join(str(x) for x in audience[0].left_out) if len(audience) == 1 else
                   "nobody listed can be written to (see who is left out, and why)")
            errors["mirror" if form["target"] == "mirror" else "target"] = (
                f"Nobody to send to: {why}.")
        elif not audience and not errors:
            errors["mirror" if form["target"] == "mirror" else "target"] = (
                "Nobody to send to: no such mirror, or no mirror that can be mailed.")
        if errors or action != "send":
            preview = None if errors else {"mails": mails, "count": len(mails),
                                           "audience": audience}
            return await self._mail_page(request, form, errors, preview, 400 if errors else 200,
                                         audience=audience or None)
        actor = _actor(request)
        cfg = self.ctx.cfg

        def thd(conn):
            for mail in mails:
                queue_mail(conn, kind=mail.kind, sender=cfg.mail.from_, to=mail.to,
                           subject=form["subject"], body=form["body"],
                           mirror_id=mail.mirror_id, author=actor,
                           reply_to=cfg.mail.reply_to, auto=False)
            return len(mails)
        n = await self.ctx.pool.run(thd)
        _log.info("{actor} queued {n} mails to {target}", actor=actor, n=n, target=form["target"])
        return redirect("/admin/mail", done="queued")

    # --- own account: password, API token -------------------------------------------------

    async def account(self, request, *, errors=None, code=200, token=""):
        user = request.mirrordns_session.user

        def thd(conn):
            row = conn.execute(sa.select(users.c.email, users.c.created_at,
                                         users.c.api_token_hash.is_not(None).label("has_token"))
                               .where(users.c.id == user.id)).one()
            return dict(row._mapping)
        info = await self.ctx.pool.run_readonly(thd)
        html = await self.ctx.render_threaded(
            "admin/account.html", request, title="Account", info=info, errors=errors or {},
            token=token, flash=_done(request))
        return Response(html, code=code)

    async def change_password(self, request):
        """The current password is checked like a login (the same back-off and argon2 cap), so
        a stolen session cannot be used to guess it."""
        user = request.mirrordns_session.user
        current = form_value(request, "current", strip=False)
        new = form_value(request, "new", strip=False)
        errors = {}
        problem = new_password_problem(new)
        if problem:
            errors["new"] = problem[0].upper() + problem[1:] + "."
        elif new != form_value(request, "again", strip=False):
            errors["again"] = "The two new passwords differ."
        stored = await self.ctx.pool.run_readonly(lambda conn: conn.execute(
            sa.select(users.c.password_hash).where(users.c.id == user.id)).scalar_one())
        try:
            ok, _ = await self.checks.check(user.username, client_ip(self.ctx, request), stored,
                                            current)
        except Throttled as t:
            errors = {"current": throttled_message(t.wait)}
            return await self.account(request, errors=errors, code=429)
        except Busy:
            errors = {"current": "The server is busy checking passwords; try again in a moment."}
            return await self.account(request, errors=errors, code=503)
        if not ok:
            errors["current"] = "This is not your current password."
        if errors:
            return await self.account(request, errors=errors, code=400)
        new_hash = await self.ctx.run_in_thread(hash_password, new)
        await self.ctx.pool.run(lambda conn: store.set_password(
            conn, user.username, new_hash, actor=user.username))
        await create_session(self.ctx, request, user.id)    # every other session has just ended
        _log.info("{user} changed their password (other sessions ended, API token revoked)",
                  user=user.username)
        return redirect("/admin/account", done="password")

    async def api_token(self, request):
        from admin.web import api

        user = request.mirrordns_session.user
        if form_value(request, "action") == "revoke":
            await self.ctx.pool.run(lambda conn: api.revoke_token(conn, user.username))
            return redirect("/admin/account", done="revoked")
        token = await self.ctx.pool.run(lambda conn: api.issue_token(
            conn, user.username, actor=user.username))
        # shown once, in this response only (never in a URL, never stored in clear)
        request.setHeader(b"cache-control", b"no-store")
        return await self.account(request, token=token)

    # --- waiting list ------------------------------------------------------------------------

    async def applications(self, request):
        status = form_value(request, "status")
        if status not in ("", "all", *statuses.APPLICATION_STATUSES):
            status = ""
        data = await self.ctx.pool.run_readonly(queries.applications_list(
            status, plan=plans.live(self.ctx), cfg=self.ctx.cfg, now=self.ctx.now()))
        return await self.ctx.render_threaded(
            "admin/applications.html", request, title="Waiting list", status=status,
            all_statuses=statuses.APPLICATION_STATUSES, flash=_done(request), **data)

    async def application(self, request, aid, *, errors=None, code=200, proposed=None):
        data = await self.ctx.pool.run_readonly(queries.application(
            int(aid[:9]), plan=plans.live(self.ctx), cfg=self.ctx.cfg, now=self.ctx.now()))
        if data is None:
            raise HTTPError(404, "No such application.")
        app = data["app"]
        if proposed is None:
            rules = self.rules
            proposed = await self.ctx.pool.run_readonly(
                lambda conn: store.next_free_name(conn, app.country, rules))
        html = await self.ctx.render_threaded(
            "admin/application.html", request, title=f"Application #{app.id}", proposed=proposed,
            errors=errors or {}, flash=_done(request), waiting=statuses.WAITING,
            decisions=statuses.APPLICATION_DECISIONS, **data)
        return Response(html, code=code)

    async def application_status(self, request, aid):
        status = form_value(request, "status")
        if status not in statuses.APPLICATION_DECISIONS:
            return await self.application(request, aid, code=400, errors={
                "status": "Choose new, contacted, declined or withdrawn (accept has its own "
                          "button)."})
        actor = _actor(request)
        try:
            await self.ctx.pool.run(lambda conn: store.set_application_status(
                conn, int(aid), actor, status))
        except Refused as e:
            return await self.application(request, aid, code=409, errors={"status": str(e)})
        return redirect(f"/admin/applications/{int(aid)}", done="status")

    async def accept(self, request, aid):
        name = form_value(request, "name").lower()
        actor = _actor(request)
        rules = self.rules
        try:
            m = await plans.change(self.ctx, lambda conn: store.accept_application(
                conn, int(aid), actor, name, self.mail_settings, rules))
        except Refused as e:
            return await self.application(request, aid, code=409, errors={"name": str(e)},
                                          proposed=name)
        return redirect(f"/admin/mirrors/{m.id}", done="accepted")

    # --- the outbox --------------------------------------------------------------------------

    async def outbox(self, request, *, error: str = "", code: int = 200):
        state = form_value(request, "state")
        if state not in statuses.MAIL_STATES:
            state = ""

        def thd(conn):
            return {"mails": _outbox.select(conn, state or None, limit=200),
                    "counts": _outbox.counts(conn)}
        data = await self.ctx.pool.run_readonly(thd)
        html = await self.ctx.render_threaded(
            "admin/outbox.html", request, title="Outbox", state=state,
            states=statuses.MAIL_STATES, flash=error or _done(request),
            flash_kind="bad" if error else "ok", **data)
        return Response(html, code=code)

    async def outbox_change(self, request, oid, op):
        actor = _actor(request)
        fn = store.retry_mail if op == "retry" else store.discard_mail
        try:
            await self.ctx.pool.run(lambda conn: fn(conn, int(oid), actor))
        except Refused as e:
            return await self.outbox(request, error=str(e), code=409)
        _log.info("{actor}: outbox mail {id} {op}", actor=actor, id=oid, op=op)
        return redirect("/admin/outbox", done="retried" if op == "retry" else "discarded")

    # --- users -------------------------------------------------------------------------------

    async def users(self, request, *, error: str = "", code: int = 200):
        rows = await self.ctx.pool.run_readonly(store.list_users)
        html = await self.ctx.render_threaded(
            "admin/users.html", request, title="Users", users=rows, roles=statuses.ROLES,
            flash=error or _done(request), flash_kind="bad" if error else "ok")
        return Response(html, code=code)

    async def user_change(self, request, uname, op):
        actor = _actor(request)
        role = form_value(request, "role")

        def thd(conn):
            if op == "role":
                return store.set_role(conn, uname, role, actor)
            if op == "delete":
                return store.delete_user(conn, uname, actor)
            return store.set_user_disabled(conn, uname, op == "disable", actor)
        try:
            await self.ctx.pool.run(thd)
        except Refused as e:
            return await self.users(request, error=str(e), code=409)
        _log.info("{actor}: user {user} {op}", actor=actor, user=uname, op=op)
        return redirect("/admin/users", done="deleted" if op == "delete" else "user")


# --- form handling -------------------------------------------------------------------------------

def _form_from_mirror(m) -> dict:
    form = {}
    for k in (*DISPLAY_FIELDS, *DNS_FIELDS, *SPEC_FIELDS):
        v = getattr(m, k)
        if k in BOOL_FIELDS:
            form[k] = bool(v)
        else:
            form[k] = "" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))
    form["maintainers"] = "\n".join(str(x) for x in m.maintainers)
    return form


def _form_from_request(request) -> dict:
    form = {}
    for k in (*DISPLAY_FIELDS, *DNS_FIELDS, *SPEC_FIELDS, "maintainers"):
        if k in BOOL_FIELDS:
            form[k] = form_value(request, k) in ("1", "on", "yes", "true")
        else:
            form[k] = form_value(request, k)
    return form


def validate_fields(form: dict, fields, rules: validation.Rules = validation.STRICT
                    ) -> tuple[dict, dict]:
    """(values, {field: message}) for these mirror fields of a form, with dnsd.validation's
    rules (the admin's edit and a maintainer's alike); messages sit by each field. A form with
    every address and URL field must leave the mirror at least one of them."""
    values, errors = {}, {}
    for f in fields:
        v = form[f]
        if f in ("hostname", "country") and not v:
            errors[f] = f"Please give {'a host name' if f == 'hostname' else 'a country'}."
            continue
        if f == "weight" and v == "":
            v = "1"
        try:
            values[f] = validation.mirror_field(f, v, rules)
        except Invalid as e:
            errors[f] = _sentence(e.message)
    reach = {*store.URL_FIELDS, "ipv4", "ipv6"}
    if reach <= set(fields) and not errors.keys() & reach:
        if problem := validation.mirror_problem(values):
            errors["http_url"] = _sentence(problem)
    return values, errors


def validate_mirror_form(form: dict, rules: validation.Rules = validation.STRICT
                         ) -> tuple[dict, tuple, dict]:
    """(values for store.edit_mirror, maintainers, {field: message}), with dnsd.validation's
    rules; messages sit by each field."""
    values, errors = validate_fields(form, (*DNS_FIELDS, *DISPLAY_FIELDS, *SPEC_FIELDS), rules)
    people: list = []
    try:
        people = list(validation.maintainers(
            [line.strip() for line in form["maintainers"].splitlines() if line.strip()]))
    except Invalid as e:
        errors["maintainers"] = _sentence(e.message)
    return values, tuple(people), errors


def note_from_form(request) -> tuple[str, dict]:
    """(the note's text, {} when it may be added, else the form values that show the message by
    the note field with the text kept): dnsd.validation.note's rule."""
    text = form_value(request, "text")
    try:
        validation.note(text)
    except Invalid as e:
        return text, {"note_error": _sentence(e.message), "note": text}
    return text, {}


def reason_error(reason: str) -> str:
    """Why a status-change reason is refused ('' = fine): dnsd.validation.reason's rule."""
    try:
        validation.reason(reason)
    except Invalid as e:
        return _sentence(e.message)
    return ""


@dataclass(frozen=True)
class OutgoingMail:
    """One mail the form would queue: to whom, and who it names but will not reach (why)."""

    label: str
    kind: str
    mirror_id: int | None
    to: tuple[recipients.Recipient, ...]
    left_out: tuple[recipients.LeftOut, ...]


def _mail_audience(conn, target: str, mirror_id: int | None, list_addr: str
                   ) -> list[OutgoingMail]:
    """One mail per mirror (maintainers stay private to each other), or one to the list; who is
    in each, and who is left out, is dnsd.recipients' rule. Mails that reach nobody are kept, so
    the page can say why."""
    if target == "list":
        a = recipients.audience("admin-mail-list", list_address=list_addr)
        return [OutgoingMail("the mailing list", "admin-mail-list", None, a.to, a.left_out)]
    ms = queries.mirror_choices(conn)
    if target == "mirror":
        ms = [m for m in ms if m.id == mirror_id]
    people = _maint.of(conn, [m.id for m in ms])
    out = []
    for m in ms:
        a = recipients.audience("admin-mail", maintainers=people.get(m.id, ()))
        out.append(OutgoingMail(m.name or m.hostname, "admin-mail", m.id, a.to, a.left_out))
    return out


async def mirror_graphs(ctx: WebContext, mid: int) -> dict:
    """The mirror page's graphs (uptime per day, response time per hour), for the admin's and the
    maintainer's page: {"uptime": ..., "rtt": ...} for templates/admin/_graphs.html."""
    now = ctx.now()
    h = await ctx.pool.run_readonly(_history(mid, now))
    return {"uptime": graphs.uptime_days(h["days"], now.date()),
            "rtt": graphs.rtt_hours(h["hours"], now)}


async def plan_window(ctx: WebContext, request, op) -> dict:
    """Plan a maintenance window from a mirror page's form with op(conn, starts_at, ends_at,
    reason) (the admin's planning or a maintainer's): {} once planned, else the form values that
    show every field's problem by it with the text kept (dnsd.validation's
    maintenance_window_errors, then the store's own refusals such as an overlapping window).
    The change waits for the live plan (admin.web.plans.change). NotFound passes through."""
    form = {f: form_value(request, f) for f in validation.WINDOW_FIELDS}
    _w, errors = validation.maintenance_window_errors(
        form["starts_at"], form["ends_at"], form["reason"], ctx.now())
    if not errors:
        try:
            await plans.change(ctx, lambda conn: op(conn, form["starts_at"], form["ends_at"],
                                                    form["reason"]))
        except NotFound:
            raise
        except Refused as e:
            errors[e.field if e.field in form else "starts_at"] = e.message
        else:
            return {}
    return {"maint": form, "maint_errors": {k: _sentence(v) for k, v in errors.items()}}


async def probe_request_state(ctx: WebContext, mid: int) -> dict:
    """The mirror's "probe now" request and which probe nodes served it, for the mirror page's
    probe_now macro (the admin's and the maintainer's page)."""
    req, served = await ctx.pool.run_readonly(lambda conn: (
        probe_requests.get(conn, mid), probe_requests.served(conn, mid)))
    return {"probe_request": req, "probe_served": served, "probes_on": ctx.cfg.probes.enabled}


def _history(mid: int, now: _dt.datetime):
    """Per-day (probes, passes) for 90 days and per-hour mean response time for 7 days."""
    def thd(conn):
        days = history.uptime_per_day(conn, mid, 90, now)
        hours = history.rtt_per_hour(conn, mid, 7 * 24, now)
        return {"days": {d.day: (d.probes, d.passes) for d in days},
                "hours": {h.start: h.rtt_avg_ms for h in hours if h.rtt_avg_ms is not None}}
    return thd
