"""Verdicts: the pure rules, and the probe loop driven by a stepped Clock against a real table."""

from __future__ import annotations

import random

import pytest
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from dnsd.config import Config, DNSConfig, MailConfig, ProbesConfig
from dnsd.models import ACTIVE, DISABLED_ADMIN, DISABLED_PROBES
from dnsd.plan import build_plan, load_rows
from probes.probe import utc_from_ts
from probes.service import ProbeService, spread_window
from probes.verdicts import DISABLED, RECOVERED, Counters, decide
from tests.probe_support import (
    ScriptedProber,
    SyncPool,
    add_mirror,
    body_of,
    health_of,
    mails,
    status_of,
    version,
)

START = 1_790_000_000          # a Clock at 2026, so stored times look like real ones
INTERVAL = 60


def rules(status, fails=0, passes=0, ok=True, ec=""):
    return decide(status, Counters(fails, passes), ok, ec, "boom", fail_after=3, pass_after=2)


# --- the pure rules ------------------------------------------------------------------------------

def test_k_failures_disable_an_active_mirror():
    assert rules(ACTIVE, fails=0, ok=False, ec="timeout").status == ACTIVE
    assert rules(ACTIVE, fails=1, ok=False, ec="timeout").status == ACTIVE
    v = rules(ACTIVE, fails=2, ok=False, ec="timeout")
    assert v.status == DISABLED_PROBES and v.changed and v.mail == DISABLED
    assert v.reason == "3 failed probes in a row: timeout: boom"


def test_a_pass_resets_the_failure_count():
    v = rules(ACTIVE, fails=2, ok=True)
    assert (v.failures_in_row, v.passes_in_row, v.status) == (0, 1, ACTIVE)


def test_m_passes_restore_and_one_is_not_enough():
    assert rules(DISABLED_PROBES, passes=0, ok=True).status == DISABLED_PROBES
    v = rules(DISABLED_PROBES, passes=1, ok=True)
    assert v.status == ACTIVE and v.mail == RECOVERED and v.outage_over
    assert rules(DISABLED_PROBES, passes=5, ok=False).passes_in_row == 0


@pytest.mark.parametrize("status", [DISABLED_ADMIN, "pending", "retired"])
def test_probes_never_move_an_admin_decision(status):
    for fails, passes, ok in ((10, 0, False), (0, 10, True)):
        v = rules(status, fails=fails, passes=passes, ok=ok, ec="" if ok else "refused")
        assert v.status == status and not v.changed and v.mail is None


def test_stale_reason_reads_as_out_of_sync():
    v = decide(ACTIVE, Counters(2, 0), False, "stale", "out of sync 31 h (limit 24 h)",
               fail_after=3, pass_after=2)
    assert v.reason == "3 failed probes in a row: out of sync 31 h (limit 24 h)"


# --- the loop with a Clock -----------------------------------------------------------------------

def make_cfg(**kw):
    p = {"interval": INTERVAL, "fail_after": 3, "pass_after": 2, "concurrency": 4, "stats_interval": 3600}
    p.update(kw)
    # notify off: a Clock drives these loops, and the NOTIFY listener's thread hands what it hears
    # to a real reactor (callFromThread); requests are polled as on SQLite, and the listener has
    # its own tests on PostgreSQL (test_probe_requests, test_dns_follow)
    return Config(probes=ProbesConfig(**p), dns=DNSConfig(zone="mirrors.example.org",
                                                          notify=False),
                  mail=MailConfig(reply_to="admins@example.org"))


@pytest.fixture
def loop(engine):
    clock = Clock()
    clock.advance(START)
    outcomes = {}
    prober = ScriptedProber(clock, outcomes)
    svc = ProbeService(make_cfg(), SyncPool(engine), clock, prober=prober,
                       rng=random.Random(1), batch_delay=0.5)
    yield svc, clock, outcomes, prober, engine
    if svc.running:
        svc.stopService()


def one_cycle(clock):
    """Step through one interval a second at a time (E10: one step per tick)."""
    clock.pump([1] * INTERVAL)


