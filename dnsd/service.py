"""The DNS service tree: listeners, the plan refresher, the geo reloader, extra worker processes.

The refresher polls the table version every `poll_interval` (one tiny read on the table's own
thread pool); when it moved, or `rebuild_interval` passed (sync ages keep moving without a version
change), it loads the rows (same pool, one read transaction), builds the plan and encodes the wire
table on a reactor pool thread, and swaps both in with one assignment on the reactor thread.
Queries in flight see either the old or the new table, never a mix.

On PostgreSQL (with `[dns] notify`) a listener (dnsd.follow) also refreshes at once when a
NOTIFY says the version moved, so a change reaches every listening node well within 2 s; the
poll stays as the fallback (replicas, SQLite). Refreshes never overlap (one asked for while
another runs is done right after it), and a node never moves back to an older version than one
it already took from the table (a lagging replica, a poll racing a notification): it keeps its
plan and logs `dns_version_behind`.

If the database is unreachable the server keeps answering from the last plan; the first failure,
one reminder a minute and the recovery are logged (`dns_db_unreachable`, `dns_db_back`).

Maintenance windows (dnsd.maintenance) change verdicts at their edges with nothing changing in
the table: every plan says when that happens next (`next_change`), and a timer on the reactor
rebuilds then (the poll also rebuilds once that time has passed). When the database does not
answer at that moment, the plan is rebuilt from the rows last read, which are still right: only
the time moved.

Life without the database (dnsd.snapshot): every plan swapped in from the database is written to
this process's snapshot file (off the reactor thread). At start, until the database answers, the
newest valid snapshot of `[dns] snapshot_dir` is served (`dns_plan_from_snapshot`, with its age;
`dnsd_plan_source` and `dnsd_plan_data_age_seconds` on /metrics). With no snapshot either, the
static zone is served from the start and only names that need the plan (mirror, country,
continent and geo names) get SERVFAIL.

Where DNS is answered (`makeService`, for twistd.tac): with `[dns] workers = N >= 1` (the default,
1) in N processes of their own (dnsd.processes), so the web can never delay an answer; this
process then runs a DNSService that serves nothing, whose plan is the admin's live plan. With
`workers = 0` the listeners are here, beside the web (small setups and tests). The DNS server
alone (`python -m dnsd.worker`, the benchmarks) is a DNSService too, with its own SO_REUSEPORT
launcher for several processes.
"""

from __future__ import annotations

import gc
import os
import resource
import socket
import time

from twisted.application import internet, service
from twisted.internet import defer, threads
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from dnsd import models, rrl, snapshot
from dnsd.answer import Answerer, check_generated_names, compile_table
from dnsd.config import split_hostport
from dnsd.cookies import CookieJar, SecretError, SecretFile
from dnsd.geo import GeoLocator
from dnsd.plan import build_plan, empty_plan, fmt_age, load_rows, load_version
from dnsd.server import (
    DNSStreamFactory,
    DNSTCPPort,
    ListenError,
    UDPAnswerThread,
    listen_error,
    reuseport_socket,
    udp_socket,
)
from dnsd.zonefile import ZoneError, load_zone, zone_for

_log = Logger()
COOKIE_SECRET_ENV = "MIRRORDNS_COOKIE_SECRET"   # hands a random cookie secret to the workers
AUTO_TCP_MAX = 4096            # tcp_max_connections = 0: half the fd limit, at most this many


