"""What the pages show after a change is what the DNS answers: admin.web.plans.change waits until
the live plan holds the change's version (dnsd.service.PlanHolder.wait_for), and the DNS service
refreshes at once when asked (PlanHolder.kick) instead of at its next poll."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import Clock

from admin import store
from admin.web import plans
from dnsd import models
from dnsd.config import parse_config
from dnsd.db import DBPool
from dnsd.plan import build_plan, empty_plan, load_rows
from dnsd.service import DNSService, PlanHolder
from tests.helpers import free_port
from tests.webfakes import T0, make_ctx

CFG = parse_config("[probes]\nenabled = false\n")


def test_wait_for_fires_when_the_version_arrives_or_gives_up():
    clock = Clock()
    h = PlanHolder(build_plan({"version": 3, "mirrors": []}, CFG, T0))
    assert h.wait_for(3, clock, 2.0).result is True            # already there
    assert h.wait_for(9, clock, 2.0).result is False           # nobody refreshes this plan
    kicked = []
    h.kick = lambda: kicked.append(1)
    d = h.wait_for(5, clock, 2.0)
    assert kicked and not d.called
    h.installed(build_plan({"version": 4, "mirrors": []}, CFG, T0))
    assert not d.called                                        # not yet the change
    h.installed(build_plan({"version": 5, "mirrors": []}, CFG, T0))
    assert d.result is True and not clock.getDelayedCalls()
    late = h.wait_for(7, clock, 2.0)
    clock.advance(2.0)
    assert late.result is False and h._waiters == []


def test_a_page_after_a_disable_never_says_serving(sqlite_engine):
    """The change returns only once the plan that answers has it."""
    with sqlite_engine.begin() as conn:
        store.add_mirror(conn, actor="t", mail=None, country="DE", hostname="a.example.de",
                         http_url="http://a.example.de/", ipv4="93.184.216.34")
    ctx = make_ctx(sqlite_engine, "[probes]\nenabled = false\n")

    def rebuild():
        with sqlite_engine.connect() as conn:
            holder.installed(build_plan(load_rows(conn), ctx.cfg, T0))
    holder = PlanHolder(empty_plan(ctx.cfg))
    rebuild()
    holder.kick = rebuild            # as the DNS service's refresh would, at once
    ctx.plan = holder
    assert holder.current.by_id[1].serving
    d = defer.ensureDeferred(plans.change(ctx, lambda conn: store.disable(
        conn, "de1", "alice", "moving", None)))
    assert d.called and not holder.current.by_id[1].serving
    assert holder.current.by_id[1].reason == "disabled by admin: moving"


@pytest_twisted.ensureDeferred
async def test_the_dns_service_refreshes_when_kicked(tmp_path):
    from dnsd.db import make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path}/m.sqlite")
    upgrade(engine)
    port = free_port()
    cfg = parse_config(f'[dns]\nlisten = ["127.0.0.1:{port}"]\npoll_interval = 3600\n'
                       'snapshot_dir = ""\n'
                       f'zone_file = "{tmp_path}/zone"\n[probes]\nenabled = false\n')
    (tmp_path / "zone").write_text("$ORIGIN mirrors.example.org.\n$TTL 300\n"
                                   "@ SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ NS ns1\n"
                                   "ns1 A 192.0.2.53\n")
    pool = DBPool(engine, reactor, 1)
    svc = DNSService(cfg, pool, reactor, spawn_workers=False)
    svc.startService()
    try:
        await svc.refresh()                          # the first plan (the poll would, later)
        with engine.begin() as conn:
            store.add_mirror(conn, actor="t", mail=None, country="DE",
                             hostname="a.example.de", http_url="http://a.example.de/",
                             ipv4="93.184.216.34")
            v = models.current_version(conn)
        # a poll an hour away: only the kick can bring the plan up to date in time
        assert await svc.plan.wait_for(v, reactor, 10.0) is True
        assert svc.plan.current.by_id[1].serving
    finally:
        await svc.stopService()
        pool.stop()
        engine.dispose()
