"""Serving and why not, fresh and how stale, which addresses answer, and what changes an answer:
the one home of the rules every page, the API, the metrics, the CLI and the DNS plan share.

*Serving* means "answered by the DNS": dnsd.plan calls `decide` for every mirror, the picker only
ever takes serving mirrors, and everything that shows a mirror as serving (or says why not) reads
that verdict from a plan. A mirror serves when, in this order:

1. its status is `active` (dnsd.statuses);
2. its admin weight is above 0;
3. no maintenance window keeps it out (dnsd.maintenance: from `[dns] ttl` seconds before a
   window's start until a probe that started after its end passed);
4. the probes say it works (`probe_state`): with `[probes] enabled`, at least one probe passed and
   fewer than `fail_after` failed in a row since; a mirror never probed does not serve yet. With
   probes off, the admins' word is all there is;
5. it is fresh: the sync time its timestamp file gave is at most `[dns] max_sync_age` old
   (`age_filtered`: backup mirrors are exempt unless `[dns] age_filter_backups`, as closer.lua
   never age-filtered its backups);
6. it has a usable address (`addresses`): the pinned ones (an admin's or an applicant's, which
   always win) or, when there are none, the ones a probe resolved from its host name, once a probe
   over them passed; a family known to be down does not count.

`probe_state` is the seam for what decides "the probes say failing" (a quorum of vantage
points agrees on the counters it reads; probes during a maintenance window never move them):
the rest of the rule does not care how it was decided.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from dnsd import maintenance, statuses

# --- freshness ---------------------------------------------------------------------------------


def max_sync_age(cfg) -> int:
    """The one limit: a mirror whose files are older than this is stale (seconds)."""
    return int(cfg.dns.max_sync_age)


def sync_age(last_sync_at: _dt.datetime | None, now: _dt.datetime) -> float | None:
    """Seconds since the mirror's last sync, None when no timestamp was ever read."""
    if last_sync_at is None:
        return None
    return max(0.0, (now - last_sync_at).total_seconds())


def is_stale(age: float | None, cfg) -> bool:
    return age is not None and age > max_sync_age(cfg)


def freshness(age: float | None, cfg) -> str:
    """mirmon's classes: fresh up to a quarter of the limit (6 h by default), oldish up to the
    limit, old beyond it, unknown before any timestamp was read."""
    if age is None:
        return "unknown"
    limit = max_sync_age(cfg)
    if age <= limit / 4:
        return "fresh"
    return "oldish" if age <= limit else "old"


def age_filtered(mirror, cfg) -> bool:
    """Does the freshness limit apply to this mirror (a record, an entry or a probe target with
    `backup`)? Backups are the last resort: closer.lua never age-filtered them, and neither do
    the plan and the probes, unless `[dns] age_filter_backups`."""
    return not getattr(mirror, "backup", False) or cfg.dns.age_filter_backups


def stale_reason(age: float | None, cfg) -> str:
    """'' when fresh (or unknown), else the reason in words: 'out of sync 31 h'."""
    return f"out of sync {fmt_age(age)}" if is_stale(age, cfg) else ""


def fmt_age(seconds: float | None) -> str:
    """'90 s', '45 min', '31 h', '5 days': the way an admin says how old something is.

    One wording for reasons, probe output, pages and mails."""
    if seconds is None:
        return "unknown"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 2 * 3600:
        return f"{s // 60} min"
    if s < 72 * 3600:
        return f"{s // 3600} h"
    return f"{s // 86400} days"


# --- what the probes say -------------------------------------------------------------------------

OFF = "off"              # probes disabled: nothing to say
NEVER = "never"          # not probed yet
NO_PASS = "no-pass"      # probed, never passed
FAILING = "failing"      # fail_after failures in a row
PASSING = "passing"


@dataclass(frozen=True)
class ProbeState:
    state: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.state in (OFF, PASSING)


def probe_state(health, cfg) -> ProbeState:
    """What the probes say about a mirror, from its health record (dnsd.records.health)."""
    if not cfg.probes.enabled:
        return ProbeState(OFF)
    err = (health.last_error or "").strip()
    tail = f" ({err})" if err else ""
    if health.failures_in_row >= cfg.probes.fail_after:
        return ProbeState(FAILING, f"{health.failures_in_row} failed probes{tail}")
    if health.last_probe_at is None:
        return ProbeState(NEVER, "never probed")
    if health.last_ok_at is None:
        return ProbeState(NO_PASS, f"no passing probe yet{tail}")
    return ProbeState(PASSING)


def probe_failing(health) -> bool:
    """For displays such as the metrics' `mirror_up`: the last probe failed."""
    return health.last_probe_at is not None and (health.failures_in_row > 0
                                                  or health.last_ok_at is None)


# --- addresses -----------------------------------------------------------------------------------

_FAMILY = {"A": ("IPv4", 4), "AAAA": ("IPv6", 6)}


