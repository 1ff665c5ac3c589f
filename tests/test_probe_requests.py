"""Probe a mirror now (probes.requests): requests coalesce into one row per mirror, each vantage
serves each request once and at most once per gap, and a running probe service picks one up
within seconds: by its poll on SQLite, by LISTEN/NOTIFY alone on PostgreSQL (its poll set to an
hour there, so only the notification can explain the probe)."""

from __future__ import annotations

import datetime as _dt
import random

import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import reactor

from dnsd.config import Config, DNSConfig, ProbesConfig
from dnsd.db import DBPool
from dnsd.errors import NotFound
from dnsd.models import RETIRED, mirrors, probe_requests, probe_results, vantage_health
from probes import requests
from probes.service import ProbeService
from tests.dns_support import until
from tests.probe_mirrors import FakeMirror, serve
from tests.probe_support import add_mirror
from tests.test_admin_web import AdminWebCase
from tests.test_admin_web import add_mirror as web_add_mirror

T0 = _dt.datetime(2026, 12, 1, 12, 0, 0)


def at(seconds: float) -> _dt.datetime:
    return T0 + _dt.timedelta(seconds=seconds)


def test_requests_coalesce_into_one_row(engine):
    with engine.begin() as c:
        mid = add_mirror(c)
        first = requests.request_probe(c, mid, "admin", "alice", now=at(0))
        assert (first.requests, first.requested_at, first.requested_by) == (1, at(0), "alice")
    with engine.begin() as c:
        for i in range(1, 5):
            last = requests.request_probe(c, mid, "report: slow", "public", now=at(i))
    assert (last.requests, last.requested_at, last.reason) == (5, at(4), "report: slow")
    with engine.begin() as c:                   # a clock behind never moves the request back
        behind = requests.request_probe(c, mid, "admin", "bob", now=at(-30))
    assert (behind.requests, behind.requested_at) == (6, at(4))
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(probe_requests)).scalar() == 1
        assert requests.get(c, mid) == behind


def test_each_vantage_serves_each_request_once_and_once_per_gap(engine):
    with engine.begin() as c:
        mid, other = add_mirror(c), add_mirror(c, name="de2")
        requests.request_probe(c, mid, "admin", "alice", now=at(0))
    gap = 60
    with engine.begin() as c:
        eu = requests.due(c, "eu", at(1), gap)
        assert [r.mirror_id for r in eu] == [mid]            # not the mirror nobody asked for
        requests.claim(c, "eu", eu, at(1))
        assert requests.due(c, "eu", at(2), gap) == []        # served: once per request
        us = requests.due(c, "us", at(2), gap)
        assert [r.mirror_id for r in us] == [mid]            # every vantage serves it
        requests.claim(c, "us", us, at(2))
        requests.request_probe(c, mid, "report: unreachable", "public", now=at(10))
        assert requests.due(c, "eu", at(11), gap) == []       # inside the gap: it waits...
        (waiting,) = requests.due(c, "eu", at(61), gap)        # ...and is served after it
        assert waiting.requested_at == at(10)
        requests.claim(c, "eu", [waiting], at(61))
        assert [(s.vantage, s.requested_at, s.served_at) for s in requests.served(c, mid)] == [
            ("eu", at(10), at(61)), ("us", at(0), at(2))]
        assert other not in [r.mirror_id for r in requests.due(c, "us", at(100), gap)]


def test_retired_and_missing_mirrors_are_refused(engine):
    with engine.begin() as c:
        mid = add_mirror(c, status=RETIRED)
        with pytest.raises(NotFound, match="retired"):
            requests.request_probe(c, mid, "admin", "alice", now=at(0))
        with pytest.raises(NotFound, match="No such mirror"):
            requests.request_probe(c, mid + 100, "admin", "alice", now=at(0))
    with engine.begin() as c:                 # a mirror retired after its request: not probed
        live = add_mirror(c, name="de2")
        requests.request_probe(c, live, "admin", "alice", now=at(0))
        c.execute(mirrors.update().where(mirrors.c.id == live).values(status=RETIRED))
        assert requests.due(c, "eu", at(1), 0) == []


def test_old_requests_expire(engine):
    with engine.begin() as c:
        old, new = add_mirror(c), add_mirror(c, name="de2")
        requests.request_probe(c, old, "admin", "alice", now=at(0))
        requests.claim(c, "eu", requests.due(c, "eu", at(1), 0), at(1))
        requests.request_probe(c, new, "admin", "alice", now=at(86400))
        assert requests.expire(c, at(86400 + 2)) == 1
        assert requests.get(c, old) is None and requests.served(c, old) == []
        assert requests.get(c, new) is not None


def _cfg(vantage: str, *, poll: float, gap: float) -> Config:
    return Config(dns=DNSConfig(zone="mirrors.example.org"),
                  probes=ProbesConfig(interval=3600, timeout=2, connect_timeout=1,
                                      allow_private=True, stats_interval=3600, vantage=vantage,
                                      not_found_check=False, request_poll=poll,
                                      request_gap=gap))


class NoJitter(random.Random):
    """The cycle's first probe at once, not somewhere in its hour-long slot."""

    def uniform(self, a, b):
        return a


