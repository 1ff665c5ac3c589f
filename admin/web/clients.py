"""Who the visitor is, and how often they may try: the address rule and the in-memory limits.

`client_ip` is the one rule for the visitor's address (pages, closer, metrics_allow, every rate
limit); `RateLimiter` counts events in a window; `Backoff` makes every failure wait longer than
the one before, without ever locking anyone out.
"""

from __future__ import annotations

import collections
import ipaddress

UNKNOWN_CLIENT = "unknown"
"""The address of a visitor behind a trusted proxy that did not say who it was: no network
contains it (metrics_allow refuses it, geo finds no country), and the limits count all such
visitors as one."""


def _strip_port(hop: str) -> str:
    """'192.0.2.1:4711' and '[2001:db8::1]:4711' (some proxies add the port) -> the address."""
    if hop.startswith("["):
        return hop[1:].split("]", 1)[0]
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop


class ProxyRule:
    """The visitor's address: the connecting one, or behind [admin] trusted_proxies the nearest
    untrusted hop of X-Forwarded-For.

    A trusted proxy that sends no X-Forwarded-For, or one with a hop that is not an address, has
    not told us who the visitor is: the answer is UNKNOWN_CLIENT, never the proxy's own address
    (which would put every visitor in the proxy's place: inside metrics_allow, and all sharing
    one login limit). The networks are parsed once and "is this peer a trusted proxy" is
    remembered (peers are few; proxies fewer), as the closer's hot path wants.
    """

    def __init__(self, trusted):
        self.nets = tuple(ipaddress.ip_network(t, strict=False) for t in trusted)
        self._peer: dict[str, bool] = {}

    def _trusted(self, ip: str) -> bool | None:
        """True/False, or None when `ip` is not an address at all."""
        try:
            a = ipaddress.ip_address(ip)
        except ValueError:
            return None
        return any(a in n for n in self.nets)

    def client(self, request) -> str:
        peer = getattr(request.getClientAddress(), "host", "") or ""
        if not self.nets:
            return peer
        t = self._peer.get(peer)
        if t is None:
            t = bool(self._trusted(peer))
            if len(self._peer) > 4096:
                self._peer.clear()
            self._peer[peer] = t
        if not t:
            return peer
        raw = request.getHeader(b"x-forwarded-for")
        if not raw:
            return UNKNOWN_CLIENT
        hops = [_strip_port(h.strip()) for h in raw.decode("latin-1").split(",") if h.strip()]
        if not hops:
            return UNKNOWN_CLIENT
        for hop in reversed(hops):            # walk back from the nearest proxy
            ht = self._trusted(hop)
            if ht is None:
                return UNKNOWN_CLIENT         # garbage from a proxy
            if not ht:
                return hop
        return hops[0]                        # every hop a proxy: the first is the visitor


_proxy_rules: dict[tuple[str, ...], ProxyRule] = {}


def client_ip(ctx, request) -> str:
    """The visitor's address; X-Forwarded-For is believed only from [admin] trusted_proxies."""
    trusted = tuple(ctx.cfg.admin.trusted_proxies)
    rule = _proxy_rules.get(trusted)
    if rule is None:
        rule = _proxy_rules[trusted] = ProxyRule(trusted)
    return rule.client(request)


