"""Verdicts by agreement on a real table (SQLite and PostgreSQL): three vantage points' cycles
played through probes.store as their probe nodes run them. The same cases with real probe nodes
in network namespaces are in tests/test_vantages.py."""

from __future__ import annotations

import datetime as _dt
import json

import pytest

from dnsd.models import utcnow
from dnsd.records import vantages as _vantages
from dnsd.statuses import ACTIVE, DISABLED_PROBES
from probes import store
from probes.verdicts import BROKEN, COUNTS, GONE
from tests.probe_support import health_of, mails, status_of, version
from tests.probe_support import result_at as result
from tests.vantage_support import INTERVAL, Net, cfg


@pytest.fixture
def net(engine):
    return Net(engine, cfg())


def test_a_vantage_cut_off_from_one_mirror_leaves_it_serving(net):
    m1 = net.ids[0]
    for _ in range(6):
        net.round({"eu": [m1]})
    assert status_of(net.engine, m1).status == ACTIVE and mails(net.engine) == []
    assert health_of(net.engine, m1)["failures_in_row"] == 0      # 1 of 3 is no agreement
    with net.engine.connect() as conn:
        views = {v.vantage: v for v in _vantages.views_of(conn, m1)}
    assert views["eu"].failures_in_row == 6 and views["us"].passes_in_row == 6  # and shown


def test_a_vantage_cut_off_from_everything_disables_nothing_and_mails_once(net):
    net.round({})
    v0 = version(net.engine)
    for _ in range(6):
        out = net.round({"eu": net.ids})
    assert out["eu"]["broken"] and not out["us"]["broken"]
    assert all(status_of(net.engine, m).status == ACTIVE for m in net.ids)
    assert version(net.engine) == v0
    (mail,) = mails(net.engine)
    assert mail["kind"] == "vantage-broken" and mail["recipients"] == "mirrors@lists.example.org"
    assert mail["subject"] == "Probe vantage eu is broken: only 0 of 6 mirrors pass from it"
    assert net.standing("eu") == BROKEN and net.standing("us") == COUNTS
    net.round({})                                    # mended: it counts again, no more mail
    assert net.standing("eu") == COUNTS and len(mails(net.engine)) == 1


def test_a_mirror_down_for_every_vantage_is_disabled_with_one_mail(net):
    m1 = net.ids[0]
    net.round({})
    for n in range(3):
        net.round({"eu": [m1], "us": [m1], "ap": [m1]})
        if n < 2:
            assert status_of(net.engine, m1).status == ACTIVE
    st = status_of(net.engine, m1)
    assert st.status == DISABLED_PROBES
    assert st.status_reason.startswith("3 failed probes in a row from 2 of 3 vantages: refused")
    for _ in range(3):                               # and it stays down: no second mail
        net.round({"eu": [m1], "us": [m1], "ap": [m1]})
    (mail,) = mails(net.engine, "disabled")
    assert mail["recipients"] == "ops1@example.net" and mail["mirror_id"] == m1
    assert len(mails(net.engine)) == 1
    net.round({"eu": [m1]})                          # two of three see it back: one pass ...
    assert status_of(net.engine, m1).status == DISABLED_PROBES
    net.round({"eu": [m1]})                          # ... two passes from a quorum: restored
    assert status_of(net.engine, m1).status == ACTIVE
    assert [m["kind"] for m in mails(net.engine)] == ["disabled", "recovered"]


def test_a_pass_is_judged_at_once_a_failure_at_the_end_of_the_cycle(net):
    m1 = net.ids[0]
    net.round({})
    with net.engine.begin() as conn:
        store.start_cycle(conn, "eu", net.now)
        for _ in range(3):                           # mid-cycle failures: not judged yet
            store.record_probe(conn, result(m1, net.now, False), net.cfg, net.now, "eu")
    assert health_of(net.engine, m1)["failures_in_row"] == 0
    with net.engine.begin() as conn:
        done = store.record_probe(conn, result(net.ids[1], net.now, True), net.cfg, net.now, "eu")
    assert done["status"] == ACTIVE
    assert health_of(net.engine, net.ids[1])["last_probe_at"] == net.now   # a pass: at once


