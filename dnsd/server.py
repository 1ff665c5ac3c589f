"""The DNS listeners: thin shells around the pure `Answerer` (dnsd.answer).

UDP: one datagram in, at most one out, on a thread per socket (UDPAnswerThread). TCP: a Twisted
protocol on the reactor, RFC 1035 4.2.2 / RFC 7766 framing (2-byte length), any number of queries
per connection, answered in order, closed after `idle_timeout` seconds without a query. Neither
ever raises: `Answerer.answer` returns None for what it drops.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading

from twisted.internet import protocol
from twisted.logger import Logger
from twisted.protocols.basic import Int16StringReceiver
from twisted.protocols.policies import TimeoutMixin

_log = Logger()


class UDPAnswerThread:
    """Answers DNS over UDP on a thread of its own: blocking `recvfrom`, answer, `sendto`, again.

    Not on the reactor, because at real rates datagrams come one at a time and each would cost a
    reactor wakeup: epoll, Twisted's dispatch (with its log context), the read loop until EAGAIN
    raises, the reactor's timed-call checks. Measured at 15,000 q/s (docs/benchmarks.md) that
    cost more CPU than the answer itself. Blocked in `recvfrom` the thread holds no GIL, so the
    reactor (TCP, timers, plan swaps) runs as before; the two share the Answerer, whose state is
    swapped by single assignments, and whose counters are plain dict updates (two threads
    bumping one counter at the same instant may lose one count, never corrupt anything).

    `stop()` wakes the thread (shutdown() on the socket makes a blocked recvfrom return) and
    closes the socket once the thread is gone.
    """

    def __init__(self, sock: socket.socket, answerer, name: str = "dns-udp"):
        sock.setblocking(True)
        self.sock = sock
        self.answerer = answerer
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        recv = self.sock.recvfrom
        send = self.sock.sendto
        answer = self.answerer.answer
        while not self._stopping:
            try:
                data, addr = recv(8192)
            except OSError as e:
                if self._stopping or e.errno in (errno.EBADF, errno.ENOTSOCK, errno.EINVAL):
                    break
                continue                     # e.g. ECONNREFUSED from an ICMP error: not ours
            if not data and addr is None:    # woken by stop()
                continue
            try:
                out = answer(data, addr[0], True)
            except Exception:                # Answerer.answer never raises; if it did, serve on
                _log.failure("dns udp answer failed")
                continue
            if out is not None:
                try:
                    send(out, addr)
                except OSError:
                    pass                     # EAGAIN/ENOBUFS in a flood: drop, keep serving

    def stop(self, timeout: float = 5.0) -> None:
        """Blocking (briefly: the thread only finishes the datagram it holds); call it from a
        pool thread when the reactor must not wait."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.sock.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


UDP_RCVBUF = 1 << 20            # bytes asked for (gdnsd allows at most this); capped at rmem_max


def udp_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A bound UDP socket for a listener (SO_REUSEPORT for N workers on one port). Its receive
    buffer is raised towards UDP_RCVBUF: the default (~280 small datagrams) is 19 ms at 15,000
    q/s, and a Python process can pause that long (the scheduler on a busy machine, a garbage
    collection); queries then wait instead of being dropped."""
    if reuse_port:
        s = reuseport_socket(host, port, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        return s
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port))
    except OSError:
        s.close()
        raise
    return s


class DNSStreamProtocol(Int16StringReceiver, TimeoutMixin):
    def connectionMade(self):
        self.setTimeout(self.factory.idle_timeout)
        self._peer = getattr(self.transport.getPeer(), "host", "")

    def stringReceived(self, data):
        self.resetTimeout()
        out = self.factory.answerer.answer(data, self._peer, False)
        if out is None:
            self.transport.loseConnection()
        else:
            self.sendString(out)

    def connectionLost(self, reason=protocol.connectionDone):
        self.setTimeout(None)

    def timeoutConnection(self):
        self.transport.loseConnection()


class DNSStreamFactory(protocol.ServerFactory):
    protocol = DNSStreamProtocol

    def __init__(self, answerer, idle_timeout: float = 10.0):
        self.answerer = answerer
        self.idle_timeout = idle_timeout


def reuseport_socket(host: str, port: int, kind: int) -> socket.socket:
    """A bound (and, for TCP, listening) socket with SO_REUSEPORT, for N workers on one port."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, port))
    if kind == socket.SOCK_STREAM:
        s.listen(128)
    s.setblocking(False)
    return s
