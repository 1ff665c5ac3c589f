"""Verdicts: what a run of probe results says about a mirror (pure: no I/O, no clock).

Hysteresis, so one lost packet never flips a mirror and a flapping one does not come back on a
single lucky probe:

- K failures in a row (`[probes] fail_after`, default 3) take an *active* mirror out
  (`disabled-by-probes`, with the reason and since when); a stale timestamp (older than
  `[dns] max_sync_age`, dnsd.serving's one limit) counts as a failure like any other, with its own
  reason ("out of sync 31 h").
- M passes in a row (`pass_after`, default 2) bring a `disabled-by-probes` mirror back; a pass is a
  probe that read a valid, fresh timestamp, so a restored mirror is always fresh.
- Probes only ever move a mirror between `active` and `disabled-by-probes`. A mirror an admin
  disabled (or that is pending or retired) keeps its status whatever the probes say: an admin's
  decision outranks the probes, and the probes never re-enable it.

By agreement, when several vantage points probe (one per probe node, `[probes] vantage`): each
keeps its own counters per mirror (`count`), and a mirror's verdict follows the counters a
*quorum* of the counted vantages share (`agreed`): disabled when a quorum has each seen K failures
in a row, restored when a quorum has each seen M fresh passes. A vantage counts while it is live
(it finished a cycle in the last `LIVE_CYCLES` probe intervals) and not broken: one that sees
fewer than `[probes] min_pass_share` of the mirrors pass in a cycle (`broken`) is itself the likely
fault (its network, its resolver), so its results are stored and shown but decide nothing. With
one vantage the same rule is the brake: a cycle in which most mirrors fail disables nothing.

Whether the mirror then *serves* is not decided here but by dnsd.serving, from the status these
verdicts set and the counters they keep.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass

from dnsd.statuses import ACTIVE, DISABLED_PROBES

DISABLED = "disabled"
RECOVERED = "recovered"


@dataclass(frozen=True)
class Counters:
    failures_in_row: int = 0
    passes_in_row: int = 0


@dataclass(frozen=True)
class Verdict:
    failures_in_row: int
    passes_in_row: int
    status: str                          # the mirror's status after this probe
    reason: str                          # status_reason to store when the status changed
    changed: bool                        # the status moved (bump the version, write a note)
    mail: str | None                     # DISABLED | RECOVERED | None
    outage_over: bool                    # passes reached M while active: clear the outage markers


LIVE_CYCLES = 3          # a vantage that finished no cycle in this many intervals is not live


def count(before: Counters, ok: bool) -> Counters:
    """One vantage's counters after one more of its probes."""
    return Counters(0 if ok else before.failures_in_row + 1,
                    before.passes_in_row + 1 if ok else 0)


def quorum_size(counted: int, quorum: int = 0) -> int:
    """How many counted vantages must agree: `[probes] quorum`, or (0) a majority of them;
    never more than there are, so a vantage that went missing does not freeze every verdict."""
    if counted <= 0:
        return 0
    return min(quorum, counted) if quorum > 0 else counted // 2 + 1


def agreed(counters: Sequence[Counters], need: int) -> Counters:
    """The runs `need` vantages have each reached: the need-th longest failure run and the
    need-th longest pass run (a vantage that has not probed the mirror yet counts as 0, 0)."""
    if need <= 0:
        return Counters()
    fails = sorted((c.failures_in_row for c in counters), reverse=True) + [0] * need
    passes = sorted((c.passes_in_row for c in counters), reverse=True) + [0] * need
    return Counters(fails[need - 1], passes[need - 1])


def broken(passed: int, total: int, min_pass_share: float) -> bool:
    """A vantage whose cycle saw fewer than `min_pass_share` of the mirrors pass."""
    return total > 0 and passed / total < min_pass_share


COUNTS = "counts"
BROKEN = "broken"
GONE = "gone"
MIN_SAMPLE = 10          # results of a cycle in progress before its share alone can break it


@dataclass(frozen=True)
class Standing:
    """Whether a vantage's results count now, and if not, why."""
    state: str                           # COUNTS | BROKEN | GONE
    reason: str = ""

    @property
    def counts(self) -> bool:
        return self.state == COUNTS


def _share(passed: int, total: int) -> str:
    return f"{passed} of {total} mirrors passed"


def standing(v, *, now: _dt.datetime, interval: float, min_pass_share: float,
             me: bool = False) -> Standing:
    """A vantage (dnsd.records.vantages.Vantage) counts unless its last complete cycle broke it,
    its cycle in progress is breaking it (after MIN_SAMPLE results), or it is not live: it
    finished no cycle in the last LIVE_CYCLES intervals. `me` is the vantage asking, which is
    live by definition (it is probing right now)."""
    if v.broken_since is not None:
        return Standing(BROKEN, f"broken: only {_share(v.last_passed, v.last_total)} in its "
                                f"last cycle")
    if v.cycle_total >= MIN_SAMPLE and broken(v.cycle_passed, v.cycle_total, min_pass_share):
        return Standing(BROKEN, f"breaking: only {_share(v.cycle_passed, v.cycle_total)} in its "
                                f"cycle so far")
    if not me:
        if v.last_cycle_at is None:
            return Standing(GONE, "no complete cycle yet")
        if (now - v.last_cycle_at).total_seconds() > LIVE_CYCLES * interval:
            return Standing(GONE, f"no complete cycle since {v.last_cycle_at:%Y-%m-%d %H:%M}")
    return Standing(COUNTS)


def decide(status: str, before: Counters, ok: bool, error_class: str, error: str, *,
           fail_after: int, pass_after: int) -> Verdict:
    """The verdict after one probe, from the mirror's status and its counters before it."""
    return judge(status, count(before, ok), error_class, error,
                 fail_after=fail_after, pass_after=pass_after)


def judge(status: str, now: Counters, error_class: str, error: str, *,
          fail_after: int, pass_after: int, agreement: str = "") -> Verdict:
    """The verdict from the counters that hold now (one vantage's, or those a quorum agrees on);
    `error_class` and `error` describe the latest failure, `agreement` ("2 of 3 vantages") goes
    into the reason."""
    fails, passes = now.failures_in_row, now.passes_in_row
    new, reason, mail = status, "", None
    by = f" from {agreement}" if agreement else ""
    if status == ACTIVE and fails >= fail_after:
        new, mail = DISABLED_PROBES, DISABLED
        reason = f"{fails} failed probes in a row{by}: " + (
            error if error_class == "stale" else f"{error_class}: {error}")
    elif status == DISABLED_PROBES and passes >= pass_after:
        new, mail = ACTIVE, RECOVERED
        reason = f"{passes} fresh passes in a row{by}"
    outage_over = passes >= pass_after and new == ACTIVE
    return Verdict(fails, passes, new, reason, new != status, mail, outage_over)
