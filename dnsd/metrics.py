"""Prometheus metrics of the DNS server, read from plain counters at scrape time.

The answer path only bumps ints in dicts (`dnsd.answer.Stats`); this custom collector turns them
into metric families when /metrics is scraped, so a query costs no prometheus_client call.

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


class DNSCollector:
    def __init__(self, answerer, holder, tcp=None):
        self.answerer = answerer
        self.holder = holder
        self.tcp = tcp

    def describe(self):
        return []                      # no fixed description: collect() is cheap and safe

    def collect(self):
        st = self.answerer.stats
        q = CounterMetricFamily("dnsd_queries", "DNS queries by type and response code",
                                labels=["qtype", "rcode"])
        for (qt, rc), n in sorted(st.by_type_rcode.copy().items()):
            q.add_metric([qtype_name(qt) if qt >= 0 else "none", RCODES.get(rc, str(rc))], n)
        yield q
        c = CounterMetricFamily("dnsd_answers_by_country",
                                "Answers from the mirror rings by location (a country code, "
                                "@ and a continent code, or unknown)",
                                labels=["country"])
        for cc, n in sorted(st.by_country.copy().items()):
            c.add_metric([cc or "unknown"], n)
        yield c
        yield CounterMetricFamily("dnsd_dropped", "Datagrams dropped unanswered", value=st.dropped)
        h = self.holder
        yield GaugeMetricFamily("dnsd_plan_version", "Table version of the live plan",
                                value=h.version)
        age = h.age()
        yield GaugeMetricFamily("dnsd_plan_age_seconds", "Seconds since the live plan was swapped in",
                                value=age if age is not None else float("nan"))
        yield GaugeMetricFamily("dnsd_plan_build_seconds", "Time the last plan build took",
                                value=h.build_seconds)
        yield GaugeMetricFamily("dnsd_plan_mirrors_serving", "Mirrors serving in the live plan",
                                value=len(h.current.serving))
        yield GaugeMetricFamily("dnsd_db_reachable", "1 when the last plan poll reached the table",
                                value=1 if h.db_ok else 0)
        src = GaugeMetricFamily("dnsd_plan_source", "Where the live plan came from",
                                labels=["source"])
        for name in ("none", "snapshot", "database"):
            src.add_metric([name], 1 if h.source == name else 0)
        yield src
        data_age = h.data_age()
        yield GaugeMetricFamily("dnsd_plan_data_age_seconds",
                                "Seconds since the live plan's data was read from the table "
                                "(a snapshot's is as old as the snapshot's plan)",
                                value=data_age if data_age is not None else float("nan"))
        r = CounterMetricFamily("dnsd_rrl_responses", "Responses held back by rate limiting",
                                labels=["action"])
        r.add_metric(["dropped"], st.rrl_dropped)
        r.add_metric(["slipped"], st.rrl_slipped)
        r.add_metric(["cookie_exempt"], st.rrl_cookie_exempt)
        yield r
        rrl = self.answerer.rrl
        yield GaugeMetricFamily("dnsd_rrl_tracked_prefixes", "Client prefixes with a rate bucket",
                                value=rrl.tracked if rrl is not None else 0)
        if self.tcp is not None:
            yield GaugeMetricFamily("dnsd_tcp_connections", "DNS-over-TCP connections held",
                                    value=self.tcp.connections)
            c = CounterMetricFamily("dnsd_tcp_closed", "DNS-over-TCP connections the server closed",
                                    labels=["why"])
            c.add_metric(["evicted"], self.tcp.stats_evicted)
            c.add_metric(["idle"], self.tcp.stats_idle)
            yield c


def register(service, registry=None) -> DNSCollector:
    """Register the collector of a DNSService into `registry` (default: the global REGISTRY,
    which prometheus_client's MetricsResource on the admin's /metrics exposes)."""
    from prometheus_client import REGISTRY

    col = DNSCollector(service.answerer, service.plan, getattr(service, "tcp", None))
    (registry if registry is not None else REGISTRY).register(col)
    return col
