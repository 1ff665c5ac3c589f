"""The pure rules of verdicts by agreement (probes.verdicts): counters per vantage, the quorum,
what a quorum agrees on, and when a vantage is broken itself."""

from __future__ import annotations

import pytest

from dnsd.statuses import ACTIVE, DISABLED_PROBES
from probes.verdicts import DISABLED, RECOVERED, Counters, agreed, broken, count, judge, quorum_size


def test_each_vantage_counts_its_own_runs():
    c = Counters()
    for ok in (False, False, True, True, True, False):
        c = count(c, ok)
    assert c == Counters(1, 0)
    assert count(Counters(0, 4), True) == Counters(0, 5)


@pytest.mark.parametrize("counted, configured, need", [
    (0, 0, 0), (1, 0, 1), (2, 0, 2), (3, 0, 2), (4, 0, 3), (5, 0, 3),
    (3, 1, 1), (3, 3, 3), (2, 3, 2),           # a configured quorum, capped at what counts
])
def test_the_quorum_is_a_majority_of_the_counted_vantages_unless_configured(counted, configured,
                                                                           need):
    assert quorum_size(counted, configured) == need


def test_a_quorum_agrees_on_the_runs_that_many_vantages_reached():
    three = [Counters(5, 0), Counters(3, 0), Counters(0, 2)]
    assert agreed(three, 1) == Counters(5, 2)
    assert agreed(three, 2) == Counters(3, 0)      # two of three saw at least 3 failures
    assert agreed(three, 3) == Counters(0, 0)
    assert agreed([Counters(4, 0)], 2) == Counters(0, 0)   # one that has not probed it yet
    assert agreed([], 0) == Counters()


def test_one_vantage_cut_off_from_one_mirror_does_not_disable_it():
    counters = [Counters(9, 0), Counters(0, 9), Counters(0, 9)]      # one cut off for long
    v = judge(ACTIVE, agreed(counters, quorum_size(3)), "refused", "connection refused",
              fail_after=3, pass_after=2)
    assert v.status == ACTIVE and not v.changed


def test_a_quorum_disables_and_restores_and_says_so():
    v = judge(ACTIVE, agreed([Counters(3, 0), Counters(4, 0), Counters(0, 1)], 2), "timeout",
              "no complete answer in time", fail_after=3, pass_after=2,
              agreement="2 of 3 vantages")
    assert v.status == DISABLED_PROBES and v.mail == DISABLED
    assert v.reason == ("3 failed probes in a row from 2 of 3 vantages: timeout: "
                        "no complete answer in time")
    v = judge(DISABLED_PROBES, agreed([Counters(0, 2), Counters(0, 3), Counters(2, 0)], 2), "",
              "", fail_after=3, pass_after=2, agreement="2 of 3 vantages")
    assert v.status == ACTIVE and v.mail == RECOVERED and v.outage_over
    assert v.reason == "2 fresh passes in a row from 2 of 3 vantages"


def test_a_vantage_is_broken_when_too_few_mirrors_pass_in_its_cycle():
    assert broken(40, 92, 0.5) and not broken(46, 92, 0.5) and not broken(0, 0, 0.5)
    assert broken(5, 92, 0.5) and not broken(5, 92, 0.0)
