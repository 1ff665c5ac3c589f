"""Maintenance windows: the rule (dnsd.maintenance) on plain records, the plan and the DNS
service's rebuilds at a window's edges on a Clock, the probes' side on a real table (SQLite and
PostgreSQL), and planning/cancelling through admin.store with dnsd.validation's checks.

The end-to-end run (real DNS over UDP, the probe loop, real HTTP mirrors) is
tests/test_maintenance_e2e.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from twisted.internet import defer
from twisted.internet.task import Clock

from admin import store
from dnsd import maintenance, models, picker, serving, snapshot, validation
from dnsd.config import Config, DNSConfig, MailConfig, ProbesConfig, parse_config
from dnsd.db import make_engine
from dnsd.errors import Invalid, NotFound, Refused
from dnsd.geo import GeoLocator
from dnsd.plan import build_plan, load_rows, row
from dnsd.records import maintenance as _windows
from dnsd.records import vantages as _vantages
from dnsd.records.maintenance import Window
from dnsd.service import DNSService
from dnsd.statuses import ACTIVE, DISABLED_PROBES, RETIRED
from probes import store as pstore
from probes.probe import utc_from_ts
from tests.dns_support import make_env
from tests.probe_support import add_mirror, health_of, mails, status_of, version
from tests.probe_support import result_at as result

T0 = dt.datetime(2026, 12, 1, 8, 0)
S = dt.timedelta(seconds=1)
MIN = dt.timedelta(minutes=1)
TTL = 150                                   # [dns] ttl's default: the TTL mirror answers carry
START, END = T0 + 60 * MIN, T0 + 120 * MIN
LEAVE = START - TTL * S
CFG = parse_config('[dns]\nzone = "m.test"\nmin_candidates = 1\n')
OFF = parse_config('[dns]\nzone = "m.test"\nmin_candidates = 1\n[probes]\nenabled = false\n')


def window(start=START, end=END, reason="new disks", cancelled_at=None, wid=1, mirror_id=1):
    return Window(id=wid, mirror_id=mirror_id, starts_at=start, ends_at=end, reason=reason,
                  created_by="ada", created_at=T0, cancelled_at=cancelled_at,
                  cancelled_by="ada" if cancelled_at else None)


def phase(at, windows=None, last_ok=T0, probes_on=True):
    return maintenance.state([window()] if windows is None else windows, at, TTL, last_ok,
                             probes_on).phase


# --- the rule ------------------------------------------------------------------------------------

def test_the_phases_at_each_edge():
    assert phase(LEAVE - S) == maintenance.NONE                 # still answered
    assert phase(LEAVE) == maintenance.LEAVING                   # ttl seconds before the start
    assert phase(START - S) == maintenance.LEAVING
    assert phase(START) == maintenance.IN
    assert phase(END - S) == maintenance.IN
    assert phase(END) == maintenance.RETURNING                   # no passed probe since the end
    assert phase(END + 60 * MIN) == maintenance.RETURNING        # ... however long it takes
    assert phase(END + 5 * MIN, last_ok=END - S) == maintenance.RETURNING   # a pass before it
    assert phase(END + 5 * MIN, last_ok=END) == maintenance.NONE           # a probe that started
    assert phase(END + 5 * MIN, last_ok=END + 4 * MIN) == maintenance.NONE  # at or after the end
    assert phase(END, probes_on=False) == maintenance.NONE       # nothing would ever probe it


def test_reasons_name_the_window_and_its_times():
    s = maintenance.state([window()], START, TTL, T0)
    assert s.out and s.reason == "in maintenance until 2026-12-01 10:00 UTC: new disks"
    s = maintenance.state([window()], LEAVE, TTL, T0)
    assert s.reason == ("maintenance from 2026-12-01 09:00 UTC (out of the answers 150 s "
                        "before, the answers' TTL): new disks")
    s = maintenance.state([window()], END, TTL, T0)
    assert s.reason == ("maintenance ended 2026-12-01 10:00 UTC; back once a probe started "
                        "after that passes")
    assert not maintenance.state([window()], T0, TTL, T0).out


def test_cancelled_windows_before_and_during():
    before = window(cancelled_at=START - 10 * MIN)               # cancelled before it started
    assert not maintenance.counts(before)
    assert [phase(t, [before]) for t in (LEAVE, START, END)] == [maintenance.NONE] * 3
    assert maintenance.probes_paused([before], START) is None
    assert maintenance.next_edge([before], T0, TTL) is None
    stop = START + 10 * MIN                                      # ended early: its end moved
    early = window(end=stop, cancelled_at=stop)
    assert maintenance.counts(early)
    assert phase(stop - S, [early]) == maintenance.IN
    assert phase(stop, [early]) == maintenance.RETURNING          # still waits for its probe


def test_probes_pause_from_the_start_to_the_end_only():
    w = [window()]
    assert maintenance.probes_paused(w, START - S) is None       # leaving: the probes count
    assert maintenance.probes_paused(w, START) == w[0]
    assert maintenance.probes_paused(w, END - S) == w[0]
    assert maintenance.probes_paused(w, END) is None


def test_next_edge_walks_leave_start_end():
    w = [window(), window(START + 300 * MIN, START + 360 * MIN, wid=2)]
    seen, t = [], T0
    while (t := maintenance.next_edge(w, t, TTL)) is not None:
        seen.append(t)
    assert seen == [LEAVE, START, END, w[1].starts_at - TTL * S, w[1].starts_at, w[1].ends_at]


def test_a_running_window_outranks_the_next_one_and_a_returning_one():
    a = window(START, END)
    b = window(END + 60 * S, END + 60 * MIN, wid=2, reason="second")
    # b's leave (END + 60 s - TTL) falls inside a: a is in force, then b leaves before a's end
    # has been followed by a probe
    assert maintenance.state([a, b], END - S, TTL, T0).window == a
    s = maintenance.state([a, b], END, TTL, T0)
    assert (s.phase, s.window) == (maintenance.LEAVING, b)
    s = maintenance.state([a, b], END + 60 * S, TTL, T0)
    assert (s.phase, s.window) == (maintenance.IN, b)


# --- the verdict and the plan ---------------------------------------------------------------------

def test_the_serving_verdict_and_the_pools_follow_the_phase():
    ws = (window(),)
    st = row(id=1, name="de1", ipv4="192.0.2.1", last_probe_at=T0, last_ok_at=T0, windows=ws)
    other = row(id=2, name="de2", hostname="m2.example", ipv4="192.0.2.2", last_probe_at=T0,
                last_ok_at=T0)
    rows = {"version": 7, "mirrors": [st, other]}

    def de(at):
        p = build_plan(rows, CFG, at)
        return p, {e.name for e in p.pool(None, "country", "DE")}

    p, names = de(LEAVE - S)
    assert names == {"de1", "de2"} and p.next_change == LEAVE
    assert p.by_name["de1"].windows == ws and p.by_name["de1"].maintenance == ""
    p, names = de(LEAVE)
    e = p.by_name["de1"]
    assert names == {"de2"} and not e.serving and e.maintenance == maintenance.LEAVING
    assert e.reason.startswith("maintenance from 2026-12-01 09:00 UTC")
    assert p.next_change == START and p.version == 7            # the same table version
    p, names = de(START)
    assert names == {"de2"} and p.by_name["de1"].maintenance == maintenance.IN
    p, names = de(END)
    assert names == {"de2"} and p.by_name["de1"].maintenance == maintenance.RETURNING
    assert p.next_change is None and p.by_name["de1"].windows == ()
    passed = {"version": 8, "mirrors": [st.replace(last_ok_at=END + 30 * S,
                                                   last_probe_at=END + 30 * S), other]}
    p = build_plan(passed, CFG, END + MIN)
    assert p.by_name["de1"].serving and p.by_name["de1"].maintenance == ""
    assert {x.name for x in picker.pick(p, "DE", count=5).chosen} == {"de1", "de2"}
    # without probes the end is the end
    assert build_plan(rows, OFF, END).by_name["de1"].serving


def test_maintenance_comes_after_status_and_before_the_probes_in_the_reasons():
    ws = (window(),)
    st = row(ipv4="192.0.2.1", status="disabled-by-admin", status_reason="moving", windows=ws)
    assert serving.decide(st.mirror, st.health, CFG, START, ws).reason == \
        "disabled by admin: moving"
    failing = row(ipv4="192.0.2.1", failures_in_row=5, last_error="timeout", windows=ws)
    v = serving.decide(failing.mirror, failing.health, CFG, START, ws)
    assert v.reason.startswith("in maintenance until") and v.maintenance.phase == maintenance.IN


# --- the DNS service at the edges (Clock, a real SQLite table, DB work inline) ---------------------

class InlinePool:
    def __init__(self, engine):
        self.engine, self.broken = engine, False

    def run_readonly(self, thd):
        if self.broken:
            return defer.fail(sa.exc.OperationalError("select", {}, Exception("unable to open")))
        with self.engine.connect() as conn:
            return defer.succeed(thd(conn))


def _dns(tmp_path, test_mmdb, clock):
    cfg, _port = make_env(tmp_path, test_mmdb, "min_candidates = 1\nsnapshot_dir = \"snap\"")
    engine = make_engine(cfg.database.url)
    pool = InlinePool(engine)
    svc = DNSService(cfg, pool, clock, geo=GeoLocator(test_mmdb), registry=CollectorRegistry(),
                     now=lambda: utc_from_ts(clock.seconds()))
    svc._in_thread = lambda f, *a: defer.maybeDeferred(f, *a)
    return svc, pool, engine


def _clock(at):
    c = Clock()
    c.advance(at.replace(tzinfo=dt.UTC).timestamp())
    return c


def test_the_plan_is_rebuilt_at_each_edge_with_no_change_in_the_table(tmp_path, test_mmdb):
    clock = _clock(T0)
    svc, pool, engine = _dns(tmp_path, test_mmdb, clock)
    with engine.begin() as conn:                # de2 (id 2) is planned out
        w = store.plan_maintenance(conn, "de2", "ada", starts_at=START, ends_at=END,
                                   reason="new disks", now=T0)
    svc.refresh()
    v = svc.plan.version
    assert svc.plan.current.next_change == LEAVE and svc.plan.current.mirror("de2").serving
    (timer,) = [c for c in clock.getDelayedCalls() if c.func == svc._edge]
    assert utc_from_ts(timer.getTime()) == LEAVE              # the timer waits for the edge
    builds = svc.plan.builds
    clock.advance((LEAVE - T0).total_seconds() - 1)
    assert svc.plan.builds == builds and svc.plan.current.mirror("de2").serving
    clock.advance(1)                                          # the edge: rebuilt by the timer
    e = svc.plan.current.mirror("de2")
    assert svc.plan.builds == builds + 1 and not e.serving and e.maintenance == "leaving"
    assert svc.plan.version == v and svc.answerer.table.version == v   # nothing in the table
    assert "de2" not in {x.name for x in svc.plan.current.pool(None, "country", "DE")}
    clock.advance(TTL)                                        # the start
    assert svc.plan.builds == builds + 2 and svc.plan.current.mirror("de2").maintenance == \
        maintenance.IN
    # the snapshot follows (written by the edge's rebuild)
    assert snapshot.newest(svc.snapshot_dir).plan.mirror("de2").maintenance == maintenance.IN
    # at the end, without the database: rebuilt from the rows last read (probes are off in this
    # config, so the end is the end)
    pool.broken = True
    clock.advance((END - START).total_seconds())
    assert svc.plan.current.mirror("de2").serving and not svc.plan.db_ok
    assert svc.plan.builds == builds + 3 and svc.plan.version == v
    assert svc.plan.current.next_change is None
    assert not [c for c in clock.getDelayedCalls() if c.func == svc._edge]
    assert w.mirror_id == 2


def test_the_poll_rebuilds_once_an_edge_passed_even_if_the_timer_did_not_fire(tmp_path,
                                                                               test_mmdb):
    clock = _clock(T0)
    svc, _pool, engine = _dns(tmp_path, test_mmdb, clock)
    with engine.begin() as conn:
        store.plan_maintenance(conn, "de2", "ada", starts_at=START, ends_at=END, reason="r",
                               now=T0)
    svc.refresh()
    svc._edge_call.cancel()                   # as if the wall clock jumped past the timer
    wall = [START + S]
    svc.now = lambda: wall[0]
    svc.refresh()
    assert svc.plan.current.mirror("de2").maintenance == maintenance.IN


# --- the probes during and after a window (real table, SQLite and PostgreSQL) ----------------------

def pcfg(**kw):
    p = {"interval": 60, "fail_after": 2, "pass_after": 2}
    p.update(kw)
    return Config(probes=ProbesConfig(**p), dns=DNSConfig(zone="mirrors.example.org",
                                                          min_candidates=1),
                  mail=MailConfig(list="mirrors@lists.example.org"))


class Net:
    """Three mirrors probed by one vantage, cycle by cycle."""

    def __init__(self, engine):
        self.engine, self.cfg = engine, pcfg()
        with engine.begin() as conn:
            self.ids = [add_mirror(conn, name=f"de{i}", emails=(f"ops{i}@example.net",))
                        for i in (1, 2, 3)]

    def planned(self):
        """One cycle passed, then de1 planned from START to END; returns de1's id."""
        self.cycle(T0)
        with self.engine.begin() as conn:
            store.plan_maintenance(conn, "de1", "ada", starts_at=START, ends_at=END,
                                   reason="r", now=T0)
        return self.ids[0]

    def cycle(self, at, fails=()):
        out = {}
        with self.engine.begin() as conn:
            pstore.start_cycle(conn, "eu", at)
        for mid in self.ids:
            with self.engine.begin() as conn:
                out[mid] = pstore.record_probe(conn, result(mid, at, mid not in fails),
                                               self.cfg, at, "eu")
        with self.engine.begin() as conn:
            out["end"] = pstore.end_cycle(conn, self.cfg, "eu", at + 30 * S)
        return out

    def serving(self, at):
        with self.engine.connect() as conn:
            p = build_plan(load_rows(conn, at), self.cfg, at)
        return {e.name for e in p.serving}

    def raw(self, mid):
        with self.engine.connect() as conn:
            return conn.execute(sa.select(models.probe_results.c.at, models.probe_results.c.ok)
                                .where(models.probe_results.c.mirror_id == mid)
                                .order_by(models.probe_results.c.id)).all()


