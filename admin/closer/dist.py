"""'Is this path on the mirrors?': an index of the distribution tree, walked off the reactor."""

from __future__ import annotations

import bisect
import os
import threading
from array import array
from pathlib import Path

from twisted.application import service
from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

from admin.web.paths import contained, inside
from dnsd import checksums

_log = Logger(namespace="admin.closer")

MAX_DIST_ENTRIES = 5_000_000     # a dist_root pointed at "/" by mistake stops here, not at OOM


class _Stopped(Exception):
    """The refresher was stopped while a walk ran: the walk gives up at the next folder."""


def walk_dist(root: Path, stop: threading.Event | None = None) -> memoryview:
    """Every file and folder below `root`, as a sorted read-only array of hash(relative path).

    Runs on a worker thread: a real dist tree (100k files) is 0.1-0.2 s of directory reads on a
    local disk, seconds on a cold network file system. The answer is 8 bytes per path (a frozenset
    of the path strings would take ~15 times that); hash() is the process's own string hash (64
    bits, seeded per process, which is fine: the index never leaves the process), so a path that
    is not there is mistaken for one that is with a chance of about n/2**64, and the error is on
    the harmless side (a page, not a 404). A symlink inside the tree counts as what it points
    at: a link to a folder is walked like a folder (except into one of its own parents: a loop).
    A dangling link, and a link that leads out of the root (admin.web.paths.inside), is not there:
    the index must not tell anyone what exists elsewhere on the host.
    """
    st = root.stat()                        # a missing root is an error, not an empty tree
    hashes = array("q", [hash("")])
    todo = [(str(root), "", ((st.st_dev, st.st_ino),))]
    while todo:
        if stop is not None and stop.is_set():
            raise _Stopped()
        path, prefix, parents = todo.pop()
        try:
            it = os.scandir(path)
        except OSError:
            continue                        # an unreadable folder: its contents are not there
        with it:
            for e in it:
                rel = prefix + e.name
                try:
                    if e.is_symlink() and not (os.path.exists(e.path) and inside(root, e.path)):
                        continue            # dangling, or out of the tree
                    is_dir = e.is_dir()
                    hashes.append(hash(rel))
                    if is_dir:
                        s = e.stat()
                        key = (s.st_dev, s.st_ino)
                        if key not in parents:
                            todo.append((e.path, rel + "/", (*parents, key)))
                except OSError:
                    continue
        if len(hashes) > MAX_DIST_ENTRIES:
            raise RuntimeError(f"more than {MAX_DIST_ENTRIES} entries below {root}")
    return memoryview(array("q", sorted(hashes)).tobytes()).cast("q")


MAX_CHECKSUM_FILE = 65536


def file_facts(root: Path, path: str):
    """(size, digests) of one file of the dist tree, for its Metalink: the size when it is a
    regular file with something in it (a tree of empty stand-ins says nothing), and the hashes
    its `.sha512` / `.sha256` files beside it give for it. Every file inside `root`
    (admin.web.paths.contained). Blocking: for a worker thread."""
    from admin.closer.links import CHECKSUM_FILES, Digest

    parts = path.rstrip("/").split("/")
    size = None
    p = contained(root, parts)
    if p is not None and p.is_file():
        size = p.stat().st_size or None
    digests = []
    for suffix, algorithm, name in CHECKSUM_FILES:
        c = contained(root, [*parts[:-1], parts[-1] + suffix])
        if c is None or not c.is_file() or c.stat().st_size > MAX_CHECKSUM_FILE:
            continue
        try:
            hexd = checksums.digest_of(c.read_bytes(), parts[-1], algorithm)
        except OSError:
            continue
        if hexd:
            digests.append(Digest(name, hexd))
    return size, tuple(digests)


class DistIndex:
    """'Is this path on the mirrors?', answered from memory.

    The tree under [closer] dist_root is walked on a worker thread (`refresh`, run every
    [closer] dist_refresh seconds by `service()`) and the new index replaces the old one in one
    assignment on the reactor thread, so a request only does a binary search. A failed walk (the
    root gone, an NFS hiccup) is logged and keeps the previous index.

    Until the first walk has finished, and without a dist_root, every path counts as present: a
    restart must not turn every download into a 404 for the seconds the first walk takes.
    """

    def __init__(self, root: str | Path | None, *, clock, run_in_thread, interval: float = 60.0):
        self.root = Path(root) if root else None
        self.clock = clock
        self.run_in_thread = run_in_thread
        self.interval = interval
        self.built_at: float | None = None      # clock time of the index in use
        self.entries = 0
        self._index: memoryview | None = None   # None: not built (yet): everything is present
        self._stop = threading.Event()
        self._service = None

    def __contains__(self, path: str) -> bool:
        idx = self._index
        if idx is None:
            return True
        h = hash(path.rstrip("/"))
        i = bisect.bisect_left(idx, h)
        return i < len(idx) and idx[i] == h

    def refresh(self) -> defer.Deferred:
        """One walk on a worker thread; the Deferred fires (never fails) once it is swapped in."""
        if self.root is None:
            return defer.succeed(None)
        t0 = self.clock.seconds()

        def swap(idx):
            self._index = idx
            self.entries = len(idx)
            self.built_at = self.clock.seconds()
            _log.debug("dist index: {n} paths below {root} in {s:.1f} s", n=len(idx),
                       root=str(self.root), s=self.built_at - t0)

        def failed(f):
            if not f.check(_Stopped):
                _log.error("dist index of {root} not refreshed (keeping the previous one): {err}",
                           root=str(self.root), err=f.getErrorMessage())

        d = defer.maybeDeferred(self.run_in_thread, walk_dist, self.root, self._stop)
        return d.addCallbacks(swap, failed)

    def service(self) -> service.IService:
        """The refresher: a TimerService on the clock; stopping it aborts a running walk."""
        if self._service is None:
            if self.root is None:
                self._service = service.Service()
            else:
                self._service = _DistRefresher(self)
            self._service.setName("closer-dist")
        return self._service


class _DistRefresher(TimerService):
    def __init__(self, index: DistIndex):
        super().__init__(index.interval, index.refresh)
        self.clock = index.clock
        self.index = index

    def startService(self):
        self.index._stop.clear()
        super().startService()

    def stopService(self):
        """Fires once a walk that is running has given up (at its next folder)."""
        self.index._stop.set()
        return super().stopService()
