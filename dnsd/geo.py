"""Where a client is: geoip2 over an mmdb file, behind a cache, reopened when the file changes.

One `geoip2.database.Reader` is reused (MODE_AUTO: the C extension with mmap when available).
Lookups are cached per network key: the /24 of an IPv4 address, the /56 of an IPv6 one, or the
prefix an EDNS Client Subnet option carried. This serves the closer, the probes' geo check,
`mirrorctl resolve` (they need coordinates and names), and the DNS answer path until its compiled
index is ready.

With `compile=True` (the DNS service) the locator also holds `.index`, the dnsd.geoindex.GeoIndex
of the same file: ring keys straight from flat arrays, which is what the answer path reads once it
is there. `check_reload()` (run by `reload_service()`'s TimerService, never on the query path)
does the blocking part on a pool thread: it reopens the file when its size or mtime changes and
gets the index of that version (read from `index_cache`, else built, in a child process for large
files); then it swaps the reader and the index, empties the cache and tells the listeners on the
reactor thread. Until a new index is there, the previous one (or geoip2) keeps answering; an index
that fails to build is logged and not retried until the file changes again.

`path` "" means the GeoLite2 City database bundled with the `maxminddb-geolite2` package (old, 2018,
but enough for a demo); production points `[geoip] database` at a maintained GeoLite2/DB-IP file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import geoip2.database
import geoip2.errors
from twisted.application.internet import TimerService
from twisted.internet import defer, threads
from twisted.logger import Logger

from dnsd.geoindex import (
    BuildCancelled,
    GeoIndex,
    GeoIndexError,
    client_country,
    load_or_build,
    stamp_of,
)
from dnsd.mmdbtree import MMDBError
from dnsd.picker import Location

_log = Logger()

UNKNOWN = Location()


def bundled_database() -> str:
    """Path of the City mmdb shipped inside maxminddb-geolite2 (found, not opened, here)."""
    from _maxminddb_geolite2 import geolite2_database

    return geolite2_database()


def network_key(ip: str, v4_prefix: int = 24, v6_prefix: int = 56) -> tuple[int, int, int]:
    """(family, prefix length, network int) of the cache bucket an address falls in."""
    a = ipaddress.ip_address(ip)
    if a.version == 4:
        return 4, v4_prefix, int(a) >> (32 - v4_prefix) << (32 - v4_prefix)
    if a.ipv4_mapped:
        return network_key(str(a.ipv4_mapped), v4_prefix, v6_prefix)
    return 6, v6_prefix, int(a) >> (128 - v6_prefix) << (128 - v6_prefix)


class _ReloadService(TimerService):
    """The reload timer; stopping it also stops a geo index build in progress, so a server that
    is told to stop does not wait seconds for a build it will never use."""

    def __init__(self, cancel: threading.Event, *args):
        super().__init__(*args)
        self._cancel = cancel

    def startService(self):
        self._cancel.clear()
        super().startService()

    def stopService(self):
        self._cancel.set()
        return super().stopService()


class _Open:
    """One open version of the file and the lookups made in it, replaced as one object on a
    reload: a lookup that started in the old reader finishes there and caches its result beside
    it, never in the new version's cache. The old reader is closed when the last lookup holding
    it lets go (reference counting), not under a lookup in flight."""

    __slots__ = ("reader", "is_city", "cache")

    def __init__(self, reader, is_city: bool):
        self.reader = reader
        self.is_city = is_city
        self.cache: OrderedDict[tuple, tuple[Location, int]] = OrderedDict()


_CLOSED = _Open(None, False)


@dataclass(frozen=True)
class _Changes:
    """What one reload check found on disk (made on a pool thread, installed on the reactor's)."""

    stamp: tuple[int, int]
    reader: object = None                 # a new geoip2 Reader, or None: the file is unchanged
    index: GeoIndex | None = None         # a new compiled index, or None
    how: str = ""                         # "built" or "cache"
    seconds: float = 0.0                  # spent getting the index
    error: str = ""                       # why the index could not be had


class GeoLocator:
    """`.country(ip) -> "DE" | None`, `.location(ip) -> Location`, cached; thread-safe enough for
    the closer's threads (a cache race only costs a second lookup). `.index`: see the module."""

    def __init__(self, path: str = "", cache_size: int = 65536, *, compile: bool = False,
                 index_cache: str | None = None):
        self.path = path or bundled_database()
        self.cache_size = max(16, cache_size)
        self.compile = compile
        self.index_cache = index_cache or None
        self.index: GeoIndex | None = None
        self._index_failed = None          # stamp of the file version whose index failed
        self._cancel = threading.Event()   # set: a build in progress stops (the service stops)
        self._open_db = _CLOSED            # the reader and its cache (_Open)
        self._listeners: list[Callable[[], None]] = []
        self._stamp = None
        self._open()

    # -- file handling ----------------------------------------------------------------------------

    def _file_stamp(self):
        return stamp_of(self.path)

    def _open(self) -> None:
        self._install(self._read())

    def _read(self) -> _Changes:
        """The file as it is now (reader only): the blocking part of reopening it."""
        stamp = self._file_stamp()
        return _Changes(stamp, reader=geoip2.database.Reader(self.path))

    def _changes(self) -> _Changes | None:
        """On a pool thread: a new reader if the file changed, a new index if one is wanted and
        the current one is not of this file version. None when there is nothing to do."""
        stamp = self._file_stamp()
        reader = geoip2.database.Reader(self.path) if stamp != self._stamp else None
        have = self.index.stamp if self.index is not None else None
        if not self.compile or stamp in (have, self._index_failed):
            return _Changes(stamp, reader) if reader is not None else None
        t0 = time.monotonic()
        try:
            index, how = load_or_build(self.path, self.index_cache, cancel=self._cancel)
        except BuildCancelled:
            return _Changes(stamp, reader) if reader is not None else None
        except (OSError, MMDBError, GeoIndexError, subprocess.SubprocessError) as e:
            return _Changes(stamp, reader, seconds=time.monotonic() - t0, error=str(e))
        return _Changes(stamp, reader, index, how, time.monotonic() - t0)

    def load_index(self) -> bool:
        """Get the compiled index now, blocking (tests, tools); check_reload is the service's way."""
        self.compile = True
        return self._install(self._changes())

    def _install(self, ch: _Changes | None) -> bool:
        """Swap in what `_read`/`_changes` found (on the thread that answers lookups)."""
        if ch is None:
            return False
        if ch.reader is not None:
            reader = ch.reader
            dbtype = reader.metadata().database_type
            reopened = self._open_db.reader is not None
            self._open_db = _Open(reader, "City" in dbtype or "Enterprise" in dbtype)
            self._stamp = ch.stamp
            self.database_type = dbtype
            if reopened:
                _log.info("geo database {path} reopened ({dbtype})", path=self.path,
                          dbtype=dbtype)
        if ch.index is not None:
            self.index = ch.index
            self._index_failed = None
            _log.info("geo index of {path} {how} in {secs:.2f} s: {index!r}", path=self.path,
                      how="read from the cache" if ch.how == "cache" else "built",
                      secs=ch.seconds, index=ch.index)
        elif ch.error:
            self._index_failed = ch.stamp
            _log.error("geo index of {path} not built, {still}: {err}", path=self.path,
                       err=ch.error, still="still answering from the previous one"
                       if self.index is not None else "answering through geoip2")
        for cb in list(self._listeners):
            cb()
        return ch.reader is not None or ch.index is not None

    def on_reload(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after the file was reopened (the DNS answerer empties its cache)."""
        self._listeners.append(callback)

    def _reload_failed(self, failure) -> bool:
        _log.warn("geo database {path} not reopened, keeping the old one: {err}",
                  path=self.path, err=failure.getErrorMessage())
        return False

    def check_reload(self, in_thread=defer.maybeDeferred) -> defer.Deferred:
        """Reopen the file when it changed (and get its index, with `compile`); fires True if
        something was swapped. Errors are logged and the old reader kept. The stat, open and
        build run through `in_thread` (reload_service: a pool thread), the swap on the caller's
        thread, so lookups never see a half-made reader or index."""
        d = in_thread(self._changes)
        d.addCallback(self._install)
        d.addErrback(self._reload_failed)
        return d

    def reload_service(self, interval: float = 60.0, clock=None, in_thread=None) -> TimerService:
        """A TimerService running check_reload off the reactor thread (`in_thread` overrides
        that, for a Clock without threads)."""
        if in_thread is None:
            from twisted.internet import reactor as default_reactor

            r = clock if clock is not None else default_reactor

            def in_thread(f):
                return threads.deferToThreadPool(r, r.getThreadPool(), f)

        svc = _ReloadService(self._cancel, interval, self.check_reload, in_thread)
        if clock is not None:
            svc.clock = clock
        return svc

    def close(self) -> None:
        self._cancel.set()
        db, self._open_db = self._open_db, _CLOSED
        if db.reader is not None:
            db.reader.close()

    # -- lookups ----------------------------------------------------------------------------------

    def country(self, ip: str) -> str | None:
        return self.location(ip).country

    def location(self, ip: str) -> Location:
        """Location of an address; unknown (all None) for addresses the database lacks."""
        return self.locate(ip)[0]

    def locate(self, ip: str, prefix: int | None = None) -> tuple[Location, int]:
        """(Location, prefix length the answer holds for) for an address, or for the network
        ip/prefix when a client subnet gives one (the ECS case)."""
        try:
            a = ipaddress.ip_address(ip)
            if a.version == 6 and a.ipv4_mapped:
                a = a.ipv4_mapped
                ip = str(a)
                prefix = None if prefix is None else max(0, prefix - 96)
            if prefix is None:
                key = network_key(ip)
            else:
                bits = 32 if a.version == 4 else 128
                prefix = max(0, min(prefix, bits))
                key = (a.version, prefix, int(a) >> (bits - prefix) << (bits - prefix)
                       if prefix else 0)
        except ValueError:
            return UNKNOWN, 0
        db = self._open_db
        cache = db.cache
        hit = cache.get(key)
        if hit is not None:
            with contextlib.suppress(KeyError):     # evicted by another thread meanwhile
                cache.move_to_end(key)
            return hit
        res = self._lookup(db, ip, key[1])
        cache[key] = res
        if len(cache) > self.cache_size:
            with contextlib.suppress(KeyError):
                cache.popitem(last=False)
        return res

    def _lookup(self, db: _Open, ip: str, bucket_prefix: int) -> tuple[Location, int]:
        reader = db.reader
        if reader is None:
            return UNKNOWN, 0
        try:
            r = reader.city(ip) if db.is_city else reader.country(ip)
        except geoip2.errors.AddressNotFoundError as e:
            net = getattr(e, "network", None)
            return UNKNOWN, net.prefixlen if net is not None else bucket_prefix
        except ValueError:
            return UNKNOWN, 0
        cc = client_country(r.country.iso_code, r.registered_country.iso_code)
        cont = r.continent.code
        lat = lon = None
        if db.is_city:
            lat, lon = r.location.latitude, r.location.longitude
        net = r.traits.network
        # how far the answer holds: the database's network (wider or narrower than the bucket)
        scope = net.prefixlen if net is not None else bucket_prefix
        return Location(cc, cont, lat, lon), scope