def test_probes_during_a_window_count_for_nothing_and_mail_nobody(engine):
    net = Net(engine)
    de1 = net.ids[0]
    net.cycle(T0)
    net.cycle(T0 + MIN)
    assert net.serving(T0 + 2 * MIN) == {"de1", "de2", "de3"}
    with engine.begin() as conn:
        store.plan_maintenance(conn, "de1", "ada", starts_at=START, ends_at=END,
                               reason="new disks", now=T0 + 2 * MIN)
    before_h, before_v = dict(health_of(engine, de1)), version(engine)
    assert net.serving(LEAVE) == {"de2", "de3"}                 # left ttl seconds early
    raw = len(net.raw(de1))
    for k in range(5):                                          # down all window long
        out = net.cycle(START + k * 10 * MIN, fails=[de1])
        assert out[de1]["maintenance"].reason == "new disks"
        assert out["end"]["passed"] == 2 and out["end"]["total"] == 2   # not in the share
    assert status_of(engine, de1).status == ACTIVE
    h = dict(health_of(engine, de1))
    assert (h["failures_in_row"], h["passes_in_row"], h["last_probe_at"]) == (
        before_h["failures_in_row"], before_h["passes_in_row"], before_h["last_probe_at"])
    with engine.connect() as conn:
        (view,) = _vantages.views_of(conn, de1)
    assert view.failures_in_row == 0 and view.passes_in_row == 2
    assert len(net.raw(de1)) == raw                             # nothing stored of them
    assert [m["kind"] for m in mails(engine)] == []             # no disable mail
    assert version(engine) == before_v                          # and nothing moved the answers


