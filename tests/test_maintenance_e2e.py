"""A maintenance window end to end: the DNS server answering on 127.0.0.1 (dnspython over UDP),
the probe loop's cycles probing real HTTP mirrors on 127.0.1.x, the table on SQLite and
PostgreSQL.

Time is a Clock the test steps (so each edge is met exactly, not raced): the DNS service builds
its plans at the Clock's time and sets its edge timer on it, the probe loop spreads its probes and
stamps them on it. Everything else is real: sockets, HTTP, the UDP answer thread, the plan
builds on the reactor's thread pool. `Hybrid` is that Clock, with the real reactor behind it for
everything that is not time (listening, connecting, threads).

What it shows: the mirror leaves the answers exactly `ttl` seconds before the window starts, with
no change in the table; while it is down its probes fail and count for nothing (no counters, no
disable, no mail, not in the vantage's share); at the end it stays out while its probes fail, and
comes back once a probe passes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time

import dns.query
import pytest_twisted
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.task import Clock

from admin import store
from dnsd import maintenance, models
from dnsd.config import ProbesConfig
from dnsd.records import vantages as _vantages
from dnsd.service import DNSService
from dnsd.statuses import ACTIVE
from probes.probe import Prober, utc_from_ts
from probes.service import ProbeService
from tests.dns_support import make_env, query, until
from tests.probe_mirrors import FakeMirror, serve
from tests.probe_support import add_mirror, health_of, mails, status_of, version
from tests.webfakes import SyncPool

TTL = 60
INTERVAL, TIMEOUT = 60, 5           # a cycle starts its probes within INTERVAL - TIMEOUT seconds
SPREAD = INTERVAL - TIMEOUT


class Hybrid(Clock):
    """A Clock for time; the real reactor for the rest."""

    def __getattr__(self, name):
        return getattr(reactor, name)


@pytest_twisted.ensureDeferred
async def test_a_window_end_to_end(engine, tmp_path, test_mmdb):
    fakes = [FakeMirror("fresh") for _ in range(3)]
    ports = [serve(f, f"127.0.1.{21 + i}") for i, f in enumerate(fakes)]
    with engine.begin() as conn:
        ids = [add_mirror(conn, name=f"de{i + 1}", ipv4=f"127.0.1.{21 + i}",
                          http_url=f"http://de{i + 1}.example.net:{p.getHost().port}/pub/",
                          emails=(f"ops{i + 1}@example.net",))
               for i, p in enumerate(ports)]
        models.bump_version(conn)
    de1 = ids[0]
    url = str(engine.url.render_as_string(hide_password=False))
    cfg, port = make_env(tmp_path, test_mmdb, f"ttl = {TTL}\nmin_candidates = 1\nanswers = 3\n"
                         "notify = false", db_url=url, table=False)
    cfg = dataclasses.replace(cfg, probes=ProbesConfig(
        interval=INTERVAL, timeout=TIMEOUT, connect_timeout=2, fail_after=3, pass_after=2,
        allow_private=True, stats_interval=3600))
    clock = Hybrid()
    clock.advance(math.ceil(time.time()))
    t0 = utc_from_ts(clock.seconds())

    def now():
        return utc_from_ts(clock.seconds())

    pool = SyncPool(engine)
    dns_svc = DNSService(cfg, pool, clock, registry=CollectorRegistry(), now=now)
    loop = ProbeService(cfg, pool, clock, prober=Prober(cfg, clock), batch_max=1)

    def answered() -> set[str]:
        r = dns.query.udp(query("de.mirrors.test", "A"), "127.0.0.1", port=port, timeout=3)
        return {rd.address for rrset in r.answer for rd in rrset}

    async def cycle():
        """One cycle of the probe loop (what its LoopingCall runs), every probe started
        SPREAD seconds from now."""
        d = loop.run_cycle()
        await until(lambda: len(loop._delayed) == len(ids), timeout=10)
        clock.advance(SPREAD)
        await d

    async def rebuilt_after(builds):
        await until(lambda: dns_svc.plan.builds > builds, timeout=10)

    def raw_since(mid, at):
        with engine.connect() as c:
            return c.execute(sa.select(sa.func.count()).select_from(models.probe_results).where(
                models.probe_results.c.mirror_id == mid, models.probe_results.c.at >= at)
            ).scalar()

    all_three = {"127.0.1.21", "127.0.1.22", "127.0.1.23"}
    dns_svc.startService()
    try:
        await rebuilt_after(0)
        await cycle()                                             # every mirror passes
        await dns_svc.refresh()
        assert answered() == all_three

        start, end = t0 + dt.timedelta(seconds=600), t0 + dt.timedelta(seconds=1200)
        leave = start - dt.timedelta(seconds=TTL)
        with engine.begin() as conn:
            store.plan_maintenance(conn, "de1", "ada", starts_at=start, ends_at=end,
                                   reason="new disks", now=now())
        await dns_svc.refresh()
        v = version(engine)
        assert dns_svc.plan.current.next_change == leave and answered() == all_three

        clock.advance((leave - now()).total_seconds() - 1)          # a second before
        assert answered() == all_three
        builds = dns_svc.plan.builds
        clock.advance(1)                                            # ttl seconds before start
        await rebuilt_after(builds)
        assert now() == leave and answered() == all_three - {"127.0.1.21"}
        assert version(engine) == v                                 # nothing in the table moved

        fakes[0].mode = "500"                                       # the mirror goes down
        builds = dns_svc.plan.builds
        clock.advance((start - now()).total_seconds())
        await rebuilt_after(builds)
        assert dns_svc.plan.current.mirror("de1").maintenance == maintenance.IN
        before, asked = dict(health_of(engine, de1)), len(fakes[0].requests)
        await cycle()                                               # probed during the window
        assert len(fakes[0].requests) > asked                       # it was probed (HTTP 500)
        h = dict(health_of(engine, de1))                            # ... and nothing counted
        assert (h["failures_in_row"], h["last_probe_at"]) == (before["failures_in_row"],
                                                               before["last_probe_at"])
        assert raw_since(de1, start) == 0 and mails(engine) == []
        with engine.connect() as c:
            assert _vantages.get_vantage(c, loop.vantage).last_total == 2   # 2 of 2, not 2 of 3
        assert status_of(engine, de1).status == ACTIVE and version(engine) == v

        builds = dns_svc.plan.builds
        clock.advance((end - now()).total_seconds())                # the end
        await rebuilt_after(builds)
        assert dns_svc.plan.current.mirror("de1").maintenance == maintenance.RETURNING
        await cycle()                                               # still down: stays out
        assert health_of(engine, de1)["failures_in_row"] == 1
        await dns_svc.refresh()
        assert answered() == all_three - {"127.0.1.21"}

        fakes[0].mode = "fresh"                                     # repaired
        await cycle()
        await dns_svc.refresh()
        assert answered() == all_three                              # back after a passed probe
        assert dns_svc.plan.current.mirror("de1").maintenance == ""
        assert raw_since(de1, end) == 2 and mails(engine) == []
    finally:
        d = dns_svc.stopService()
        clock.advance(0)
        await d
        for p in ports:
            await p.stopListening()
