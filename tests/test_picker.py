"""The picker on plain data: tiers, borrowing, weights, share cap, dual stack, reasons."""

from __future__ import annotations

import collections
import datetime as dt
import random

import pytest

from dnsd import models
from dnsd.config import parse_config
from dnsd.picker import Location, cap_shares, pick
from dnsd.plan import build_plan, row

NOW = dt.datetime(2026, 11, 21, 12, 0, 0)


def cfg(**dns):
    lines = "\n".join(f"{k} = {v!r}".replace("'", '"').replace("True", "true")
                      .replace("False", "false") for k, v in dns.items())
    return parse_config(f"[dns]\nzone = \"m.test\"\n{lines}\n")


def m(i, cc, **kw):
    kw.setdefault("ipv4", f"192.0.2.{i}")
    kw.setdefault("name", f"{cc.lower()}{i}")
    return row(id=i, country=cc, hostname=f"m{i}.{cc.lower()}.example", **kw)


def plan_of(rows, **dns):
    return build_plan({"version": 7, "mirrors": rows}, cfg(**dns), NOW)


def names(choice):
    return sorted(e.name for e in choice.chosen)


def test_country_tier_when_enough_mirrors():
    p = plan_of([m(1, "DE"), m(2, "DE"), m(3, "FR"), m(4, "US")])
    c = pick(p, "DE", family="A", rng=random.Random(1))
    assert c.tier == "country"
    assert names(c) == ["de1", "de2"]
    reasons = {e.name: r for e, r in c.excluded}
    assert reasons["fr3"].startswith("in FR, outside the country tier")


def test_lone_mirror_borrows_subregion_then_continent_then_world():
    rows = [m(1, "DE"), m(2, "AT"), m(3, "FR"), m(4, "US"), m(5, "JP")]
    p = plan_of(rows, min_candidates=2)
    # DE has one mirror: borrow Western Europe (DE, AT, FR)
    c = pick(p, "DE", family="A", rng=random.Random(1))
    assert c.tier == "subregion" and {e.name for e, _ in c.candidates} == {"de1", "at2", "fr3"}
    # Italy (Southern Europe) has none: the continent
    c = pick(p, "IT", family="A", rng=random.Random(1))
    assert c.tier == "continent" and {e.name for e, _ in c.candidates} == {"de1", "at2", "fr3"}
    # Brazil: nothing in South America -> world
    c = pick(p, "BR", family="A", rng=random.Random(1))
    assert c.tier == "world" and len(c.candidates) == 5
    # unknown client -> world
    assert pick(p, None, family="A").tier == "world"
    # min_candidates 4: even Western Europe (3) is not enough, Europe (3) neither -> world
    p4 = plan_of(rows, min_candidates=4)
    assert pick(p4, "DE", family="A").tier == "world"


def test_backups_only_when_nothing_else_serves():
    rows = [m(1, "DE", backup=True), m(2, "US", status=models.DISABLED_ADMIN,
                                          status_reason="hardware move")]
    p = plan_of(rows)
    c = pick(p, "DE", family="A", rng=random.Random(1))
    assert c.tier == "backup" and names(c) == ["de1"]
    assert {e.name: r for e, r in c.excluded}["us2"] == "disabled by admin: hardware move"
    p2 = plan_of(rows + [m(3, "JP")])
    c = pick(p2, "DE", family="A", rng=random.Random(1))
    assert c.tier == "world" and names(c) == ["jp3"]
    assert {e.name: r for e, r in c.excluded}["de1"] == "backup mirror, not needed"
    # nothing at all
    p3 = plan_of([m(2, "US", status=models.RETIRED)])
    c = pick(p3, "DE", family="A")
    assert c.tier == "none" and c.chosen == () and c.excluded[0][1] == "retired"


def test_world_with_fewer_than_min_still_answers():
    p = plan_of([m(1, "JP")], min_candidates=2)
    c = pick(p, "DE", family="A", rng=random.Random(3))
    assert c.tier == "world" and names(c) == ["jp1"]


def test_dual_stack_filtering():
    rows = [
        m(1, "DE", ipv6="2001:db8::1", ipv6_up=True),
        m(2, "DE", ipv6="2001:db8::2", ipv6_up=False),
        m(3, "DE"),                                   # no IPv6 at all
        m(4, "DE", ipv6="2001:db8::4"),               # never probed: reachable
        m(5, "DE", ipv4_up=False, ipv6="2001:db8::5"),
    ]
    p = plan_of(rows, min_candidates=1, answers=5)
    c6 = pick(p, "DE", family="AAAA", rng=random.Random(1))
    assert names(c6) == ["de1", "de4", "de5"]
    why = {e.name: r for e, r in c6.excluded}
    assert why == {"de2": "IPv6 down", "de3": "no IPv6 address"}
    c4 = pick(p, "DE", family="A", rng=random.Random(1))
    assert names(c4) == ["de1", "de2", "de3", "de4"]
    assert {e.name: r for e, r in c4.excluded} == {"de5": "IPv4 down"}
    # the closer (no family) gets everyone
    assert len(pick(p, "DE", rng=random.Random(1)).chosen) == 5


