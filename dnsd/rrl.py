"""Response rate limiting (RRL), as BIND and Knot do it: a token bucket per client prefix.

An authoritative server answers anyone, so a spoofed flood turns it into an amplifier aimed at
the spoofed address. Each client prefix (/24 for IPv4, /56 for IPv6 by default: the block one
customer or one resolver farm gets) may receive `rate` UDP responses per second (a burst of one
second's worth, then a steady `rate`). Responses above that are not sent, except that every
`slip`-th one goes out truncated (TC, no records: smaller than the query), so a real client inside
a flooded prefix retries over TCP, which cannot be spoofed. `slip = 0` sends none, `1` all.

The Answerer (dnsd.answer) asks `check(src)` before answering a UDP query and exempts clients
that present a valid DNS server cookie (they are not spoofed). TCP is never limited. Exempt
prefixes (trusted resolvers, monitoring) are never counted. Memory is bounded: when more than
`max_tracked` prefixes are tracked, those whose bucket is full again (idle for a second) are
forgotten, and if that is not enough, all are.

Threads: `check` runs on every UDP answer thread at once (dnsd.server) without a lock. A bucket
is a small list updated in place; two threads updating one bucket at the same instant may both
be allowed where one would have been (the limit is approximate by a response), never an error.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable

ALLOW, DROP, SLIP = 0, 1, 2


class RateLimiter:
    def __init__(self, rate: float, slip: int = 2, ipv4_prefix: int = 24, ipv6_prefix: int = 56,
                 exempt: Iterable[str] = (), clock: Callable[[], float] = time.monotonic,
                 max_tracked: int = 100_000):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.slip = max(0, int(slip))
        self.v4 = ipv4_prefix
        self.v6 = ipv6_prefix
        self.exempt = tuple(ipaddress.ip_network(e, strict=False) for e in exempt)
        self.clock = clock
        self.max_tracked = max_tracked
        self._buckets: dict[tuple, list] = {}   # prefix -> [tokens, last time, limited count]
        self._prefix: dict[str, tuple | None] = {}

    def prefix(self, src: str) -> tuple | None:
        """The bucket key of a client address: (version, network number); None when exempt."""
        k = self._prefix.get(src, False)
        if k is False:
            try:
                ip = ipaddress.ip_address(src)
            except ValueError:
                return None
            if any(ip in net for net in self.exempt):
                k = None
            elif ip.version == 4:
                k = (4, int(ip) >> (32 - self.v4))
            else:
                k = (6, int(ip) >> (128 - self.v6))
            if len(self._prefix) > self.max_tracked:
                self._prefix = {}
            self._prefix[src] = k
        return k

    def check(self, src: str) -> int:
        """ALLOW, DROP or SLIP for one response to `src`."""
        k = self.prefix(src)
        if k is None:
            return ALLOW
        now = self.clock()
        b = self._buckets.get(k)
        if b is None:
            if len(self._buckets) >= self.max_tracked:
                self._forget(now)
            self._buckets[k] = [self.rate - 1.0, now, 0]
            return ALLOW
        tokens = min(self.rate, b[0] + (now - b[1]) * self.rate)
        b[1] = now
        if tokens >= 1.0:
            b[0] = tokens - 1.0
            return ALLOW
        b[0] = tokens
        b[2] += 1
        if self.slip and b[2] % self.slip == 0:
            return SLIP
        return DROP

    def _forget(self, now: float) -> None:
        """Drop the buckets that are full again (idle for a second); all of them if that is not
        enough. Several UDP threads call check() at once: the items are copied in one C call
        (no other thread runs during it) and removed with pop, so a bucket another thread added
        or removed meanwhile is no error."""
        buckets = self._buckets
        for k, b in list(buckets.items()):
            if now - b[1] >= 1.0:
                buckets.pop(k, None)
        if len(buckets) >= self.max_tracked:
            buckets.clear()

    @property
    def tracked(self) -> int:
        return len(self._buckets)


def from_config(d) -> RateLimiter | None:
    """The limiter `[dns] rrl_*` asks for, or None when `rrl_rate` is 0 (the default)."""
    if d.rrl_rate <= 0:
        return None
    return RateLimiter(d.rrl_rate, d.rrl_slip, d.rrl_ipv4_prefix, d.rrl_ipv6_prefix,
                       d.rrl_exempt)
