"""Side effects exactly once across nodes (issue 12): a mirror's status moves once, with one note
and one mail, however many nodes judge the same transition at the same moment; the same for a
vantage that breaks, an application two admins accept, and the first row of a mirror's health.

On PostgreSQL the race is forced, not hoped for (`at_once`): node A does its work and holds its
transaction open; node B, in a thread, does the same work from what it read before A committed,
until it waits on a row A holds (seen in pg_stat_activity); only then does A commit. Before the
status moves became a compare-and-set (dnsd.records.mirrors.move_status) B then wrote the same
transition again and queued a second mail: two "disabled" mails for one outage, seen in CI with
three probe vantages (tests/test_vantages.py). SQLite runs one writing transaction at a time
(BEGIN IMMEDIATE, dnsd.db), so B cannot read before A commits; there the same cases run as
threads started together, and the compare-and-set itself is checked with a stale read.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time

import pytest
import sqlalchemy as sa

from admin import store as admin_store
from admin import waitinglist
from admin.store import MailSettings, StoreError
from dnsd.models import bump_version, current_version, mirror_health, notes
from dnsd.models import mirrors as mirrors_table
from dnsd.records import mirrors as _mirrors
from dnsd.statuses import ACTIVE, DISABLED_ADMIN, DISABLED_PROBES
from probes import store
from tests.probe_support import add_mirror, mails, status_of
from tests.probe_support import result_at as result
from tests.vantage_support import INTERVAL, T0, Net, cfg

MAIL = MailSettings(sender="mirrors@example.org", list="list@example.org")
TWO = ("eu", "ap")


def at_once(engine, first, second):
    """first(conn) in this thread, its transaction held open until second(conn), in another
    thread and transaction, waits on a row lock first holds; then first commits and second
    finishes. Returns (first's result, second's result or the exception it raised)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("forcing the interleaving needs row locks (PostgreSQL's); SQLite runs one "
                    "writing transaction at a time, so a second node cannot read before the "
                    "first commits (the threaded tests below cover it)")
    out = {}

    def run_second():
        try:
            with engine.begin() as b:
                out["b"] = second(b)
        except Exception as e:           # handed back: the test says what it expected
            out["b"] = e

    b = threading.Thread(target=run_second)
    with engine.begin() as a:
        pid = a.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        out["a"] = first(a)
        b.start()
        deadline = time.monotonic() + 30
        while True:
            with engine.connect() as watch:       # a new snapshot of pg_stat_activity each time
                waiting = watch.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"
                ), {"pid": pid}).scalar()
            if waiting:
                break
            assert b.is_alive(), f"the second node finished without waiting for the first: {out}"
            assert time.monotonic() < deadline, "the second node never waited for the first"
            time.sleep(0.01)
    b.join(30)
    assert not b.is_alive(), "the second node did not finish after the first committed"
    return out["a"], out["b"]


def together(engine, *works):
    """Each work(conn) in its own thread and transaction, all released at the same moment (a
    barrier); returns their results (or exceptions) in order."""
    gate, out = threading.Barrier(len(works)), [None] * len(works)

    def run(i, work):
        gate.wait()
        try:
            with engine.begin() as conn:
                out[i] = work(conn)
        except Exception as e:
            out[i] = e

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(works)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def end_cycle(net, vantage):
    return lambda conn: store.end_cycle(conn, net.cfg, vantage, net.now)


def record(net, vantage, mid, ok):
    return lambda conn: store.record_probe(conn, result(mid, net.now, ok), net.cfg, net.now,
                                           vantage)


def notes_of(engine, mid):
    with engine.connect() as c:
        return list(c.execute(sa.select(notes.c.text).where(notes.c.mirror_id == mid)
                              .order_by(notes.c.id)).scalars())


def kinds(engine):
    return [m["kind"] for m in mails(engine)]


