"""Maintenance windows: the one home of what a planned window does to a mirror.

A window (dnsd.records.maintenance.Window: start, end, reason) is planned by a maintainer or an
admin (admin.store.plan_maintenance, checked by dnsd.validation.maintenance_window). For its
mirror, in time order:

1. `ttl` seconds before the start (`leaves_at`; `ttl` is the TTL the DNS serves mirror answers
   with, `[dns] ttl`) the mirror leaves the answers (LEAVING), so the resolvers' caches have let
   go of it by the time it goes down. Its probes still count: it is still up.
2. From the start to the end (IN) it stays out, and its probes count for nothing
   (`probes_paused`): no counters move, it is not disabled, nobody is mailed, and its results do
   not enter its vantage's share (a vantage is not "broken" because mirrors were in maintenance).
3. After the end (RETURNING) it stays out until a probe that *started* at or after the end
   passed (health `last_ok_at`); from then on the ordinary rules decide (dnsd.serving). With
   `[probes] enabled = false` nothing would ever probe it, so it returns at the end.

A window cancelled before it started never happened (`counts`); one cancelled while it ran ended
then (the store moves its end to the cancel time), so step 3 still applies.

Every edge (`leaves_at`, the start, the end) changes the plan without any change in the table:
the plan records its next edge (`next_edge`, ResolutionPlan.next_change) and the DNS service
rebuilds at that time (dnsd.service). Times are naive UTC, as everywhere in the table.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

NONE = ""                   # no window has a say now
LEAVING = "leaving"         # within the TTL before the start: out of the answers, probes count
IN = "maintenance"          # between start and end: out, probes paused
RETURNING = "returning"     # ended: out until a probe that started after the end passed
PHASES = (LEAVING, IN, RETURNING)
_PHASE_WORDS = {LEAVING: "leaving for maintenance", IN: "in maintenance",
                RETURNING: "back after a passed probe"}


def word(phase: str) -> str:
    """A phase in words, for badges (pages, mirrorctl)."""
    return _PHASE_WORDS.get(phase, "")


def counts(w) -> bool:
    """Does this window have a say at all? One cancelled before it started does not."""
    return w.cancelled_at is None or w.cancelled_at > w.starts_at


def counting(t: sa.Table):
    """`counts` as a SQL condition on the maintenance_windows table (the same rule, for reads
    that must not load every cancelled window)."""
    return sa.or_(t.c.cancelled_at.is_(None), t.c.cancelled_at > t.c.starts_at)


def leaves_at(w, ttl: int) -> _dt.datetime:
    """When the mirror leaves the answers: `ttl` seconds before the window starts."""
    return w.starts_at - _dt.timedelta(seconds=max(0, int(ttl)))


def when(t: _dt.datetime) -> str:
    """'2026-12-01 14:00 UTC': how a window's times are written in reasons, pages and mails."""
    return t.strftime("%Y-%m-%d %H:%M UTC") if t.second == 0 else \
        t.strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class State:
    """What the windows of one mirror say now: a phase, the window it comes from, and the
    reason the serving verdict gives when the mirror is out."""

    phase: str = NONE
    window: object = None
    reason: str = ""

    @property
    def out(self) -> bool:
        """The mirror is kept out of the answers."""
        return self.phase in PHASES


CLEAR = State()


def state(windows: Iterable, now: _dt.datetime, ttl: int, last_ok_at: _dt.datetime | None,
          probes_on: bool = True) -> State:
    """The phase a mirror is in at `now` (see the module text); a window in progress outranks
    one about to start, which outranks one waiting for its passed probe."""
    live = [w for w in windows if counts(w)]
    cur = [w for w in live if w.starts_at <= now < w.ends_at]
    if cur:
        w = max(cur, key=lambda x: x.ends_at)
        return State(IN, w, f"in maintenance until {when(w.ends_at)}: {w.reason}")
    soon = [w for w in live if leaves_at(w, ttl) <= now < w.starts_at]
    if soon:
        w = min(soon, key=lambda x: x.starts_at)
        return State(LEAVING, w, f"maintenance from {when(w.starts_at)} (out of the answers "
                                 f"{int(ttl)} s before, the answers' TTL): {w.reason}")
    if probes_on:
        ended = [w for w in live if w.ends_at <= now]
        if ended:
            w = max(ended, key=lambda x: x.ends_at)
            if last_ok_at is None or last_ok_at < w.ends_at:
                return State(RETURNING, w, f"maintenance ended {when(w.ends_at)}; back once a "
                                           f"probe started after that passes")
    return CLEAR


def probes_paused(windows: Iterable, at: _dt.datetime):
    """The window during which a probe started at `at` counts for nothing, or None."""
    for w in windows:
        if counts(w) and w.starts_at <= at < w.ends_at:
            return w
    return None


def upcoming(windows: Iterable, now: _dt.datetime) -> tuple:
    """The windows that have not ended yet (in progress first, then by start), for display."""
    return tuple(sorted((w for w in windows if counts(w) and w.ends_at > now),
                        key=lambda w: (w.starts_at, w.ends_at)))


def next_edge(windows: Iterable, now: _dt.datetime, ttl: int) -> _dt.datetime | None:
    """The first time after `now` at which these windows change a mirror's phase."""
    edges = [t for w in windows if counts(w)
             for t in (leaves_at(w, ttl), w.starts_at, w.ends_at) if t > now]
    return min(edges, default=None)


# --- how a window is shown -----------------------------------------------------------------------

PLANNED = "planned"
LEAVING_WORD = "leaving the answers"
RUNNING = "in progress"
OVER = "over"
ENDED_EARLY = "ended early"
CANCELLED = "cancelled"


@dataclass(frozen=True)
class WindowStatus:
    """A window as pages and mirrorctl show it: the window, a word for where it stands, when
    its mirror leaves the answers, and whether it can still be cancelled."""

    window: object
    word: str
    leaves_at: _dt.datetime
    cancellable: bool


def status_of(w, now: _dt.datetime, ttl: int) -> WindowStatus:
    if not counts(w):
        word = CANCELLED
    elif w.ends_at <= now:
        word = ENDED_EARLY if w.cancelled_at is not None else OVER
    elif w.starts_at <= now:
        word = RUNNING
    elif leaves_at(w, ttl) <= now:
        word = LEAVING_WORD
    else:
        word = PLANNED
    return WindowStatus(w, word, leaves_at(w, ttl),
                        w.cancelled_at is None and w.ends_at > now)