def _results(engine, mid) -> list[str]:
    with engine.connect() as c:
        return [v for (v,) in c.execute(sa.select(probe_results.c.vantage).where(
            probe_results.c.mirror_id == mid).order_by(probe_results.c.id))]


@pytest_twisted.ensureDeferred
async def test_a_running_probe_service_serves_a_request_within_seconds(engine):
    """Two vantages probe every hour; a request made after their first cycle is probed once from
    each (five requests at once: still once), within seconds, counted like any probe but not in
    the cycle's share; a further request inside the gap waits."""
    pg = engine.dialect.name == "postgresql"
    fake = FakeMirror("fresh")
    port = serve(fake, "127.0.1.21")
    with engine.begin() as c:
        mid = add_mirror(c, ipv4="127.0.1.21",
                         http_url=f"http://de1.example.net:{port.getHost().port}/pub/")
    pool = DBPool(engine, reactor, 2)
    # On PostgreSQL the poll is an hour: only the NOTIFY can bring the request in time.
    poll = 3600 if pg else 0.2
    nodes = [ProbeService(_cfg(v, poll=poll, gap=3600), pool, reactor, rng=NoJitter())
             for v in ("eu", "us")]
    for n in nodes:
        n.startService()
    try:
        await until(lambda: sorted(_results(engine, mid)) == ["eu", "us"], timeout=15)
        if pg:
            await until(lambda: all(n.listener.listening for n in nodes), timeout=10)
        fetched = len(fake.requests)             # what one probe from each vantage fetches
        with engine.connect() as c:
            passed_before = dict(c.execute(sa.select(vantage_health.c.vantage,
                                                     vantage_health.c.passes_in_row)).all())
        with engine.begin() as c:
            for _ in range(5):
                requests.request_probe(c, mid, "admin", "alice")
        await until(lambda: sorted(_results(engine, mid)) == ["eu", "eu", "us", "us"],
                    timeout=10)
        assert [n.on_request_probes for n in nodes] == [1, 1]
        await until(lambda: not any(n._on_request for n in nodes), timeout=5)
        with engine.connect() as c:
            passed = dict(c.execute(sa.select(vantage_health.c.vantage,
                                              vantage_health.c.passes_in_row)).all())
            share = dict(c.execute(sa.text("SELECT name, cycle_total FROM vantages")).all())
        assert passed == {v: passed_before[v] + 1 for v in ("eu", "us")}   # counted
        assert share == {"eu": 0, "us": 0}              # not in the cycle's share
        assert len(fake.requests) == 2 * fetched         # one more probe each, no more
        with engine.begin() as c:                      # inside the gap: served later, not now
            requests.request_probe(c, mid, "admin", "alice")
        for n in nodes:
            await n.serve_requests()
        assert [n.on_request_probes for n in nodes] == [1, 1]
    finally:
        for n in nodes:
            await n.stopService()
        fake.stop()
        await port.stopListening()
        pool.stop()


class ProbeNowButtonTests(AdminWebCase):
    """The admin's "Probe now" on the mirror page: CSRF, admins only, one request row."""

    def setUp(self):
        super().setUp()
        self.m = web_add_mirror(self.engine)
        self.url = f"/admin/mirrors/{self.m.id}"

    def _rows(self):
        return [tuple(r) for r in self.q(sa.select(probe_requests.c.mirror_id,
                                                   probe_requests.c.requested_by,
                                                   probe_requests.c.requests))]

    def test_admin_requests_a_probe(self):
        csrf = self.login()
        _, body = self.get(self.url)
        self.assertIn(f'action="{self.url}/probe"', body)
        r, _ = self.post(self.url + "/probe", {"csrf": csrf})
        self.assertEqual(r.code, 303)
        self.assertEqual(r.headers.getRawHeaders("location"), [self.url + "?done=probe"])
        self.post(self.url + "/probe", {"csrf": csrf})
        self.assertEqual(self._rows(), [(self.m.id, "alice", 2)])      # coalesced
        _, body = self.get(self.url + "?done=probe")
        self.assertIn("Probe requested: every probe node probes this mirror", body)
        self.assertIn("2 requests in one", body)
        self.assertIn("no probe node has served it yet", body)

    def test_without_csrf_nothing_is_requested(self):
        self.login()
        r, body = self.post(self.url + "/probe", {"csrf": "forged"})
        self.assertEqual(r.code, 403)
        self.assertIn("did not come from this site", body)
        self.assertEqual(self._rows(), [])

    def test_a_helper_cannot_request_a_probe(self):
        csrf = self.login("hugo")
        r, _ = self.post(self.url + "/probe", {"csrf": csrf})
        self.assertEqual(r.code, 403)
        _, body = self.get(self.url)
        self.assertNotIn("/probe", body)                          # hidden from helpers
        self.assertEqual(self._rows(), [])

    def test_a_retired_mirror_is_refused_by_the_page(self):
        with self.engine.begin() as conn:
            conn.execute(mirrors.update().values(status=RETIRED))
        csrf = self.login()
        r, body = self.post(self.url + "/probe", {"csrf": csrf})
        self.assertEqual(r.code, 409)
        self.assertIn("A retired mirror is not probed.", body)
        self.assertEqual(self._rows(), [])