class PlanHolder:
    """`.current` is the live ResolutionPlan (immutable); the rest describes how it got there.

    `wait_for(version)` lets a writer in this process (the admin web after a change) wait until
    the plan that answers has its change, so what it shows next is what the DNS answers; `kick`
    (set by the DNSService that owns the holder) asks for a refresh now instead of at the next
    poll. When DNS is answered in processes of their own, `answering` (dnsd.processes) is waited
    for as well: the plan that answers is theirs."""

    def __init__(self, plan):
        self.current = plan
        self.table = None              # the WireTable encoded from `current`
        self.built_monotonic = None    # time.monotonic() of the last swap
        self.build_seconds = 0.0
        self.builds = 0
        self.db_ok = True
        self.last_error = ""
        self.source = "none"           # where `current` came from: none, snapshot, database
        self.snapshot_path = ""
        self.kick = None               # callable: refresh now (None: nobody refreshes this plan)
        self.answering = None          # DNSProcesses answering from plans of their own, or None
        self._waiters: list[tuple[int, defer.Deferred]] = []

    def data_age(self) -> float | None:
        """Seconds since the live plan's data was read from the table (None: no plan yet)."""
        if self.source == "none":
            return None
        return max(0.0, (models.utcnow() - self.current.built_at).total_seconds())

    @property
    def version(self) -> int:
        return self.current.version

    def wait_for(self, version: int, clock, timeout: float) -> defer.Deferred:
        """Fires True once the plan's version is at least `version` (here, and in the DNS
        processes when there are some), False after `timeout` seconds (the caller shows what it
        has; the DNS catches up on its next poll)."""
        own = self._wait_own(version, clock, timeout)
        if self.answering is None:
            return own
        there = self.answering.wait_for(version, clock, timeout)
        return defer.gatherResults([own, there]).addCallback(all)

    def _wait_own(self, version: int, clock, timeout: float) -> defer.Deferred:
        if self.current.version >= version:
            return defer.succeed(True)
        if self.kick is None:
            return defer.succeed(False)
        d = defer.Deferred()
        entry = (version, d)
        self._waiters.append(entry)
        timer = clock.callLater(timeout, self._expire, entry)
        d.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
        self.kick()
        return d

    def _expire(self, entry):
        if entry in self._waiters:
            self._waiters.remove(entry)
            entry[1].callback(False)

    def installed(self, plan) -> None:
        """Make `plan` current and release whoever waited for its version."""
        self.current = plan
        ready = [w for w in self._waiters if w[0] <= plan.version]
        self._waiters = [w for w in self._waiters if w[0] > plan.version]
        for _v, d in ready:
            d.callback(True)

    def age(self) -> float | None:
        return None if self.built_monotonic is None else time.monotonic() - self.built_monotonic


def _stamp(path):
    try:
        st = os.stat(path)
        return st.st_mtime_ns, st.st_size
    except OSError:
        return None


class _Listener(service.Service):
    """One UDP or TCP listen address. UDP is answered on a thread of its own
    (dnsd.server.UDPAnswerThread), TCP on DNSTCPPort (IPV6_V6ONLY, bounded backlog, one line at
    the fd limit); with `reuse` both are opened on sockets with SO_REUSEPORT (for several worker
    processes). Binds in privilegedStartService, so port 53 is taken before twistd drops
    privileges; a port that cannot be bound raises ListenError (one line: the address and the
    cause). For UDP, `proto` is the Answerer."""

    def __init__(self, reactor, kind, host, port, proto, reuse=False, backlog=1024):
        self._reactor, self._kind, self._host, self._port_no = reactor, kind, host, port
        self._proto, self._reuse, self._backlog = proto, reuse, backlog
        self._port = None             # TCP: the listening port; UDP: the bound socket
        self._thread = None

    def _open(self):
        if self._kind == "udp":
            return udp_socket(self._host, self._port_no, self._reuse)
        if self._reuse:
            s = reuseport_socket(self._host, self._port_no, socket.SOCK_STREAM, self._backlog)
            try:
                return DNSTCPPort._fromListeningDescriptor(self._reactor, s.fileno(), s.family,
                                                           self._proto)
            finally:
                s.close()
        return DNSTCPPort(self._port_no, self._proto, self._backlog, self._host, self._reactor)

    def privilegedStartService(self):
        try:
            p = self._open()
            if self._kind == "tcp":
                p.startListening()
        except (OSError, CannotListenError) as e:
            raise listen_error(self._host, self._port_no, self._kind, e) from None
        self._port = p
        service.Service.privilegedStartService(self)

    def startService(self):
        if self._port is None:
            self.privilegedStartService()
        if self._kind == "udp":
            self._thread = UDPAnswerThread(self._port, self._proto,
                                           f"dns-udp {self._host}:{self._port_no}")
            self._thread.start()
        service.Service.startService(self)

    def stopService(self):
        service.Service.stopService(self)
        p, self._port = self._port, None
        t, self._thread = self._thread, None
        if t is not None:
            return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), t.stop)
        if self._kind == "udp" and p is not None:
            p.close()                 # bound but never started
        elif p is not None:
            return p.stopListening()


