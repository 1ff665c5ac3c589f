"""DNS answered in processes of their own beside the admin web: `[dns] workers = N` (N >= 1).

Why (docs/architecture.md, "DNS never waits for the web"): in one process the DNS answer path
shares the reactor and the GIL with everything the web does. Bounded requests (admin.web.limits)
keep any one request short, but pages render on worker threads, argon2 runs there, and a thread
holding the GIL delays the reactor by up to the switch interval (5 ms) each time; under a flood
of web requests that is the DNS latency. A DNS process has its own reactor and GIL, and the
kernel schedules it on its own: measured by `make bench-isolation`.

How:

- The main process binds every [dns] listen address (UDP and TCP) in privilegedStartService, as
  the in-process listeners did: port 53 is taken before twistd drops privileges, and a port that
  cannot be bound stops the start with one line naming it (dnsd.server.ListenError). With N > 1 it opens N sockets per address
  with SO_REUSEPORT, one per DNS process, so the kernel spreads the queries.
- It starts N children, ``python -m dnsd.worker --child --slot K --fd udp:HOST:PORT:3 ...``,
  each inheriting its sockets and following the table with a plan of its own (and its own plan
  snapshot, dnsd.snapshot, by its slot K), sharing one DNS cookie secret; the main process keeps
  its own plan for the admin and the closer (dnsd.service.DNSService with serve=False).
- A child writes one line of JSON a second on stdout: its counters and its plan's state
  (dnsd.metrics.report). Asked on stdin (``wait N``), it refreshes at once and reports as soon as
  its plan has version N: the admin's changes wait for the plan that answers
  (dnsd.service.PlanHolder.wait_for), here the children's. The main process sums them for /metrics (`ProcessesCollector`: the
  usual dnsd_* families, counters summed over all DNS processes, plan gauges of the worst one).
- Its log events arrive as JSON on stderr and go into the main process's log, marked dns-K.
- A child that exits is started again on the same sockets, after a pause that grows to 30 s; one
  that stops reporting for HUNG_AFTER seconds is killed and started again.
- Stopping the service stops the children (SIGTERM, SIGKILL after STOP_TIMEOUT seconds) before
  the sockets close. A child also ends by itself when the main process is gone, however it died:
  its stdin reaches EOF, and on Linux PR_SET_PDEATHSIG sends it SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.error import ProcessExitedAlready, ReactorNotRunning
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, eventFromJSON, globalLogPublisher

from dnsd import metrics
from dnsd.config import split_hostport
from dnsd.server import DNSTCPPort, listen_error, reuseport_socket, udp_socket
from dnsd.service import _Listener

_log = Logger(namespace="dnsd.processes")

REPORT_EVERY = 1.0          # seconds between two reports of a child
HUNG_AFTER = 15.0           # seconds without a report before a child is killed and restarted
STOP_TIMEOUT = 5.0          # seconds a child gets to stop before SIGKILL
MAX_PAUSE = 30.0            # the longest pause before restarting a child that keeps dying
FIRST_FD = 3                # the children's inherited sockets start at this descriptor


@dataclass(frozen=True)
class Inherited:
    """One listening socket as a child sees it: `--fd udp:127.0.0.1:5353:3`."""

    kind: str               # "udp" | "tcp"
    host: str
    port: int
    fd: int

    def arg(self) -> str:
        return f"{self.kind}:{self.host}:{self.port}:{self.fd}"

    @classmethod
    def parse(cls, s: str) -> Inherited:
        kind, rest = s.split(":", 1)
        rest, fd = rest.rsplit(":", 1)
        host, port = rest.rsplit(":", 1)
        if kind not in ("udp", "tcp"):
            raise ValueError(f"--fd {s}: udp or tcp")
        return cls(kind, host.strip("[]"), int(port), int(fd))


def open_sockets(listen, n: int, backlog: int = 1024) -> list[list[tuple]]:
    """Per DNS process, its (kind, host, port, socket) for every [dns] listen address; SO_REUSEPORT
    only when n > 1 (one process alone must not share its port with anybody). A port that
    cannot be bound raises ListenError (one line: the address and the cause)."""
    out = [[] for _ in range(n)]
    for hp in listen:
        host, port = split_hostport(hp, "[dns] listen")
        for kind, st in (("udp", socket.SOCK_DGRAM), ("tcp", socket.SOCK_STREAM)):
            for k in range(n):
                try:
                    if kind == "udp":
                        s = udp_socket(host, port, n > 1)
                    else:
                        s = reuseport_socket(host, port, st, backlog, reuse=n > 1)
                except OSError as e:
                    for group in out:
                        for *_x, sock in group:
                            sock.close()
                    raise listen_error(host, port, kind, e) from None
                if port == 0:               # the kernel chose: the other processes take the same
                    port = s.getsockname()[1]
                out[k].append((kind, host, port, s))
    return out


class _Child(ProcessProtocol):
    """One DNS process: its reports, its log, its end."""

    def __init__(self, owner: DNSProcesses, slot: int):
        self.owner, self.slot = owner, slot
        self.report: dict | None = None
        self.reported_at = owner.reactor.seconds()
        self.started_at = owner.reactor.seconds()
        self.ready = False
        self.ended = defer.Deferred()
        self._out = b""
        self._err = b""

    def outReceived(self, data: bytes):
        self._out += data
        *lines, self._out = self._out.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except ValueError:
                _log.warn("dns-{slot}: unreadable report {line!r}", slot=self.slot,
                          line=line[:200])
                continue
            self.report = r
            self.reported_at = self.owner.reactor.seconds()
            if r.get("ready") and not self.ready:
                self.ready = True
                self.owner._child_ready(self)
            self.owner._reported()
        if len(self._out) > 1 << 20:
            self._out = b""

    def errReceived(self, data: bytes):
        """JSON log events, one a line (twisted.logger writes \\x1e + JSON + \\n), re-published
        here as soon as their line is complete."""
        self._err += data
        *records, self._err = self._err.split(b"\n")
        for rec in records:
            text = rec.strip(b"\x1e \r\t")
            if not text:
                continue
            try:
                event = eventFromJSON(text.decode("utf-8", "replace"))
            except ValueError:
                event = {"log_format": "{line}", "line": text.decode("utf-8", "replace"),
                         "log_level": None, "log_namespace": "dnsd.processes",
                         "log_time": time.time()}
            if event.get("log_level") is None:
                from twisted.logger import LogLevel
                event["log_level"] = LogLevel.info
            event["log_system"] = f"dns-{self.slot}"
            globalLogPublisher(event)
        if len(self._err) > 1 << 20:
            self._err = b""

    def processEnded(self, reason):
        self.owner._child_ended(self, reason)
        self.ended.callback(None)


class DNSProcesses(service.Service):
    """The DNS processes of this node (see the module docstring). `ready` fires once every
    child has reported a plan; `pids()` lists them; `collector` feeds /metrics."""

    def __init__(self, cfg, reactor, *, registry=None, argv0: str | None = None,
                 cookie_secret: str = ""):
        """cookie_secret: hex, the DNS cookie secret every child shares (without a
        [dns] cookie_secret_file), so a client's cookie holds whichever process answers."""
        self.cfg, self.reactor = cfg, reactor
        self._cookie_secret = cookie_secret
        self.n = cfg.dns.workers
        self._registry = registry
        self._python = argv0 or sys.executable
        self._sockets: list[list[tuple[str, str, int, socket.socket]]] = []
        self.children: dict[int, _Child] = {}
        self._pause = {k: 1.0 for k in range(self.n)}
        self._restarts: dict[int, object] = {}
        self._stopping = False
        self._watch = None
        self.collector = ProcessesCollector(self)
        self.ready = defer.Deferred()
        self._ready_told = False
        self._waiters: list[tuple[int, defer.Deferred]] = []

    # -- sockets: bound before privileges are dropped --
    def privilegedStartService(self):
        if not self._sockets:
            self._sockets = open_sockets(self.cfg.dns.listen, self.n, self.cfg.dns.tcp_backlog)
        service.Service.privilegedStartService(self)

    def startService(self):
        if not self._sockets:
            self.privilegedStartService()
        service.Service.startService(self)
        self._stopping = False
        (self._registry if self._registry is not None else _global_registry()).register(
            self.collector)
        for k in range(self.n):
            self._spawn(k)
        self._watch = task.LoopingCall(self._check_hung)
        self._watch.clock = self.reactor
        self._watch.start(2.0, now=False)

    def _args(self, slot: int) -> tuple[list[str], dict[int, object]]:
        fds: dict[int, object] = {0: "w", 1: "r", 2: "r"}
        args = [self._python, "-m", "dnsd.worker", "--child", "--slot", str(slot),
                "--parent", str(os.getpid())]
        if self.cfg.path:
            args += ["--config", os.path.abspath(self.cfg.path)]
        for i, (kind, host, port, s) in enumerate(self._sockets[slot]):
            fd = FIRST_FD + i
            fds[fd] = s.fileno()
            args += ["--fd", Inherited(kind, host, port, fd).arg()]
        return args, fds

    def _spawn(self, slot: int) -> None:
        self._restarts.pop(slot, None)
        args, fds = self._args(slot)
        child = _Child(self, slot)
        self.children[slot] = child
        env = os.environ.copy()
        if self._cookie_secret:
            from dnsd.service import COOKIE_SECRET_ENV

            env[COOKIE_SECRET_ENV] = self._cookie_secret
        self.reactor.spawnProcess(child, self._python, args, env=env, childFDs=fds)
        _log.info("dns-{slot}: started DNS process {pid}", slot=slot, pid=child.transport.pid)

    def _child_ready(self, child: _Child) -> None:
        if not self._ready_told and all(c.ready for c in self.children.values()) \
                and len(self.children) == self.n:
            self._ready_told = True
            _log.info("DNS answered by {n} process(es) of their own: {pids}", n=self.n,
                      pids=" ".join(str(p) for p in self.pids()))
            self.ready.callback(self.pids())

    def _child_ended(self, child: _Child, reason) -> None:
        slot = child.slot
        if self.children.get(slot) is child:
            del self.children[slot]
        self.collector.retire(child.report)
        if self._stopping or not self.running:
            return
        lived = self.reactor.seconds() - child.started_at
        if lived > 60:
            self._pause[slot] = 1.0
        pause = self._pause[slot]
        self._pause[slot] = min(MAX_PAUSE, pause * 2)
        _log.error("dns-{slot}: DNS process ended ({why}); starting it again in {pause:.0f} s",
                   slot=slot, why=reason.getErrorMessage(), pause=pause)
        self._restarts[slot] = self.reactor.callLater(pause, self._spawn, slot)

    def _check_hung(self) -> None:
        now = self.reactor.seconds()
        for child in list(self.children.values()):
            if now - child.reported_at > HUNG_AFTER:
                _log.error("dns-{slot}: no report for {s:.0f} s; killing DNS process {pid}",
                           slot=child.slot, s=now - child.reported_at, pid=child.transport.pid)
                child.reported_at = now              # one kill per silence
                _signal(child, "KILL")

    # -- "does the DNS answer with this change yet?" (PlanHolder.wait_for) --
    def versions(self) -> list[int]:
        """The plan version each DNS process reported last (-1: none yet)."""
        return [c.report["plan_version"] if c.report else -1
                for _k, c in sorted(self.children.items())]

    def _have(self, version: int) -> bool:
        v = self.versions()
        return len(v) == self.n and min(v) >= version

    def wait_for(self, version: int, clock, timeout: float) -> defer.Deferred:
        """Fires True once every DNS process reports a plan of at least `version`, False after
        `timeout` seconds. Each is asked to refresh now and to report as soon as it has it."""
        if self._have(version):
            return defer.succeed(True)
        d = defer.Deferred()
        entry = (version, d)
        self._waiters.append(entry)
        timer = clock.callLater(timeout, self._expire, entry)
        d.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
        for c in self.children.values():
            try:
                c.transport.write(b"wait %d\n" % version)
            except Exception:
                pass                                # gone meanwhile: the timeout answers
        return d

    def _expire(self, entry) -> None:
        if entry in self._waiters:
            self._waiters.remove(entry)
            entry[1].callback(False)

    def _reported(self) -> None:
        if not self._waiters:
            return
        ready = [w for w in self._waiters if self._have(w[0])]
        self._waiters = [w for w in self._waiters if w not in ready]
        for _v, d in ready:
            d.callback(True)

    def pids(self) -> list[int]:
        return [c.transport.pid for _k, c in sorted(self.children.items())
                if c.transport is not None and c.transport.pid]

    def stopService(self):
        service.Service.stopService(self)
        self._stopping = True
        if self._watch is not None and self._watch.running:
            self._watch.stop()
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        try:
            (self._registry if self._registry is not None else _global_registry()).unregister(
                self.collector)
        except KeyError:
            pass
        children = list(self.children.values())
        for c in children:
            try:
                c.transport.closeStdin()
            except Exception:
                pass
            _signal(c, "TERM")
        kill = self.reactor.callLater(STOP_TIMEOUT, lambda: [_signal(c, "KILL") for c in children])

        def closed(_):
            if kill.active():
                kill.cancel()
            for group in self._sockets:
                for *_x, s in group:
                    s.close()
            self._sockets = []

        return defer.gatherResults([c.ended for c in children]).addBoth(closed)


