"""/metrics on the admin listener, in the Prometheus text format (prometheus_client).

What it shows: the process registry, where dnsd.metrics registers the DNS collector (dnsd_queries_total,
dnsd_plan_age_seconds, ...: the DNS service runs in this process), and gauges computed from the
table: mirrors per status, per-mirror probe state (up, per family, sync age), maintenance
windows (the phase a mirror is in, the next start), whether the plan that answers serves each
mirror (dnsd.serving's verdict: the live plan, else one built from the
same read), probe outcomes of the last hour, outbox depth and the waiting list.

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

from admin.web import plans
from admin.web.clients import client_ip
from admin.web.framework import HTTPError, Response, Router, WebContext
from dnsd import outbox, serving, statuses
from dnsd.models import STATUSES, probe_results
from dnsd.records import applications as _apps
from dnsd.records import health as _health
from dnsd.records import mirrors as _mirrors

_log = Logger(namespace="admin.web.metrics")

CACHE_SECONDS = 5.0
PROBE_WINDOW = _dt.timedelta(hours=1)


def snapshot_thd(ctx, now: _dt.datetime):
    """thd: everything the table gauges need, as plain data (and the plan they are judged by)."""
    def thd(conn):
        plan = plans.built_here(ctx, conn)
        ms = [m for m in _mirrors.select(conn) if m.name and m.status != statuses.RETIRED]
        health = _health.of(conn, [m.id for m in ms])
        p = probe_results.c
        outcomes = [(bool(ok), err or "", int(n)) for ok, err, n in conn.execute(
            sa.select(p.ok, p.error_class, sa.func.count())
            .where(p.at >= now - PROBE_WINDOW).group_by(p.ok, p.error_class))]
        counts = outbox.counts(conn)
        waiting = sum(_apps.waiting_by_country(conn, statuses.WAITING).values())
        return {"now": now, "by_status": _mirrors.counts_by_status(conn), "plan": plan,
                "mirrors": [(m, health.get(m.id, _health.NEVER)) for m in ms],
                "outcomes": outcomes,
                "outbox_pending": counts[statuses.MAIL_PENDING],
                "outbox_failed": counts[statuses.MAIL_FAILED],
                "outbox_oldest": outbox.oldest_pending(conn), "waiting": int(waiting)}
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
        srv = GaugeMetricFamily("mirrordns_mirror_serving", "1 when the DNS answers with the "
                                "mirror (the plan's verdict), 0 when not", labels=["mirror",
                                                                                   "country"])
        mt = GaugeMetricFamily("mirrordns_mirror_maintenance", "1 while a maintenance window "
                               "keeps the mirror out of the DNS answers, by phase (leaving: the "
                               "TTL before the start; maintenance; returning: ended, waiting for "
                               "a passed probe); absent otherwise",
                               labels=["mirror", "country", "phase"])
        nxt = GaugeMetricFamily("mirrordns_mirror_maintenance_start_timestamp_seconds",
                                "Unix time the mirror's next (or current) maintenance window "
                                "starts", labels=["mirror"])
        plan = s["plan"]
        for m, h in s["mirrors"]:
            if h.last_probe_at is not None:
                up.add_metric([m.name, m.country], 0 if serving.probe_failing(h) else 1)
            for f, v in (("ipv4", h.ipv4_up), ("ipv6", h.ipv6_up)):
                if v is not None:
                    fam.add_metric([m.name, f], 1 if v else 0)
            a = serving.sync_age(h.last_sync_at, now)
            if a is not None:
                age.add_metric([m.name], a)
            e = plan.by_id.get(m.id)
            srv.add_metric([m.name, m.country], 1 if e is not None and e.serving else 0)
            if e is not None and e.maintenance:
                mt.add_metric([m.name, m.country, e.maintenance], 1)
            if e is not None and e.windows:
                nxt.add_metric([m.name], e.windows[0].starts_at.replace(
                    tzinfo=_dt.UTC).timestamp())
        yield mt
        yield nxt
        yield up
        yield fam
        yield age
        yield srv
        yield GaugeMetricFamily("mirrordns_mirrors_serving", "Mirrors the DNS answers with",
                                value=len(plan.serving))

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
            self.table.snap = await self.ctx.pool.run_readonly(snapshot_thd(self.ctx,
                                                                            self.ctx.now()))
            self._fetched_at = t
        return Response(generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST.encode(),
                        headers={b"cache-control": b"no-store"})


def build(ctx: WebContext, registry: CollectorRegistry | None = None) -> Router:
    """The /metrics resource, for admin.web.build_root."""
    r = Router(ctx, errors="text")
    r.add("GET", "", MetricsPage(ctx, registry).page, login=False)
    return r
