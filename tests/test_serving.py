"""dnsd.serving: the one rule for "serving", with its reasons, on plain records (no table)."""

from __future__ import annotations

import datetime as dt

import pytest

from dnsd import serving
from dnsd.config import parse_config
from dnsd.plan import build_plan, row

NOW = dt.datetime(2026, 11, 21, 12, 0, 0)
H = dt.timedelta(hours=1)
ON = parse_config('[dns]\nzone = "m.test"\nmax_sync_age = 86400\n')
OFF = parse_config('[dns]\nzone = "m.test"\n[probes]\nenabled = false\n')

PASSED = {"last_probe_at": NOW, "last_ok_at": NOW, "last_sync_at": NOW - H}
NEVER = {"last_probe_at": None, "last_ok_at": None}


def verdict(cfg=ON, **kw):
    st = row(**{"ipv4": "192.0.2.1", **kw})
    return serving.decide(st.mirror, st.health, cfg, NOW)


# (what, row keywords, config, serving, reason)
CASES = [
    ("passed and fresh", PASSED, ON, True, ""),
    ("never probed, probes on", NEVER, ON, False, "never probed"),
    ("never probed, probes off", NEVER, OFF, True, ""),
    ("probed, never passed", {**NEVER, "last_probe_at": NOW, "failures_in_row": 1,
                              "last_error": "refused: connection refused"}, ON, False,
     "no passing probe yet (refused: connection refused)"),
    ("failing", {**PASSED, "failures_in_row": 3, "last_error": "timeout"}, ON, False,
     "3 failed probes (timeout)"),
    ("two failures: still serving", {**PASSED, "failures_in_row": 2}, ON, True, ""),
    ("stale", {**PASSED, "last_sync_at": NOW - 31 * H}, ON, False, "out of sync 31 h"),
    ("stale with probes off", {**NEVER, "last_sync_at": NOW - 5 * 24 * H}, OFF, False,
     "out of sync 5 days"),
    # closer.lua: "Don't check the timestamp for backup mirrors"
    ("stale backup mirror: not age-filtered", {**PASSED, "backup": True,
                                               "last_sync_at": NOW - 5 * 24 * H}, ON, True, ""),
    ("stale backup, [dns] age_filter_backups", {**PASSED, "backup": True,
                                                "last_sync_at": NOW - 31 * H},
     parse_config('[dns]\nzone = "m.test"\nage_filter_backups = true\n'), False,
     "out of sync 31 h"),
    ("admin weight 0", {**PASSED, "weight": 0.0}, ON, False, "admin weight 0"),
    ("disabled by admin", {**PASSED, "status": "disabled-by-admin",
                           "status_reason": "hardware move"}, ON, False,
     "disabled by admin: hardware move"),
    ("disabled by probes", {**PASSED, "status": "disabled-by-probes",
                            "status_reason": "3 failed probes"}, ON, False,
     "disabled by probes: 3 failed probes"),
    ("pending", {**PASSED, "status": "pending"}, ON, False, "pending, not active yet"),
    ("retired", {**PASSED, "status": "retired"}, ON, False, "retired"),
    ("no address at all", {**PASSED, "ipv4": None}, ON, False,
     "no address: mirror.example did not resolve to a usable one"),
    ("no address, probes off", {**NEVER, "ipv4": None}, OFF, False,
     "no address (pin one, or turn the probes on to resolve mirror.example)"),
    ("its only family down", {**PASSED, "ipv4_up": False}, ON, False,
     "no usable address: IPv4 down; no IPv6 address"),
    ("one family down, the other up", {**PASSED, "ipv6": "2001:db8::1", "ipv4_up": False,
                                      "ipv6_up": True}, ON, True, ""),
    ("resolved address, its probe passed", {**PASSED, "ipv4": None, "probed_ipv4": "192.0.2.9",
                                            "ipv4_up": True}, ON, True, ""),
    ("resolved address, not confirmed", {**PASSED, "ipv4": None, "probed_ipv4": "192.0.2.9",
                                         "ipv4_up": None}, ON, False,
     "no usable address: IPv4 192.0.2.9 not confirmed by a probe yet; no IPv6 address"),
]


@pytest.mark.parametrize("what, kw, cfg, ok, reason", CASES, ids=[c[0] for c in CASES])
def test_the_serving_rule(what, kw, cfg, ok, reason):
    v = verdict(cfg, **kw)
    assert (v.serving, v.reason) == (ok, reason)


def test_the_plan_records_the_rules_verdict_and_pools_only_what_serves():
    rows = [row(id=i, **{"ipv4": f"192.0.2.{i}", **kw}) for i, (_w, kw, _c, _o, _r)
            in enumerate(CASES, 1)]
    plan = build_plan({"version": 1, "mirrors": rows}, ON, NOW)
    for (what, _kw, cfg, ok, reason), e in zip(CASES, plan.mirrors):
        if cfg is ON:
            assert (e.serving, e.reason) == (ok, reason), what
    pooled = {e.id for lv in ("world", "backup") for fam in ("A", "AAAA")
              for e in plan.pool(fam, lv, None)}
    assert pooled == {e.id for e in plan.serving}
    assert {e.id for lv in ("world", "backup") for e in plan.pool(None, lv, None)} == \
        {e.id for e in plan.serving}


def test_pinned_addresses_always_win_over_resolved_ones():
    st = row(ipv4="192.0.2.1", probed_ipv4="198.51.100.7", probed_ipv6="2001:db8::7",
             ipv4_up=True, **PASSED)
    a = serving.addresses(st.mirror, st.health)
    assert (a.ipv4, a.ipv6, a.pinned) == ("192.0.2.1", None, True)
    plan = build_plan({"version": 1, "mirrors": [st]}, ON, NOW)
    assert (plan.mirrors[0].ipv4, plan.mirrors[0].ipv6) == ("192.0.2.1", None)


def test_freshness_is_one_limit():
    day = ON.dns.max_sync_age
    assert [serving.freshness(a, ON) for a in (None, 60, 6 * 3600, 7 * 3600, day, day + 1)] == \
        ["unknown", "fresh", "fresh", "oldish", "oldish", "old"]
    assert serving.stale_reason(day, ON) == "" and serving.stale_reason(day + 3600, ON) == \
        "out of sync 25 h"
    short = parse_config("[dns]\nmax_sync_age = 3600\n")
    assert serving.is_stale(3601, short) and not serving.is_stale(3601, ON)


def test_answer_key_moves_with_serving_and_addresses_not_with_reasons():
    a = verdict(**{**PASSED, "failures_in_row": 1})
    b = verdict(**{**PASSED, "failures_in_row": 2, "last_error": "other"})
    assert a.answer_key == b.answer_key                      # still serving, same address
    c = verdict(**{**PASSED, "failures_in_row": 3})
    assert c.answer_key != a.answer_key
    d = verdict(**{**PASSED, "ipv4": None, "probed_ipv4": "192.0.2.9", "ipv4_up": True})
    e = verdict(**{**PASSED, "ipv4": None, "probed_ipv4": "192.0.2.10", "ipv4_up": True})
    assert d.serving and e.serving and d.answer_key != e.answer_key
    assert not serving.changes_plan(["source", "updated_at"])
    assert serving.changes_plan(["provider_name"]) and serving.changes_plan(["ipv4"])
