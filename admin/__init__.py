"""admin: the web admin, public pages, closer, mirrorctl, the mail outbox and scheduled reports."""


def makeService(cfg, pool, reactor, plan=None, geo=None):
    """The admin node's services: the web listener, the outbox sender and the scheduled mails.

    `plan` (dnsd's holder, `.current` = the live plan) and `geo` (`.country(ip)`) are handed in by
    twistd.tac; admin never reaches into the DNS protocols for them. Imported lazily so that
    `mirrorctl` does not pay for Twisted web and jinja2 on every command.
    """
    from twisted.application import internet, service

    from admin import closer, outbox, reports
    from admin.web import build_site
    from admin.web.framework import WebContext
    from dnsd.config import split_hostport

    top = service.MultiService()
    top.setName("admin")
    ctx = WebContext(cfg=cfg, pool=pool, reactor=reactor, plan=plan, geo=geo)
    host, port = split_hostport(cfg.admin.listen)
    site = build_site(ctx)
    web = internet.TCPServer(port, site, interface=host, reactor=reactor)
    web.setName("web")
    web.setServiceParent(top)
    closer.refresher(site.resource).setServiceParent(top)   # the dist index, built off the reactor
    outbox.makeService(cfg, pool, reactor).setServiceParent(top)
    reports.makeService(cfg, pool, reactor).setServiceParent(top)
    return top
