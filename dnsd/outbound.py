"""The one guard for requests this system makes to addresses somebody else typed in.

Mirror URLs and addresses come from applicants and admins. Without a guard, a mirror entry naming
127.0.0.1, 10.0.0.1 or 169.254.169.254 would make the server probe (probes/probe.py) or HEAD-check
(the closer, admin/closer/heads.py) its own network. Both go through these pieces, so the rule
is written once:

- the rule of what is private is dnsd.validation's `is_forbidden_address` (the table refuses to
  store such addresses by the same rule);
- `ResolvedEndpoint`: a host name is resolved here, the forbidden addresses are dropped before a
  single packet goes to them, and a name resolving to both kinds is only ever connected to at a
  public one;
- `CheckedEndpoint`: once connected, the peer is checked again (whatever endpoint made it);
- `GuardedEndpoints`: the two together as a twisted.web Agent endpoint factory (TLS for https).

`allow_private` ([probes] allow_private, for labs and tests) turns the refusal off for both users.
This is ground-floor code: no database, no configuration, only Twisted's client endpoints.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet import error as ierror
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IResolutionReceiver
from twisted.internet.ssl import optionsForClientTLS
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from dnsd import validation


class PrivateAddressRefused(Exception):
    """The address is loopback, private, link-local or otherwise not on the Internet."""


@implementer(IResolutionReceiver)
class AddressReceiver:
    """Collects an IHostnameResolver's answers: `done` fires with the addresses as text."""

    def __init__(self):
        self.found, self.done = [], defer.Deferred()

    def resolutionBegan(self, resolution):
        pass

    def addressResolved(self, address):
        self.found.append(address.host)

    def resolutionComplete(self):
        self.done.callback(self.found)


def reactor_resolve(reactor):
    """resolve(host, timeout) -> Deferred[list of addresses] through the reactor's resolver."""
    def resolve(host: str, timeout: float):
        receiver = AddressReceiver()
        reactor.nameResolver.resolveHostName(receiver, host)
        return receiver.done.addTimeout(max(0.1, timeout), reactor)
    return resolve


class ResolvedEndpoint:
    """A client endpoint for host:port that resolves the name itself and connects only to
    addresses allowed (trying them in order until one answers). `resolve(host, timeout)` returns
    (a Deferred or coroutine of) the addresses as text; default: the reactor's resolver."""

    def __init__(self, reactor, host: str, port: int, *, allow_private: bool,
                 connect_timeout: float, resolve=None):
        self.reactor, self.host, self.port = reactor, host, port
        self.allow_private, self.connect_timeout = allow_private, connect_timeout
        self.resolve = resolve if resolve is not None else reactor_resolve(reactor)

    def connect(self, factory):
        def chosen(found):
            if not found:
                raise ierror.DNSLookupError(self.host)
            usable = [a for a in found
                      if self.allow_private or not validation.is_forbidden_address(a)]
            if not usable:
                raise PrivateAddressRefused(f"{self.host} is {found[0]}, not a public address")
            return attempt(usable)

        def attempt(rest):
            a = rest[0]
            cls = TCP6ClientEndpoint if ":" in a else TCP4ClientEndpoint
            d = cls(self.reactor, a, self.port, timeout=self.connect_timeout).connect(factory)
            if len(rest) > 1:               # e.g. ::1 first for a server on 127.0.0.1 only
                d.addErrback(next_one, rest[1:])
            return d

        def next_one(f, rest):
            f.trap(ierror.ConnectError)
            return attempt(rest)

        d = defer.ensureDeferred(_awaited(self.resolve(self.host, self.connect_timeout)))
        return d.addCallback(chosen)


async def _awaited(x):
    return await x


class CheckedEndpoint:
    """Wraps any client endpoint: the connected peer must be allowed too (a second look, after
    the connection is made, whatever resolved or pinned the address). on_peer(host) hears where
    it connected."""

    def __init__(self, ep, *, allow_private: bool, on_peer=None):
        self.ep, self.allow_private, self.on_peer = ep, allow_private, on_peer

    def connect(self, factory):
        factory.noisy = False           # no "Starting factory" log line per connection

        def check(proto):
            peer = proto.transport.getPeer()
            if self.on_peer is not None:
                self.on_peer(peer.host)
            if not self.allow_private and validation.is_forbidden_address(peer.host):
                proto.transport.abortConnection()
                raise PrivateAddressRefused(f"{peer.host} is not a public address")
            return proto
        return self.ep.connect(factory).addCallback(check)


@implementer(IAgentEndpointFactory)
class GuardedEndpoints:
    """Endpoints for twisted.web.client.Agent.usingEndpointFactory: every host resolved and
    checked by ResolvedEndpoint, every connection by CheckedEndpoint, https over TLS."""

    def __init__(self, reactor, *, allow_private: bool, connect_timeout: float,
                 trust_root=None):
        self.reactor, self.allow_private = reactor, allow_private
        self.connect_timeout, self.trust_root = connect_timeout, trust_root

    def endpointForURI(self, uri):
        host = uri.host.decode("ascii").strip("[]").lower()
        ep = ResolvedEndpoint(self.reactor, host, uri.port, allow_private=self.allow_private,
                              connect_timeout=self.connect_timeout)
        if uri.scheme == b"https":
            ep = wrapClientTLS(optionsForClientTLS(host, trustRoot=self.trust_root), ep)
        return CheckedEndpoint(ep, allow_private=self.allow_private)
