"""Every status a row can have, and what each status allows: the one home of these words.

A mirror's *status* is what people (and the probes' verdicts) decided about it; whether it is
*serving* (answered by the DNS) is a different question, decided by dnsd.serving from the status,
the probe state, the freshness and the addresses. The pages show both, never one for the other.
"""

from __future__ import annotations

# --- mirrors ---------------------------------------------------------------------------------------

PENDING = "pending"
ACTIVE = "active"
DISABLED_ADMIN = "disabled-by-admin"
DISABLED_PROBES = "disabled-by-probes"
RETIRED = "retired"
STATUSES = (PENDING, ACTIVE, DISABLED_ADMIN, DISABLED_PROBES, RETIRED)

# The order lists and reports group mirrors in.
DISPLAY_ORDER = (ACTIVE, DISABLED_PROBES, DISABLED_ADMIN, PENDING, RETIRED)

WORDS = {
    PENDING: "pending",
    ACTIVE: "active",
    DISABLED_ADMIN: "disabled by admin",
    DISABLED_PROBES: "disabled by probes",
    RETIRED: "retired",
}

# Statuses a new mirror may start in (disabled-by-probes is the verdicts' alone).
NEW_MIRROR = (PENDING, ACTIVE, DISABLED_ADMIN)
# Mirrors the probes look at: everything but retired ones, so a pending mirror is checked
# before anyone enables it.
PROBED = (PENDING, ACTIVE, DISABLED_ADMIN, DISABLED_PROBES)
# Mirrors a person still counts as "in the network" (a host name may be used by one of them only).
LIVE = PROBED
# Mirrors a downloader may report (admin.mirror_reports): those the public may have been sent to
# lately; a pending mirror never was, a retired one is gone.
REPORTABLE = (ACTIVE, DISABLED_ADMIN, DISABLED_PROBES)
# The two statuses the verdicts move between; an admin's decision is never undone by a probe.
VERDICT_STATUSES = (ACTIVE, DISABLED_PROBES)


def word(status: str) -> str:
    return WORDS.get(status, status)


def check(status: str) -> str:
    if status not in STATUSES:
        raise ValueError(f"'{status}' is not a status (one of {', '.join(STATUSES)})")
    return status


# --- applications (the waiting list) ---------------------------------------------------------------

APP_NEW = "new"
APP_CONTACTED = "contacted"
APP_ACCEPTED = "accepted"
APP_DECLINED = "declined"
APP_WITHDRAWN = "withdrawn"
APPLICATION_STATUSES = (APP_NEW, APP_CONTACTED, APP_ACCEPTED, APP_DECLINED, APP_WITHDRAWN)
# still waiting for a decision: these get reminders and are counted on the public page
WAITING = (APP_NEW, APP_CONTACTED)
# what an admin may set by hand (accepting has its own operation, which makes the mirror)
APPLICATION_DECISIONS = (APP_NEW, APP_CONTACTED, APP_DECLINED, APP_WITHDRAWN)

# --- users -----------------------------------------------------------------------------------------

ADMIN = "admin"
HELPER = "helper"
ROLES = (ADMIN, HELPER)

# --- outbox rows -----------------------------------------------------------------------------------

MAIL_PENDING = "pending"
MAIL_FAILED = "failed"
MAIL_SENT = "sent"
MAIL_DISCARDED = "discarded"
MAIL_STATES = (MAIL_PENDING, MAIL_FAILED, MAIL_SENT, MAIL_DISCARDED)