def network_key(ip: str, v4_prefix: int = 32, v6_prefix: int = 64) -> str:
    """The network a visitor counts as: their address's IPv4 /v4_prefix or IPv6 /v6_prefix
    ('192.0.2.0/24', '2001:db8::/56'; a whole IPv4 address as it is), IPv4-mapped IPv6 as IPv4;
    anything that is no address (UNKNOWN_CLIENT) as it is, so all such visitors are one."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if a.version == 6 and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    prefix = v4_prefix if a.version == 4 else v6_prefix
    if prefix == a.max_prefixlen:
        return str(a)
    return str(ipaddress.ip_network(f"{a}/{prefix}", strict=False))


def address_key(ip: str) -> str:
    """The unit a limit counts: the address, IPv6 folded to its /64 (one subscriber usually holds
    a whole /64), IPv4-mapped IPv6 as IPv4; anything else as it is."""
    return network_key(ip)


class RateLimiter:
    """At most `limit` events per visitor in any `window` seconds, in memory, on a clock.

    Expired keys are dropped as the table grows, so memory stays bounded by the recent visitors.
    """

    def __init__(self, clock, limit: int, window: float, max_keys: int = 100_000, key=None):
        """key(ip) -> the unit counted (default `address_key`: the address, IPv6 per /64)."""
        self.clock, self.limit, self.window, self.max_keys = clock, limit, window, max_keys
        self._hits: dict[str, collections.deque] = {}
        self.key = key or address_key

    def hit(self, ip: str) -> float:
        """Count one event; 0 when allowed, else the seconds until the next one would be."""
        now = self.clock.seconds()
        k = self.key(ip)
        q = self._hits.get(k)
        if q is None:
            if len(self._hits) >= self.max_keys:
                self._sweep(now)
            q = self._hits[k] = collections.deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) >= self.limit:
            return max(1.0, q[0] + self.window - now)
        q.append(now)
        return 0.0

    def _sweep(self, now: float) -> None:
        for k in [k for k, q in self._hits.items() if not q or q[-1] <= now - self.window]:
            del self._hits[k]
        while len(self._hits) >= self.max_keys:          # still full: forget the oldest
            self._hits.pop(next(iter(self._hits)))


class Backoff:
    """Growing delays per key: after `free` failures each further one doubles the wait before
    the next attempt (1 s, 2 s, 4 s, ... up to `max_delay`). Nothing is ever locked: once the
    wait has passed, one more attempt is allowed.

    An attempt counts as a failure from the moment it is let through (`attempt`), and a success
    takes it back (`succeeded`): so a burst of parallel attempts cannot all slip past before the
    first one has been judged. A key with no attempt for `forget_after` seconds starts afresh.
    In memory, bounded by `max_keys` (the oldest keys go first).
    """

    def __init__(self, clock, free: int, max_delay: float, forget_after: float = 3600.0,
                 max_keys: int = 100_000):
        self.clock, self.free, self.max_delay = clock, free, max_delay
        self.forget_after = max(forget_after, max_delay)
        self.max_keys = max_keys
        self._keys: dict[object, list] = {}        # key -> [failures, time of the last attempt]

    def delay(self, failures: int) -> float:
        if failures < self.free:
            return 0.0
        return float(min(self.max_delay, 2 ** min(failures - self.free, 40)))

    def wait(self, key) -> float:
        """Seconds until `key` may try again (0: now)."""
        e = self._keys.get(key)
        if e is None:
            return 0.0
        now = self.clock.seconds()
        if now - e[1] >= self.forget_after:
            del self._keys[key]
            return 0.0
        return max(0.0, e[1] + self.delay(e[0]) - now)

    def attempt(self, key) -> None:
        now = self.clock.seconds()
        e = self._keys.pop(key, None)
        if e is None or now - e[1] >= self.forget_after:
            e = [0, now]
            if len(self._keys) >= self.max_keys:
                self._sweep(now)
        e[0] += 1
        e[1] = now
        self._keys[key] = e                        # re-inserted: the dict stays oldest-first

    def succeeded(self, key) -> None:
        e = self._keys.get(key)
        if e is not None:
            e[0] -= 1
            if e[0] <= 0:
                del self._keys[key]

    def forget(self, key) -> None:
        self._keys.pop(key, None)

    def _sweep(self, now: float) -> None:
        for k in [k for k, e in self._keys.items() if now - e[1] >= self.forget_after]:
            del self._keys[k]
        while len(self._keys) >= self.max_keys:
            self._keys.pop(next(iter(self._keys)))