def test_protocol_filter_borrows_when_too_few():
    rows = [m(1, "DE", https_url="https://a/"), m(2, "DE"), m(3, "FR", https_url="https://c/")]
    p = plan_of(rows, min_candidates=2)
    c = pick(p, "DE", protocol="https", rng=random.Random(1))
    assert c.tier == "subregion" and names(c) == ["de1", "fr3"]
    assert {e.name: r for e, r in c.excluded}["de2"] == "no https URL"


def test_weights_follow_scores_statistically():
    # weight 3 vs 1 vs 1: first position shares 3/5, 1/5, 1/5
    rows = [m(1, "DE", weight=3.0), m(2, "DE"), m(3, "DE")]
    p = plan_of(rows)
    rng = random.Random(12345)
    first = collections.Counter()
    n = 20000
    for _ in range(n):
        c = pick(p, "DE", family="A", count=1, rng=rng)
        first[c.chosen[0].name] += 1
    assert abs(first["de1"] / n - 0.6) < 0.02
    assert abs(first["de2"] / n - 0.2) < 0.02
    assert abs(first["de3"] / n - 0.2) < 0.02


def test_no_repeats_and_count():
    rows = [m(i, "DE", weight=float(i)) for i in range(1, 6)]
    p = plan_of(rows, answers=3)
    rng = random.Random(7)
    for _ in range(500):
        c = pick(p, "DE", family="A", rng=rng)
        assert len(c.chosen) == 3 and len({e.id for e in c.chosen}) == 3
    # a very heavy mirror does not stop the others being drawn (rejection fallback)
    p = plan_of([m(1, "DE", weight=1e9), m(2, "DE", weight=1e-9), m(3, "DE", weight=1e-9)],
                answers=3)
    assert len(pick(p, "DE", family="A", rng=random.Random(1)).chosen) == 3


def test_share_cap():
    assert cap_shares([8.0, 1.0, 1.0], 0.5) == pytest.approx([2.0, 1.0, 1.0])
    ws = cap_shares([10.0, 5.0, 1.0, 1.0, 1.0], 0.3)
    t = sum(ws)
    assert max(ws) / t == pytest.approx(0.3)
    assert ws[2] == ws[3] == ws[4] == 1.0
    assert cap_shares([5.0, 1.0], 0.4) == [1.0, 1.0]          # cannot be met: equal
    rows = [m(1, "DE", weight=8.0), m(2, "DE"), m(3, "DE")]
    p = plan_of(rows, share_cap=0.5)
    rng = random.Random(99)
    first = collections.Counter(pick(p, "DE", family="A", count=1, rng=rng).chosen[0].name
                                for _ in range(10000))
    assert abs(first["de1"] / 10000 - 0.5) < 0.02


def test_distance_weighting_prefers_nearer():
    # a client in Portugal, tier = Europe; Spain is near, Finland far
    rows = [m(1, "ES"), m(2, "FI")]
    p = plan_of(rows, distance_weighting=True, min_candidates=2)
    c = pick(p, "PT", family="A", count=1, rng=random.Random(1))
    w = {e.name: w for e, w in c.candidates}
    assert c.tier == "continent"
    assert w["es1"] > 1.5 * w["fi2"]
    flat = plan_of(rows, min_candidates=2)
    w2 = {e.name: w for e, w in pick(flat, "PT", family="A").candidates}
    assert w2["es1"] == pytest.approx(w2["fi2"])


def test_continent_location_and_lat_lon():
    p = plan_of([m(1, "DE"), m(2, "FR"), m(3, "US")])
    c = pick(p, Location.of_continent("EU"), family="A", rng=random.Random(1))
    assert c.tier == "continent" and names(c) == ["de1", "fr2"]
    assert Location("DE", "EU").key == "DE" and Location(None, "EU").key == "@EU"


def test_bad_arguments():
    p = plan_of([m(1, "DE")])
    with pytest.raises(ValueError):
        pick(p, "DE", family="MX")
    with pytest.raises(ValueError):
        pick(p, "DE", protocol="gopher")
