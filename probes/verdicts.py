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

Whether the mirror then *serves* is not decided here but by dnsd.serving, from the status these
verdicts set and the counters they keep.
"""

from __future__ import annotations

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


def decide(status: str, before: Counters, ok: bool, error_class: str, error: str, *,
           fail_after: int, pass_after: int) -> Verdict:
    """The verdict after one probe, from the mirror's status and its counters before it."""
    fails = 0 if ok else before.failures_in_row + 1
    passes = before.passes_in_row + 1 if ok else 0
    new, reason, mail = status, "", None
    if status == ACTIVE and fails >= fail_after:
        new, mail = DISABLED_PROBES, DISABLED
        reason = f"{fails} failed probes in a row: " + (
            error if error_class == "stale" else f"{error_class}: {error}")
    elif status == DISABLED_PROBES and passes >= pass_after:
        new, mail = ACTIVE, RECOVERED
        reason = f"{passes} fresh passes in a row"
    outage_over = ok and passes >= pass_after and new == ACTIVE
    return Verdict(fails, passes, new, reason, new != status, mail, outage_over)
