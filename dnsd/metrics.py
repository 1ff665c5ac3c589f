"""Prometheus metrics of the DNS server, read from plain counters at scrape time.

The answer path only bumps ints in dicts (`dnsd.answer.Stats`); at scrape time they become a
`report` (plain data) and the report becomes metric families, so a query costs no
prometheus_client call. DNS processes of their own (dnsd.processes) send their reports to the
main process, which `merge`s them: the same families, counters summed over every DNS process,
the plan gauges of the worst one.

    dnsd_queries_total{qtype, rcode}        queries answered (or refused, ...) by type and rcode
    dnsd_answers_by_country_total{country}  answers from the geo/country rings, by client location
    dnsd_dropped_total                      datagrams dropped (responses, shorter than a header)
    dnsd_plan_version, dnsd_plan_age_seconds, dnsd_plan_build_seconds, dnsd_plan_mirrors_serving,
    dnsd_db_reachable
    dnsd_plan_source{source}                1 for where the live plan came from (none, snapshot,
                                            database)
    dnsd_plan_data_age_seconds              seconds since the live plan's data left the table
    dnsd_rrl_responses_total{action}        responses rate limiting dropped, slipped (sent
                                            truncated) or let through for a valid cookie
    dnsd_rrl_tracked_prefixes               client prefixes rate limiting keeps a bucket for
    dnsd_tcp_connections                    DNS-over-TCP connections held
    dnsd_tcp_closed_total{why}              ... closed by the server: evicted (over a limit), idle
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dnsd.answer import qtype_name

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
          16: "BADVERS", 23: "BADCOOKIE"}
SOURCES = ("none", "snapshot", "database")       # worst first
COUNTERS = ("dropped", "rrl_dropped", "rrl_slipped", "rrl_cookie_exempt", "tcp_evicted",
            "tcp_idle")
SUMMED_GAUGES = ("rrl_tracked", "tcp_connections")


def report(stats, holder, answerer=None, tcp=None) -> dict:
    """The counters and plan state of one DNS process as plain JSON-able data: what /metrics
    shows of it, and what a DNS process of its own sends the main one (dnsd.processes)."""
    rrl = getattr(answerer, "rrl", None)
    r = {
        "queries": [[qt, rc, n] for (qt, rc), n in stats.by_type_rcode.copy().items()],
        "countries": dict(stats.by_country.copy()),
        "dropped": stats.dropped,
        "rrl_dropped": stats.rrl_dropped,
        "rrl_slipped": stats.rrl_slipped,
        "rrl_cookie_exempt": stats.rrl_cookie_exempt,
        "rrl_tracked": rrl.tracked if rrl is not None else 0,
        "plan_version": holder.version,
        "plan_age": holder.age(),
        "build_seconds": holder.build_seconds,
        "serving": len(holder.current.serving),
        "db_ok": bool(holder.db_ok),
        "source": holder.source,
        "data_age": holder.data_age(),
    }
    if tcp is not None:
        r.update(tcp_connections=tcp.connections, tcp_evicted=tcp.stats_evicted,
                 tcp_idle=tcp.stats_idle)
    return r


def merge(reports, plans=()) -> dict:
    """Several processes' reports as one: the counters of `reports` summed, and the gauges of
    `plans` (the plan's of the worst process: the oldest version, the greatest age, the fewest
    serving, unreachable if any is; connections and tracked prefixes summed); no gauges when
    `plans` is empty."""
    q: dict[tuple[int, int], int] = {}
    c: dict[str, int] = {}
    out: dict = {k: 0 for k in COUNTERS}
    tcp = False
    for r in reports:
        for qt, rc, n in r["queries"]:
            q[(qt, rc)] = q.get((qt, rc), 0) + n
        for cc, n in r["countries"].items():
            c[cc] = c.get(cc, 0) + n
        for k in COUNTERS:
            out[k] += r.get(k, 0)
        tcp = tcp or "tcp_evicted" in r
    out.update(queries=[[qt, rc, n] for (qt, rc), n in q.items()], countries=c)
    if not tcp:
        del out["tcp_evicted"], out["tcp_idle"]
    with_plan = list(plans)
    if with_plan:
        ages = [r["plan_age"] for r in with_plan]
        data_ages = [r["data_age"] for r in with_plan]
        out.update(plan_version=min(r["plan_version"] for r in with_plan),
                   plan_age=None if None in ages else max(ages),
                   build_seconds=max(r["build_seconds"] for r in with_plan),
                   serving=min(r["serving"] for r in with_plan),
                   db_ok=all(r["db_ok"] for r in with_plan),
                   source=min((r["source"] for r in with_plan), key=SOURCES.index),
                   data_age=None if None in data_ages else max(data_ages))
        for k in SUMMED_GAUGES:
            if any(k in r for r in with_plan):
                out[k] = sum(r.get(k, 0) for r in with_plan)
    return out


def families(r: dict):
    """The dnsd_* metric families of a report (one process's, or merged)."""
    q = CounterMetricFamily("dnsd_queries", "DNS queries by type and response code",
                            labels=["qtype", "rcode"])
    for qt, rc, n in sorted(r["queries"]):
        q.add_metric([qtype_name(qt) if qt >= 0 else "none", RCODES.get(rc, str(rc))], n)
    yield q
    c = CounterMetricFamily("dnsd_answers_by_country",
                            "Answers from the mirror rings by location (a country code, "
                            "@ and a continent code, or unknown)",
                            labels=["country"])
    for cc, n in sorted(r["countries"].items(), key=lambda kv: kv[0] or ""):
        c.add_metric([cc or "unknown"], n)
    yield c
    yield CounterMetricFamily("dnsd_dropped", "Datagrams dropped unanswered", value=r["dropped"])
    rl = CounterMetricFamily("dnsd_rrl_responses", "Responses held back by rate limiting",
                             labels=["action"])
    rl.add_metric(["dropped"], r["rrl_dropped"])
    rl.add_metric(["slipped"], r["rrl_slipped"])
    rl.add_metric(["cookie_exempt"], r["rrl_cookie_exempt"])
    yield rl
    if "tcp_evicted" in r:
        t = CounterMetricFamily("dnsd_tcp_closed", "DNS-over-TCP connections the server closed",
                                labels=["why"])
        t.add_metric(["evicted"], r["tcp_evicted"])
        t.add_metric(["idle"], r["tcp_idle"])
        yield t
    if "plan_version" not in r:
        return
    yield GaugeMetricFamily("dnsd_plan_version", "Table version of the live plan",
                            value=r["plan_version"])
    yield GaugeMetricFamily("dnsd_plan_age_seconds", "Seconds since the live plan was swapped in",
                            value=_nan(r["plan_age"]))
    yield GaugeMetricFamily("dnsd_plan_build_seconds", "Time the last plan build took",
                            value=r["build_seconds"])
    yield GaugeMetricFamily("dnsd_plan_mirrors_serving", "Mirrors serving in the live plan",
                            value=r["serving"])
    yield GaugeMetricFamily("dnsd_db_reachable", "1 when the last plan poll reached the table",
                            value=1 if r["db_ok"] else 0)
    src = GaugeMetricFamily("dnsd_plan_source", "Where the live plan came from",
                            labels=["source"])
    for name in SOURCES:
        src.add_metric([name], 1 if r["source"] == name else 0)
    yield src
    yield GaugeMetricFamily("dnsd_plan_data_age_seconds",
                            "Seconds since the live plan's data was read from the table "
                            "(a snapshot's is as old as the snapshot's plan)",
                            value=_nan(r["data_age"]))
    yield GaugeMetricFamily("dnsd_rrl_tracked_prefixes", "Client prefixes with a rate bucket",
                            value=r.get("rrl_tracked", 0))
    if "tcp_connections" in r:
        yield GaugeMetricFamily("dnsd_tcp_connections", "DNS-over-TCP connections held",
                                value=r["tcp_connections"])


def _nan(v):
    return v if v is not None else float("nan")


class DNSCollector:
    """The DNS service of this process (DNS answered in the main process, [dns] workers = 0,
    or the DNS server alone, python -m dnsd.worker)."""

    def __init__(self, answerer, holder, tcp=None):
        self.answerer = answerer
        self.holder = holder
        self.tcp = tcp

    def describe(self):
        return []                      # no fixed description: collect() is cheap and safe

    def collect(self):
        yield from families(report(self.answerer.stats, self.holder, self.answerer, self.tcp))


def register(service, registry=None) -> DNSCollector:
    """Register the collector of a DNSService into `registry` (default: the global REGISTRY,
    which prometheus_client's MetricsResource on the admin's /metrics exposes)."""
    from prometheus_client import REGISTRY

    col = DNSCollector(service.answerer, service.plan, getattr(service, "tcp", None))
    (registry if registry is not None else REGISTRY).register(col)
    return col
