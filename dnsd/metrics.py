"""Prometheus metrics of the DNS server, read from plain counters at scrape time.

The answer path only bumps ints in dicts (`dnsd.answer.Stats`); at scrape time they become a
`report` (plain data) and the report becomes metric families, so a query costs no
prometheus_client call. DNS processes of their own (dnsd.processes) send their reports to the
main process, which `merge`s them: the same families, summed over every DNS process.

    dnsd_queries_total{qtype, rcode}        queries answered (or refused, ...) by type and rcode
    dnsd_answers_by_country_total{country}  answers from the geo/country rings, by client location
    dnsd_dropped_total                      datagrams dropped (responses, shorter than a header)
    dnsd_plan_version, dnsd_plan_age_seconds, dnsd_plan_build_seconds, dnsd_plan_mirrors_serving,
    dnsd_db_reachable
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dnsd.answer import qtype_name

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
          16: "BADVERS"}


def report(stats, holder) -> dict:
    """The counters and plan state of one DNS process as plain JSON-able data: what /metrics
    shows of it, and what a DNS process of its own sends the main one (dnsd.processes)."""
    age = holder.age()
    return {
        "queries": [[qt, rc, n] for (qt, rc), n in stats.by_type_rcode.copy().items()],
        "countries": dict(stats.by_country.copy()),
        "dropped": stats.dropped,
        "plan_version": holder.version,
        "plan_age": age,
        "build_seconds": holder.build_seconds,
        "serving": len(holder.current.serving),
        "db_ok": bool(holder.db_ok),
    }


def merge(reports, plans=()) -> dict:
    """Several processes' reports as one: the counters of `reports` summed, and the plan gauges
    of the worst of `plans` (the oldest version, the greatest age, the fewest serving,
    unreachable if any is); no plan gauges when `plans` is empty."""
    q: dict[tuple[int, int], int] = {}
    c: dict[str, int] = {}
    dropped = 0
    for r in reports:
        for qt, rc, n in r["queries"]:
            q[(qt, rc)] = q.get((qt, rc), 0) + n
        for cc, n in r["countries"].items():
            c[cc] = c.get(cc, 0) + n
        dropped += r["dropped"]
    out = {"queries": [[qt, rc, n] for (qt, rc), n in q.items()], "countries": c,
           "dropped": dropped}
    with_plan = list(plans)
    if with_plan:
        ages = [r["plan_age"] for r in with_plan]
        out.update(plan_version=min(r["plan_version"] for r in with_plan),
                   plan_age=None if None in ages else max(ages),
                   build_seconds=max(r["build_seconds"] for r in with_plan),
                   serving=min(r["serving"] for r in with_plan),
                   db_ok=all(r["db_ok"] for r in with_plan))
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
    if "plan_version" not in r:
        return
    yield GaugeMetricFamily("dnsd_plan_version", "Table version of the live plan",
                            value=r["plan_version"])
    age = r["plan_age"]
    yield GaugeMetricFamily("dnsd_plan_age_seconds", "Seconds since the live plan was swapped in",
                            value=age if age is not None else float("nan"))
    yield GaugeMetricFamily("dnsd_plan_build_seconds", "Time the last plan build took",
                            value=r["build_seconds"])
    yield GaugeMetricFamily("dnsd_plan_mirrors_serving", "Mirrors serving in the live plan",
                            value=r["serving"])
    yield GaugeMetricFamily("dnsd_db_reachable", "1 when the last plan poll reached the table",
                            value=1 if r["db_ok"] else 0)


class DNSCollector:
    """The DNS service of this process (DNS answered in the main process, [dns] workers = 0)."""

    def __init__(self, answerer, holder):
        self.answerer = answerer
        self.holder = holder

    def describe(self):
        return []                      # no fixed description: collect() is cheap and safe

    def collect(self):
        yield from families(report(self.answerer.stats, self.holder))


def register(service, registry=None) -> DNSCollector:
    """Register the collector of a DNSService into `registry` (default: the global REGISTRY,
    which prometheus_client's MetricsResource on the admin's /metrics exposes)."""
    from prometheus_client import REGISTRY

    col = DNSCollector(service.answerer, service.plan)
    (registry if registry is not None else REGISTRY).register(col)
    return col