def test_after_the_end_only_a_probe_that_started_after_it_brings_it_back(engine):
    net = Net(engine)
    de1 = net.planned()
    # a pass that started in the window, recorded after the end: not counted
    with engine.begin() as conn:
        out = pstore.record_probe(conn, result(de1, END - S, True), net.cfg, END + S, "eu")
    assert "maintenance" in out and net.serving(END + S) == {"de2", "de3"}
    # the first probe after the end fails: it stays out, and the failure counts again
    net.cycle(END + MIN, fails=[de1])
    assert health_of(engine, de1)["failures_in_row"] == 1
    assert net.serving(END + 2 * MIN) == {"de2", "de3"}
    with engine.connect() as conn:
        p = build_plan(load_rows(conn, END + 2 * MIN), net.cfg, END + 2 * MIN)
    assert p.by_name["de1"].reason.startswith("maintenance ended 2026-12-01 10:00 UTC")
    v = version(engine)
    net.cycle(END + 3 * MIN)                                    # a pass: back at once
    assert net.serving(END + 4 * MIN) == {"de1", "de2", "de3"}
    assert version(engine) > v                                  # the pass moved the answers
    assert [m["kind"] for m in mails(engine)] == []


def test_after_the_end_a_mirror_that_stays_down_is_disabled_as_usual(engine):
    net = Net(engine)
    de1 = net.planned()
    net.cycle(END + MIN, fails=[de1])
    net.cycle(END + 2 * MIN, fails=[de1])
    assert status_of(engine, de1).status == DISABLED_PROBES
    assert [m["kind"] for m in mails(engine)] == ["disabled"]


