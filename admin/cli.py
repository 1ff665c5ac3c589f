"""mirrorctl: the admin command line, working on the mirror table directly.

Synchronous SQLAlchemy, no reactor: each command opens one transaction, calls one `admin.store`
operation (the same functions the admin web runs on its thread pool, with the same
dnsd.validation rules) and prints the result. Every error is one line on stderr and a non-zero
exit; a failed command leaves the table as it was. Only `db upgrade` creates a table: any other
command on a SQLite file that is not there says so and creates nothing. "Serving" in `list` and
`show` is dnsd.serving's verdict, from a plan built from the table as the DNS builds it.

Adding a subcommand (other parts do: `resolve`, `probe`, `mail test`): write a
`register_NAME(sub)` that calls `sub.add_parser(...)` and `set_defaults(func=cmd_NAME)`, where
`cmd_NAME(args, ctx)` returns an exit code (None = 0) and raises `CliError`/`StoreError` for
errors; then add `register_NAME` to `REGISTRARS` at the bottom. `ctx` gives the config, the engine,
a transaction, the actor and the mail settings, all opened lazily.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import getpass
import json
import os
import sys
from pathlib import Path

import sqlalchemy as sa

from admin import figures, importers, store
from admin.store import MailSettings, StoreError
from dnsd import statuses, validation
from dnsd.config import ConfigError, load_config
from dnsd.db import NoDatabase
from dnsd.records._base import plain

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A usage or input problem found by the CLI itself (one line for stderr)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors ('mirrorctl add: error: ...'), as every other error."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Ctx:
    """What a command needs, opened on first use: config, engine, actor, mail settings."""

    def __init__(self, args):
        self.args = args
        self._cfg = None
        self._engine = None

    @property
    def cfg(self):
        if self._cfg is None:
            self._cfg = load_config(getattr(self.args, "config", None))
        return self._cfg

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            from dnsd.db import make_engine

            create = getattr(self.args, "creates_table", False)
            self._engine = make_engine(self.cfg.database.url, self.cfg.base_dir, create=create)
        return self._engine

    @property
    def rules(self) -> validation.Rules:
        return validation.Rules.from_config(self.cfg)

    def plan(self, conn):
        """The plan the DNS would build from the table now (dnsd.plan), for "serving"."""
        from dnsd.models import utcnow
        from dnsd.plan import build_plan, load_rows

        now = utcnow()
        return build_plan(load_rows(conn, now), self.cfg, now)

    def transaction(self):
        """`with ctx.transaction() as conn:` -- committed when the block ends without error."""
        return self.engine.begin()

    @property
    def actor(self) -> str:
        return getattr(self.args, "actor", None) or _login_name()

    @property
    def mail(self) -> MailSettings:
        return MailSettings.from_config(self.cfg)

    def close(self):
        if self._engine is not None:
            self._engine.dispose()


def _login_name() -> str:
    for var in ("SUDO_USER", "LOGNAME", "USER"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):                 # no passwd entry (containers)
        return f"uid{os.getuid()}"


# --- output helpers ----------------------------------------------------------------------------

def _jsonable(v):
    if isinstance(v, (_dt.datetime, _dt.date)):
        return v.isoformat()
    raise TypeError(f"{type(v).__name__} is not JSON")


def print_json(data) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=_jsonable))


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for r in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())


def _when(v) -> str:
    return v.strftime("%Y-%m-%d %H:%M") if isinstance(v, _dt.datetime) else "-"


def _when_ago(v, now: _dt.datetime) -> str:
    """'2026-11-21 09:00 (5 min ago)', or '-' for never."""
    return f"{_when(v)} ({figures.ago(v, now)})" if isinstance(v, _dt.datetime) else "never"


# --- db ----------------------------------------------------------------------------------------

def register_db(sub):
    p = sub.add_parser("db", help="the table's schema and backups")
    dsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = dsub.add_parser("upgrade", help="create or migrate the schema to the current version")
    up.set_defaults(func=cmd_db_upgrade, creates_table=True)
    bk = dsub.add_parser("backup", help="a consistent copy of the table while it runs (SQLite "
                                        "online backup; pg_dump for PostgreSQL)")
    bk.add_argument("file", metavar="FILE", help="a new file to write")
    bk.set_defaults(func=cmd_db_backup)


def cmd_db_upgrade(args, ctx):
    from dnsd.db import upgrade

    upgrade(ctx.engine)
    print(f"schema is current ({ctx.engine.url.render_as_string(hide_password=True)})")


def cmd_db_backup(args, ctx):
    from dnsd.db import backup

    try:
        how = backup(ctx.engine, Path(args.file))
    except (OSError, ValueError, RuntimeError) as e:
        raise CliError(str(e)) from None
    print(f"backed up {ctx.engine.url.render_as_string(hide_password=True)} to {args.file}")
    print(f"to restore: {how}", file=sys.stderr)


# --- add / edit --------------------------------------------------------------------------------

def _mirror_field_options(p, *, adding: bool):
    """The options add and edit share; every default is None = not given."""
    p.add_argument("--name", help="the ccN label (add: default the next free one of the country)")
    if not adding:
        p.add_argument("--host", help="host name of the mirror")
        p.add_argument("--country", help="ISO 3166 alpha-2 code, like DE")
    p.add_argument("--ipv4", help="IPv4 address the DNS answers with ('' clears, on edit)")
    p.add_argument("--ipv6", help="IPv6 address the DNS answers with ('' clears, on edit)")
    p.add_argument("--url", action="append", default=[], metavar="URL",
                   help="a base URL; the scheme says which (http, https, ftp, rsync); repeatable")
    for proto in ("http", "https", "ftp", "rsync"):
        p.add_argument(f"--{proto}-url", dest=f"{proto}_url", metavar="URL",
                       help=f"the {proto} base URL ('' clears)" if not adding else argparse.SUPPRESS)
    p.add_argument("--maintainer", action="append", default=None, metavar='"NAME <MAIL>"',
                   help="a maintainer; repeatable (on edit, replaces the list)")
    p.add_argument("--provider-name")
    p.add_argument("--provider-url")
    p.add_argument("--provider-logo")
    p.add_argument("--backup", action=argparse.BooleanOptionalAction, default=None,
                   help="a backup mirror: answered only when no other tier has enough mirrors")
    p.add_argument("--weight", type=float, help="admin weight, multiplies the score (default 1)")
    p.add_argument("--bandwidth", dest="bandwidth_mbit", type=int, metavar="MBITS")
    p.add_argument("--cores", type=int)
    p.add_argument("--memory", dest="memory_gb", type=int, metavar="GB")
    p.add_argument("--disk", dest="disk_gb", type=int, metavar="GB")
    p.add_argument("--has-ipv6", action=argparse.BooleanOptionalAction, default=None,
                   help="declared: serves over IPv6 (add: default yes when --ipv6 is given)")
    p.add_argument("--has-https", action=argparse.BooleanOptionalAction, default=None,
                   help="declared: serves over HTTPS (add: default yes with an https URL)")


_FIELD_ARGS = ("ipv4", "ipv6", "http_url", "https_url", "ftp_url", "rsync_url", "provider_name",
               "provider_url", "provider_logo", "backup", "weight", "bandwidth_mbit", "cores",
               "memory_gb", "disk_gb", "has_ipv6", "has_https")


def _fields_from(args) -> dict:
    fields = {k: getattr(args, k) for k in _FIELD_ARGS if getattr(args, k, None) is not None}
    for url in args.url:
        f = validation.url_field(url)
        if f in fields:
            raise CliError(f"two {f.split('_')[0]} URLs given: {fields[f]} and {url}")
        fields[f] = url
    return fields


def register_add(sub):
    p = sub.add_parser("add", help="add a mirror; prints its name")
    p.add_argument("--country", required=True, help="ISO 3166 alpha-2 code, like DE")
    p.add_argument("--host", required=True, help="host name of the mirror")
    _mirror_field_options(p, adding=True)
    p.add_argument("--status", choices=("active", "pending"), default=None,
                   help="active serves once a probe passed; pending waits (default: active, "
                        "or pending for a mirror without an http or https URL)")
    p.add_argument("--note", help="a first line for the mirror's notes log")
    p.set_defaults(func=cmd_add)


def cmd_add(args, ctx):
    fields = _fields_from(args)
    with ctx.transaction() as conn:
        m = store.add_mirror(conn, actor=ctx.actor, mail=ctx.mail, country=args.country,
                             hostname=args.host, name=args.name, status=args.status,
                             maintainers_=args.maintainer or [], rules=ctx.rules, **fields)
        if args.note:
            store.add_note(conn, f"#{m.id}", ctx.actor, args.note)
    print(f"{m.name}: added {m.hostname} in {m.country} ({m.status})")


def register_edit(sub):
    p = sub.add_parser("edit", help="change a mirror's fields (status: disable/enable/retire)")
    p.add_argument("mirror", metavar="NAME", help="mirror name (de2), #id or host name")
    _mirror_field_options(p, adding=False)
    p.set_defaults(func=cmd_edit)


def cmd_edit(args, ctx):
    fields = _fields_from(args)
    for opt, key in (("name", "name"), ("host", "hostname"), ("country", "country")):
        if getattr(args, opt) is not None:
            fields[key] = getattr(args, opt)
    if not fields and args.maintainer is None:
        raise CliError("nothing to change: give at least one option (see mirrorctl edit --help)")
    with ctx.transaction() as conn:
        ref = f"#{store.find(conn, args.mirror).id}"
        changed = {}
        if fields:
            changed = dict(store.edit_mirror(conn, ref, ctx.actor, rules=ctx.rules,
                                             **fields).changed)
        if args.maintainer is not None:
            before = store.get_mirror(conn, ref).maintainers
            after = store.set_maintainers(conn, ref, ctx.actor, args.maintainer)
            if after != before:
                changed["maintainers"] = (before, after)
        m = store.find(conn, ref)
    if not changed:
        print(f"{m.label}: nothing changed")
    for k, (old, new) in changed.items():
        print(f"{m.label}: {k}: {_show_value(old)} -> {_show_value(new)}")


def _show_value(v) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v) or "-"
    return str(v)


# --- list / show -------------------------------------------------------------------------------

def register_list(sub):
    p = sub.add_parser("list", help="list mirrors")
    p.add_argument("--country", help="only this country (alpha-2)")
    p.add_argument("--status", choices=statuses.STATUSES, help="only this status")
    p.add_argument("--json", action="store_true", help="all fields as JSON, for scripts")
    p.set_defaults(func=cmd_list)


def _serving_text(e) -> str:
    if e is None:
        return "no: not in the plan"
    return "yes" if e.serving else f"no: {e.reason}"


def cmd_list(args, ctx):
    with ctx.transaction() as conn:
        ms = store.list_mirrors(conn, country=args.country, status=args.status)
        plan = ctx.plan(conn)
    if args.json:
        out = []
        for d in ms:
            e = plan.by_id.get(d.mirror.id)
            out.append({**plain(d.mirror), "maintainers": plain(d.maintainers),
                        "serving": bool(e and e.serving),
                        "not_serving_reason": e.reason if e else "not in the plan"})
        print_json(out)
        return
    rows = []
    for d in ms:
        m, e = d.mirror, plan.by_id.get(d.mirror.id)
        rows.append([m.name or f"#{m.id}", m.country, m.status, m.hostname,
                     (e.ipv4 if e else None) or "-", (e.ipv6 if e else None) or "-",
                     "backup" if m.backup else "", _serving_text(e)])
    print_table(rows, ["NAME", "CC", "STATUS", "HOST", "IPV4", "IPV6", "", "SERVING"])
    print(f"{len(ms)} mirror{'s' if len(ms) != 1 else ''}, {len(plan.serving)} serving",
          file=sys.stderr)


def register_show(sub):
    p = sub.add_parser("show", help="one mirror: fields, maintainers, health, serving, score, "
                                    "notes")
    p.add_argument("mirror", metavar="NAME", help="mirror name (de2), #id or host name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)


def cmd_show(args, ctx):
    from dnsd import countries, serving
    from dnsd.models import utcnow
    from probes.store import vantage_verdicts

    with ctx.transaction() as conn:
        d = store.get_mirror(conn, args.mirror)
        plan = ctx.plan(conn)
        views = vantage_verdicts(conn, ctx.cfg, d.mirror.id, utcnow())
        windows = store.maintenance_windows(conn, f"#{d.mirror.id}", not_ended_at=utcnow())
    m, h, e = d.mirror, d.health, plan.by_id.get(d.mirror.id)
    addr = serving.addresses(m, h)
    if args.json:
        print_json({**plain(m), "maintainers": plain(d.maintainers), "health": plain(h),
                    "notes": plain(d.notes), "serving": bool(e and e.serving),
                    "not_serving_reason": e.reason if e else "not in the plan",
                    "score": e.score if e else None,
                    "score_explained": e.score_explain if e else "",
                    "vantages": [{"vantage": v.vantage, "counts": v.standing.counts,
                                  "standing": v.standing.state, "why": v.standing.reason,
                                  "says": v.says, **plain(v.view)} for v in views],
                    "maintenance": plain(windows)})
        return
    zone = ctx.cfg.dns.zone
    now = utcnow()
    print(f"{m.name or '#' + str(m.id)}.{zone}  ({m.hostname})")
    print(f"  status      {m.status} since {_when_ago(m.status_since, now)}"
          + (f": {m.status_reason}" if m.status_reason else ""))
    print(f"  serving     {_serving_text(e)}")
    for i, w in enumerate(windows):
        print(f"  {'maintenance' if i == 0 else '':<11} {_window_text(w, ctx)}: {w.reason}")
    c = countries.get(m.country)
    print(f"  country     {m.country} {c.name if c else ''}".rstrip())
    how = "pinned" if addr.pinned else f"resolved from {m.hostname} by the probes"
    print(f"  addresses   {addr.ipv4 or '-'}  {addr.ipv6 or '-'}  ({how})")
    for proto, url in m.urls.items():
        print(f"  {proto:<11} {url}")
    print((f"  provider    {m.provider_name or '-'}  {m.provider_url}"
           + (f"  logo {m.provider_logo}" if m.provider_logo else "")).rstrip())
    print(f"  backup      {'yes' if m.backup else 'no'}    weight {m.weight:g}")
    specs = [figures.number(m.bandwidth_mbit, "Mbit/s"), figures.number(m.cores, "cores"),
             figures.number(m.memory_gb, "GB memory"), figures.number(m.disk_gb, "GB disk"),
             "IPv6" if m.has_ipv6 else "no IPv6", "HTTPS" if m.has_https else "no HTTPS"]
    print(f"  declared    {', '.join(specs)}")
    print(f"  source      {m.source or '-'}   created {_when(m.created_at)}, "
          f"updated {_when_ago(m.updated_at, now)}")
    print("  maintainers " + (_show_value(d.maintainers) if d.maintainers else "-"))
    if h.last_probe_at is not None:
        age = serving.sync_age(h.last_sync_at, now)
        synced = (f"synced {figures.duration(age)} ago ({serving.freshness(age, ctx.cfg)})"
                  if age is not None else "never synced")
        print(f"  health      last probe {_when_ago(h.last_probe_at, now)}, "
              f"last ok {_when_ago(h.last_ok_at, now)}")
        print(f"              {synced}, {h.failures_in_row} failures in a row")
        print(f"              uptime 24 h {figures.percent(h.uptime_24h)}, "
              f"7 d {figures.percent(h.uptime_7d)}, 30 d {figures.percent(h.uptime_30d)}; "
              f"response p50 {figures.ms(h.rtt_p50_ms)}, p95 {figures.ms(h.rtt_p95_ms)}")
        if h.last_error:
            print(f"              last error: {h.last_error}")
        if h.geo_check:
            print(f"              geo check: {h.geo_check}")
    else:
        print("  health      not probed yet")
    for i, v in enumerate(views):
        counts = "counts" if v.standing.counts else f"does not count ({v.standing.reason})"
        print(f"  {'vantages' if i == 0 else '':<11} {v.vantage}: {v.says}; {counts}; "
              f"last probe {_when_ago(v.view.last_probe_at, now)}")
    if e is not None:
        print(f"  {e.score_explain}")
    print(f"  notes       {len(d.notes)} latest" if d.notes else "  notes       none")
    for n in d.notes:
        print(f"    {_when(n.created_at)}  {n.author}: {n.text}")


# --- status ------------------------------------------------------------------------------------

def register_status(sub):
    p = sub.add_parser("disable", help="take a mirror out of the answers by hand")
    p.add_argument("mirror", metavar="NAME")
    p.add_argument("--reason", required=True, help="why; mailed to the list and maintainers")
    p.set_defaults(func=cmd_disable)
    p = sub.add_parser("enable", help="make a mirror active (again)")
    p.add_argument("mirror", metavar="NAME")
    p.add_argument("--reason", default="", help="optional; goes into the notes and the mail")
    p.set_defaults(func=cmd_enable)
    p = sub.add_parser("retire", help="take a mirror out for good (its history stays; enable brings it back)")
    p.add_argument("mirror", metavar="NAME")
    p.add_argument("--reason", default="", help="optional; goes into the notes and the mail")
    p.set_defaults(func=cmd_retire)


def _status_line(m) -> None:
    print(f"{m.label}: {m.status}" + (f" ({m.status_reason})" if m.status_reason else ""))


def cmd_disable(args, ctx):
    with ctx.transaction() as conn:
        m = store.disable(conn, args.mirror, ctx.actor, args.reason, ctx.mail)
    _status_line(m)


def cmd_enable(args, ctx):
    with ctx.transaction() as conn:
        m = store.enable(conn, args.mirror, ctx.actor, ctx.mail, reason=args.reason)
    _status_line(m)


def cmd_retire(args, ctx):
    with ctx.transaction() as conn:
        m = store.retire(conn, args.mirror, ctx.actor, args.reason, ctx.mail)
    _status_line(m)


# --- notes and audit ---------------------------------------------------------------------------

def register_note(sub):
    p = sub.add_parser("note", help="append a line to a mirror's notes log")
    p.add_argument("mirror", metavar="NAME")
    p.add_argument("text", metavar="TEXT")
    p.set_defaults(func=cmd_note)
    p = sub.add_parser("audit", help="who changed what, newest first")
    p.add_argument("mirror", metavar="NAME", nargs="?")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)


def cmd_note(args, ctx):
    with ctx.transaction() as conn:
        m = store.find(conn, args.mirror)
        store.add_note(conn, f"#{m.id}", ctx.actor, args.text)
    print(f"{m.name or m.label}: note added")


def cmd_audit(args, ctx):
    with ctx.transaction() as conn:
        rows = store.audit_log(conn, args.mirror, args.limit)
    if args.json:
        print_json(plain(rows))
        return
    table = []
    for r in rows:
        changes = [f"{k}: {new or '-'}" if not r.before else f"{k}: {old or '-'} -> {new or '-'}"
                   for k, old, new in r.changes()]
        table.append([_when(r.at), r.actor, r.action, r.target, "; ".join(changes)])
    if table:
        print_table(table, ["WHEN", "WHO", "WHAT", "TARGET", "CHANGES"])
    else:
        print("no changes recorded")


# --- maintenance windows -----------------------------------------------------------------------

def register_maintenance(sub):
    p = sub.add_parser("maintenance", help="maintenance windows: the mirror leaves the answers "
                                           "[dns] ttl seconds before the start, its probes do "
                                           "not count, it returns after a passed probe")
    msub = p.add_subparsers(dest="maintenance_command", required=True, metavar="ACTION")
    a = msub.add_parser("add", help="plan a window (times in UTC)")
    a.add_argument("mirror", metavar="NAME")
    a.add_argument("--start", required=True, metavar="TIME",
                   help="'2026-12-01 14:00' (UTC), or ISO 8601 with an offset")
    a.add_argument("--end", required=True, metavar="TIME")
    a.add_argument("--reason", required=True, help="one line; mailed to the list and "
                                                   "the maintainers")
    a.set_defaults(func=cmd_maintenance_add)
    ls = msub.add_parser("list", help="windows not over yet (of one mirror, or all); --all: "
                                      "the record, cancelled and past ones too")
    ls.add_argument("mirror", metavar="NAME", nargs="?")
    ls.add_argument("--all", action="store_true")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_maintenance_list)
    c = msub.add_parser("cancel", help="cancel a window (one in progress ends now)")
    c.add_argument("id", type=int, metavar="ID")
    c.add_argument("--mirror", metavar="NAME", help="refuse unless it is this mirror's window")
    c.set_defaults(func=cmd_maintenance_cancel)


_WINDOW_OPTIONS = {"starts_at": "--start", "ends_at": "--end", "reason": "--reason"}


def _window_text(w, ctx) -> str:
    """'#3 2026-12-01 14:00 UTC to 2026-12-01 16:00 UTC (planned); out of the answers from ...'"""
    from dnsd import maintenance
    from dnsd.models import utcnow

    st = maintenance.status_of(w, utcnow(), ctx.cfg.dns.ttl)
    text = (f"#{w.id} {maintenance.when(w.starts_at)} to {maintenance.when(w.ends_at)} "
            f"({st.word})")
    if st.word in (maintenance.PLANNED, maintenance.LEAVING_WORD):
        text += f"; out of the answers from {maintenance.when(st.leaves_at)}"
    return text


def _window_line(w, label: str, ctx) -> str:
    return f"{label}: maintenance {_window_text(w, ctx)}"


def cmd_maintenance_add(args, ctx):
    with ctx.transaction() as conn:
        try:
            w = store.plan_maintenance(conn, args.mirror, ctx.actor, starts_at=args.start,
                                       ends_at=args.end, reason=args.reason, mail=ctx.mail)
        except StoreError as e:
            if e.field in _WINDOW_OPTIONS:
                raise CliError(f"{_WINDOW_OPTIONS[e.field]}: {e.message}") from None
            raise
        m = store.find(conn, f"#{w.mirror_id}")
    print(_window_line(w, m.name or m.label, ctx))


def cmd_maintenance_list(args, ctx):
    from dnsd import maintenance
    from dnsd.models import utcnow

    now = utcnow()
    with ctx.transaction() as conn:
        ws = store.maintenance_windows(conn, args.mirror, limit=200,
                                       not_ended_at=None if args.all else now)
        names = {m.id: m.name or m.label for m in store.list_mirrors(conn)}
    shown = [maintenance.status_of(w, now, ctx.cfg.dns.ttl) for w in ws]
    if args.json:
        print_json([{**plain(s.window), "mirror": names.get(s.window.mirror_id),
                     "state": s.word, "leaves_at": s.leaves_at} for s in shown])
        return
    print_table([[str(s.window.id), names.get(s.window.mirror_id, "?"), _when(s.window.starts_at),
                  _when(s.window.ends_at), s.word, s.window.created_by, s.window.reason[:60]]
                 for s in shown], ["ID", "MIRROR", "START (UTC)", "END (UTC)", "STATE", "BY",
                                   "REASON"])


def cmd_maintenance_cancel(args, ctx):
    with ctx.transaction() as conn:
        w = store.cancel_maintenance(conn, args.id, ctx.actor, mirror_ref=args.mirror,
                                     mail=ctx.mail)
        m = store.find(conn, f"#{w.mirror_id}")
    print(_window_line(w, m.name or m.label, ctx))


# --- import ------------------------------------------------------------------------------------

def register_import(sub):
    p = sub.add_parser("import", help="import a mirror list (idempotent: re-import updates)")
    p.add_argument("format", choices=importers.FORMATS, metavar="FORMAT",
                   help=f"one of {', '.join(importers.FORMATS)}")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    p.set_defaults(func=cmd_import)


def cmd_import(args, ctx):
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"{args.file}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    parsed = importers.parse(args.format, text, args.file)
    with ctx.engine.connect() as conn:
        tx = conn.begin()
        rep = importers.apply(conn, parsed, actor=ctx.actor, mail=ctx.mail, fname=args.file,
                              fmt=args.format, rules=ctx.rules)
        tx.rollback() if args.dry_run else tx.commit()
    for o in rep.by_line():
        print(o)
    print(("dry run, nothing written: " if args.dry_run else "") + f"{args.file}: {rep.summary()}")


# --- users -------------------------------------------------------------------------------------

def register_user(sub):
    p = sub.add_parser("user", help="admin web users")
    usub = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    a = usub.add_parser("add", help="add a user (password from --password-file, prompt or stdin)")
    a.add_argument("username", metavar="USERNAME")
    a.add_argument("--role", choices=("admin", "helper"), default="admin")
    a.add_argument("--email", default="")
    a.add_argument("--password-file", metavar="FILE", help="first line is the password")
    a.set_defaults(func=cmd_user_add)
    pw = usub.add_parser("passwd", help="set a user's password")
    pw.add_argument("username", metavar="USERNAME")
    pw.add_argument("--password-file", metavar="FILE", help="first line is the password")
    pw.set_defaults(func=cmd_user_passwd)
    tk = usub.add_parser("token", help="make a new API token for scripts (replaces the old one; "
                                       "printed once, only its hash is stored)")
    tk.add_argument("username", metavar="USERNAME")
    tk.add_argument("--revoke", action="store_true", help="remove the token instead")
    tk.set_defaults(func=cmd_user_token)
    ls = usub.add_parser("list", help="every user: role, state, token")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_user_list)
    ro = usub.add_parser("role", help="make a user an admin or a helper")
    ro.add_argument("username", metavar="USERNAME")
    ro.add_argument("role", choices=statuses.ROLES)
    ro.set_defaults(func=cmd_user_role)
    for name, what in (("disable", "refuse a user's logins; ends their sessions and API token"),
                       ("enable", "let a disabled user log in again"),
                       ("delete", "remove a user for good (the audit log keeps the name)")):
        x = usub.add_parser(name, help=what)
        x.add_argument("username", metavar="USERNAME")
        x.set_defaults(func=cmd_user_state, user_op=name)


def cmd_user_list(args, ctx):
    with ctx.transaction() as conn:
        rows = store.list_users(conn)
    if args.json:
        print_json(plain(rows))
        return
    print_table([[u.username, u.role, "disabled" if u.disabled else "enabled",
                  "token" if u.has_token else "-", u.email or "-", _when(u.created_at)]
                 for u in rows], ["USER", "ROLE", "STATE", "API", "MAIL", "CREATED"])


def cmd_user_role(args, ctx):
    with ctx.transaction() as conn:
        u = store.set_role(conn, args.username, args.role, ctx.actor)
    print(f"user {u.username} is {u.role}")


def cmd_user_state(args, ctx):
    with ctx.transaction() as conn:
        if args.user_op == "delete":
            store.delete_user(conn, args.username, ctx.actor)
            print(f"user {args.username.lower()} deleted")
            return
        u = store.set_user_disabled(conn, args.username, args.user_op == "disable", ctx.actor)
    print(f"user {u.username} {'disabled' if u.disabled else 'enabled'}")


# --- outbox ------------------------------------------------------------------------------------

def register_outbox(sub):
    p = sub.add_parser("outbox", help="the mail outbox: list, show, retry, discard")
    osub = p.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    ls = osub.add_parser("list", help="mails, newest first")
    ls.add_argument("--state", choices=statuses.MAIL_STATES, help="only these")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_outbox_list)
    sh = osub.add_parser("show", help="one mail as it will be (or was) sent")
    sh.add_argument("id", type=int, metavar="ID")
    sh.set_defaults(func=cmd_outbox_show)
    for name, what in (("retry", "send a failed (or discarded) mail again"),
                       ("discard", "make sure an unsent mail is never sent")):
        x = osub.add_parser(name, help=what)
        x.add_argument("id", type=int, metavar="ID")
        x.set_defaults(func=cmd_outbox_change, outbox_op=name)


def cmd_outbox_list(args, ctx):
    from dnsd import outbox

    with ctx.transaction() as conn:
        rows = outbox.select(conn, args.state, limit=args.limit)
        counts = outbox.counts(conn)
    if args.json:
        print_json([{**plain(m), "state": m.state} for m in rows])
        return
    print_table([[str(m.id), _when(m.created_at), m.kind, m.state, str(m.attempts),
                  ",".join(m.addresses)[:40], m.subject[:50]] for m in rows],
                ["ID", "QUEUED", "KIND", "STATE", "TRIES", "TO", "SUBJECT"])
    print(", ".join(f"{n} {s}" for s, n in counts.items()), file=sys.stderr)


def cmd_outbox_show(args, ctx):
    from dnsd import outbox

    with ctx.transaction() as conn:
        m = outbox.get(conn, args.id)
        raw = outbox.message(conn, args.id)
    print(f"# {m.state}, {m.attempts} attempts" + (f", last error: {m.last_error}"
                                                    if m.last_error else ""))
    print(f"# envelope: {', '.join(m.addresses)}")
    sys.stdout.write(raw.decode("utf-8", "replace"))


def cmd_outbox_change(args, ctx):
    fn = store.retry_mail if args.outbox_op == "retry" else store.discard_mail
    with ctx.transaction() as conn:
        m = fn(conn, args.id, ctx.actor)
    print(f"mail {m.id}: {m.state}")


def read_password(path: str | None) -> str:
    """From a file's first line, else a prompt (twice) on a terminal, else stdin's first line."""
    if path:
        try:
            pw = Path(path).read_text(encoding="utf-8").splitlines()[:1]
        except OSError as e:
            raise CliError(f"{path}: cannot read: {e.strerror}") from None
        pw = pw[0] if pw else ""
    elif sys.stdin.isatty():
        pw = getpass.getpass("password: ")
        if getpass.getpass("again: ") != pw:
            raise CliError("the two passwords differ")
    else:
        pw = sys.stdin.readline().rstrip("\r\n")
    from admin.passwords import new_password_problem

    problem = new_password_problem(pw)
    if problem:
        raise CliError(f"password refused: {problem}")
    return pw


def cmd_user_add(args, ctx):
    from admin.passwords import hash_password

    pw_hash = hash_password(read_password(args.password_file))
    with ctx.transaction() as conn:
        u = store.add_user(conn, args.username, pw_hash, args.role, args.email, actor=ctx.actor)
    print(f"user {u.username} added ({u.role})")


def cmd_user_passwd(args, ctx):
    from admin.passwords import hash_password

    pw_hash = hash_password(read_password(args.password_file))
    with ctx.transaction() as conn:
        store.set_password(conn, args.username, pw_hash, actor=ctx.actor)
    print(f"password of {args.username.lower()} changed")


def cmd_user_token(args, ctx):
    """H6: the JSON API's bearer token (admin.web.api); the role rules of the user apply."""
    from admin.web import api

    with ctx.transaction() as conn:
        if args.revoke:
            if not api.revoke_token(conn, args.username):
                raise StoreError(f"no user named {args.username}")
            print(f"API token of {args.username.lower()} revoked", file=sys.stderr)
            return
        token = api.issue_token(conn, args.username, actor=ctx.actor)
    print(f"API token of {args.username.lower()} (shown once; send it as "
          f"'Authorization: Bearer TOKEN'):", file=sys.stderr)
    print(token)


