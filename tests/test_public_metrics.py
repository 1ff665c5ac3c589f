"""/metrics over HTTP (StubTreq): table gauges, dnsd's collector passed through, the per-scrape
cache on the Clock, who may read it, and the [admin] metrics switch."""

from __future__ import annotations

import datetime as _dt

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource

from admin import store
from admin.web import metrics
from dnsd.models import applications, mirror_health, mirrors, outbox, probe_results
from dnsd.outbox import queue_mail
from dnsd.plan import build_plan, load_rows
from tests.webfakes import T0, make_ctx

URL = "http://admin.test/metrics"


class PlanHolder:
    def __init__(self, plan):
        self.current = plan


def samples(text: str) -> dict:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class MetricsTests(SynchronousTestCase):
    config = ""

    @pytest.fixture(autouse=True)
    def _engine(self, sqlite_engine):
        self.engine = sqlite_engine

    def setUp(self):
        with self.engine.begin() as conn:
            for cc, host, kw in (("DE", "a.example.de", {}), ("FR", "b.example.fr", {}),
                                 ("US", "c.example.us", {"status": "pending"})):
                store.add_mirror(conn, actor="t", mail=None, country=cc, hostname=host,
                                 http_url=f"http://{host}/", **kw)
            ids = dict(conn.execute(sa.select(mirrors.c.name, mirrors.c.id)).all())
            conn.execute(mirror_health.insert().values(
                mirror_id=ids["de1"], failures_in_row=0, last_probe_at=T0, last_ok_at=T0,
                last_sync_at=T0 - _dt.timedelta(minutes=30), ipv4_up=True, ipv6_up=False,
                probed_ipv4="93.184.216.34", probed_ipv6="2606:2800:220:1::1"))
            conn.execute(mirror_health.insert().values(
                mirror_id=ids["fr1"], failures_in_row=4, last_probe_at=T0, last_ok_at=None,
                last_error="timeout"))
            for ok, err, ago in ((True, "", 5), (True, "", 10), (False, "timeout", 20),
                                 (False, "timeout", 90)):
                conn.execute(probe_results.insert().values(
                    mirror_id=ids["de1"], at=T0 - _dt.timedelta(minutes=ago),
                    url="http://a.example.de/TIME", ok=ok, error_class=err))
            for i in range(3):
                queue_mail(conn, kind="t", sender="m@example.org", to=["x@example.org"],
                           subject="s", body="b")
            conn.execute(outbox.update().where(outbox.c.id == 1)
                         .values(created_at=T0 - _dt.timedelta(minutes=10)))
            conn.execute(outbox.update().where(outbox.c.id == 2).values(failed=True))
            conn.execute(outbox.update().where(outbox.c.id == 3).values(sent_at=T0))
            conn.execute(applications.insert().values(token="t" * 30, name="A", country="DE",
                                                      email="a@example.org"))
            self.ids = ids
        self.registry = CollectorRegistry()
        self.queries = Counter("dnsd_queries", "test stand-in for dnsd's collector",
                               ["qtype"], registry=self.registry)
        self.queries.labels("A").inc(7)
        self.ctx = make_ctx(self.engine, self.config)
        self.root = resource.Resource()
        self.root.putChild(b"metrics", metrics.build(self.ctx, self.registry))
        self.stub = StubTreq(self.root)

    def scrape(self, headers=None):
        r = self.successResultOf(self.stub.get(URL, headers=headers or {}))
        return r, self.successResultOf(r.text())

    def test_gauges(self):
        r, text = self.scrape()
        assert r.code == 200
        assert r.headers.getRawHeaders("content-type")[0].startswith("text/plain; version=")
        s = samples(text)
        assert s[("mirrordns_mirrors", (("status", "active"),))] == 2
        assert s[("mirrordns_mirrors", (("status", "pending"),))] == 1
        assert s[("mirrordns_mirrors", (("status", "retired"),))] == 0
        assert s[("mirrordns_mirror_up", (("country", "DE"), ("mirror", "de1")))] == 1
        assert s[("mirrordns_mirror_up", (("country", "FR"), ("mirror", "fr1")))] == 0
        assert not any(k[0] == "mirrordns_mirror_up" and ("mirror", "us1") in k[1] for k in s)
        assert s[("mirrordns_mirror_family_up", (("family", "ipv6"), ("mirror", "de1")))] == 0
        assert s[("mirrordns_mirror_sync_age_seconds", (("mirror", "de1"),))] == 1800
        assert s[("mirrordns_probe_results_last_hour",
                  (("error_class", ""), ("outcome", "ok")))] == 2
        assert s[("mirrordns_probe_results_last_hour",
                  (("error_class", "timeout"), ("outcome", "fail")))] == 1   # 90 min ago: out
        assert s[("mirrordns_outbox_pending", ())] == 1
        assert s[("mirrordns_outbox_failed", ())] == 1
        assert s[("mirrordns_outbox_oldest_pending_seconds", ())] == 600
        assert s[("mirrordns_waiting_applications", ())] == 1
        assert s[("dnsd_queries_total", (("qtype", "A"),))] == 7              # passed through
        # without a live plan: the verdict of a plan built from the same read
        assert s[("mirrordns_mirror_serving", (("country", "DE"), ("mirror", "de1")))] == 1
        assert s[("mirrordns_mirror_serving", (("country", "FR"), ("mirror", "fr1")))] == 0
        assert s[("mirrordns_mirrors_serving", ())] == 1

    def test_serving_from_live_plan(self):
        with self.engine.connect() as conn:
            self.ctx.plan = PlanHolder(build_plan(load_rows(conn), self.ctx.cfg, T0))
        s = samples(self.scrape()[1])
        assert s[("mirrordns_mirror_serving", (("country", "DE"), ("mirror", "de1")))] == 1
        assert s[("mirrordns_mirror_serving", (("country", "FR"), ("mirror", "fr1")))] == 0
        assert s[("mirrordns_mirror_serving", (("country", "US"), ("mirror", "us1")))] == 0

    def test_cached_per_scrape_window(self):
        self.scrape()
        with self.engine.begin() as conn:
            conn.execute(outbox.update().values(sent_at=None, failed=False))
        self.ctx.clock.advance(metrics.CACHE_SECONDS - 1)
        assert samples(self.scrape()[1])[("mirrordns_outbox_pending", ())] == 1
        self.queries.labels("A").inc()                    # in-memory metrics are always live
        assert samples(self.scrape()[1])[("dnsd_queries_total", (("qtype", "A"),))] == 8
        self.ctx.clock.advance(1)
        assert samples(self.scrape()[1])[("mirrordns_outbox_pending", ())] == 3


