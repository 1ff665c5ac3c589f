"""The mirror table: SQLAlchemy Core tables shared by every part.

Core, not ORM: every caller runs inside a `thd(conn)` on the table's thread pool and hands back
records (dnsd.records: frozen dataclasses, one module per table), so nothing lazy ever escapes to
the reactor thread.

Anything that can change a DNS answer (a mirror column the plan reads, see
dnsd.serving.changes_plan, or its serving verdict) must call `bump_version(conn)` in the same
transaction; the DNS nodes poll that one integer and rebuild their plan when it moves. On
PostgreSQL the bump also sends `NOTIFY mirrordns_version` with the new version, delivered when the
transaction commits, so listening nodes (dnsd.follow) rebuild at once instead of at their next
poll.
"""

from __future__ import annotations

import datetime as _dt

import sqlalchemy as sa

from dnsd.records._base import insert_if_missing

# The statuses and roles themselves live in dnsd.statuses (what each allows is written there);
# they are named here too because every table module reads them with the tables.
from dnsd.statuses import ACTIVE as ACTIVE
from dnsd.statuses import APPLICATION_STATUSES as APPLICATION_STATUSES
from dnsd.statuses import DISABLED_ADMIN as DISABLED_ADMIN
from dnsd.statuses import DISABLED_PROBES as DISABLED_PROBES
from dnsd.statuses import PENDING as PENDING
from dnsd.statuses import RETIRED as RETIRED
from dnsd.statuses import ROLES as ROLES
from dnsd.statuses import STATUSES as STATUSES

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def utcnow() -> _dt.datetime:
    """Naive UTC: both SQLite and PostgreSQL store it the same way."""
    return _dt.datetime.now(_dt.UTC).replace(tzinfo=None)


# One row; `version` moves on every change that can alter a DNS answer.
table_version = sa.Table(
    "table_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False, default=1),
    sa.Column("changed_at", sa.DateTime, nullable=False, default=utcnow),
)

mirrors = sa.Table(
    "mirrors",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(32), nullable=True, unique=True),   # ccN label; NULL while unnamed
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("country", sa.String(2), nullable=False),              # ISO 3166-1 alpha-2, upper case
    sa.Column("ipv4", sa.String(15), nullable=True),
    sa.Column("ipv6", sa.String(45), nullable=True),
    sa.Column("http_url", sa.String(512), nullable=True),
    sa.Column("https_url", sa.String(512), nullable=True),
    sa.Column("ftp_url", sa.String(512), nullable=True),
    sa.Column("rsync_url", sa.String(512), nullable=True),
    sa.Column("provider_name", sa.String(255), nullable=False, default=""),
    sa.Column("provider_url", sa.String(512), nullable=False, default=""),
    sa.Column("provider_logo", sa.String(512), nullable=False, default=""),
    sa.Column("status", sa.String(24), nullable=False, default=PENDING),
    sa.Column("status_reason", sa.Text, nullable=False, default=""),
    sa.Column("status_since", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("backup", sa.Boolean, nullable=False, default=False),
    sa.Column("weight", sa.Float, nullable=False, default=1.0),       # admin weight
    sa.Column("bandwidth_mbit", sa.Integer, nullable=True),
    sa.Column("cores", sa.Integer, nullable=True),
    sa.Column("memory_gb", sa.Integer, nullable=True),
    sa.Column("disk_gb", sa.Integer, nullable=True),
    sa.Column("has_ipv6", sa.Boolean, nullable=False, default=False),
    sa.Column("has_https", sa.Boolean, nullable=False, default=False),
    sa.Column("source", sa.String(255), nullable=False, default=""),  # import key, e.g. phpnet:URL
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("updated_at", sa.DateTime, nullable=False, default=utcnow, onupdate=utcnow),
    sa.CheckConstraint(
        "status IN ('pending','active','disabled-by-admin','disabled-by-probes','retired')",
        name="status",
    ),
    sa.CheckConstraint("weight >= 0", name="weight"),
)
sa.Index("ix_mirrors_country", mirrors.c.country)
sa.Index("ix_mirrors_source", mirrors.c.source)