def freeze_startup_objects() -> None:
    """Move every object alive now (modules, classes, functions: ~75,000 once Twisted,
    SQLAlchemy and geoip2 are loaded) out of the garbage collector's sight (gc.freeze). A full
    collection holds the GIL, so it stops the UDP answer thread, and it scanned all of them: 30 ms
    every few seconds under load, long enough to overflow a socket buffer at 15,000 q/s. Now it
    scans what came later (the current plan, transient objects). Done once per process, after
    the first plan; what is frozen then lives as long as the process anyway (and acyclic objects
    are still freed when their last reference goes)."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


_frozen = False


def raise_fd_limit() -> int:
    """Raise this process's soft file-descriptor limit to its hard limit (at most 65536), as
    servers do; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard if hard != resource.RLIM_INFINITY else 65536, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft


class DNSService(service.MultiService):
    """dnsd's service tree; `.plan` (PlanHolder), `.geo` (GeoLocator), `.answerer`.

    With `serve=False` (a node without the `dns` role that still needs the live plan, such as
    the admin node's closer and pages, or the main process beside DNS processes of its own) it
    follows the table but opens no listeners and keeps no snapshot. `listen=False`: it serves,
    but on sockets handed to it (a DNS process of dnsd.processes), not the [dns] listen ones;
    `metrics=False`: its counters are not registered here (a DNS process reports them to the
    main process instead)."""

    name = "dns"

    def __init__(self, cfg, pool, reactor, *, geo=None, zone=None, reuse_port=None,
                 rng=None, geo_interval: float | None = None, registry=None,
                 slot: int = 0, exit_on_listen_error: bool = False, serve: bool = True,
                 listen: bool = True, metrics: bool = True, now=None):
        super().__init__()
        self.now = now or models.utcnow        # naive-UTC wall clock the plans are built at
        self._edge_call = None                 # the timer for the plan's next_change
        self._edge_due = False                 # that time came: rebuild even without news
        self._rows = None                      # the rows the live plan was built from
        self._metrics = metrics
        self.exit_on_listen_error = exit_on_listen_error
        self._registry = registry              # prometheus registry (None: the global one)
        self._collector = None
        self.cfg, self.pool, self.reactor = cfg, pool, reactor
        d = cfg.dns
        # the compiled index is for the answer path: only a serving node needs it
        self.geo = geo = geo if geo is not None else geo_from_config(cfg, compile=serve)
        if geo_interval is None:
            geo_interval = cfg.geoip.reload_interval
        if zone is None:               # read now: a bad zone file fails at startup, not later
            zone, self._zone_path = zone_for(cfg)
        else:
            self._zone_path = None
        check_generated_names(zone, cfg)
        self.zone = zone
        self._zone_stamp = _stamp(self._zone_path) if self._zone_path else None
        self._rng = rng
        self.slot = slot
        # a node that only follows the plan (serve=False) keeps no snapshot: none to answer from
        self.snapshot_dir = (cfg.resolve_path(d.snapshot_dir) if d.snapshot_dir and serve
                             else None)
        self.plan = PlanHolder(empty_plan(cfg))
        self.plan.kick = self._kick
        self._refreshing = None
        self._again = False
        self._secrets = None
        cookies = None
        if d.cookies:
            # without a secret file the workers of one server share the secret of the first
            inherited = os.environ.get(COOKIE_SECRET_ENV, "")
            cookies = CookieJar([bytes.fromhex(inherited)] if len(inherited) == 32 else None)
            if d.cookie_secret_file:   # read now: a bad secret file fails at startup
                self._secrets = SecretFile(str(cfg.resolve_path(d.cookie_secret_file)), cookies)
                try:
                    self._secrets.check()
                except (OSError, SecretError) as e:
                    raise SecretError(str(e)) from None
        # until a plan arrives: the static zone, SERVFAIL only for names that need the plan
        self.answerer = Answerer(geo, compile_table(None, zone, cfg), cookies=cookies,
                                 nsid=d.nsid.encode("ascii"), rrl=rrl.from_config(d))
        self.reuse_port = bool(reuse_port)
        self.processes = None                  # dnsd.processes.DNSProcesses, when DNS is there
        self._last_build = None
        self._pool_gen = 0
        self._last_db_log = 0.0
        self._refreshing = self._refresh_again = False
        self._db_version = 0                   # the newest version taken from the table
        self._last_behind_log = None
        self._collisions: tuple = ()
        self.fd_limit = raise_fd_limit()
        max_conns = d.tcp_max_connections or min(AUTO_TCP_MAX, max(100, self.fd_limit // 2))
        self.tcp = DNSStreamFactory(self.answerer, d.tcp_idle_timeout, max_conns,
                                    d.tcp_max_per_address, d.tcp_max_unsent)
        for hp in d.listen if serve and listen else ():
            host, port = split_hostport(hp, "[dns] listen")
            _Listener(reactor, "udp", host, port, self.answerer,
                      self.reuse_port).setServiceParent(self)
            _Listener(reactor, "tcp", host, port, self.tcp, self.reuse_port,
                      d.tcp_backlog).setServiceParent(self)
        refresher = internet.TimerService(d.poll_interval, self.refresh)
        refresher.clock = reactor
        refresher.setServiceParent(self)
        self.listener = None
        engine = getattr(pool, "engine", None)
        if d.notify and engine is not None and engine.dialect.name == "postgresql":
            from dnsd.follow import VersionListener

            self.listener = VersionListener(engine, reactor, self._notified,
                                            poll_interval=d.poll_interval)
            self.listener.setServiceParent(self)
        georeload = geo.reload_service(geo_interval, clock=reactor,
                                       in_thread=lambda f: self._in_thread(f)) if hasattr(
            geo, "reload_service") else None
        if georeload is not None:
            georeload.setServiceParent(self)
        if self._secrets is not None:
            secrets = internet.TimerService(geo_interval, self._check_secrets)
            secrets.clock = reactor
            secrets.setServiceParent(self)

    def _check_secrets(self):
        d = self._in_thread(self._secrets.check)

        def done(changed):
            if changed:
                _log.info("dns cookie secrets reloaded from {path} ({n} secrets)",
                          path=self._secrets.path, n=len(self.answerer.cookies.keys))

        def failed(f):
            _log.error("dns cookie secrets not reloaded, keeping the old ones: {err}",
                       err=f.getErrorMessage())

        d.addCallbacks(done, failed)
        return d

    # -- plan refresh ------------------------------------------------------------------------------

    def refresh(self) -> defer.Deferred:
        """One poll: rebuild when the version moved or the plan is old. Never fails. Asked for
        while one runs, it runs once more right after that one."""
        if self._refreshing:
            self._refresh_again = True
            return defer.succeed(None)
        self._refreshing = True
        d = self.pool.run_readonly(load_version)
        d.addCallback(self._maybe_rebuild)
        d.addCallbacks(self._db_good, self._db_bad)

        def done(_):
            self._refreshing = False
            if self._refresh_again:
                self._refresh_again = False
                return self.refresh()

        return d.addBoth(done)

    def _notified(self, version):
        """A NOTIFY (or the listener's reconnection, version None): refresh now if it is news."""
        if version is None or version > self.plan.version:
            self.refresh()

    def _behind(self, version) -> bool:
        """True (and a log line, once a minute) when the table says an older version than one
        this node already took from it."""
        if version >= self._db_version:
            return False
        now = self.reactor.seconds()
        if self._last_behind_log is None or now - self._last_behind_log >= 60:
            self._last_behind_log = now
            _log.warn("dns_version_behind: the table says version {version}, older than version "
                      "{newest} this node already serves (a lagging replica?); keeping it",
                      version=version, newest=self._db_version)
        return True

    def _kick(self) -> None:
        """A refresh now, for PlanHolder.wait_for; one at a time, and one more after it when a
        kick came while it ran (it may have read the version before that change)."""
        if not self.running:
            return
        if self._refreshing is not None:
            self._again = True
            return
        self._again = False
        d = self._refreshing = self.refresh()

        def done(_r):
            self._refreshing = None
            if self._again:
                self._kick()
        d.addBoth(done)

    def _maybe_rebuild(self, version):
        gen = getattr(self.pool, "generation", 0)      # another SQLite file at the path
        if gen != self._pool_gen:
            self._db_version = 0                       # another table: its own versions
        if self._behind(version):
            return None
        now = self.reactor.seconds()
        nc = self.plan.current.next_change
        due = (self.plan.table is None or version != self.plan.version
               or self._last_build is None or gen != self._pool_gen
               or now - self._last_build >= self.cfg.dns.rebuild_interval
               or self._edge_due or (nc is not None and self.now() >= nc))
        self._pool_gen = gen
        if not due:
            return None
        # a failure here is the database's
        d = self.pool.run_readonly(lambda conn: load_rows(conn, self.now()))
        d.addCallback(self._build_and_swap)
        return d

    def _in_thread(self, f, *args):
        """Run CPU work off the reactor thread (tests replace this to run it inline)."""
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    def _build_and_swap(self, rows):
        if self._behind(rows["version"]):
            return None
        self._rows = rows
        self._edge_due = False
        d = self._in_thread(self.build, rows)
        d.addCallback(self._swap)
        d.addErrback(self._build_failed)           # ... and a failure here is ours, not the DB's
        return d

    def _build_failed(self, failure):
        _log.failure("dns plan build failed; still answering from plan version {version}",
                     failure, version=self.plan.version)

    def build(self, rows):
        """Plan + wire table from rows (runs on a pool thread). Re-reads a changed zone file."""
        t0 = time.perf_counter()
        zone = self._current_zone()
        plan = build_plan(rows, self.cfg, self.now())
        table = compile_table(plan, zone, self.cfg, self._rng)
        return plan, table, zone, time.perf_counter() - t0

    def _current_zone(self):
        """The zone, re-read when its file changed (on a pool thread); a broken new file is
        logged and the old zone kept."""
        zone = self.zone
        if self._zone_path is not None:
            st = _stamp(self._zone_path)
            if st is not None and st != self._zone_stamp:
                try:
                    zone = load_zone(self._zone_path, self.cfg.dns.zone)
                    check_generated_names(zone, self.cfg)
                    self._zone_stamp = st
                    _log.info("zone file {path} reloaded", path=str(self._zone_path))
                except ZoneError as e:
                    zone = self.zone
                    self._zone_stamp = st      # do not retry the same broken file every second
                    _log.error("zone file not reloaded, keeping the old one: {err}", err=str(e))
        return zone

    # -- maintenance edges ---------------------------------------------------------------------

    def _schedule_edge(self, plan) -> None:
        """A timer for the time the live plan's verdicts change by themselves (next_change)."""
        if self._edge_call is not None and self._edge_call.active():
            self._edge_call.cancel()
        self._edge_call = None
        if plan.next_change is not None:
            left = (plan.next_change - self.now()).total_seconds()
            self._edge_call = self.reactor.callLater(max(0.0, left), self._edge)

    def _edge(self) -> None:
        """next_change came: rebuild now (from the table, or from the rows last read when it
        does not answer, see _db_bad)."""
        self._edge_call = None
        nc = self.plan.current.next_change
        if nc is None:
            return
        left = (nc - self.now()).total_seconds()
        if left > 0:                           # the reactor's clock ran ahead of the wall clock
            self._edge_call = self.reactor.callLater(left, self._edge)
            return
        self._edge_due = True
        self.refresh()

    def _rebuild_from_memory(self):
        """At an edge without the database: the last rows, built at the time now."""
        self._edge_due = False
        _log.info("dns plan rebuilt from the rows last read (a maintenance window's edge; the "
                  "database does not answer)")
        d = self._in_thread(self.build, self._rows)
        d.addCallback(self._swap, source=self.plan.source, reread=False)
        d.addErrback(self._build_failed)
        return d

    def _swap(self, built, source: str = "database", reread: bool = True):
        plan, table, zone, secs = built
        h = self.plan
        old = h.current.version
        was = h.source
        self.zone = zone
        h.table = table
        h.source = source
        if source == "database":               # a snapshot's version says nothing about the table
            self._db_version = max(self._db_version, plan.version)
        self.answerer.set_table(table)
        h.installed(plan)
        h.built_monotonic = time.monotonic()
        h.build_seconds = secs
        h.builds += 1
        if h.builds == 1:
            freeze_startup_objects()
        self._schedule_edge(plan)
        if source == "database":
            if reread:
                self._last_build = self.reactor.seconds()
            _log.info("dns plan version {version} in {ms:.1f} ms ({serving} of {total} mirrors "
                      "serving; was {old}{src})", version=plan.version, ms=secs * 1000,
                      serving=len(plan.serving), total=len(plan.mirrors), old=old,
                      src=", from the snapshot" if was == "snapshot" else "")
            if self.snapshot_dir is not None:
                d = self._in_thread(snapshot.write, self.snapshot_dir, self.slot, plan)
                d.addErrback(lambda f: _log.error("dns plan snapshot not written to {dir}: {err}",
                                                  dir=str(self.snapshot_dir),
                                                  err=f.getErrorMessage()))
        if table.collisions != self._collisions:
            self._collisions = table.collisions
            for c in table.collisions:
                _log.error("dns name collision: {what}; the zone file's name is served",
                           what=c)

    # -- the snapshot at start -------------------------------------------------------------------

    def load_snapshot(self):
        """Read the newest valid snapshot and compile it (on a pool thread); None if none."""
        problems: list[str] = []
        snap = snapshot.newest(self.snapshot_dir, problems)
        for p in problems:
            _log.warn("dns plan snapshot skipped: {problem}", problem=p)
        if snap is None or self.plan.source != "none":
            return None                 # (or the database answered first: no compile needed)
        t0 = time.perf_counter()
        zone = self._current_zone()
        table = compile_table(snap.plan, zone, self.cfg, self._rng)
        return snap, (snap.plan, table, zone, time.perf_counter() - t0)

    def _snapshot_loaded(self, loaded):
        if loaded is None:
            if self.plan.source == "none":
                _log.warn("dns_no_plan: no plan snapshot in {dir} and no plan from the database "
                          "yet; answering the static zone, SERVFAIL for names that need the plan",
                          dir=str(self.snapshot_dir))
            return
        snap, built = loaded
        if self.plan.source != "none":
            return                      # the database answered first
        self._swap(built, source="snapshot")
        self.plan.snapshot_path = snap.path
        _log.warn("dns_plan_from_snapshot: answering from {path} (plan version {version}, "
                  "{serving} of {total} mirrors serving, written {age} ago) until the database "
                  "answers", path=snap.path, version=snap.plan_version,
                  serving=len(snap.plan.serving), total=len(snap.plan.mirrors),
                  age=fmt_age(snap.age()))

    def _db_good(self, _):
        if not self.plan.db_ok:
            self.plan.db_ok = True
            self.plan.last_error = ""
            _log.info("dns_db_back: database reachable again, plan version {version}",
                      version=self.plan.version)

    def _db_bad(self, failure):
        now = self.reactor.seconds()
        h = self.plan
        h.last_error = failure.getErrorMessage()
        if h.db_ok or now - self._last_db_log >= 60:
            self._last_db_log = now
            if h.source == "none":
                what = "answering the static zone only"
            else:
                what = (f"still answering from plan version {h.version} ({h.source}, data "
                        f"{fmt_age(h.data_age())} old)")
            _log.error("dns_db_unreachable: cannot refresh the plan ({err}); {what}",
                       err=h.last_error, what=what, version=h.version)
        h.db_ok = False
        if self._edge_due and self._rows is not None:
            return self._rebuild_from_memory()

    # -- start and stop -----------------------------------------------------------------------------

    def privilegedStartService(self):
        try:
            super().privilegedStartService()
        except ListenError as e:
            if not self.exit_on_listen_error:
                raise
            raise SystemExit(f"mirrordns: {e}") from None    # one line, no traceback

    def startService(self):
        super().startService()
        if self._metrics:
            from dnsd import metrics

            self._collector = metrics.register(self, self._registry)
        if self.snapshot_dir is not None:
            d = self._in_thread(self.load_snapshot)
            d.addCallbacks(self._snapshot_loaded,
                           lambda f: _log.failure("dns plan snapshot not loaded", f))

    def stopService(self):
        if self._edge_call is not None and self._edge_call.active():
            self._edge_call.cancel()
        self._edge_call = None
        if self._collector is not None:
            from prometheus_client import REGISTRY

            (self._registry if self._registry is not None else REGISTRY).unregister(
                self._collector)
            self._collector = None
        return super().stopService()


def geo_from_config(cfg, compile: bool = False) -> GeoLocator:
    """The client locator `[geoip]` describes (the bundled GeoLite2 when `database` is empty);
    with `compile`, one that also keeps the compiled index the DNS answer path reads."""
    g = cfg.geoip
    path = str(cfg.resolve_path(g.database)) if g.database else ""
    return GeoLocator(path, g.cache_size, compile=compile,
                      index_cache=str(cfg.resolve_path(g.index_cache)) if g.index_cache else None)


def makeService(cfg, pool, reactor, **kw) -> DNSService:
    """The DNS service for twistd: `.plan` is the live plan the admin gets, `.geo` the locator.

    Serving ([dns] workers = N >= 1): DNS answered in N processes of their own (`.processes`,
    dnsd.processes); this process follows the table for the admin's plan. workers = 0: DNS
    answered here. A listen address that cannot be bound ends the process with one line naming
    it and the cause."""
    kw.setdefault("exit_on_listen_error", True)
    if not kw.get("serve", True) or cfg.dns.workers == 0:
        return DNSService(cfg, pool, reactor, **kw)
    from dnsd.processes import DNSProcesses

    kw.update(serve=False, metrics=False)
    svc = DNSService(cfg, pool, reactor, **kw)
    cookies = svc.answerer.cookies
    secret = cookies.keys[0].hex() if cookies is not None and not cfg.dns.cookie_secret_file \
        else ""
    svc.processes = DNSProcesses(cfg, reactor, registry=kw.get("registry"), cookie_secret=secret)
    svc.processes.setServiceParent(svc)
    svc.plan.answering = svc.processes
    return svc