# --- planning and cancelling (admin.store, dnsd.validation) --------------------------------------

@pytest.mark.parametrize("start,end,reason,field,message", [
    ("", END, "r", "starts_at", "the start is empty"),
    ("tomorrow", END, "r", "starts_at",
     "the start is not a time: write it as YYYY-MM-DD HH:MM (UTC)"),
    ("2026-12-02", END, "r", "starts_at",
     "the start is not a time: write it as YYYY-MM-DD HH:MM (UTC)"),
    (T0 - MIN, END, "r", "starts_at", "the start is in the past"),
    (T0 + dt.timedelta(days=400), T0 + dt.timedelta(days=401), "r", "starts_at",
     "the start is more than 366 days ahead"),
    (START, START, "r", "ends_at", "the end must be after the start"),
    (START, START - MIN, "r", "ends_at", "the end must be after the start"),
    (START, START + dt.timedelta(days=8), "r", "ends_at",
     "a window is at most 7 days long (for longer, disable the mirror)"),
    (START, END, "", "reason", "the reason is empty"),
    (START, END, "x" * 501, "reason", "the reason is longer than 500 characters"),
    (START, END, "two\nlines", "reason", "the reason must not hold control characters or line "
                                         "breaks"),
])
def test_bad_windows_are_refused_by_field(start, end, reason, field, message):
    with pytest.raises(Invalid) as e:
        validation.maintenance_window(start, end, reason, T0)
    assert (e.value.field, e.value.message) == (field, message)


