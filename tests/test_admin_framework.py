"""Pure pieces of the admin web framework: client address, graphs, filters, safe redirects."""

from __future__ import annotations

import datetime as _dt
from types import SimpleNamespace

import pytest

from admin.web import graphs
from admin.web.auth import safe_next
from admin.web.clients import UNKNOWN_CLIENT
from admin.web.framework import format_duration, is_web_url, status_word
from dnsd.config import parse_config


class FakeRequest:
    def __init__(self, peer: str, xff: str | None = None):
        self._peer, self._xff = peer, xff

    def getClientAddress(self):
        return SimpleNamespace(host=self._peer)

    def getHeader(self, name):
        return self._xff.encode() if (name == b"x-forwarded-for" and self._xff) else None


@pytest.mark.parametrize(("trusted", "peer", "xff", "want"), [
    ((), "192.0.2.1", "198.51.100.7", "192.0.2.1"),                  # no proxies: header ignored
    (("127.0.0.1",), "127.0.0.1", "198.51.100.7", "198.51.100.7"),
    (("127.0.0.1",), "192.0.2.9", "198.51.100.7", "192.0.2.9"),      # not from the proxy
    (("127.0.0.0/8",), "127.0.0.1", "203.0.113.5, 198.51.100.7, 127.0.0.2", "198.51.100.7"),
    # a trusted proxy that does not say who the visitor is: unknown, never the proxy itself
    (("127.0.0.1",), "127.0.0.1", None, UNKNOWN_CLIENT),
    (("127.0.0.1",), "127.0.0.1", " , ", UNKNOWN_CLIENT),
    (("127.0.0.1",), "127.0.0.1", "garbage, 127.0.0.1", UNKNOWN_CLIENT),
    (("127.0.0.1",), "127.0.0.1", "198.51.100.7, garbage", UNKNOWN_CLIENT),
    (("127.0.0.1", "10.0.0.0/8"), "127.0.0.1", "10.1.2.3, 10.2.3.4", "10.1.2.3"),  # all proxies
    (("127.0.0.1",), "127.0.0.1", "2001:db8::5", "2001:db8::5"),
    (("127.0.0.1",), "127.0.0.1", "198.51.100.7:4711", "198.51.100.7"),  # proxies that add ports
    (("127.0.0.1",), "127.0.0.1", "[2001:db8::5]:4711", "2001:db8::5"),
])
def test_client_ip(trusted, peer, xff, want):
    from admin.web.clients import client_ip

    listed = ", ".join(f'"{t}"' for t in trusted)
    cfg = parse_config(f"[admin]\ntrusted_proxies = [{listed}]\n")
    assert client_ip(SimpleNamespace(cfg=cfg), FakeRequest(peer, xff)) == want


def test_uptime_graph_buckets():
    end = _dt.date(2026, 11, 21)
    g = graphs.uptime_days({end: (10, 10), end - _dt.timedelta(days=1): (10, 7),
                            end - _dt.timedelta(days=2): (10, 2)}, end, n=5)
    assert [b.colour for b in g["bars"]] == ["", "", graphs.step_of(0.2).colour,
                                             graphs.step_of(0.7).colour, graphs.step_of(1).colour]
    assert g["bars"][-1].title == "2026-11-21: 100.0% up (10/10 probes)"
    assert g["overall"] == pytest.approx(19 / 30)
    heights = [b.h for b in g["bars"][2:]]
    assert heights == sorted(heights)                     # more uptime, taller bar
    assert graphs.uptime_days({}, end, n=3)["overall"] is None


def test_rtt_graph_breaks_at_gaps():
    end = _dt.datetime(2026, 11, 21, 9, 30)
    h0 = end.replace(minute=0)
    data = {h0 - _dt.timedelta(hours=k): 100.0 + k for k in (0, 1, 2, 5)}
    g = graphs.rtt_hours(data, end, n=8)
    assert len(g["lines"]) == 1 and len(g["lines"][0].split()) == 3   # the last three hours
    assert len(g["dots"]) == 1                                        # a lone hour is a dot
    assert g["max_ms"] == 150
    assert g["mean"] == pytest.approx((100 + 101 + 102 + 105) / 4)


def test_filters():
    assert format_duration(None) == "–"
    assert format_duration(45) == "45 s"
    assert format_duration(3 * 3600 + 120) == "3 h 2 min"
    assert format_duration(2 * 86400 + 3600) == "2 d 1 h"
    assert status_word("disabled-by-probes") == "disabled by probes"
    assert is_web_url("https://example.org/x") and not is_web_url("javascript:alert(1)")
    assert not is_web_url("data:text/html,x") and not is_web_url("http://")


@pytest.mark.parametrize(("url", "want"), [
    ("/admin/mirrors/3?x=1", "/admin/mirrors/3?x=1"), ("https://evil.example/admin", "/admin/"),
    ("//evil.example/admin", "/admin/"), ("/admin\\\\evil", "/admin/"), ("/apply", "/admin/"),
    ("", "/admin/")])
def test_safe_next(url, want):
    assert safe_next(url) == want