maintainers = sa.Table(
    "maintainers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False, default=""),
    sa.Column("email", sa.String(255), nullable=False),
)
sa.Index("ix_maintainers_mirror", maintainers.c.mirror_id)

# Append-only: nothing updates or deletes a note.
notes = sa.Table(
    "notes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="CASCADE"), nullable=False),
    sa.Column("author", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("text", sa.Text, nullable=False),
)
sa.Index("ix_notes_mirror_time", notes.c.mirror_id, notes.c.created_at)

# What the probes know now, one row per mirror; the picker reads it, the verdicts write it.
mirror_health = sa.Table(
    "mirror_health",
    metadata,
    sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("failures_in_row", sa.Integer, nullable=False, default=0),
    sa.Column("passes_in_row", sa.Integer, nullable=False, default=0),
    sa.Column("last_probe_at", sa.DateTime, nullable=True),
    sa.Column("last_ok_at", sa.DateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=False, default=""),
    sa.Column("last_sync_at", sa.DateTime, nullable=True),           # the mirror's timestamp file
    sa.Column("ipv4_up", sa.Boolean, nullable=True),                 # NULL = not probed yet
    sa.Column("ipv6_up", sa.Boolean, nullable=True),
    sa.Column("https_ok", sa.Boolean, nullable=True),
    sa.Column("uptime_24h", sa.Float, nullable=True),
    sa.Column("uptime_7d", sa.Float, nullable=True),
    sa.Column("uptime_30d", sa.Float, nullable=True),
    sa.Column("rtt_p50_ms", sa.Float, nullable=True),
    sa.Column("rtt_p95_ms", sa.Float, nullable=True),
    sa.Column("geo_check", sa.Text, nullable=False, default=""),     # "" or "192.0.2.1 in US, not DE"
    # addresses the last probe used for a mirror without pinned ones (resolved from its host name)
    sa.Column("probed_ipv4", sa.String(15), nullable=True),
    sa.Column("probed_ipv6", sa.String(45), nullable=True),
    sa.Column("outage_mailed_at", sa.DateTime, nullable=True),      # once-per-outage mail marker
    sa.Column("reminder_mailed_at", sa.DateTime, nullable=True),
    sa.Column("updated_at", sa.DateTime, nullable=False, default=utcnow, onupdate=utcnow),
)

# Several probe nodes (vantage points, `[probes] vantage`) each keep their own view of every mirror;
# mirror_health above holds what a quorum of them agrees on (probes.store, probes.verdicts).
vantage_health = sa.Table(
    "vantage_health",
    metadata,
    sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("vantage", sa.String(64), primary_key=True),
    sa.Column("failures_in_row", sa.Integer, nullable=False, default=0),
    sa.Column("passes_in_row", sa.Integer, nullable=False, default=0),
    sa.Column("last_probe_at", sa.DateTime, nullable=True),
    sa.Column("last_ok_at", sa.DateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=False, default=""),
    sa.Column("last_sync_at", sa.DateTime, nullable=True),
    sa.Column("ipv4_up", sa.Boolean, nullable=True),
    sa.Column("ipv6_up", sa.Boolean, nullable=True),
    sa.Column("https_ok", sa.Boolean, nullable=True),
    sa.Column("geo_check", sa.Text, nullable=False, default=""),
    sa.Column("probed_ipv4", sa.String(15), nullable=True),
    sa.Column("probed_ipv6", sa.String(45), nullable=True),
    sa.Column("updated_at", sa.DateTime, nullable=False, default=utcnow),
)
sa.Index("ix_vantage_health_vantage", vantage_health.c.vantage)

# One row per vantage point: its cycle in progress, its last complete cycle, and whether that
# cycle found it broken (too few mirrors passed from it: its results then decide nothing).
vantages = sa.Table(
    "vantages",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("cycle_started_at", sa.DateTime, nullable=True),
    sa.Column("cycle_passed", sa.Integer, nullable=False, default=0),
    sa.Column("cycle_total", sa.Integer, nullable=False, default=0),
    sa.Column("last_cycle_at", sa.DateTime, nullable=True),          # the last complete cycle
    sa.Column("last_passed", sa.Integer, nullable=False, default=0),
    sa.Column("last_total", sa.Integer, nullable=False, default=0),
    sa.Column("broken_since", sa.DateTime, nullable=True),           # NULL: not broken
    sa.Column("broken_mailed_at", sa.DateTime, nullable=True),
)

# "Probe this mirror now" (probes.requests): at most one row per mirror, moved by each request.
probe_requests = sa.Table(
    "probe_requests",
    metadata,
    sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("requested_at", sa.DateTime, nullable=False),          # the newest request
    sa.Column("reason", sa.String(64), nullable=False, default=""),
    sa.Column("requested_by", sa.String(64), nullable=False, default=""),
    sa.Column("requests", sa.Integer, nullable=False, default=1),    # coalesced into this row
)

# Which request each vantage point has served, per mirror, and when (its own clock).
probe_requests_served = sa.Table(
    "probe_requests_served",
    metadata,
    sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("vantage", sa.String(64), primary_key=True),
    sa.Column("requested_at", sa.DateTime, nullable=False),          # the request it served
    sa.Column("served_at", sa.DateTime, nullable=False),
)

probe_results = sa.Table(
    "probe_results",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("vantage", sa.String(64), nullable=False, default=""),  # probe node name
    sa.Column("url", sa.String(1024), nullable=False),
    sa.Column("address", sa.String(45), nullable=True),
    sa.Column("family", sa.SmallInteger, nullable=True),             # 4 or 6
    sa.Column("http_status", sa.SmallInteger, nullable=True),
    sa.Column("ttfb_ms", sa.Float, nullable=True),
    sa.Column("total_ms", sa.Float, nullable=True),
    sa.Column("timestamp", sa.DateTime, nullable=True),              # sync time read from the file
    sa.Column("sync_age", sa.Integer, nullable=True),                # seconds
    sa.Column("tls_ok", sa.Boolean, nullable=True),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("error_class", sa.String(24), nullable=False, default=""),
    sa.Column("error", sa.Text, nullable=False, default=""),
)
sa.Index("ix_probe_results_mirror_at", probe_results.c.mirror_id, probe_results.c.at)
sa.Index("ix_probe_results_at", probe_results.c.at)

# Raw results older than [probes] keep_raw_days become hourly rows, then daily rows.
probe_rollups = sa.Table(
    "probe_rollups",
    metadata,
    sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("period", sa.String(5), primary_key=True),             # 'hour' | 'day'
    sa.Column("start", sa.DateTime, primary_key=True),
    sa.Column("probes", sa.Integer, nullable=False),
    sa.Column("passes", sa.Integer, nullable=False),
    sa.Column("rtt_avg_ms", sa.Float, nullable=True),
    sa.Column("rtt_max_ms", sa.Float, nullable=True),
    sa.Column("sync_age_max", sa.Integer, nullable=True),
)

# Maintenance windows a maintainer or an admin planned (dnsd.maintenance holds what they do): the
# mirror leaves the answers `ttl` seconds before `starts_at`, its probes count for nothing until
# `ends_at`, and it returns after a passed probe that started at or after `ends_at`. A window
# cancelled before it started never happened; one cancelled while it ran ended then (`ends_at`
# is moved to the cancel time).
maintenance_windows = sa.Table(
    "maintenance_windows",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("starts_at", sa.DateTime, nullable=False),
    sa.Column("ends_at", sa.DateTime, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("cancelled_at", sa.DateTime, nullable=True),
    sa.Column("cancelled_by", sa.String(255), nullable=True),
    sa.CheckConstraint("ends_at > starts_at", name="span"),
)
sa.Index("ix_maintenance_windows_mirror", maintenance_windows.c.mirror_id,
         maintenance_windows.c.ends_at)
sa.Index("ix_maintenance_windows_ends_at", maintenance_windows.c.ends_at)

applications = sa.Table(
    "applications",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("token", sa.String(64), nullable=False, unique=True),  # the applicant's private link
    sa.Column("status", sa.String(16), nullable=False, default="new"),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("email", sa.String(255), nullable=False),
    sa.Column("country", sa.String(2), nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False, default=""),
    sa.Column("provider_name", sa.String(255), nullable=False, default=""),
    sa.Column("provider_url", sa.String(512), nullable=False, default=""),
    sa.Column("bandwidth_mbit", sa.Integer, nullable=True),
    sa.Column("cores", sa.Integer, nullable=True),
    sa.Column("memory_gb", sa.Integer, nullable=True),
    sa.Column("disk_gb", sa.Integer, nullable=True),
    sa.Column("has_ipv6", sa.Boolean, nullable=False, default=False),
    sa.Column("has_https", sa.Boolean, nullable=False, default=False),
    sa.Column("ipv4", sa.String(15), nullable=True),
    sa.Column("ipv6", sa.String(45), nullable=True),
    sa.Column("http_url", sa.String(512), nullable=True),
    sa.Column("https_url", sa.String(512), nullable=True),
    sa.Column("rsync_url", sa.String(512), nullable=True),
    sa.Column("comments", sa.Text, nullable=False, default=""),
    sa.Column("source_ip", sa.String(45), nullable=False, default=""),
    sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="SET NULL"), nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("updated_at", sa.DateTime, nullable=False, default=utcnow, onupdate=utcnow),
    sa.Column("confirmed_at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("reminded_at", sa.DateTime, nullable=True),
    sa.CheckConstraint(
        "status IN ('new','contacted','accepted','declined','withdrawn')", name="status"
    ),
)
sa.Index("ix_applications_country", applications.c.country)

# The people who would run an offered mirror (the applicant first); they become its maintainers.
application_maintainers = sa.Table(
    "application_maintainers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("application_id", sa.Integer,
              sa.ForeignKey("applications.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False, default=""),
    sa.Column("email", sa.String(255), nullable=False),
)
sa.Index("ix_application_maintainers_app", application_maintainers.c.application_id)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),     # argon2id
    sa.Column("role", sa.String(16), nullable=False, default="admin"),
    sa.Column("email", sa.String(255), nullable=False, default=""),
    sa.Column("failed_logins", sa.Integer, nullable=False, default=0),
    sa.Column("locked_until", sa.DateTime, nullable=True),
    sa.Column("api_token_hash", sa.String(128), nullable=True),     # sha256 of the script token
    sa.Column("disabled", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
    sa.CheckConstraint("role IN ('admin','helper')", name="role"),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),                # sha256 of the cookie value
    # a user's session, or a maintainer's (their address; admin.maintainers): exactly one is set
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("expires_at", sa.DateTime, nullable=False),
    sa.Column("maintainer_email", sa.String(254), nullable=True),
    sa.CheckConstraint("(user_id IS NULL) <> (maintainer_email IS NULL)", name="owner"),
)

# Login links mailed to maintainers (admin.maintainers): the sha256 of the token only, single use.
login_links = sa.Table(
    "login_links",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("email", sa.String(254), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
    sa.Column("used_at", sa.DateTime, nullable=True),
)
sa.Index("ix_login_links_email", login_links.c.email)

# Written in the same transaction as the change that causes the mail; sent by admin's outbox service.
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("kind", sa.String(32), nullable=False),                # disabled, recovered, weekly, ...
    sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="SET NULL"), nullable=True),
    sa.Column("author", sa.String(255), nullable=False, default=""),  # a person, or "" for the system
    sa.Column("recipients", sa.Text, nullable=False),                # bare addresses, comma-separated
    sa.Column("message", sa.LargeBinary, nullable=False),            # the whole RFC 5322 message
    sa.Column("subject", sa.Text, nullable=False, default=""),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("sent_at", sa.DateTime, nullable=True),
    sa.Column("failed", sa.Boolean, nullable=False, default=False),  # gave up after retry_max
    sa.Column("discarded_at", sa.DateTime, nullable=True),           # an operator gave up on it
    sa.Column("last_error", sa.Text, nullable=False, default=""),
    # A sender claims a row before it sends it (admin.outbox): another sender skips the row until
    # `claimed_until`, so N senders deliver each mail once, and a dead sender's mail goes after.
    sa.Column("claimed_by", sa.String(128), nullable=True),
    sa.Column("claimed_until", sa.DateTime, nullable=True),
)
sa.Index("ix_outbox_due", outbox.c.sent_at, outbox.c.next_attempt_at)

