"""The DNS protocols: thin Twisted shells around the pure `Answerer` (dnsd.answer).

UDP: one datagram in, at most one out. TCP: RFC 1035 4.2.2 / RFC 7766 framing (2-byte length),
any number of queries per connection, answered in order, closed after `idle_timeout` seconds without
a query. Neither ever raises into the reactor: `Answerer.answer` returns None for what it drops.
"""

from __future__ import annotations

import socket

from twisted.internet import protocol, udp
from twisted.logger import Logger
from twisted.protocols.basic import Int16StringReceiver
from twisted.protocols.policies import TimeoutMixin


class DNSDatagramProtocol(protocol.DatagramProtocol):
    def __init__(self, answerer):
        self.answerer = answerer

    def startProtocol(self):
        # straight to the socket: transport.write re-validates the address string per datagram
        self._sendto = self.transport.socket.sendto

    def datagramReceived(self, data, addr):
        out = self.answerer.answer(data, addr[0], True)
        if out is not None:
            try:
                self._sendto(out, addr)
            except OSError:
                pass              # e.g. EAGAIN/ENOBUFS on a flood: drop, keep serving


_log = Logger()
_READ_IGNORE = frozenset(udp._sockErrReadIgnore) | frozenset(udp._sockErrReadRefuse)


class DNSUDPPort(udp.Port):
    """udp.Port whose read loop hands each datagram straight to the protocol's answerer.

    Same loop and error handling as `udp.Port.doRead`, minus the per-datagram dispatch through
    `datagramReceived` and `transport.write`; that is a measurable share of the time per query.
    The protocol must be a DNSDatagramProtocol (it is the one holding the answerer).
    """

    def doRead(self):
        answer = self.protocol.answerer.answer
        recv = self.socket.recvfrom
        send = self.socket.sendto
        size = self.maxPacketSize
        v6 = self.addressFamily == socket.AF_INET6
        for _ in range(2048):           # then let the reactor look at other sockets
            try:
                data, addr = recv(size)
            except OSError as e:
                if e.args[0] not in _READ_IGNORE:
                    _log.warn("dns udp read failed: {err}", err=str(e))
                return
            if v6:
                addr = addr[:2]
            out = answer(data, addr[0], True)
            if out is not None:
                try:
                    send(out, addr)
                except OSError:
                    pass                # EAGAIN/ENOBUFS in a flood: drop, keep serving


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


def reuseport_socket(host: str, port: int, kind: int, reuse: bool = True) -> socket.socket:
    """A bound (and, for TCP, listening) socket; with SO_REUSEPORT (`reuse`) for N processes on
    one port."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, kind)
    if kind == socket.SOCK_STREAM:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port))
        if kind == socket.SOCK_STREAM:
            s.listen(128)
    except OSError:
        s.close()
        raise
    s.setblocking(False)
    return s
