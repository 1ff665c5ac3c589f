"""The DNS service tree: listeners, the plan refresher, the geo reloader, extra worker processes.

The refresher polls the table version every `poll_interval` (one tiny read on the table's own
thread pool); when it moved, or `rebuild_interval` passed (sync ages keep moving without a version
change), it loads the rows (same pool, one read transaction), builds the plan and encodes the wire
table on a reactor pool thread, and swaps both in with one assignment on the reactor thread.
Queries in flight see either the old or the new table, never a mix.

If the database is unreachable the server keeps answering from the last plan; the first failure,
one reminder a minute and the recovery are logged (`dns_db_unreachable`, `dns_db_back`).

With `[dns] workers = N > 1`, every listener socket is opened with SO_REUSEPORT and N-1 extra
processes (`python -m dnsd.worker --config FILE --single`) serve the same port, each following the
table with its own plan; the kernel spreads queries over them.
"""

from __future__ import annotations

import gc
import os
import socket
import sys
import time

from twisted.application import internet, service
from twisted.internet import defer, threads
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from dnsd import models
from dnsd.answer import Answerer, compile_table
from dnsd.config import split_hostport
from dnsd.geo import GeoLocator
from dnsd.plan import build_plan, empty_plan, load_rows, load_version
from dnsd.server import DNSStreamFactory, UDPAnswerThread, reuseport_socket, udp_socket
from dnsd.zonefile import ZoneError, load_zone, zone_for

_log = Logger()


class PlanHolder:
    """`.current` is the live ResolutionPlan (immutable); the rest describes how it got there."""

    def __init__(self, plan):
        self.current = plan
        self.table = None              # the WireTable encoded from `current`
        self.built_monotonic = None    # time.monotonic() of the last swap
        self.build_seconds = 0.0
        self.builds = 0
        self.db_ok = True
        self.last_error = ""

    @property
    def version(self) -> int:
        return self.current.version

    def age(self) -> float | None:
        return None if self.built_monotonic is None else time.monotonic() - self.built_monotonic


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


def _stamp(path):
    try:
        st = os.stat(path)
        return st.st_mtime_ns, st.st_size
    except OSError:
        return None


class _UDPListener(service.Service):
    """UDP answered on a thread of its own (dnsd.server.UDPAnswerThread), on a socket bound in
    privilegedStartService, so port 53 is taken before twistd drops privileges; with `reuse`
    the socket has SO_REUSEPORT (worker processes on one port)."""

    def __init__(self, reactor, host, port, answerer, reuse=False):
        self._reactor, self._host, self._port_no, self._answerer = reactor, host, port, answerer
        self._reuse = reuse
        self._sock = None
        self._thread = None

    def privilegedStartService(self):
        if self._sock is None:
            self._sock = udp_socket(self._host, self._port_no, self._reuse)
        service.Service.privilegedStartService(self)

    def startService(self):
        if self._sock is None:
            self.privilegedStartService()
        self._thread = UDPAnswerThread(self._sock, self._answerer,
                                       f"dns-udp {self._host}:{self._port_no}")
        self._thread.start()
        service.Service.startService(self)

    def stopService(self):
        service.Service.stopService(self)
        t, self._thread, self._sock = self._thread, None, None
        if t is not None:
            return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), t.stop)


class _TCPAdopted(service.Service):
    """TCP on a socket we open with SO_REUSEPORT (Twisted's TCPServer cannot set it)."""

    def __init__(self, reactor, host, port, factory):
        self._reactor, self._host, self._port_no, self._factory = reactor, host, port, factory
        self._port = None

    def privilegedStartService(self):
        s = reuseport_socket(self._host, self._port_no, socket.SOCK_STREAM)
        try:
            self._port = self._reactor.adoptStreamPort(s.fileno(), s.family, self._factory)
        finally:
            s.close()
        service.Service.privilegedStartService(self)

    def startService(self):
        if self._port is None:
            self.privilegedStartService()
        service.Service.startService(self)

    def stopService(self):
        service.Service.stopService(self)
        if self._port is not None:
            d, self._port = self._port.stopListening(), None
            return d


class _Worker(ProcessProtocol):
    def __init__(self, svc, n):
        self.svc, self.n = svc, n

    def outReceived(self, data):
        sys.stdout.buffer.write(data)

    def errReceived(self, data):
        sys.stderr.buffer.write(data)

    def processEnded(self, reason):
        _log.info("dns worker {n} ended: {why}", n=self.n, why=reason.getErrorMessage())
        self.svc._workers.discard(self)


