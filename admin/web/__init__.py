"""The admin listener's web tree: private admin pages, public pages, API, /metrics, the closer.

How a part plugs in (H6 public pages/API/metrics, H7 closer)
-----------------------------------------------------------
1. Write a module under admin/web/ (or admin/closer.py) with a function or class that takes the
   `WebContext` and returns a `twisted.web.resource.Resource`.
2. Add ONE line for it in `build_root` below, in the marked spot, e.g.
   ``root.putChild(b"api", api.build(ctx))``. Import inside `build_root` (not at module top) so
   importing admin.web never pulls in every page.
3. Useful pieces in admin.web.framework:
   - ``WebContext``: ``ctx.cfg``, ``ctx.pool`` (``await ctx.pool.run(thd)`` / ``run_readonly``),
     ``ctx.reactor``, ``ctx.plan`` (``.current`` is the live plan; None when the web runs alone),
     ``ctx.geo`` (``.country(ip)``; may be None), ``ctx.jinja``, ``ctx.clock``, ``ctx.now()``
     (naive UTC from the clock), ``ctx.render("public/x.html", request, **values)``,
     ``ctx.run_in_thread(f, *args)`` for CPU-heavy work.
   - ``Router(ctx)``: a leaf resource; ``router.add("GET", rf"mirrors/(?P<mid>{ID})", handler,
     login=False)`` (``ID``: ids that fit the table; anything else is a 404). Handlers are
     ``async def h(request, **groups)`` returning HTML (str), a
     ``Response(body, code, content_type, headers)`` or ``redirect(url)``; raise
     ``HTTPError(404)``: it is shown in the site layout (templates/error.html); a JSON API passes
     ``Router(ctx, errors="json")``. Other exceptions become a logged 500 (``respond``, the one
     render helper, STYLE E12). The security headers go on every response.
   - ``client_ip(ctx, request)`` (admin.web.clients: X-Forwarded-For only from [admin]
     trusted_proxies), ``form_value(request, "name")`` (a POST's body, else the query string),
     ``set_cookie`` (admin.web.sessions: HttpOnly, SameSite=Strict, Secure under https).
   - A public POST form without a session (the application form) uses
     admin.web.csrf.SignedTokens, as the login form does.
4. Templates live in admin/templates/: extend ``base.html`` (blocks ``title``, ``content``; set
   ``{% set public = true %}`` for the public navigation) and put yours in a subfolder
   (``public/``); the stylesheet is /static/style.css (admin/static/style.css, shared; add rules
   at the end under a comment with your part's name).
5. Tests: tests/webfakes.py has ``SyncPool`` (runs thd at once on a SQLite engine, so StubTreq
   works without threads), ``make_ctx(engine, ...)``, ``add_user`` and ``login(testcase, stub,
   user)``; pass ``allow_redirects=False`` to StubTreq to see 303s. To run the web alone:
   ``python -m admin.web.devserver --config X`` prints ``PORT n``.

Paths: /admin/... (H5, login required), /static/ (stylesheet), / and /apply... (H6), /api/ (H6),
/metrics (H6), /dyn/closer (H7).
"""

from __future__ import annotations

from twisted.web import resource

from admin.web.framework import SiteRoot, WebContext, static_resource
from admin.web.limits import WebSite


def build_root(ctx: WebContext) -> resource.Resource:
    """The whole tree served on [admin] listen; `build_site` wraps it in the listener's Site."""
    from admin.web import admin_pages

    root = SiteRoot(ctx)                         # any name nobody mounts: the site's own 404
    root.putChild(b"static", static_resource(ctx))
    root.putChild(b"admin", admin_pages.build(ctx))
    from admin.web import maintainer_pages
    root.putChild(b"maintainer", maintainer_pages.build(ctx))   # maintainers' own mirrors

    # --- other parts mount here, one line each --------------------------------------------------
    from admin.web import api, metrics, network, public
    public.mount(root, ctx)                      # /, /mirrors.json, /apply...
    network.mount(root, ctx)                     # /country/<cc>, /status
    from admin.web import report_pages
    report_pages.mount(root, ctx)                # /report, /report.json
    root.putChild(b"api", api.build(ctx))
    if ctx.cfg.admin.metrics:
        root.putChild(b"metrics", metrics.build(ctx))
    # /dyn/closer (+ project <name>.cgi pages of [closer] document_root); keep it last, so
    # project pages only take top-level names nothing else uses.
    from admin import closer
    closer.mount(root, ctx)
    # ---------------------------------------------------------------------------------------------
    return root


def build_site(ctx: WebContext, root: resource.Resource | None = None) -> WebSite:
    """The listener's Site over `root` (default: build_root): bounded requests, the site's own
    error pages (admin.web.limits)."""
    return WebSite(build_root(ctx) if root is None else root, ctx.limits,
                   error_pages=ctx.errors)
