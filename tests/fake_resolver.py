"""A small DNS server for tests (twisted.names): answers A/AAAA for the names it is given, NXDOMAIN
for the rest, on UDP and TCP at 127.0.0.1:<free port>. The probes are pointed at it with
`[probes] nameservers`, so resolving a mirror's host name never leaves the machine."""

from __future__ import annotations

import ipaddress

from twisted.internet import defer
from twisted.names import dns, error, server
from twisted.names.common import ResolverBase


class Names(ResolverBase):
    """{name: [address, ...]} as a twisted.names resolver."""

    def __init__(self, table: dict[str, list[str]]):
        super().__init__()
        self.table = {k.lower().rstrip("."): v for k, v in table.items()}
        self.asked: list[str] = []

    def _lookup(self, name, cls, type, timeout):
        n = name.decode() if isinstance(name, bytes) else name
        n = n.lower().rstrip(".")
        self.asked.append(n)
        if n not in self.table:
            return defer.fail(error.DomainError(n))
        rrs = []
        for a in self.table[n]:
            ip = ipaddress.ip_address(a)
            if type == dns.A and ip.version == 4:
                rrs.append(dns.RRHeader(n, dns.A, dns.IN, 60, dns.Record_A(a, 60), auth=True))
            elif type == dns.AAAA and ip.version == 6:
                rrs.append(dns.RRHeader(n, dns.AAAA, dns.IN, 60, dns.Record_AAAA(a, 60),
                                        auth=True))
        return defer.succeed((rrs, [], []))


def listen(reactor, table: dict[str, list[str]], port: int, host: str = "127.0.0.1"):
    """Start the server; returns (Names, [udp port, tcp port]) (stop both with stopListening)."""
    names = Names(table)
    factory = server.DNSServerFactory(authorities=[names])
    factory.noisy = False
    proto = dns.DNSDatagramProtocol(factory)
    proto.noisy = False
    udp = reactor.listenUDP(port, proto, interface=host)
    tcp = reactor.listenTCP(port, factory, interface=host)
    return names, [udp, tcp]
