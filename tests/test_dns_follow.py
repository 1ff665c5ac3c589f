"""Following the table: NOTIFY on PostgreSQL (a dedicated connection off the reactor thread),
refreshes that never overlap, and never back to an older version. The three-node test with
real processes is in tests/test_cluster.py."""

from __future__ import annotations

import time

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import defer, reactor
from twisted.logger import capturedLogs

from dnsd import models
from dnsd.follow import VersionListener
from tests.dns_support import until
from tests.test_dns_refresh import bump, service


def set_version(engine, v):
    with engine.begin() as conn:
        conn.execute(models.table_version.update().values(version=v))


def test_a_node_never_moves_back_to_an_older_version(tmp_path, test_mmdb):
    svc, _pool, engine = service(tmp_path, test_mmdb)
    svc.refresh()
    v = svc.plan.version
    table = svc.answerer.table
    set_version(engine, v - 1)              # a replica that lags behind the one read before
    with capturedLogs() as events:
        svc.refresh()
        svc.refresh()
        svc.reactor.advance(svc.cfg.dns.rebuild_interval)
        svc.refresh()                       # not even the periodic rebuild takes the old data
    assert svc.plan.version == v and svc.answerer.table is table and svc.plan.builds == 1
    behind = [e for e in events if "dns_version_behind" in e["log_format"]]
    assert len(behind) == 2                 # said at once, then once a minute
    assert behind[0]["version"] == v - 1 and behind[0]["newest"] == v
    set_version(engine, v + 1)
    svc.refresh()
    assert svc.plan.version == v + 1


class HeldPool:
    """Reads that wait until the test releases them, to overlap refreshes."""

    def __init__(self, inner):
        self.inner, self.held = inner, []

    def run_readonly(self, thd):
        d = defer.Deferred()
        self.held.append((d, thd))
        return d

    def release(self):
        d, thd = self.held.pop(0)
        self.inner.run_readonly(thd).chainDeferred(d)


def test_refreshes_never_overlap_and_a_refresh_asked_meanwhile_follows(tmp_path, test_mmdb):
    svc, inner, engine = service(tmp_path, test_mmdb)
    pool = svc.pool = HeldPool(inner)
    svc.refresh()
    svc._notified(None)                   # a notification while the poll is reading ...
    svc._notified(None)
    assert len(pool.held) == 1            # ... does not start a second read
    pool.release()                        # version
    pool.release()                        # rows: plan 1 is in
    assert svc.plan.builds == 1 and len(pool.held) == 1   # one more refresh for the two asks
    bump(engine)
    pool.release()
    pool.release()
    assert svc.plan.builds == 2 and pool.held == []
    svc._notified(svc.plan.version)       # an echo of what it has: nothing to do
    assert pool.held == []


def pg_only(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite nodes follow by polling")


@pytest_twisted.ensureDeferred
async def test_notify_reaches_a_listener_at_commit_only(engine):
    pg_only(engine)
    seen = []
    listener = VersionListener(engine, reactor, seen.append, wait=0.2)
    listener.startService()
    try:
        await until(lambda: listener.listening and seen == [None], timeout=10)
        try:
            with engine.begin() as conn:
                models.bump_version(conn)
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        with engine.begin() as conn:
            v = models.bump_version(conn)
        t0 = time.monotonic()
        await until(lambda: v in seen, timeout=5)
        assert time.monotonic() - t0 < 2
        assert seen == [None, v]          # the rolled-back bump said nothing
    finally:
        await listener.stopService()
    assert not listener._thread.is_alive()


@pytest_twisted.ensureDeferred
async def test_a_listener_without_a_server_says_so_and_stops_at_once(engine):
    pg_only(engine)
    bad = sa.create_engine(engine.url.set(port=1, host="127.0.0.1"))
    listener = VersionListener(bad, reactor, lambda v: None, wait=0.2, retry_max=0.5)
    with capturedLogs() as events:
        listener.startService()
        await until(lambda: any("dns_notify_unavailable" in e["log_format"] for e in events),
                    timeout=10)
        t0 = time.monotonic()
        await listener.stopService()
    assert time.monotonic() - t0 < 2 and not listener.listening
