"""The plan: serving decisions with reasons, scores, and loading from the real table."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
import sqlalchemy as sa

from dnsd import models
from dnsd.config import parse_config
from dnsd.plan import MirrorState, build_plan, fmt_age, load_rows, row
from dnsd.records.health import Health

NOW = dt.datetime(2026, 11, 21, 12, 0, 0)
H = dt.timedelta(hours=1)


def cfg(extra=""):
    return parse_config(f'[dns]\nzone = "M.Test."\nmax_sync_age = 86400\n{extra}')


def reasons(plan):
    return {e.id: (e.serving, e.reason) for e in plan.mirrors}


def test_serving_is_dnsd_serving_verdict():
    """The plan records dnsd.serving's verdict (tests/test_serving.py has the rule's cases)."""
    rows = [row(id=1, ipv4="192.0.2.1", last_sync_at=NOW - 2 * H, last_probe_at=NOW),
            row(id=2, ipv4="192.0.2.2", last_probe_at=None, last_ok_at=None),
            row(id=3, ipv4="192.0.2.3", status=models.DISABLED_ADMIN, status_reason="moving")]
    p = build_plan({"version": 3, "mirrors": rows}, cfg(), NOW)
    assert reasons(p) == {1: (True, ""), 2: (False, "never probed"),
                          3: (False, "disabled by admin: moving")}
    assert p.zone == "m.test" and p.version == 3
    # with probes disabled an admin's active mirror with an address serves unprobed
    p2 = build_plan({"version": 3, "mirrors": rows}, cfg("[probes]\nenabled = false\n"), NOW)
    assert reasons(p2)[2] == (True, "")


def test_entries_are_immutable_and_scored():
    p = build_plan({"version": 1, "mirrors": [
        row(id=1, name="DE1", bandwidth_mbit=10000, has_https=True, https_url="https://x/"),
        row(id=2, name="de2", bandwidth_mbit=100, uptime_7d=0.5)]}, cfg(), NOW)
    e1, e2 = p.mirrors
    assert e1.name == "de1" and p.mirror("DE1") is e1
    assert e1.score > e2.score > 0
    assert "capacity" in e1.score_explain
    assert e1.urls == {"http": "http://mirror.example/", "https": "https://x/"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        e1.score = 3
    with pytest.raises(TypeError):
        p.by_name["x"] = e1


def test_pools_by_family_and_level():
    p = build_plan({"version": 1, "mirrors": [
        row(id=1, country="DE", ipv4="192.0.2.1", ipv6="2001:db8::1"),
        row(id=2, country="FR", ipv4="192.0.2.2", backup=True),
        row(id=3, country="US", hostname="only-name.example"),       # no address: not serving
        row(id=4, country="US", probed_ipv4="192.0.2.4", ipv4_up=True),   # resolved by a probe
    ]}, cfg(), NOW)
    def ids(t):
        return [e.id for e in t]

    assert ids(p.pool("A", "country", "DE")) == [1]
    assert ids(p.pool("AAAA", "world", None)) == [1]
    assert ids(p.pool(None, "world", None)) == [1, 4]
    assert ids(p.pool("A", "country", "US")) == [4] and not p.by_id[3].serving
    assert ids(p.pool("A", "backup", None)) == [2]
    assert ids(p.pool("A", "subregion", "Western Europe")) == [1]
    assert ids(p.pool("A", "continent", "EU")) == [1]


def test_fmt_age():
    assert fmt_age(45 * 60) == "45 min"
    assert fmt_age(31 * 3600) == "31 h"
    assert fmt_age(5 * 86400) == "5 days"


def test_load_rows_from_table(engine):
    with engine.begin() as conn:
        models.bump_version(conn)
        conn.execute(models.mirrors.insert().values(
            id=1, name="de1", hostname="a.example", country="DE", ipv4="192.0.2.1",
            status=models.ACTIVE))
        conn.execute(models.mirrors.insert().values(
            id=2, name="fr1", hostname="b.example", country="FR", status=models.DISABLED_ADMIN,
            status_reason="moving"))
        conn.execute(models.mirror_health.insert().values(
            mirror_id=1, last_sync_at=NOW - 40 * H, last_probe_at=NOW, ipv4_up=True))
        v = models.bump_version(conn)
    with engine.connect() as conn:
        rows = load_rows(conn)
    assert rows["version"] == v
    assert [r.mirror.id for r in rows["mirrors"]] == [1, 2]
    assert rows["mirrors"][1].health == Health()              # no health row: never probed
    p = build_plan(rows, cfg("[probes]\nenabled = false\n"), NOW)
    assert reasons(p) == {1: (False, "out of sync 40 h"), 2: (False, "disabled by admin: moving")}
    assert all(isinstance(r, MirrorState) for r in rows["mirrors"])
    assert not any(isinstance(v, sa.Row) for r in rows["mirrors"]
                   for v in (*dataclasses.astuple(r.mirror), *dataclasses.astuple(r.health)))
    p = build_plan(rows, cfg(), NOW)
    assert reasons(p)[1] == (False, "no passing probe yet")