# --- resolve (dnsd, H2) ---------------------------------------------------------------------

def register_resolve(sub):
    p = sub.add_parser("resolve", help="what the DNS server answers for NAME, and why each "
                                       "other mirror was not chosen")
    p.add_argument("name", metavar="NAME", help="e.g. www, de, de2 (the zone is added) or a full name")
    p.add_argument("--client", metavar="IP", help="the client's address (default: unknown location)")
    p.add_argument("--type", default="A", metavar="TYPE", help="A (default), AAAA, ...")
    p.set_defaults(func=cmd_resolve)


def cmd_resolve(args, ctx):
    from dnsd.resolve import run_resolve
    from dnsd.zonefile import ZoneError

    try:
        lines = run_resolve(ctx.cfg, ctx.engine, args.name, args.client, args.type)
    except (ValueError, ZoneError) as e:
        raise CliError(str(e)) from None
    print("\n".join(lines))


# --- the parser and main -----------------------------------------------------------------------

REGISTRARS = [
    register_db, register_add, register_edit, register_list, register_show, register_status,
    register_note, register_maintenance, register_import, register_user, register_outbox,
    register_resolve,
]

from admin.cli_probes import register_mail, register_probe  # noqa: E402  (H4: probe, mail test)

REGISTRARS += [register_probe, register_mail]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mirrorctl", description="Manage the mirror table of mirrordns.")
    parser.add_argument("--config", metavar="FILE",
                        help="configuration file (default: $MIRRORDNS_CONFIG, else ./mirrordns.toml)")
    parser.add_argument("--actor", help="who is acting, for the audit log (default: login name)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in REGISTRARS:
        register(sub)
    return parser


def _db_message(e: sa.exc.DBAPIError, ctx: Ctx) -> str:
    text = str(e.orig).strip().splitlines()[0] if e.orig else str(e).splitlines()[0]
    if "no such table" in text or ("relation" in text and "does not exist" in text):
        return "the database has no mirrordns schema yet: run `mirrorctl db upgrade` first"
    return f"database error: {text}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ctx = Ctx(args)
    try:
        rc = args.func(args, ctx)
        return int(rc or 0)
    except (StoreError, ConfigError, CliError, NoDatabase) as e:
        print(f"mirrorctl: error: {e}", file=sys.stderr)
    except sa.exc.DBAPIError as e:
        print(f"mirrorctl: error: {_db_message(e, ctx)}", file=sys.stderr)
    except sa.exc.ArgumentError as e:
        print(f"mirrorctl: error: [database] url: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("mirrorctl: interrupted, nothing written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `mirrorctl list | head`: the reader left; stop quietly, as Unix tools do, with no traceback
        # (stdout goes to /dev/null so the interpreter's last flush cannot raise again)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    finally:
        ctx.close()
    return EXIT_ERROR


if __name__ == "__main__":
    # `python -m admin.cli` runs this file as __main__: call main of the imported admin.cli, so
    # CliError raised by admin.cli_probes is the very class main catches
    from admin.cli import main as _main

    sys.exit(_main())