def _signal(child: _Child, sig: str) -> None:
    try:
        child.transport.signalProcess(sig)
    except (ProcessExitedAlready, OSError, AttributeError):
        pass


def _global_registry():
    from prometheus_client import REGISTRY
    return REGISTRY


class ProcessesCollector:
    """/metrics for DNS answered in child processes: the reports of the live children plus what
    the ended ones had counted (so counters never go back when a child is restarted)."""

    def __init__(self, owner: DNSProcesses):
        self.owner = owner
        self._retired = metrics.merge([])        # what ended children had counted

    def describe(self):
        return []

    def retire(self, report: dict | None) -> None:
        if report:
            self._retired = metrics.merge([self._retired, report])

    def collect(self):
        live = [c.report for c in self.owner.children.values() if c.report]
        merged = metrics.merge([self._retired, *live], plans=live)
        yield from metrics.families(merged)
        from prometheus_client.core import GaugeMetricFamily
        yield GaugeMetricFamily("dnsd_processes", "DNS processes answering (reporting now)",
                                value=len(live))


# --- the child's side ----------------------------------------------------------------------------

class AdoptedListener(_Listener):
    """A listening socket inherited from the main process, served here like any listener (UDP on
    an answer thread of its own, dnsd.server.UDPAnswerThread; TCP on DNSTCPPort)."""

    def __init__(self, reactor, sock: Inherited, proto):
        super().__init__(reactor, sock.kind, sock.host, sock.port, proto)
        self.sock = sock

    def _open(self):
        fam = socket.AF_INET6 if ":" in self.sock.host else socket.AF_INET
        if self.sock.kind == "udp":
            return socket.socket(fam, socket.SOCK_DGRAM, fileno=self.sock.fd)
        try:
            return DNSTCPPort._fromListeningDescriptor(self._reactor, self.sock.fd, fam,
                                                       self._proto)
        finally:
            os.close(self.sock.fd)                  # the port holds a duplicate