def test_loop_disables_after_k_and_restores_after_m(loop):
    svc, clock, outcomes, _prober, engine = loop
    with engine.begin() as c:
        mid = add_mirror(c)
        other = add_mirror(c, name="de2", emails=("b@example.net",))
    v0 = version(engine)
    outcomes[mid] = False
    svc.startService()
    one_cycle(clock)
    one_cycle(clock)
    assert status_of(engine, mid).status == ACTIVE
    assert health_of(engine, mid)["failures_in_row"] == 2
    one_cycle(clock)
    st = status_of(engine, mid)
    assert st.status == DISABLED_PROBES and st.status_reason.startswith("3 failed probes")
    assert version(engine) > v0
    assert [m["kind"] for m in mails(engine)] == ["disabled"]
    for _ in range(4):                         # the outage goes on: no second mail
        one_cycle(clock)
    assert [m["kind"] for m in mails(engine)] == ["disabled"]
    outcomes[mid] = True
    one_cycle(clock)
    assert status_of(engine, mid).status == DISABLED_PROBES       # one pass is not enough
    v1 = version(engine)
    one_cycle(clock)
    assert status_of(engine, mid).status == ACTIVE
    assert version(engine) > v1
    assert [m["kind"] for m in mails(engine)] == ["disabled", "recovered"]
    assert status_of(engine, other).status == ACTIVE               # the healthy one untouched
    msg = mails(engine)[0]
    assert msg["recipients"] == "ops@de1.example.net"
    head, body = msg["message"].decode(), body_of(msg)
    assert "Auto-Submitted: auto-generated" in head and "Reply-To: admins@example.org" in head
    assert "connection refused" in body and "How to fix it" in body


def test_second_outage_gets_a_second_mail(loop):
    svc, clock, outcomes, _prober, engine = loop
    with engine.begin() as c:
        mid = add_mirror(c)
        add_mirror(c, name="de2")          # a healthy one: half the mirrors pass, no brake
    svc.startService()
    for ok in (False, False, False, True, True, False, False, False):
        outcomes[mid] = ok
        one_cycle(clock)
    kinds = [m["kind"] for m in mails(engine)]
    assert kinds == ["disabled", "recovered", "disabled"]


def test_admin_disable_outranks_probes(loop):
    svc, clock, outcomes, _prober, engine = loop
    with engine.begin() as c:
        bad = add_mirror(c, name="de1", status=DISABLED_ADMIN, status_reason="hardware move")
        good = add_mirror(c, name="de2", status=DISABLED_ADMIN, status_reason="hardware move")
    outcomes[bad], outcomes[good] = False, True
    svc.startService()
    for _ in range(5):
        one_cycle(clock)
    assert status_of(engine, bad) == (DISABLED_ADMIN, "hardware move")
    assert status_of(engine, good) == (DISABLED_ADMIN, "hardware move")
    assert health_of(engine, good)["passes_in_row"] == 5           # still probed, for the admin
    assert mails(engine) == []


def test_probes_are_spread_over_the_interval(loop):
    svc, clock, _outcomes, prober, engine = loop
    with engine.begin() as c:
        for i in range(30):
            add_mirror(c, name=f"de{i + 1}")
    svc.startService()
    one_cycle(clock)
    times = sorted(t - START for t, _ in prober.calls)
    window = spread_window(svc.cfg.probes)                     # 45 s: the last ends in time
    assert len(times) == 30 and window == INTERVAL - svc.cfg.probes.timeout
    assert times[-1] <= window and times[-1] - times[0] > window * 0.8
    per_slot = [sum(1 for t in times if s * 9 <= t < (s + 1) * 9) for s in range(5)]
    assert max(per_slot) <= 8, per_slot                          # no burst: about 6 per 9 s
    one_cycle(clock)                                             # and the next tick is kept:
    assert len(prober.calls) == 60                               # every mirror every interval


def test_one_crashing_probe_does_not_stop_the_loop(loop):
    svc, clock, _outcomes, prober, engine = loop
    with engine.begin() as c:
        a = add_mirror(c, name="de1")
        b = add_mirror(c, name="de2")
    orig = prober.probe

    def probe(t):
        if t.mirror_id == a:
            raise RuntimeError("bug in the prober")
        return orig(t)

    prober.probe = probe
    with capturedLogs() as events:
        svc.startService()
        one_cycle(clock)
        one_cycle(clock)
    crashed = [e for e in events if e.get("log_format", "").startswith("probe of {mirror} crashed")]
    assert len(crashed) == 2 and crashed[0]["mirror"] == "de1"
    assert health_of(engine, b)["passes_in_row"] == 2
    ok_events = [e for e in events if e.get("log_format", "").startswith("probe {mirror} ok=")]
    assert {e["mirror"] for e in ok_events} == {"de2"} and all(e["ok"] for e in ok_events)


def test_ipv6_health_change_bumps_the_version(loop):
    svc, clock, outcomes, _prober, engine = loop
    with engine.begin() as c:
        mid = add_mirror(c)
        add_mirror(c, name="de2")
    svc.startService()
    one_cycle(clock)
    v = version(engine)
    one_cycle(clock)                        # nothing moved: no bump
    assert version(engine) == v
    outcomes[mid] = False                   # ipv4_up flips: the A answers change at once
    one_cycle(clock)
    assert version(engine) == v + 1


