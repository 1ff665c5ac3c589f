"""Where a path goes when it is not on the mirrors: a retired project's attic page, or the archive.

closer.lua sent every page of a project that has an attic page (`<attic>/<project>.html`) to that
page, and for a path not in the distribution showed the "not on the mirrors" page, which with
`archive_aware` told whether the archive has it, from a HEAD request to the archive: a positive
answer kept for good, a negative one for 30 minutes. Both here:

- `AtticIndex`: the project names of `[closer] attic_root` (its `<name>.html` files), listed on a
  worker thread every `dist_refresh` seconds like the dist index, so a request asks memory;
- `ArchiveLookup`: the HEAD to `[closer] archive_url` + path through the one guard of outgoing
  requests (dnsd.outbound, via the closer's HeadCache), one at a time per path, the answers kept
  as closer.lua kept them (found: until evicted; not found or failed: `NEGATIVE_TTL`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

from admin.web.paths import inside, safe_segment

_log = Logger(namespace="admin.closer")

FOUND, NOT_FOUND, FAILED = "found", "not-found", "failed"
NEGATIVE_TTL = 1800.0          # closer.lua's CACHE_TIMEOUT for a lookup that found nothing
MAX_ATTIC = 100_000


def list_attic(root: Path) -> frozenset[str]:
    """The names of the `<name>.html` pages directly in `root` (inside it, links resolved).
    Blocking: for a worker thread."""
    out = set()
    with os.scandir(root) as it:
        for e in it:
            name, dot, ext = e.name.rpartition(".")
            if (dot and ext == "html" and safe_segment(e.name) and e.is_file()
                    and inside(root, e.path)):
                out.add(name)
                if len(out) > MAX_ATTIC:
                    raise RuntimeError(f"more than {MAX_ATTIC} pages in {root}")
    return frozenset(out)


class AtticIndex:
    """Which projects are retired, answered from memory (empty until the first listing)."""

    def __init__(self, root: Path | None, url: str, *, clock, run_in_thread, interval: float):
        self.root, self.url = root, url
        self.clock, self.run_in_thread, self.interval = clock, run_in_thread, interval
        self.names: frozenset[str] = frozenset()

    def __contains__(self, project: str) -> bool:
        return project in self.names

    def page(self, project: str) -> str:
        """The attic page's address, closer.lua's ATTIC_URI + project + '.html'."""
        return f"{self.url}{project}.html"

    def refresh(self) -> defer.Deferred:
        if self.root is None:
            return defer.succeed(None)

        def swap(names):
            self.names = names

        def failed(f):
            _log.error("attic index of {root} not refreshed (keeping the previous one): {err}",
                       root=str(self.root), err=f.getErrorMessage())

        d = defer.maybeDeferred(self.run_in_thread, list_attic, self.root)
        return d.addCallbacks(swap, failed)

    def service(self):
        s = TimerService(self.interval, self.refresh)
        s.clock = self.clock
        s.setName("closer-attic")
        return s


class ArchiveLookup:
    """'Is this path in the archive?' (FOUND, NOT_FOUND or FAILED), cached per path."""

    def __init__(self, base_url: str, head, clock, size: int = 16384):
        """head(url) -> Deferred[int status]: the guarded HEAD (admin.closer.heads)."""
        self.base_url, self.head, self.clock, self.size = base_url, head, clock, size
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._inflight: dict[str, list[defer.Deferred]] = {}
        self.asked = 0                  # HEAD requests sent (tests, metrics)

    def url(self, path: str) -> str:
        return self.base_url + path

    def cached(self, path: str) -> str | None:
        hit = self._cache.get(path)
        if hit is None:
            return None
        answer, at = hit
        if answer != FOUND and self.clock.seconds() - at >= NEGATIVE_TTL:
            return None
        return answer

    def lookup(self, path: str) -> defer.Deferred:
        """Deferred[str]: the cached answer, else one HEAD (shared by concurrent requests)."""
        hit = self.cached(path)
        if hit is not None:
            return defer.succeed(hit)
        out = defer.Deferred()
        if path in self._inflight:
            self._inflight[path].append(out)
            return out
        self._inflight[path] = [out]
        self.asked += 1

        def done(code):
            answer = FOUND if code == 200 else NOT_FOUND     # closer.lua: only a 200 counts
            return remember(answer)

        def failed(f):
            _log.info("archive lookup of {url} failed: {err}", url=self.url(path),
                      err=f.getErrorMessage())
            return remember(FAILED)

        def remember(answer):
            self._cache[path] = (answer, self.clock.seconds())
            self._cache.move_to_end(path)
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
            for d in self._inflight.pop(path):
                d.callback(answer)

        defer.maybeDeferred(self.head, self.url(path)).addCallbacks(done, failed)
        return out