def test_every_field_with_a_problem_is_reported_at_once():
    w, errors = validation.maintenance_window_errors("x", "", " ", T0)
    assert w is None and set(errors) == {"starts_at", "ends_at", "reason"}


def test_times_as_text_and_in_other_zones_become_naive_utc():
    w = validation.maintenance_window("2026-12-01 09:00", "2026-12-01T12:30:00+02:00",
                                      " new disks ", T0)
    assert (w.starts_at, w.ends_at, w.reason) == (START, dt.datetime(2026, 12, 1, 10, 30),
                                                  "new disks")
    assert validation.moment("2026-12-01 09:00 UTC", "starts_at") == START
    assert validation.moment("2026-12-01T09:00Z", "starts_at") == START
    # the current minute counts as now (a form has minutes only)
    assert validation.maintenance_window(T0, T0 + MIN, "r", T0 + 30 * S).starts_at == T0


def _audit(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(models.audit.c.actor, models.audit.c.action,
                                      models.audit.c.before, models.audit.c.after)
                            .order_by(models.audit.c.id)).all()


def test_planning_is_audited_noted_mailed_and_moves_the_version(engine):
    with engine.begin() as conn:
        add_mirror(conn, name="de1", emails=("ops@de1.example.net",))
    v = version(engine)
    mail = store.MailSettings(sender="mirrors@example.org", list="list@example.org")
    with engine.begin() as conn:
        w = store.plan_maintenance(conn, "de1", "ada", starts_at="2026-12-01 09:00",
                                   ends_at="2026-12-01 10:00", reason="new disks", mail=mail,
                                   now=T0)
    assert (w.starts_at, w.ends_at, w.reason, w.created_by) == (START, END, "new disks", "ada")
    assert version(engine) == v + 1
    (a,) = _audit(engine)
    assert (a.actor, a.action) == ("ada", "maintenance-plan")
    assert json.loads(a.after) == {"window": w.id, "starts_at": "2026-12-01T09:00:00",
                                   "ends_at": "2026-12-01T10:00:00", "reason": "new disks"}
    with engine.connect() as conn:
        assert store.get_mirror(conn, "de1").notes[0].text == (
            "Maintenance planned, 2026-12-01 09:00 UTC to 2026-12-01 10:00 UTC: new disks")
        assert store.maintenance_windows(conn, "de1") == [w]
    (m,) = mails(engine)
    assert m["kind"] == "maintenance-planned"
    assert m["recipients"] == "list@example.org,ops@de1.example.net"
    assert m["subject"] == ("[mirrors] de1 (de1.example.net) maintenance 2026-12-01 09:00 UTC "
                            "to 2026-12-01 10:00 UTC")


