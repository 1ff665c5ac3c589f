"""The DNS listeners: thin shells around the pure `Answerer` (dnsd.answer), and the ports they
listen on.

UDP: one datagram in, at most one out, on a thread per socket (UDPAnswerThread). TCP: a Twisted
protocol on the reactor, RFC 1035 4.2.2 / RFC 7766 framing (2-byte length), any number of queries
per connection, answered in order. Neither ever raises: `Answerer.answer` returns None for what it
drops.

TCP is bounded so that no client can hold memory or file descriptors (RFC 7766 6.2):

* at most `max_connections` connections, and `max_per_address` from one address; a new one over
  either limit closes the least recently active connection of that group (RFC 7766 6.2.3), so a
  client falling back from a truncated UDP answer always gets in;
* a connection whose client does not read its replies stops being read once `max_unsent` reply
  bytes wait for it (the transport pauses the protocol as its producer), and the idle timeout
  aborts it (a reset), dropping what waits, instead of closing it after a drain that may never
  come; an idle connection with nothing unsent is closed in order;
* at the file-descriptor limit Twisted closes new connections at once (its reserved-descriptor
  recovery); that is logged once, then once a minute, instead of once per connection.

Listeners set IPV6_V6ONLY on IPv6 sockets, so `0.0.0.0:53` and `[::]:53` can both be listed; a
port that cannot be bound is a `ListenError` naming the address and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from collections import OrderedDict

from twisted.internet import protocol, tcp
from twisted.internet.error import CannotListenError
from twisted.logger import Logger, globalLogPublisher
from twisted.protocols.basic import Int16StringReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

try:                                    # the C loop (dnsd/_udpio.c), built by `pip install`
    from dnsd import _udpio
except ImportError:                     # not built: the same loop in Python
    _udpio = None

_log = Logger()


class ListenError(Exception):
    """A listen address that cannot be bound, worded in one line for the operator."""


def listen_error(host: str, port: int, kind: str, err: BaseException) -> ListenError:
    """'cannot listen on [::]:53/udp: Address already in use' (with a hint for EACCES)."""
    hp = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cause = err
    if isinstance(err, CannotListenError) and err.socketError is not None:
        cause = err.socketError
    code = getattr(cause, "errno", None)
    text = getattr(cause, "strerror", None) or str(cause)
    hint = ""
    if code in (errno.EACCES, errno.EPERM) and port < 1024:
        hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    elif code == errno.EADDRINUSE:
        hint = " (another program, or another listen entry, holds it)"
    elif code == errno.EADDRNOTAVAIL:
        hint = " (no interface has this address)"
    return ListenError(f"cannot listen on {hp}/{kind}: {text}{hint}")


def _v6only(skt: socket.socket) -> socket.socket:
    if skt.family == socket.AF_INET6:
        skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return skt


class UDPAnswerThread:
    """Answers DNS over UDP on a thread of its own: wait for datagrams, answer, send, again.

    Not on the reactor, because at real rates datagrams come one at a time and each would cost a
    reactor wakeup: epoll, Twisted's dispatch (with its log context), the read loop until EAGAIN
    raises, the reactor's timed-call checks. Measured at 15,000 q/s (docs/benchmarks.md) that
    cost more CPU than the answer itself. Waiting, the thread holds no GIL, so the reactor (TCP,
    timers, plan swaps) runs as before; the two share the Answerer, whose state is swapped by
    single assignments, and whose counters are plain dict updates (two threads bumping one
    counter at the same instant may lose one count, never corrupt anything).

    The loop is C (`dnsd._udpio`, built by `pip install`) when it is there: recvmmsg takes every
    datagram that waits (up to 32) in one call, sendmmsg sends their replies in one, and the
    source address becomes a string once per run of datagrams from one resolver; at saturation
    that is a fifth less CPU per query than the Python loop (docs/benchmarks.md). Without it
    (`native=False`, or no compiler at install) the same loop runs in Python with recvfrom and
    sendto. Both call `Answerer.answer` for every datagram, so every rule stays in Python.

    `stop()` wakes the thread (shutdown() on the socket makes a blocked receive return) and
    closes the socket once the thread is gone.
    """

    def __init__(self, sock: socket.socket, answerer, name: str = "dns-udp",
                 native: bool | None = None):
        sock.setblocking(True)
        self.sock = sock
        self.answerer = answerer
        self.native = (_udpio is not None) if native is None else native
        if self.native and _udpio is None:
            raise RuntimeError("dnsd._udpio is not built (pip install -e . builds it)")
        self._stop = bytearray(1)           # set by stop(); the C loop reads it too
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @staticmethod
    def _failed(exc: BaseException) -> None:
        _log.failure("dns udp answer failed", Failure(exc))

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            if self._stop[0]:                # stop() closes it only once this thread is gone
                self.sock.close()

    def _serve(self) -> None:
        if self.native:
            _udpio.serve(self.sock.fileno(), self.answerer.answer, self._stop, self._failed)
            return
        recv = self.sock.recvfrom
        send = self.sock.sendto
        answer = self.answerer.answer
        stop = self._stop
        while not stop[0]:
            try:
                data, addr = recv(8192)
            except OSError as e:
                if stop[0] or e.errno in (errno.EBADF, errno.ENOTSOCK, errno.EINVAL):
                    break
                continue                     # e.g. ECONNREFUSED from an ICMP error: not ours
            if not data and addr is None:    # shutdown(): this socket receives nothing more
                break
            try:
                out = answer(data, addr[0], True)
            except Exception as e:           # Answerer.answer never raises; if it did, serve on
                self._failed(e)
                continue
            if out is not None:
                try:
                    send(out, addr)
                except OSError:
                    pass                     # EAGAIN/ENOBUFS in a flood: drop, keep serving

    def stop(self, timeout: float = 5.0) -> None:
        """Blocking (briefly: the thread only finishes the datagrams it holds); call it from a
        pool thread when the reactor must not wait. A thread still answering after `timeout`
        closes the socket itself when it ends: the C loop holds the bare descriptor, which must
        not be closed (and its number reused by another socket) under it."""
        self._stop[0] = 1
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self.sock.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


UDP_RCVBUF = 1 << 20            # bytes asked for (gdnsd allows at most this); capped at rmem_max


def udp_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A bound UDP socket for a listener (IPV6_V6ONLY; SO_REUSEPORT for N workers on one port).
    Its receive buffer is raised towards UDP_RCVBUF: the default (~280 small datagrams) is 19 ms
    at 15,000 q/s, and a Python process can pause that long (the scheduler on a busy machine, a
    garbage collection); queries then wait instead of being dropped."""
    if reuse_port:
        s = reuseport_socket(host, port, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        return s
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        _v6only(s).bind((host, port))
    except OSError:
        s.close()
        raise
    return s


class DNSStreamProtocol(Int16StringReceiver, TimeoutMixin):
    def connectionMade(self):
        f = self.factory
        self.setTimeout(f.idle_timeout)
        self._peer = getattr(self.transport.getPeer(), "host", "")
        # the transport pauses us (stops reading) when more than max_unsent bytes wait to be sent
        self.transport.bufferSize = f.max_unsent
        self.transport.registerProducer(self, True)

    def stringReceived(self, data):
        self.resetTimeout()
        self.factory.touched(self)
        out = self.factory.answerer.answer(data, self._peer, False)
        if out is None:
            self.transport.loseConnection()
        else:
            self.sendString(out)

    def connectionLost(self, reason=protocol.connectionDone):
        self.setTimeout(None)
        self.factory.forget(self)

    def timeoutConnection(self):
        self.factory.stats_idle += 1
        t = self.transport
        unsent = (len(getattr(t, "dataBuffer", b"")) - getattr(t, "offset", 0)
                  + getattr(t, "_tempDataLen", 0))
        if unsent:
            t.abortConnection()                 # drop what waits: never wait for a drain
        else:
            t.loseConnection()                  # nothing waits: an orderly close


class DNSStreamFactory(protocol.ServerFactory):
    """Builds DNSStreamProtocol and keeps the connections in order of last activity."""

    protocol = DNSStreamProtocol

    def __init__(self, answerer, idle_timeout: float = 10.0, max_connections: int = 1000,
                 max_per_address: int = 64, max_unsent: int = 65536):
        self.answerer = answerer
        self.idle_timeout = idle_timeout
        self.max_connections = max(1, max_connections)
        self.max_per_address = max(1, max_per_address)
        self.max_unsent = max_unsent
        self._conns: OrderedDict = OrderedDict()        # protocol -> host, oldest activity first
        self._by_host: dict[str, OrderedDict] = {}
        self.stats_evicted = 0
        self.stats_idle = 0

    @property
    def connections(self) -> int:
        return len(self._conns)

    def buildProtocol(self, addr):
        host = getattr(addr, "host", "")
        mine = self._by_host.get(host)
        if mine is not None and len(mine) >= self.max_per_address:
            self._evict(next(iter(mine)))
        if len(self._conns) >= self.max_connections:
            self._evict(next(iter(self._conns)))
        p = super().buildProtocol(addr)
        self._conns[p] = host
        self._by_host.setdefault(host, OrderedDict())[p] = None
        return p

    def touched(self, p) -> None:
        if p in self._conns:
            self._conns.move_to_end(p)
            self._by_host[self._conns[p]].move_to_end(p)

    def forget(self, p) -> None:
        host = self._conns.pop(p, None)
        if host is not None:
            mine = self._by_host[host]
            mine.pop(p, None)
            if not mine:
                del self._by_host[host]

    def _evict(self, p) -> None:
        """Make room (RFC 7766 6.2.3): the least recently active connection of the group goes."""
        self.forget(p)
        self.stats_evicted += 1
        if p.transport is not None:
            p.transport.abortConnection()


class _AcceptLog:
    """Log observer of a TCP port: Twisted logs its file-descriptor (EMFILE) recovery once per
    closed connection; this turns that into one line, then one a minute while it lasts."""

    _log = Logger()

    def __init__(self, where: str, clock=time.monotonic):
        self.where = where
        self.clock = clock
        self._last = None
        self._count = 0

    def __call__(self, event):
        fmt = event.get("log_format") or ""
        if "EMFILE" not in fmt and "Could not accept" not in fmt:
            globalLogPublisher(event)
            return
        if "Closed socket" in fmt or "Could not accept" in fmt:
            self._count += 1
        now = self.clock()
        if self._last is None or now - self._last >= 60:
            import resource

            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            self._log.error("dns_fd_limit: DNS over TCP on {where} is out of file descriptors "
                            "(the process may open {limit}); new connections are closed at once "
                            "until some are free; UDP keeps answering ({n} closed since the last "
                            "report)", where=self.where, limit=limit, n=self._count)
            self._last = now
            self._count = 0


class DNSTCPPort(tcp.Port):
    """tcp.Port with IPV6_V6ONLY and one log line at the file-descriptor limit."""

    def __init__(self, port, factory, backlog=1024, interface="", reactor=None):
        super().__init__(port, factory, backlog, interface, reactor)
        hp = f"[{interface}]:{port}" if ":" in interface else f"{interface}:{port}"
        self._logger = Logger(namespace=type(self).__module__, observer=_AcceptLog(hp))

    def createInternetSocket(self):
        return _v6only(super().createInternetSocket())


def reuseport_socket(host: str, port: int, kind: int, backlog: int = 1024,
                     reuse: bool = True) -> socket.socket:
    """A bound (and, for TCP, listening) socket; with SO_REUSEPORT (`reuse`) for N processes on
    one port."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, kind)
    try:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port))
        if kind == socket.SOCK_STREAM:
            s.listen(backlog)
    except OSError:
        s.close()
        raise
    s.setblocking(False)
    return s
