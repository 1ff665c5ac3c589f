"""action=download's HEAD checks: does the mirror have this file right now? Cached, shared, and
sent only to public addresses (dnsd.outbound, the probes' guard)."""

from __future__ import annotations

from collections import OrderedDict

from hyperlink import URL
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from dnsd.outbound import GuardedEndpoints

_log = Logger(namespace="admin.closer")

USER_AGENT = b"mirrordns-closer (HEAD check)"

class GuardedHead:
    """head(url) -> Deferred[int]: one HEAD request's status, through dnsd.outbound's guard
    (names resolved here, private addresses refused unless allow_private, every peer checked
    again), given up after `timeout`. Used for the mirrors (HeadCache) and the archive
    (admin.closer.archive)."""

    def __init__(self, clock, timeout: float, *, allow_private: bool = False):
        self.clock, self.timeout, self.allow_private = clock, timeout, allow_private
        self._agent = None

    def __call__(self, url: str) -> defer.Deferred:
        if self._agent is None:
            from twisted.web.client import Agent, HTTPConnectionPool

            endpoints = GuardedEndpoints(self.clock, allow_private=self.allow_private,
                                         connect_timeout=self.timeout)
            self._agent = Agent.usingEndpointFactory(
                self.clock, endpoints, pool=HTTPConnectionPool(self.clock, persistent=False))
        uri = URL.from_text(url).to_uri().to_text().encode("ascii")     # IDNA host, %-path
        d = self._agent.request(b"HEAD", uri, Headers({b"user-agent": [USER_AGENT]}))
        d.addTimeout(self.timeout, self.clock)
        return d.addCallback(lambda r: r.code)


class HeadCache:
    """'Did this mirror answer a HEAD for this file recently?', cached.

    Answers are kept `ttl` seconds; concurrent requests for the same URL share one HEAD. The
    HEAD goes through dnsd.outbound's guard, like every probe: a mirror URL naming a loopback or
    private address is never contacted unless [probes] allow_private says so (it counts as "no").
    """

    def __init__(self, clock, ttl: float, timeout: float, head=None, size: int = 16384, *,
                 allow_private: bool = False):
        self.clock = clock
        self.ttl = ttl
        self.timeout = timeout
        self.size = size
        self.allow_private = allow_private
        self._head = head or GuardedHead(clock, timeout, allow_private=allow_private)
        self._cache: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        self._inflight: dict[str, defer.Deferred] = {}

    def cached(self, url: str) -> bool | None:
        hit = self._cache.get(url)
        if hit is not None and self.clock.seconds() - hit[1] < self.ttl:
            return hit[0]
        return None

    def check(self, url: str) -> defer.Deferred:
        """Deferred[bool]: the cached answer, else one HEAD (errors and timeouts count as no)."""
        c = self.cached(url)
        if c is not None:
            return defer.succeed(c)
        if url in self._inflight:
            d = defer.Deferred()
            self._inflight[url].addBoth(lambda r: (d.callback(r), r)[1])
            return d

        def done(code):
            ok = isinstance(code, int) and 200 <= code < 400      # a redirect still leads there
            self._cache[url] = (ok, self.clock.seconds())
            self._cache.move_to_end(url)
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
            return ok

        def failed(f):
            _log.info("HEAD {url} failed: {err}", url=url, err=f.getErrorMessage())
            return done(None)

        d = defer.maybeDeferred(self._head, url).addCallbacks(done, failed)
        self._inflight[url] = d
        d.addBoth(lambda r: (self._inflight.pop(url, None), r)[1])
        out = defer.Deferred()
        d.addBoth(lambda r: (out.callback(r), r)[1])
        return out