def test_overlapping_windows_and_retired_mirrors_are_refused(engine):
    with engine.begin() as conn:
        add_mirror(conn, name="de1")
        add_mirror(conn, name="de2", status=RETIRED)
        store.plan_maintenance(conn, "de1", "ada", starts_at=START, ends_at=END, reason="r",
                               now=T0)
    with engine.begin() as conn, pytest.raises(Refused) as e:
        store.plan_maintenance(conn, "de1", "ada", starts_at=END - MIN, ends_at=END + MIN,
                               reason="again", now=T0)
    assert e.value.field == "starts_at" and "already has maintenance planned from " \
        "2026-12-01 09:00 UTC to 2026-12-01 10:00 UTC (window #1)" in e.value.message
    with engine.begin() as conn:                   # right after it is fine
        store.plan_maintenance(conn, "de1", "ada", starts_at=END, ends_at=END + MIN,
                               reason="after", now=T0)
    with engine.begin() as conn, pytest.raises(Refused, match="retired"):
        store.plan_maintenance(conn, "de2", "ada", starts_at=START, ends_at=END, reason="r",
                               now=T0)
    with engine.begin() as conn, pytest.raises(NotFound):
        store.plan_maintenance(conn, "xx9", "ada", starts_at=START, ends_at=END, reason="r",
                               now=T0)