class DNSService(service.MultiService):
    """dnsd's service tree; `.plan` (PlanHolder), `.geo` (GeoLocator), `.answerer`."""

    def __init__(self, cfg, pool, reactor, *, geo=None, zone=None, reuse_port=None,
                 spawn_workers=True, rng=None, geo_interval: float | None = None, registry=None):
        super().__init__()
        self._registry = registry              # prometheus registry (None: the global one)
        self._collector = None
        self.cfg, self.pool, self.reactor = cfg, pool, reactor
        d = cfg.dns
        g = cfg.geoip
        if geo is None:
            path = str(cfg.resolve_path(g.database)) if g.database else ""
            geo = GeoLocator(path, g.cache_size, compile=True, index_cache=str(
                cfg.resolve_path(g.index_cache)) if g.index_cache else None)
        self.geo = geo
        if zone is None:               # read now: a bad zone file fails at startup, not later
            zone, self._zone_path = zone_for(cfg)
        else:
            self._zone_path = None
        self.zone = zone
        self._zone_stamp = _stamp(self._zone_path) if self._zone_path else None
        self._rng = rng
        self.plan = PlanHolder(empty_plan(cfg))
        self.answerer = Answerer(geo)            # table None -> SERVFAIL until the first plan
        self.reuse_port = (d.workers > 1) if reuse_port is None else reuse_port
        self._spawn = spawn_workers and d.workers > 1
        self._workers: set = set()
        self._last_build = None
        self._last_db_log = 0.0
        self.tcp = DNSStreamFactory(self.answerer, d.tcp_idle_timeout)
        for hp in d.listen:
            host, port = split_hostport(hp, "[dns] listen")
            _UDPListener(reactor, host, port, self.answerer, self.reuse_port).setServiceParent(self)
            if self.reuse_port:
                _TCPAdopted(reactor, host, port, self.tcp).setServiceParent(self)
            else:
                internet.TCPServer(port, self.tcp, interface=host,
                                   reactor=reactor).setServiceParent(self)
        refresher = internet.TimerService(d.poll_interval, self.refresh)
        refresher.clock = reactor
        refresher.setServiceParent(self)
        georeload = geo.reload_service(
            g.reload_interval if geo_interval is None else geo_interval, clock=reactor,
                                       in_thread=lambda f: self._in_thread(f)) if hasattr(
            geo, "reload_service") else None
        if georeload is not None:
            georeload.setServiceParent(self)

    # -- plan refresh ------------------------------------------------------------------------------

    def refresh(self) -> defer.Deferred:
        """One poll: rebuild when the version moved or the plan is old. Never fails."""
        d = self.pool.run_readonly(load_version)
        d.addCallback(self._maybe_rebuild)
        d.addCallbacks(self._db_good, self._db_bad)
        return d

    def _maybe_rebuild(self, version):
        now = self.reactor.seconds()
        due = (self.plan.table is None or version != self.plan.version
               or self._last_build is None
               or now - self._last_build >= self.cfg.dns.rebuild_interval)
        if not due:
            return None
        d = self.pool.run_readonly(load_rows)      # a failure here is the database's
        d.addCallback(self._build_and_swap)
        return d

    def _in_thread(self, f, *args):
        """Run CPU work off the reactor thread (tests replace this to run it inline)."""
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    def _build_and_swap(self, rows):
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
        zone = self.zone
        if self._zone_path is not None:
            st = _stamp(self._zone_path)
            if st is not None and st != self._zone_stamp:
                try:
                    zone = load_zone(self._zone_path, self.cfg.dns.zone)
                    self._zone_stamp = st
                    _log.info("zone file {path} reloaded", path=str(self._zone_path))
                except ZoneError as e:
                    self._zone_stamp = st      # do not retry the same broken file every second
                    _log.error("zone file not reloaded, keeping the old one: {err}", err=str(e))
        plan = build_plan(rows, self.cfg, models.utcnow())
        table = compile_table(plan, zone, self.cfg, self._rng)
        return plan, table, zone, time.perf_counter() - t0

    def _swap(self, built):
        plan, table, zone, secs = built
        h = self.plan
        old = h.current.version
        self.zone = zone
        h.current, h.table = plan, table
        self.answerer.set_table(table)
        h.built_monotonic = time.monotonic()
        h.build_seconds = secs
        h.builds += 1
        self._last_build = self.reactor.seconds()
        if h.builds == 1:
            freeze_startup_objects()
        _log.info("dns plan version {version} in {ms:.1f} ms ({serving} of {total} mirrors "
                  "serving; was {old})", version=plan.version, ms=secs * 1000,
                  serving=len(plan.serving), total=len(plan.mirrors), old=old)

    def _db_good(self, _):
        if not self.plan.db_ok:
            self.plan.db_ok = True
            self.plan.last_error = ""
            _log.info("dns_db_back: database reachable again, plan version {version}",
                      version=self.plan.version)

    def _db_bad(self, failure):
        now = self.reactor.seconds()
        self.plan.last_error = failure.getErrorMessage()
        if self.plan.db_ok or now - self._last_db_log >= 60:
            self._last_db_log = now
            _log.error("dns_db_unreachable: cannot refresh the plan ({err}); still answering from "
                       "plan version {version}", err=self.plan.last_error,
                       version=self.plan.version)
        self.plan.db_ok = False

    # -- workers ------------------------------------------------------------------------------------

    def startService(self):
        super().startService()
        from dnsd import metrics

        self._collector = metrics.register(self, self._registry)
        if self._spawn:
            if not self.cfg.path:
                _log.error("[dns] workers > 1 needs a config file; serving with one process")
                return
            for n in range(1, self.cfg.dns.workers):
                w = _Worker(self, n)
                self._workers.add(w)
                args = [sys.executable, "-m", "dnsd.worker", "--config",
                        str(os.path.abspath(self.cfg.path)), "--single"]
                self.reactor.spawnProcess(w, sys.executable, args, env=os.environ.copy())

    def stopService(self):
        if self._collector is not None:
            from prometheus_client import REGISTRY

            (self._registry if self._registry is not None else REGISTRY).unregister(
                self._collector)
            self._collector = None
        for w in list(self._workers):
            try:
                w.transport.signalProcess("TERM")
            except ProcessExitedAlready:
                pass
        return super().stopService()


def makeService(cfg, pool, reactor, **kw) -> DNSService:
    return DNSService(cfg, pool, reactor, **kw)
