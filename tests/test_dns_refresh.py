"""The plan refresher on a Clock: rebuild on version change or age, keep the plan when the table
is unreachable, tell a broken build from a broken database. The table is a real SQLite file; the
pool runs `thd(conn)` inline so each step is synchronous."""

from __future__ import annotations

import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from dnsd import models
from dnsd.db import make_engine
from dnsd.geo import GeoLocator
from dnsd.service import DNSService
from tests.dns_support import make_env


class InlinePool:
    def __init__(self, engine):
        self.engine = engine
        self.broken = False

    def run_readonly(self, thd):
        if self.broken:
            return defer.fail(sa.exc.OperationalError("select", {}, Exception("unable to open")))
        with self.engine.connect() as conn:
            return defer.succeed(thd(conn))


def service(tmp_path, test_mmdb):
    cfg, _port = make_env(tmp_path, test_mmdb)
    engine = make_engine(cfg.database.url)
    pool = InlinePool(engine)
    svc = DNSService(cfg, pool, Clock(), geo=GeoLocator(test_mmdb),
                     registry=CollectorRegistry())
    svc._in_thread = lambda f, *a: defer.maybeDeferred(f, *a)
    return svc, pool, engine


def bump(engine):
    with engine.begin() as conn:
        return models.bump_version(conn)


def test_rebuilds_only_when_version_moves_or_plan_is_old(tmp_path, test_mmdb):
    svc, _pool, engine = service(tmp_path, test_mmdb)
    assert svc.plan.table is None and svc.answerer.table.no_plan     # the static zone only
    svc.refresh()
    v = svc.plan.version
    assert svc.plan.builds == 1 and svc.answerer.table is not None and v > 0
    svc.refresh()
    assert svc.plan.builds == 1                       # nothing moved
    assert bump(engine) == v + 1
    svc.refresh()
    assert svc.plan.builds == 2 and svc.plan.version == v + 1
    assert svc.answerer.table.version == v + 1
    svc.reactor.advance(svc.cfg.dns.rebuild_interval)
    svc.refresh()
    assert svc.plan.builds == 3                       # old enough: sync ages move


def test_unreachable_database_keeps_the_plan_and_logs_once_a_minute(tmp_path, test_mmdb):
    svc, pool, engine = service(tmp_path, test_mmdb)
    svc.refresh()
    table, version = svc.answerer.table, svc.plan.version
    pool.broken = True
    with capturedLogs() as events:
        svc.refresh()
        svc.reactor.advance(1)
        svc.refresh()
    errors = [e for e in events if e["log_level"] == LogLevel.error]
    assert len(errors) == 1 and "dns_db_unreachable" in errors[0]["log_format"]
    assert "unable to open" in svc.plan.last_error
    assert svc.answerer.table is table and svc.plan.version == version and not svc.plan.db_ok
    with capturedLogs() as events:
        svc.reactor.advance(60)
        svc.refresh()
    assert len([e for e in events if e["log_level"] == LogLevel.error]) == 1
    pool.broken = False
    bump(engine)
    with capturedLogs() as events:
        svc.refresh()
    assert svc.plan.db_ok and svc.plan.version == version + 1
    assert any("dns_db_back" in e["log_format"] for e in events)


def test_a_failing_build_is_not_a_database_problem(tmp_path, test_mmdb):
    svc, _pool, engine = service(tmp_path, test_mmdb)
    svc.refresh()
    table = svc.answerer.table

    def broken(rows):
        raise RuntimeError("bug in the plan builder")

    svc.build = broken
    bump(engine)
    with capturedLogs() as events:
        svc.refresh()
    assert svc.plan.db_ok and svc.answerer.table is table
    assert any("plan build failed" in e["log_format"] for e in events)