def failing_twice(engine, **kw):
    """Two vantages that count, two mirrors; de1 has failed once from each, and its second
    failures are recorded, with both cycles still to end (fail_after = 2: those ends disable)."""
    net = Net(engine, cfg(fail_after=2, pass_after=1, **kw), n=2)
    m1 = net.ids[0]
    net.round({}, vantages=TWO)
    net.round({v: [m1] for v in TWO}, vantages=TWO)
    for v in TWO:
        net.probe(v, [m1])
    return net, m1


def assert_disabled_once(net, m1):
    st = status_of(net.engine, m1)
    assert st.status == DISABLED_PROBES
    assert st.status_reason.startswith("2 failed probes in a row from 2 of 2 vantages: refused")
    assert kinds(net.engine) == ["disabled"]
    assert [n for n in notes_of(net.engine, m1) if "->" in n] == [
        f"{ACTIVE} -> {DISABLED_PROBES}: {st.status_reason}"]


def test_two_vantages_ending_their_cycles_at_once_disable_a_mirror_once(engine):
    net, m1 = failing_twice(engine)
    a, b = at_once(engine, end_cycle(net, "eu"), end_cycle(net, "ap"))
    assert a["judged"][m1]["changed"] and a["judged"][m1]["mail"] is not None
    assert not isinstance(b, Exception), b
    # the second node read "active" before the first committed; it judged again what is there
    assert b["judged"][m1] == {"status": DISABLED_PROBES, "changed": False, "mail": None,
                               "bumped": False}
    assert_disabled_once(net, m1)


def test_two_vantages_passing_at_once_restore_a_mirror_once(engine):
    net, m1 = failing_twice(engine, quorum=1)            # one vantage's pass restores alone
    for v in TWO:
        with engine.begin() as conn:
            store.end_cycle(conn, net.cfg, v, net.now)
    assert status_of(engine, m1).status == DISABLED_PROBES
    net.now += _dt.timedelta(seconds=INTERVAL)
    for v in TWO:
        with engine.begin() as conn:
            store.start_cycle(conn, v, net.now)
    a, b = at_once(engine, record(net, "eu", m1, True), record(net, "ap", m1, True))
    assert a["changed"] and a["status"] == ACTIVE and a["mail"] is not None
    assert b == {"status": ACTIVE, "changed": False, "mail": None, "bumped": False}
    assert kinds(engine) == ["disabled", "recovered"]
    assert [n.split(":")[0] for n in notes_of(engine, m1) if "->" in n] == [
        f"{ACTIVE} -> {DISABLED_PROBES}", f"{DISABLED_PROBES} -> {ACTIVE}"]


def test_an_admin_disabling_while_the_probes_judge_outranks_them(engine):
    net, m1 = failing_twice(engine)
    a, b = at_once(engine,
                   lambda conn: admin_store.disable(conn, "de1", "alice", "maintenance", MAIL),
                   end_cycle(net, "eu"))
    assert a.status == DISABLED_ADMIN
    assert not isinstance(b, Exception), b
    assert b["judged"][m1]["changed"] is False
    # before: the probes' stale "active -> disabled-by-probes" overwrote the admin's decision
    st = status_of(engine, m1)
    assert (st.status, st.status_reason) == (DISABLED_ADMIN, "maintenance")
    assert kinds(engine) == ["mirror-disabled"]


def test_two_admins_disabling_at_once_make_one_change_and_the_second_is_told(engine):
    with engine.begin() as conn:
        add_mirror(conn)
    a, b = at_once(engine,
                   lambda conn: admin_store.disable(conn, "de1", "alice", "disk full", MAIL),
                   lambda conn: admin_store.disable(conn, "de1", "bob", "maintenance", MAIL))
    assert a.status == DISABLED_ADMIN
    assert isinstance(b, StoreError)
    assert str(b) == ("de1 (de1.example.net) was changed meanwhile: it is disabled by admin "
                      "now; nothing was done")
    st = status_of(engine, a.id)
    assert (st.status, st.status_reason) == (DISABLED_ADMIN, "disk full")
    assert kinds(engine) == ["mirror-disabled"]