# Every change made by a person: who, when, what, before and after (JSON text).
audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("actor", sa.String(255), nullable=False),              # a user name, or an address
    sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="SET NULL"), nullable=True),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("before", sa.Text, nullable=False, default=""),
    sa.Column("after", sa.Text, nullable=False, default=""),
)
sa.Index("ix_audit_mirror", audit.c.mirror_id, audit.c.at)

# Reports from downloaders (admin.mirror_reports). `visitor` is a keyed hash of the visitor's
# network under that day's key (report_keys), never an address: one row per visitor, mirror and
# day (a repeat replaces the reason and text). Deleted after [reports] keep_days.
mirror_reports = sa.Table(
    "mirror_reports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("reason", sa.String(16), nullable=False),
    sa.Column("text", sa.Text, nullable=False, default=""),
    sa.Column("visitor", sa.String(32), nullable=False),
    sa.Column("repeats", sa.Integer, nullable=False, default=0),
    sa.UniqueConstraint("mirror_id", "visitor", name="uq_mirror_reports_visitor"),
)
sa.Index("ix_mirror_reports_mirror_time", mirror_reports.c.mirror_id, mirror_reports.c.created_at)
sa.Index("ix_mirror_reports_created_at", mirror_reports.c.created_at)

# The day's key of the visitor hash; a key is deleted the day after, so yesterday's hashes can
# no longer be tied to any network.
report_keys = sa.Table(
    "report_keys",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("key", sa.String(64), nullable=False),
)