def test_a_mirror_without_pinned_addresses_serves_on_the_resolved_one_once_it_passed(loop):
    """No address in the table: the probe's resolved address is stored, the mirror's own name
    answers with it, and it serves (and the version moves) once a probe over it passed."""
    svc, clock, outcomes, _prober, engine = loop
    with engine.begin() as c:
        mid = add_mirror(c, ipv4=None)
    outcomes[mid] = False
    svc.cfg = make_cfg(min_pass_share=0.0)  # one mirror, failing: no brake for this one
    svc.startService()
    v = version(engine)

    def plan_entry():
        with engine.connect() as c:
            return build_plan(load_rows(c), svc.cfg, utc_from_ts(clock.seconds())).by_id[mid]
    one_cycle(clock)                        # never probed -> failed over 192.0.2.x
    e = plan_entry()
    assert version(engine) == v + 1 and not e.serving and e.ipv4 == f"192.0.2.{200 + mid}"
    assert e.reason.startswith("no passing probe yet")
    assert health_of(engine, mid)["probed_ipv4"] == e.ipv4
    outcomes[mid] = True
    one_cycle(clock)                        # first pass: serves
    assert version(engine) == v + 2 and plan_entry().serving
    one_cycle(clock)                        # nothing moved
    assert version(engine) == v + 2


def test_one_vantage_that_sees_most_mirrors_fail_disables_none_and_tells_the_list_once(loop):
    """The single-vantage brake: a probe-side outage is not a network-wide one."""
    svc, clock, outcomes, _prober, engine = loop
    with engine.begin() as c:
        ids = [add_mirror(c, name=f"de{i + 1}") for i in range(4)]
    svc.startService()
    one_cycle(clock)                                  # all pass
    v0 = version(engine)
    for i in ids[:3]:
        outcomes[i] = False
    for _ in range(6):                                # twice fail_after cycles of it
        one_cycle(clock)
    assert all(status_of(engine, i).status == ACTIVE for i in ids)
    assert version(engine) == v0                      # nothing a DNS answer depends on moved
    assert all(health_of(engine, i)["failures_in_row"] == 0 for i in ids)
    warn = mails(engine)
    assert [m["kind"] for m in warn] == ["vantage-broken"]
    assert warn[0]["recipients"] == "mirrors@lists.example.org"
    assert "only 1 of 4" in warn[0]["subject"].lower()
    for i in ids[:3]:                                 # its own view is kept, and shown
        outcomes[i] = True
    one_cycle(clock)                                  # the vantage counts again
    assert all(status_of(engine, i).status == ACTIVE for i in ids)
    assert [m["kind"] for m in mails(engine)] == ["vantage-broken"]


def test_a_hanging_mirror_delays_nobody(sqlite_engine):
    """A probe that takes the whole timeout holds one slot; the others keep their schedule."""
    from twisted.internet import defer

    clock = Clock()
    clock.advance(START)
    with sqlite_engine.begin() as c:
        ids = [add_mirror(c, name=f"de{i + 1}") for i in range(6)]
    inner = ScriptedProber(clock, {})
    finished = {}

    class Prober:
        def probe(self, t):
            d = inner.probe(t)
            if t.mirror_id == ids[0]:                 # hangs until its 15 s timeout
                late = defer.Deferred()
                clock.callLater(15, lambda: late.callback(None))
                d = late.addCallback(lambda _: inner.probe(t))
            return d.addCallback(lambda r: finished.setdefault(t.mirror_id, clock.seconds()) and r)

    svc = ProbeService(make_cfg(concurrency=2), SyncPool(sqlite_engine), clock, prober=Prober(),
                       rng=random.Random(3), batch_delay=0.5)
    due = {}
    start_one = svc._start_one
    svc._start_one = lambda t, d: (due.setdefault(t.mirror_id, clock.seconds()), start_one(t, d))
    svc.startService()
    clock.pump([1] * INTERVAL)
    assert finished[ids[0]] - due[ids[0]] >= 15
    for mid in ids[1:]:                                # probed when due, not after the hang
        assert finished[mid] == due[mid]
    assert all(health_of(sqlite_engine, mid)["passes_in_row"] == 1 for mid in ids)
    svc.stopService()


def test_a_mirror_without_maintainers_is_reported_to_the_list(loop):
    svc, clock, outcomes, _prober, engine = loop
    with engine.begin() as c:
        mid = add_mirror(c, emails=())
        add_mirror(c, name="de2")
    outcomes[mid] = False
    svc.startService()
    for _ in range(3):
        one_cycle(clock)
    (m,) = mails(engine, "disabled")
    assert m["recipients"] == "mirrors@lists.example.org" and m["mirror_id"] == mid