class ProxiedMetricsTests(MetricsTests):
    config = '[admin]\ntrusted_proxies = ["127.0.0.1"]\n'

    def test_only_allowed_clients(self):
        r, _ = self.scrape({"X-Forwarded-For": "192.0.2.1"})   # a visitor behind the proxy
        assert r.code == 403
        r, _ = self.scrape({"X-Forwarded-For": "127.0.0.1"})
        assert r.code == 200


def test_switch_and_real_dns_collector(sqlite_engine):
    """[admin] metrics = false leaves /metrics out; on, dnsd's real collector shows through."""
    from admin.web import build_root
    from dnsd.answer import Stats
    from dnsd.metrics import DNSCollector

    class Answerer:
        stats = Stats()
        stats.by_type_rcode = {(1, 0): 5}
        stats.by_country = {"DE": 5}
        rrl = None

    class Holder:
        version, build_seconds, db_ok, source = 3, 0.01, True, "database"
        current = build_plan({"version": 3, "mirrors": []}, make_ctx(sqlite_engine).cfg, T0)

        def age(self):
            return 2.0

        def data_age(self):
            return 2.5

    reg = CollectorRegistry()
    reg.register(DNSCollector(Answerer(), Holder()))
    ctx = make_ctx(sqlite_engine)
    ctx.metrics_registry = reg
    stub = StubTreq(build_root(ctx))
    from twisted.internet import defer

    def get(stub):
        out = []
        d = defer.ensureDeferred(_get(stub))
        d.addBoth(out.append)
        return out[0]

    async def _get(stub):
        r = await stub.get(URL)
        return r.code, await r.text()

    code, text = get(stub)
    assert code == 200
    s = samples(text)
    assert s[("dnsd_queries_total", (("qtype", "A"), ("rcode", "NOERROR")))] == 5
    assert s[("dnsd_plan_age_seconds", ())] == 2.0
    assert s[("dnsd_plan_source", (("source", "database"),))] == 1
    assert s[("dnsd_plan_data_age_seconds", ())] == 2.5
    off = make_ctx(sqlite_engine, "[admin]\nmetrics = false\n")
    code, _ = get(StubTreq(build_root(off)))
    assert code == 404


def test_snapshot_query_on_every_database(engine):
    """The table gauges' one query is plain portable SQL (SQLite and PostgreSQL)."""
    with engine.begin() as conn:
        store.add_mirror(conn, actor="t", mail=None, country="DE", hostname="a.example.de",
                         http_url="http://a.example.de/")
        queue_mail(conn, kind="t", sender="m@example.org", to=["x@example.org"], subject="s",
                   body="b")
        conn.execute(probe_results.insert().values(mirror_id=1, at=T0, url="u", ok=False,
                                                   error_class="dns"))
    with engine.connect() as conn:
        snap = metrics.snapshot_thd(make_ctx(engine), T0)(conn)
    assert snap["by_status"]["active"] == 1 and snap["outbox_pending"] == 1
    assert sum(snap["by_status"].values()) == 1 and snap["plan"].serving == ()
    assert snap["outcomes"] == [(False, "dns", 1)] and snap["waiting"] == 0