class _Control:
    """The child's end of the pipes: reports out on stdout; on stdin, ``wait N`` lines (refresh
    now, and report as soon as the plan has version N), and its EOF (the main process is gone,
    or stopping us) ends the process."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.transport = None
        self.on_wait = None                         # callable(version), set by run_child
        self._buf = b""

    def makeConnection(self, transport):
        self.transport = transport

    def dataReceived(self, data):
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            cmd, _, arg = line.strip().partition(b" ")
            if cmd == b"wait" and arg.isdigit() and self.on_wait is not None:
                self.on_wait(int(arg))
        self._buf = self._buf[-64:]

    def connectionLost(self, reason=None):
        _stop(self.reactor)

    def send(self, report: dict) -> None:
        if self.transport is not None:
            self.transport.write(json.dumps(report, separators=(",", ":")).encode() + b"\n")


def run_child(cfg, slot: int, parent: int, inherited: list[Inherited]) -> int:
    """`python -m dnsd.worker --child`: serve the inherited sockets until told to stop."""
    _die_with_parent(parent)
    from twisted.internet import reactor, stdio
    from twisted.logger import globalLogBeginner, jsonFileLogObserver

    from dnsd.db import open_pool
    from dnsd.service import DNSService

    globalLogBeginner.beginLoggingTo([_formatted(jsonFileLogObserver(sys.stderr))],
                                     redirectStandardIO=False)
    pool = open_pool(cfg, reactor)
    pool.start()
    svc = DNSService(cfg, pool, reactor, listen=False, metrics=False, slot=slot)
    for sock in inherited:
        proto = svc.answerer if sock.kind == "udp" else svc.tcp
        AdoptedListener(reactor, sock, proto).setServiceParent(svc)
    control = _Control(reactor)
    stdio.StandardIO(control, reactor=reactor)

    def tell():
        r = metrics.report(svc.answerer.stats, svc.plan, svc.answerer, svc.tcp)
        r["slot"], r["ready"] = slot, svc.plan.builds > 0
        control.send(r)

    def on_wait(version: int) -> None:
        svc.plan.wait_for(version, reactor, HUNG_AFTER).addCallback(lambda _ok: tell())

    control.on_wait = on_wait
    reporter = task.LoopingCall(tell)
    reporter.clock = reactor
    reactor.callWhenRunning(svc.startService)
    reactor.callWhenRunning(reporter.start, REPORT_EVERY)
    reactor.addSystemEventTrigger("before", "shutdown", svc.stopService)
    reactor.addSystemEventTrigger("after", "shutdown", pool.stop)
    # SIGTERM may come twice (from the main process, and to the whole process group from a
    # supervisor): stopping is idempotent here, where Twisted's own handler would raise
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_a: reactor.callFromThread(_stop, reactor))
    reactor.run(installSignalHandlers=False)
    return 0


def _stop(reactor) -> None:
    try:
        reactor.stop()
    except ReactorNotRunning:                   # stopping already
        pass


def _formatted(observer):
    """Events with their message formatted here: JSON keeps the fields but not the format specs
    ({ms:.1f}), so the main process would print 4.791307000232337 ms."""
    from twisted.logger import formatEvent

    def observe(event):
        e = dict(event)
        e["log_format"] = formatEvent(event).replace("{", "{{").replace("}", "}}")
        observer(e)
    return observe


def _die_with_parent(parent: int) -> None:
    """Linux: SIGTERM when the main process dies, however it died; and if it is gone already
    (before prctl took effect), go now."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)               # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if parent and os.getppid() != parent:
        sys.exit(0)