# Per mirror: the row every report of it locks first, and when its maintainers were last mailed
# about reports (set by compare-and-set, so N reports mail once across admin nodes).
report_mails = sa.Table(
    "report_mails",
    metadata,
    sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("mailed_at", sa.DateTime, nullable=True),
)

# Timestamps of scheduled jobs (weekly report, daily reminders, ...), so a restart does not resend;
# a node holds the job's row locked while it runs it, so one node runs it per period (dnsd.jobs).
job_runs = sa.Table(
    "job_runs",
    metadata,
    sa.Column("job", sa.String(64), primary_key=True),
    sa.Column("last_run_at", sa.DateTime, nullable=False),
)


VERSION_CHANNEL = "mirrordns_version"      # the NOTIFY channel; the payload is the new version
PROBE_CHANNEL = "mirrordns_probe"          # a probe was requested (probes.requests); payload: id


def bump_version(conn: sa.Connection) -> int:
    """Move the table version, in the caller's transaction; returns the new version."""
    bump = (table_version.update().where(table_version.c.id == 1)
            .values(version=table_version.c.version + 1, changed_at=utcnow()))
    if conn.execute(bump).rowcount == 0 and not insert_if_missing(
            conn, table_version, id=1, version=1, changed_at=utcnow()):
        conn.execute(bump)             # the first change of a new table, and another node's won
    version = current_version(conn)
    if conn.dialect.name == "postgresql":      # sent at commit, never for a rolled-back change
        conn.execute(sa.select(sa.func.pg_notify(VERSION_CHANNEL, str(version))))
    return version


def current_version(conn: sa.Connection) -> int:
    v = conn.execute(sa.select(table_version.c.version).where(table_version.c.id == 1)).scalar()
    return int(v or 0)