def test_a_configured_quorum_and_a_vantage_that_went_away(engine):
    net = Net(engine, cfg(quorum=3))
    m1 = net.ids[0]
    for _ in range(4):                               # two of three is not three
        net.round({"eu": [m1], "us": [m1]})
    assert status_of(engine, m1).status == ACTIVE
    for _ in range(4):                               # ap stops: after 3 intervals it is gone,
        net.round({"eu": [m1], "us": [m1]}, vantages=("eu", "us"))   # and 2 of 2 decide
    assert net.standing("ap") == GONE
    assert status_of(engine, m1).status == DISABLED_PROBES


def test_vantages_breaking_mid_cycle_stop_counting_before_their_cycles_end(engine):
    """Two vantages lose their network in the middle of a cycle. Once each has MIN_SAMPLE
    results its share so far breaks it, so the third one's cycle end, meanwhile, does not take
    their fresh failures for an agreement (with fail_after = 1 it would disable every mirror)."""
    net = Net(engine, cfg(fail_after=1), n=12)
    net.round({})
    for v in ("us", "ap"):
        with engine.begin() as conn:
            store.start_cycle(conn, v, net.now)
            for mid in net.ids:
                store.record_probe(conn, result(mid, net.now, False), net.cfg, net.now, v)
    assert net.standing("us") == net.standing("ap") == BROKEN
    out = net.cycle("eu")
    assert not out["broken"]
    assert all(status_of(engine, m).status == ACTIVE for m in net.ids)
    assert mails(engine) == []           # no cycle of theirs has ended: nothing to tell yet


def test_the_mirror_page_and_mirrorctl_show_give_each_vantages_verdict(sqlite_engine, tmp_path,
                                                                       capsys):
    from treq.testing import StubTreq
    from twisted.trial.unittest import SynchronousTestCase

    from admin import cli
    from admin.web import build_root
    from tests.webfakes import add_user, login, make_clock, make_ctx

    net = Net(sqlite_engine, cfg())
    net.now = utcnow().replace(microsecond=0) - _dt.timedelta(minutes=5)  # show's clock is real
    m1 = net.ids[0]
    net.round({})
    for _ in range(3):
        net.round({"eu": [m1], "ap": net.ids})            # eu cut off from m1, ap from all
    conf = tmp_path / "m.toml"
    conf.write_text(f'[database]\nurl = "{sqlite_engine.url}"\n[probes]\ninterval = {INTERVAL}\n'
                    '[dns]\nzone = "mirrors.example.org"\n')
    assert cli.main(["--config", str(conf), "show", "de1"]) in (0, None)
    lines = [x.strip() for x in capsys.readouterr().out.splitlines()]
    ap, eu, us = [x for x in lines if x.split(":")[0].split()[-1] in ("ap", "eu", "us")]
    assert ap.startswith("vantages    ap: failing: 3 failed probes (refused: connection refused)"
                         "; does not count (broken: only 0 of 6 mirrors passed in its last "
                         "cycle); last probe ")
    assert eu.startswith("eu: failing: 3 failed probes (refused: connection refused); counts;")
    assert us.startswith("us: passing, 4 passed in a row; counts;")
    cli.main(["--config", str(conf), "show", "de1", "--json"])
    shown = json.loads(capsys.readouterr().out)
    by = {v["vantage"]: v for v in shown["vantages"]}
    assert by["ap"]["counts"] is False and by["ap"]["standing"] == "broken"
    assert by["eu"]["counts"] and by["eu"]["failures_in_row"] == 3 and shown["status"] == ACTIVE

    add_user(sqlite_engine, "alice")
    ctx = make_ctx(sqlite_engine, "[probes]\ninterval = 60\n", clock=make_clock(net.now))
    stub, tc = StubTreq(build_root(ctx)), SynchronousTestCase()
    login(tc, stub, "alice")
    r = tc.successResultOf(stub.get(f"http://admin.test/admin/mirrors/{m1}"))
    page = tc.successResultOf(r.content()).decode()
    table = page[page.index("<h3>Vantage points</h3>"):]
    table = table[:table.index("</table>")]
    assert table.count("<tr><td class=\"mono\">") == 3
    assert "broken: only 0 of 6 mirrors passed in its last cycle" in table
    assert "failing: 3 failed probes (refused: connection refused)" in table
