"""Where a client is: geoip2 over an mmdb file, behind a cache, reopened when the file changes.

One `geoip2.database.Reader` is reused (MODE_AUTO: the C extension with mmap when available).
Lookups are cached per network key: the /24 of an IPv4 address, the /56 of an IPv6 one, or the
prefix an EDNS Client Subnet option carried, so a busy resolver costs one database read per network,
not one per query. `check_reload()` (run by `reload_service()`'s TimerService, never on the query
path) reopens the file when its mtime or size changes and empties the cache.

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
        stamp = self._file_stamp()
        reader = geoip2.database.Reader(self.path)
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

    def on_reload(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after the file was reopened (the DNS answerer empties its cache)."""
        self._listeners.append(callback)

    def check_reload(self) -> bool:
        """Reopen when the file changed; True if it did. Errors are logged, the old reader kept."""
        try:
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return False
            self._open()
            _log.info("geo database {path} reopened ({dbtype})", path=self.path,
                      dbtype=self.database_type)
            return True
        except Exception as e:
            _log.warn("geo database {path} not reopened, keeping the old one: {err}",
                      path=self.path, err=str(e))
            return False

    def reload_service(self, interval: float = 60.0, clock=None) -> TimerService:
        svc = TimerService(interval, self.check_reload)
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