def test_two_admins_accepting_one_application_at_once_make_one_mirror(engine):
    v = waitinglist.validate({"name": "Jane", "email": "jane@example.org", "country": "DE",
                              "hostname": "m.example.de", "http_url": "http://m.example.de/"})
    assert v.ok, v.errors
    with engine.begin() as conn:
        app = waitinglist.create(conn, v, source_ip="192.0.2.1", base_url="https://m.example",
                                 sender="mirrors@example.org", title="Mirrors")

    def accept(who, name):             # each names the mirror: no name clash to stop the second
        return lambda conn: admin_store.accept_application(conn, app.id, who, name, MAIL)

    a, b = at_once(engine, accept("alice", "de5"), accept("bob", "de6"))
    assert a.name == "de5"
    assert isinstance(b, StoreError)
    assert str(b) == (f"application #{app.id} was decided meanwhile: it is accepted now; "
                      "nothing was done")
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(mirrors_table)).scalar() == 1
    assert kinds(engine) == ["application", "mirror-added"]


def test_one_vantage_ended_by_two_processes_at_once_mails_its_breaking_once(engine):
    net = Net(engine, cfg(), n=2)
    net.round({}, vantages=TWO)
    net.probe("eu", net.ids)                             # eu reaches no mirror this cycle
    a, b = at_once(engine, end_cycle(net, "eu"), end_cycle(net, "eu"))
    assert a["broken"] and a["mailed"] is not None
    assert not isinstance(b, Exception), b
    assert b["mailed"] is None
    assert kinds(engine) == ["vantage-broken"]


def test_two_vantages_judging_a_new_mirror_at_once_both_succeed(engine):
    net = Net(engine, cfg(), n=1)
    net.round({}, vantages=TWO)
    with engine.begin() as conn:
        fresh = add_mirror(conn, name="de9", emails=("ops9@example.net",))
    net.ids.append(fresh)
    # both insert de9's first health row; the second waits for the first and must not fail
    # on the key (its whole transaction, the probe result with it, would be lost)
    a, b = at_once(engine, record(net, "eu", fresh, True), record(net, "ap", fresh, True))
    assert a["status"] == ACTIVE and not isinstance(b, Exception), b
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(mirror_health).where(
            mirror_health.c.mirror_id == fresh)).scalar() == 1


def test_the_first_two_changes_of_a_new_table_at_once_both_move_its_version(engine):
    a, b = at_once(engine, bump_version, bump_version)    # no version row yet: both insert it
    assert (a, b) == (1, 2)
    with engine.connect() as c:
        assert current_version(c) == 2


@pytest.mark.parametrize("nodes", [2, 6])
def test_many_vantages_ending_their_cycles_together_disable_once(engine, nodes):
    """No forced order: `nodes` threads end the same cycle at the same moment (every dialect)."""
    net, m1 = failing_twice(engine)
    done = together(engine, *[end_cycle(net, TWO[i % 2]) for i in range(nodes)])
    assert not [x for x in done if isinstance(x, Exception)], done
    assert sum(1 for x in done if x["judged"][m1]["changed"]) == 1
    assert_disabled_once(net, m1)


def test_a_status_read_before_someone_moved_it_moves_nothing(engine):
    later = [T0 + _dt.timedelta(minutes=i) for i in range(1, 4)]
    with engine.begin() as conn:
        mid = add_mirror(conn, status_since=T0)
        stale = _mirrors.get(conn, mid)
    with engine.begin() as conn:
        assert _mirrors.move_status(conn, stale, DISABLED_ADMIN, "disk full", later[0])
    with engine.begin() as conn:                          # `stale` still says active
        assert not _mirrors.move_status(conn, stale, DISABLED_PROBES, "refused", later[1])
        again = _mirrors.get(conn, mid)
        assert _mirrors.move_status(conn, again, ACTIVE, "", later[1])
        # the same status since another time is another move: the read is stale again (A-B-A)
        assert not _mirrors.move_status(conn, stale, DISABLED_PROBES, "refused", later[2])
    st = status_of(engine, mid)
    assert (st.status, st.status_reason) == (ACTIVE, "")
    with engine.connect() as c:
        assert _mirrors.get(c, mid).status_since == later[1]