def family_problem(address: str | None, up: bool | None, pinned: bool, family: str | None) -> str:
    """'' when `address` may be answered for this family ("A", "AAAA"; None = either), else why
    not. A pinned address serves until a probe finds it down; a resolved one only once a probe
    over it passed."""
    if family is None:
        return ""
    word = _FAMILY[family][0]
    if not address:
        return f"no {word} address"
    if up is False:
        return f"{word} down"
    if up is None and not pinned:
        return f"{word} {address} not confirmed by a probe yet"
    return ""


@dataclass(frozen=True)
class Addresses:
    """The addresses the DNS would answer with, and how much they are to be believed."""

    ipv4: str | None
    ipv6: str | None
    ipv4_up: bool | None
    ipv6_up: bool | None
    pinned: bool             # from the table; else resolved by a probe

    def problem(self, family: str | None) -> str:
        if family == "A":
            return family_problem(self.ipv4, self.ipv4_up, self.pinned, "A")
        if family == "AAAA":
            return family_problem(self.ipv6, self.ipv6_up, self.pinned, "AAAA")
        return ""

    @property
    def usable(self) -> tuple[str, ...]:
        """The families ("A", "AAAA") the DNS can answer this mirror with."""
        return tuple(f for f in ("A", "AAAA") if not self.problem(f))


def addresses(mirror, health) -> Addresses:
    """Pinned addresses always win (all of them: pinning one family pins the mirror); without any,
    those the last probe resolved from the host name."""
    if mirror.ipv4 or mirror.ipv6:
        return Addresses(mirror.ipv4 or None, mirror.ipv6 or None, health.ipv4_up,
                         health.ipv6_up, True)
    return Addresses(health.probed_ipv4 or None, health.probed_ipv6 or None,
                     health.ipv4_up if health.probed_ipv4 else None,
                     health.ipv6_up if health.probed_ipv6 else None, False)


# --- the rule --------------------------------------------------------------------------------------

_STATUS_REASON = {
    statuses.DISABLED_ADMIN: "disabled by admin",
    statuses.DISABLED_PROBES: "disabled by probes",
    statuses.PENDING: "pending, not active yet",
    statuses.RETIRED: "retired",
}


@dataclass(frozen=True)
class Verdict:
    serving: bool
    reason: str                       # why it does not serve ("" when it does)
    sync_age: float | None
    addresses: Addresses
    probe: ProbeState
    maintenance: maintenance.State = maintenance.CLEAR

    @property
    def answer_key(self) -> tuple:
        """What a DNS answer depends on: a change here must bump the table version."""
        a = self.addresses
        return (self.serving, a.ipv4, a.ipv6, a.usable)


def decide(mirror, health, cfg, now: _dt.datetime, windows=()) -> Verdict:
    """The serving verdict for one mirror record, its health record and its maintenance windows
    (dnsd.records.maintenance: those with a say now or later; see the module text)."""
    age = sync_age(health.last_sync_at, now)
    addr = addresses(mirror, health)
    probe = probe_state(health, cfg)
    mt = maintenance.state(windows, now, cfg.dns.ttl, health.last_ok_at, cfg.probes.enabled) \
        if windows else maintenance.CLEAR

    def no(reason: str) -> Verdict:
        return Verdict(False, reason, age, addr, probe, mt)

    if mirror.status != statuses.ACTIVE:
        why = (mirror.status_reason or "").strip()
        base = _STATUS_REASON.get(mirror.status, f"status {mirror.status}")
        if mirror.status in (statuses.DISABLED_ADMIN, statuses.DISABLED_PROBES) and why:
            base += f": {why}"
        return no(base)
    if (mirror.weight or 0) <= 0:
        return no("admin weight 0")
    if mt.out:
        return no(mt.reason)
    if not probe.ok:
        return no(probe.reason)
    if age_filtered(mirror, cfg) and (stale := stale_reason(age, cfg)):
        return no(stale)
    if not addr.usable:
        if not (addr.ipv4 or addr.ipv6):
            if addr.pinned or not cfg.probes.enabled:
                return no("no address (pin one, or turn the probes on to resolve "
                          f"{mirror.hostname})")
            return no(f"no address: {mirror.hostname} did not resolve to a usable one")
        return no("no usable address: " + "; ".join(p for f in ("A", "AAAA")
                                                     if (p := addr.problem(f))))
    return Verdict(True, "", age, addr, probe, mt)


# --- what changes an answer ------------------------------------------------------------------------

# Mirror columns the plan reads (answers, the closer's lists, the public pages' display fields);
# a change to any of them bumps the table version. The rest (source, timestamps) does not.
NOT_IN_PLAN = frozenset({"source", "created_at", "updated_at", "status_since"})


def changes_plan(fields) -> bool:
    """Do changes to these mirror columns alter what the plan holds?"""
    return any(f not in NOT_IN_PLAN for f in fields)
