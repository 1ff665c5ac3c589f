"""/metrics on the admin listener, in the Prometheus text format (prometheus_client).

What it shows: the process registry, where dnsd.metrics registers the DNS collector (dnsd_queries_total,
dnsd_plan_age_seconds, ...: the DNS service runs in this process), and gauges computed from the
table: mirrors per status, per-mirror probe state (up, per family, sync age), whether the live
plan serves each mirror, probe outcomes of the last hour, outbox depth and the waiting list.

The table gauges are read per scrape with one `pool.run_readonly` (off the reactor thread) and cached
for a few seconds on ctx.clock, then `generate_latest` runs over in-memory values only, so a scrape
never blocks the reactor and a scrape storm costs one query per CACHE_SECONDS. No service lifecycle
is needed (no timer to start or stop).

Who may read it: the listener is loopback by default ([admin] listen), and on top of that only
client addresses in [admin] metrics_allow (default loopback), judged by `client_ip`, so a public
reverse proxy in front of the admin does not publish the metrics by accident.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.logger import Logger

from admin.waitinglist import WAITING
from admin.web.clients import client_ip
from admin.web.framework import HTTPError, Response, Router, WebContext
from dnsd.models import STATUSES, applications, mirror_health, mirrors, outbox, probe_results

_log = Logger(namespace="admin.web.metrics")

CACHE_SECONDS = 5.0
PROBE_WINDOW = _dt.timedelta(hours=1)


def snapshot_thd(now: _dt.datetime):
    """thd: everything the table gauges need, as plain data."""
    def thd(conn):
        m, h = mirrors.c, mirror_health.c
        by_status = dict(conn.execute(sa.select(m.status, sa.func.count()).group_by(m.status))
                         .all())
        per_mirror = [dict(r._mapping) for r in conn.execute(
            sa.select(m.id, m.name, m.country, m.status, h.failures_in_row, h.last_ok_at,
                      h.last_probe_at, h.last_sync_at, h.ipv4_up, h.ipv6_up)
            .select_from(mirrors.outerjoin(mirror_health, h.mirror_id == m.id))
            .where(m.name.is_not(None), m.status != "retired"))]
        p = probe_results.c
        outcomes = [(bool(ok), err or "", int(n)) for ok, err, n in conn.execute(
            sa.select(p.ok, p.error_class, sa.func.count())
            .where(p.at >= now - PROBE_WINDOW).group_by(p.ok, p.error_class))]
        o = outbox.c
        pending = o.sent_at.is_(None) & (o.failed == sa.false())
        out_pending, oldest = conn.execute(
            sa.select(sa.func.count(), sa.func.min(o.created_at)).where(pending)).one()
        out_failed = conn.execute(sa.select(sa.func.count()).where(
            o.sent_at.is_(None), o.failed == sa.true())).scalar()
        waiting = conn.execute(sa.select(sa.func.count()).where(
            applications.c.status.in_(WAITING))).scalar()
        return {"now": now, "by_status": by_status, "mirrors": per_mirror, "outcomes": outcomes,
                "outbox_pending": int(out_pending or 0), "outbox_failed": int(out_failed or 0),
                "outbox_oldest": oldest, "waiting": int(waiting or 0)}
    return thd


class TableCollector:
    """A prometheus collector over the last snapshot (set by MetricsPage before each scrape)."""

    def __init__(self, ctx: WebContext):
        self.ctx = ctx
        self.snap: dict | None = None

    def collect(self):
        s = self.snap
        if s is None:
            return
        now = s["now"]
        g = GaugeMetricFamily("mirrordns_mirrors", "Mirrors in the table by status",
                              labels=["status"])
        for st in STATUSES:
            g.add_metric([st], s["by_status"].get(st, 0))
        yield g

        up = GaugeMetricFamily("mirrordns_mirror_up", "1 when the mirror's last probe passed, "
                               "0 when it is failing (absent until probed)",
                               labels=["mirror", "country"])
        fam = GaugeMetricFamily("mirrordns_mirror_family_up", "Per address family: 1 up, 0 down "
                                "(absent until probed)", labels=["mirror", "family"])
        age = GaugeMetricFamily("mirrordns_mirror_sync_age_seconds", "Age of the mirror's "
                                "timestamp file at the last probe", labels=["mirror"])
        serving = GaugeMetricFamily("mirrordns_mirror_serving", "1 when the live plan names the "
                                    "mirror in answers", labels=["mirror", "country"])
        plan = self._plan()
        for r in s["mirrors"]:
            if r["last_probe_at"] is not None:
                ok = (r["failures_in_row"] or 0) == 0 and r["last_ok_at"] is not None
                up.add_metric([r["name"], r["country"]], 1 if ok else 0)
            for f, col in (("ipv4", "ipv4_up"), ("ipv6", "ipv6_up")):
                if r[col] is not None:
                    fam.add_metric([r["name"], f], 1 if r[col] else 0)
            if r["last_sync_at"] is not None:
                age.add_metric([r["name"]], max(0.0, (now - r["last_sync_at"]).total_seconds()))
            if plan is not None:
                e = plan.by_id.get(r["id"])
                serving.add_metric([r["name"], r["country"]], 1 if e is not None and e.serving
                                   else 0)
        yield up
        yield fam
        yield age
        if plan is not None:
            yield serving

        po = GaugeMetricFamily("mirrordns_probe_results_last_hour", "Probe results of the last "
                               "hour by outcome", labels=["outcome", "error_class"])
        totals: dict[tuple[str, str], int] = {}
        for ok, err, n in s["outcomes"]:
            k = ("ok" if ok else "fail", "" if ok else (err or "other"))
            totals[k] = totals.get(k, 0) + n
        for (outcome, err), n in sorted(totals.items()):
            po.add_metric([outcome, err], n)
        yield po

        yield GaugeMetricFamily("mirrordns_outbox_pending", "Mails waiting to be sent",
                                value=s["outbox_pending"])
        yield GaugeMetricFamily("mirrordns_outbox_failed", "Mails given up after retries",
                                value=s["outbox_failed"])
        oldest = s["outbox_oldest"]
        yield GaugeMetricFamily("mirrordns_outbox_oldest_pending_seconds",
                                "Age of the oldest unsent mail (0 when none)",
                                value=0 if oldest is None else
                                max(0.0, (now - oldest).total_seconds()))
        yield GaugeMetricFamily("mirrordns_waiting_applications",
                                "Mirror offers on the waiting list", value=s["waiting"])

    def _plan(self):
        return getattr(self.ctx.plan, "current", None) if self.ctx.plan is not None else None


class _Forward:
    """Expose another registry's metrics (dnsd's) through ours."""

    def __init__(self, registry):
        self.registry = registry

    def collect(self):
        yield from self.registry.collect()


def process_registry(ctx: WebContext):
    """The registry dnsd registers its collector in (dnsd.metrics.register): ctx.metrics_registry
    when the composition root hands one in, else prometheus_client's global REGISTRY, which also
    carries the process_* and python_* metrics."""
    reg = getattr(ctx, "metrics_registry", None)
    if reg is not None:
        return reg
    from prometheus_client import REGISTRY
    return REGISTRY


class MetricsPage:
    def __init__(self, ctx: WebContext, registry: CollectorRegistry | None = None):
        self.ctx = ctx
        self.table = TableCollector(ctx)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.table)
        self.registry.register(_Forward(registry if registry is not None
                                        else process_registry(ctx)))
        self._fetched_at: float | None = None
        a = ctx.cfg.admin
        self.allow = [ipaddress.ip_network(x, strict=False) for x in a.metrics_allow]

    def _allowed(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in n for n in self.allow)

    async def page(self, request):
        if not self._allowed(client_ip(self.ctx, request)):
            raise HTTPError(403, "metrics are for the monitoring host only")
        t = self.ctx.clock.seconds()
        if self._fetched_at is None or t - self._fetched_at >= CACHE_SECONDS:
            self.table.snap = await self.ctx.pool.run_readonly(snapshot_thd(self.ctx.now()))
            self._fetched_at = t
        return Response(generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST.encode(),
                        headers={b"cache-control": b"no-store"})


def build(ctx: WebContext, registry: CollectorRegistry | None = None) -> Router:
    """The /metrics resource, for admin.web.build_root."""
    r = Router(ctx, errors="text")
    r.add("GET", "", MetricsPage(ctx, registry).page, login=False)
    return r
