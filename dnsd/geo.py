"""Where a client is: geoip2 over an mmdb file, behind a cache, reopened when the file changes.

One `geoip2.database.Reader` is reused (MODE_AUTO: the C extension with mmap when available).
Lookups are cached per network key: the /24 of an IPv4 address, the /56 of an IPv6 one, or the
prefix an EDNS Client Subnet option carried, so a busy resolver costs one database read per network,
not one per query. `check_reload()` (run by `reload_service()`'s TimerService, never on the query
path) reopens the file on a pool thread when its mtime or size changes, then swaps the reader and
empties the cache on the reactor thread.

`path` "" means the GeoLite2 City database bundled with the `maxminddb-geolite2` package (old, 2018,
but enough for a demo); production points `[geoip] database` at a maintained GeoLite2/DB-IP file.
"""

from __future__ import annotations

import ipaddress
import os
from collections import OrderedDict
from collections.abc import Callable

import geoip2.database
import geoip2.errors
from twisted.application.internet import TimerService
from twisted.internet import defer, threads
from twisted.logger import Logger

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


class GeoLocator:
    """`.country(ip) -> "DE" | None`, `.location(ip) -> Location`, cached; thread-safe enough for
    the closer's threads (a cache race only costs a second lookup)."""

    def __init__(self, path: str = "", cache_size: int = 65536):
        self.path = path or bundled_database()
        self.cache_size = max(16, cache_size)
        self._cache: OrderedDict[tuple, tuple[Location, int]] = OrderedDict()
        self._listeners: list[Callable[[], None]] = []
        self._reader = None
        self._stamp = None
        self._open()

    # -- file handling ----------------------------------------------------------------------------

    def _file_stamp(self):
        st = os.stat(self.path)
        return st.st_mtime_ns, st.st_size

    def _open(self) -> None:
        self._install(self._read())

    def _read(self):
        """(reader, stamp) of the file as it is now: the blocking part of a reload."""
        stamp = self._file_stamp()
        return geoip2.database.Reader(self.path), stamp

    def _read_if_changed(self):
        return None if self._file_stamp() == self._stamp else self._read()

    def _install(self, loaded) -> bool:
        """Swap in a reader from `_read` (on the thread that answers lookups) and empty the cache."""
        if loaded is None:
            return False
        reader, stamp = loaded
        dbtype = reader.metadata().database_type
        old = self._reader
        self._reader, self._stamp = reader, stamp
        self._is_city = "City" in dbtype or "Enterprise" in dbtype
        self.database_type = dbtype
        self._cache.clear()
        if old is not None:
            old.close()
        for cb in list(self._listeners):
            cb()
        if old is not None:
            _log.info("geo database {path} reopened ({dbtype})", path=self.path, dbtype=dbtype)
        return True

    def on_reload(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after the file was reopened (the DNS answerer empties its cache)."""
        self._listeners.append(callback)

    def _reload_failed(self, failure) -> bool:
        _log.warn("geo database {path} not reopened, keeping the old one: {err}",
                  path=self.path, err=failure.getErrorMessage())
        return False

    def check_reload(self, in_thread=defer.maybeDeferred) -> defer.Deferred:
        """Reopen the file when it changed; fires True if it did. Errors are logged and the old
        reader kept. The stat and open run through `in_thread` (reload_service: a pool thread),
        the swap on the caller's thread, so lookups never see a half-made reader."""
        d = in_thread(self._read_if_changed)
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

        svc = TimerService(interval, self.check_reload, in_thread)
        if clock is not None:
            svc.clock = clock
        return svc

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

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
        cache = self._cache
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
        res = self._lookup(ip, key[1])
        cache[key] = res
        if len(cache) > self.cache_size:
            cache.popitem(last=False)
        return res

    def _lookup(self, ip: str, bucket_prefix: int) -> tuple[Location, int]:
        reader = self._reader
        if reader is None:
            return UNKNOWN, 0
        try:
            r = reader.city(ip) if self._is_city else reader.country(ip)
        except geoip2.errors.AddressNotFoundError as e:
            net = getattr(e, "network", None)
            return UNKNOWN, net.prefixlen if net is not None else bucket_prefix
        except ValueError:
            return UNKNOWN, 0
        cc = r.country.iso_code or r.registered_country.iso_code
        cont = r.continent.code
        lat = lon = None
        if self._is_city:
            lat, lon = r.location.latitude, r.location.longitude
        net = r.traits.network
        # how far the answer holds: the database's network (wider or narrower than the bucket)
        scope = net.prefixlen if net is not None else bucket_prefix
        return Location(cc.upper() if cc else None, cont, lat, lon), scope
