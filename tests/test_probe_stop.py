"""Stopping the probe loop: in-flight probes cancelled and not recorded, complete results written
before the pool closes, nothing left running. Clock-driven; the SIGTERM test of a real node under
load (probes resolving host names on a dead resolver) is in tests/test_vantages.py."""

from __future__ import annotations

import gc
import random

import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogLevel, capturedLogs

from dnsd.db import DBPool, DBPoolService
from dnsd.models import probe_results
from probes.probe import Prober, Target
from probes.service import ProbeService
from tests.probe_support import ScriptedProber, SyncPool, add_mirror, health_of
from tests.test_probe_verdicts import INTERVAL, START, make_cfg


class HangingProber:
    """Mirrors in `hang` never answer; a cancel makes them fail the way the real Prober's
    fetches do (a 'timeout' result), which must still not be recorded."""

    def __init__(self, clock, hang):
        self.inner, self.hang, self.cancelled = ScriptedProber(clock, {}), hang, []

    def probe(self, t):
        if t.mirror_id not in self.hang:
            return self.inner.probe(t)
        d = defer.Deferred(lambda d: (self.cancelled.append(t.mirror_id),
                                      d.callback(self.inner.probe(t).result)))
        return d


def results(engine):
    with engine.connect() as c:
        return sorted(c.execute(sa.select(probe_results.c.mirror_id)).scalars())


def test_stop_cancels_probes_in_flight_and_writes_what_was_complete(sqlite_engine):
    clock = Clock()
    clock.advance(START)
    with sqlite_engine.begin() as c:
        ids = [add_mirror(c, name=f"de{i + 1}") for i in range(6)]
    prober = HangingProber(clock, hang=set(ids[:2]))
    svc = ProbeService(make_cfg(concurrency=10), SyncPool(sqlite_engine), clock, prober=prober,
                       rng=random.Random(3), batch_delay=30)
    svc.startService()
    clock.pump([1] * (INTERVAL // 2))          # half the mirrors started, none written yet
    answered = len(prober.inner.calls)
    started = answered + 2
    assert results(sqlite_engine) == [] and 2 < started < 6
    with capturedLogs() as events:
        stopped = svc.stopService()
    assert stopped.called                     # no waiting for the hanging probes' timeouts
    assert sorted(prober.cancelled) == ids[:2]
    written = results(sqlite_engine)
    assert len(written) == started - 2 and not set(written) & set(ids[:2])
    for mid in ids[:2]:                       # the cut-short probes count as nothing at all
        assert health_of(sqlite_engine, mid) is None
    assert svc.dropped == 2 and not svc._inflight
    assert not [e for e in events if e["log_level"] >= LogLevel.error]
    clock.pump([1] * INTERVAL * 2)            # nothing started after the stop
    assert results(sqlite_engine) == written
    assert len(prober.inner.calls) == answered + 2    # only the two cancels' own answers


@pytest_twisted.ensureDeferred
async def test_the_pool_closes_only_after_the_last_batch(sqlite_engine):
    """The node's tree as the tac builds it: the probe service under the pool's service."""
    with sqlite_engine.begin() as c:
        ids = [add_mirror(c, name=f"de{i + 1}") for i in range(3)]
    pool = DBPool(sqlite_engine, reactor, 1)
    node = DBPoolService(pool)
    svc = ProbeService(make_cfg(interval=1), pool, reactor, rng=random.Random(1),
                       prober=ScriptedProber(reactor, {}), batch_delay=60)
    svc.setServiceParent(node)
    node.startService()
    while len(svc._pending) < 3:              # all three probed, their batch not written yet
        await deferLater(reactor, 0.02, lambda: None)
    await node.stopService()
    assert results(sqlite_engine) == ids and not pool._started


@pytest_twisted.ensureDeferred
async def test_a_real_probe_resolving_a_host_name_is_cut_short_at_once(sqlite_engine):
    """getaddrinfo cannot be cancelled: the probe gives it up, and its daemon thread is left to
    finish alone, so neither the probe nor the reactor's own thread pool waits for it."""
    import threading

    release = threading.Event()

    class StuckResolver:                      # a getaddrinfo that hangs on a dead resolver
        def resolveHostName(self, receiver, host, portNumber=0, **kw):
            threading.Thread(target=release.wait, daemon=True).start()
            receiver.resolutionBegan(None)
            return receiver

    cfg = make_cfg(timeout=30.0, connect_timeout=30.0, allow_private=True)
    prober = Prober(cfg, reactor, resolver=StuckResolver())
    d = prober.probe(Target(mirror_id=1, hostname="stuck.example.net",
                            http_url="http://stuck.example.net/"))
    await deferLater(reactor, 0.1, lambda: None)
    assert not d.called
    with capturedLogs() as events:
        d.cancel()
        try:
            r = await d
        except defer.CancelledError:
            r = None
        gc.collect()                          # an unhandled error would be logged here
    release.set()
    assert r is None or not r.ok              # whatever it says, the loop drops it (above)
    assert not [e for e in events if e["log_level"] >= LogLevel.error]