def test_cancel_before_the_start_and_while_it_runs(engine):
    with engine.begin() as conn:
        d1, d2 = add_mirror(conn, name="de1"), add_mirror(conn, name="de2")
        a = store.plan_maintenance(conn, "de1", "ada", starts_at=START, ends_at=END, reason="a",
                                   now=T0)
        b = store.plan_maintenance(conn, "de2", "ada", starts_at=START, ends_at=END, reason="b",
                                   now=T0)
    with engine.begin() as conn, pytest.raises(NotFound):     # not this mirror's window
        store.cancel_maintenance(conn, a.id, "bob", mirror_ref="de2", now=LEAVE)
    v = version(engine)
    with engine.begin() as conn:                   # leaving: cancelled, it never happened
        ca = store.cancel_maintenance(conn, a.id, "bob", mirror_ref="de1", now=LEAVE + S)
    assert not ca.counts and ca.ends_at == END and ca.cancelled_by == "bob"
    assert version(engine) == v + 1
    with engine.connect() as conn:
        p = build_plan(load_rows(conn, LEAVE + S), CFG, LEAVE + S)
    # no window has a say any more (it serves as soon as the ordinary rules let it: here once
    # a first probe passed)
    assert p.by_id[d1].maintenance == "" and p.by_id[d1].reason == "never probed"
    stop = START + 10 * MIN
    with engine.begin() as conn:                   # running: it ends now, a probe brings it back
        cb = store.cancel_maintenance(conn, b.id, "bob", now=stop)
    assert cb.counts and cb.ended_early and cb.ends_at == stop
    with engine.connect() as conn:
        p = build_plan(load_rows(conn, stop), CFG, stop)
    assert p.by_id[d2].maintenance == maintenance.RETURNING
    with engine.begin() as conn, pytest.raises(Refused, match="already cancelled by bob"):
        store.cancel_maintenance(conn, b.id, "bob", now=stop + S)
    with engine.begin() as conn:
        c = store.plan_maintenance(conn, "de1", "ada", starts_at=END, ends_at=END + MIN,
                                   reason="c", now=stop)
    with engine.begin() as conn, pytest.raises(Refused, match="is over"):
        store.cancel_maintenance(conn, c.id, "bob", now=END + MIN)
    actions = [a.action for a in _audit(engine)]
    assert actions == ["maintenance-plan", "maintenance-plan", "maintenance-cancel",
                       "maintenance-cancel", "maintenance-plan"]


def test_the_plan_reads_the_windows_with_a_say_only(engine):
    with engine.begin() as conn:
        mid = add_mirror(conn, name="de1")
        for k in range(3):                         # three windows long over, one ahead
            s = T0 + k * dt.timedelta(days=1)
            store.plan_maintenance(conn, "de1", "ada", starts_at=s, ends_at=s + MIN,
                                   reason=f"w{k}", now=s)
        store.plan_maintenance(conn, "de1", "ada", starts_at=T0 + dt.timedelta(days=5),
                               ends_at=T0 + dt.timedelta(days=5, minutes=1), reason="ahead",
                               now=T0 + dt.timedelta(days=3))
        got = _windows.relevant(conn, T0 + dt.timedelta(days=4))
    assert [w.reason for w in got[mid]] == ["w2", "ahead"]   # the last ended one, and what's ahead
    assert dataclasses.asdict(got[mid][0])["created_by"] == "ada"


def test_no_reminder_while_a_window_runs(engine):
    """A mirror whose last sync looks stale because nothing counted its probes during a window
    gets no "out of sync" reminder until the window is over."""
    from admin.reports import daily_reminders

    with engine.begin() as conn:
        mid = add_mirror(conn, name="de1")
        conn.execute(models.mirror_health.insert().values(
            mirror_id=mid, last_probe_at=T0, last_ok_at=T0, updated_at=T0,
            last_sync_at=T0 - dt.timedelta(hours=40)))             # stale by [dns] max_sync_age
        store.plan_maintenance(conn, "de1", "ada", starts_at=START, ends_at=END, reason="r",
                               now=T0)
    with engine.begin() as conn:
        assert daily_reminders(conn, pcfg(), START + MIN) == []        # in the window: none
    with engine.begin() as conn:
        assert len(daily_reminders(conn, pcfg(), END + MIN)) == 1     # after it: as usual
    assert [m["kind"] for m in mails(engine)] == ["reminder"]
