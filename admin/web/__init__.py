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
   - ``Router(ctx)``: a leaf resource; ``router.add("GET", r"mirrors/(?P<mid>\\d+)", handler,
     login=False)``. Handlers are ``async def h(request, **groups)`` returning HTML (str), a
     ``Response(body, code, content_type, headers)`` or ``redirect(url)``; raise
     ``HTTPError(404)``: it is shown in the site layout (templates/error.html); a JSON API passes
     ``Router(ctx, html_errors=False)``. Other exceptions become a logged 500 (``render_async``,
     STYLE E12). Security headers (CSP without scripts, nosniff, DENY framing) go on every
     response.
   - ``client_ip(ctx, request)`` (X-Forwarded-For only from [admin] trusted_proxies),
     ``form_value(request, "name")``, ``check_csrf``, ``set_cookie`` (HttpOnly, SameSite=Strict,
     Secure under https).
   - A public POST form without a session (the application form) can use the double-submit cookie
     pattern of admin.web.auth.LoginPages (a token in a cookie and in the form, compared with
     hmac.compare_digest).
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

from admin.web.framework import WebContext, make_jinja_env, static_resource  # noqa: F401


def build_root(ctx: WebContext) -> resource.Resource:
    """The whole tree served on [admin] listen; admin.makeService wraps it in a Site."""
    from admin.web import admin_pages

    root = resource.Resource()
    root.putChild(b"static", static_resource())
    root.putChild(b"admin", admin_pages.build(ctx))

    # --- other parts mount here, one line each --------------------------------------------------
    # H6: root.putChild(b"", public.build(ctx)) and friends; /api; /metrics
    from admin.web import api, metrics, public
    public.mount(root, ctx)                      # /, /mirrors.json, /apply...
    root.putChild(b"api", api.build(ctx))
    if ctx.cfg.admin.metrics:
        root.putChild(b"metrics", metrics.build(ctx))
    # H7: /dyn/closer (+ project <name>.cgi pages of [closer] document_root); keep it last, so
    # project pages only take top-level names nothing else uses.
    from admin import closer
    closer.mount(root, ctx)
    # ---------------------------------------------------------------------------------------------
    return root
