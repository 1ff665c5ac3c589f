"""GeoLocator: lookups, the per-network cache, reopening a changed file, the bundled database."""

from __future__ import annotations

import os
import shutil
import threading

import pytest_twisted
from mmdb_writer import MMDBWriter
from netaddr import IPSet
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

import dnsd.geo as geo_module
from dnsd.geo import GeoLocator, bundled_database, network_key
from dnsd.mmdbtree import MMDBError
from tests.dns_support import until
from tests.helpers import geo_record


def test_country_and_location(test_mmdb):
    g = GeoLocator(test_mmdb)
    assert g.country("127.0.1.9") == "DE"
    assert g.country("2001:db8:5::7") == "US"
    assert g.country("::ffff:127.0.3.1") == "FR"
    assert g.country("127.0.0.1") is None
    assert g.country("not an address") is None
    loc = g.location("127.0.4.1")
    assert (loc.country, loc.continent, loc.subregion) == ("JP", "AS", "Eastern Asia")
    # ECS-style lookups: the network and how far the answer holds
    loc, scope = g.locate("192.0.2.0", 24)
    assert loc.country == "DE" and scope == 24
    loc, scope = g.locate("2001:db8:de::", 56)
    assert loc.country == "DE" and scope == 48


def test_cache_per_network(test_mmdb):
    g = GeoLocator(test_mmdb, cache_size=16)
    g.country("127.0.1.1")
    g.country("127.0.1.200")                       # same /24: no second entry
    assert len(g._open_db.cache) == 1
    for i in range(40):
        g.country(f"10.{i}.0.1")
    assert len(g._open_db.cache) == 16                     # bounded
    assert network_key("2001:db8:de:12ab::1") == (6, 56, network_key("2001:db8:de:1200::")[2])


def test_reopens_changed_file(tmp_path, test_mmdb):
    path = tmp_path / "geo.mmdb"
    shutil.copy(test_mmdb, path)
    g = GeoLocator(str(path))
    reloaded = []
    g.on_reload(lambda: reloaded.append(1))
    assert g.country("127.0.1.1") == "DE"
    clock = Clock()
    svc = g.reload_service(60, clock=clock, in_thread=defer.maybeDeferred)   # a Clock: no threads
    svc.startService()
    # rewrite: 127.0.1.0/24 is now FR
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
    w.insert_network(IPSet(["127.0.1.0/24"]), geo_record("FR"))
    tmp = tmp_path / "new.mmdb"
    w.to_db_file(str(tmp))
    os.replace(tmp, path)
    assert g.country("127.0.1.1") == "DE"          # nothing happens until the timer runs
    clock.advance(60)
    assert g.country("127.0.1.1") == "FR" and reloaded == [1]
    # a broken file is not taken; the old reader stays
    path.write_bytes(b"garbage")
    clock.advance(60)
    assert g.country("127.0.1.1") == "FR"
    svc.stopService()


def threads_of_changes(g: GeoLocator) -> list:
    """The threads g's blocking reload step (open, compile) runs on, as they happen."""
    seen = []
    changes = g._changes

    def spy():
        seen.append(threading.current_thread())
        return changes()

    g._changes = spy
    return seen


@pytest_twisted.ensureDeferred
async def test_reload_service_opens_the_file_off_the_reactor_thread(tmp_path, test_mmdb):
    path = tmp_path / "geo.mmdb"
    shutil.copy(test_mmdb, path)
    g = GeoLocator(str(path))
    opened_on, swapped_on = threads_of_changes(g), []
    g.on_reload(lambda: swapped_on.append(threading.current_thread()))
    svc = g.reload_service(0.05)
    svc.startService()
    try:
        w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
        w.insert_network(IPSet(["127.0.1.0/24"]), geo_record("FR"))
        w.to_db_file(str(tmp_path / "new.mmdb"))
        os.replace(tmp_path / "new.mmdb", path)
        await until(lambda: swapped_on)
    finally:
        await svc.stopService()
    assert g.country("127.0.1.1") == "FR"
    assert opened_on and threading.main_thread() not in opened_on
    assert swapped_on == [threading.main_thread()]


def test_bundled_city_database():
    assert bundled_database().endswith(".mmdb")
    g = GeoLocator("")
    loc = g.location("8.8.8.8")
    assert loc.country == "US" and loc.continent == "NA" and loc.lat is not None


def _rewrite(path, tmp_path, nets_cc):
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
    for nets, cc in nets_cc:
        w.insert_network(IPSet(nets), geo_record(cc))
    w.to_db_file(str(tmp_path / "new.mmdb"))
    os.replace(tmp_path / "new.mmdb", path)


@pytest_twisted.ensureDeferred
async def test_compiled_index_is_built_off_the_reactor_thread_and_follows_the_file(tmp_path,
                                                                                  test_mmdb):
    path = tmp_path / "geo.mmdb"
    shutil.copy(test_mmdb, path)
    g = GeoLocator(str(path), compile=True, index_cache=str(tmp_path / "cache"))
    assert g.index is None                       # nothing blocks in the constructor
    built_on, swapped = threads_of_changes(g), []
    g.on_reload(lambda: swapped.append((threading.current_thread(), g.index)))
    svc = g.reload_service(0.05)
    svc.startService()
    try:
        await until(lambda: swapped)
        assert g.index.key_of("127.0.1.1") == "DE" and g.index.key_of("127.0.2.1") == "US"
        _rewrite(path, tmp_path, [(["127.0.1.0/24"], "FR")])
        await until(lambda: len(swapped) == 2)
    finally:
        await svc.stopService()
    assert g.index.key_of("127.0.1.1") == "FR" and g.country("127.0.1.1") == "FR"
    assert threading.main_thread() not in built_on
    assert [t for t, _ix in swapped] == [threading.main_thread()] * 2
    # the cache folder holds the current version's index only; a new locator reads it
    assert len(list((tmp_path / "cache").glob("*.idx"))) == 1
    g2 = GeoLocator(str(path), compile=True, index_cache=str(tmp_path / "cache"))
    ch = g2._changes()
    assert ch.how == "cache" and ch.index.runs(4) == g.index.runs(4)


def test_failed_index_keeps_the_previous_one_until_the_file_changes(tmp_path, test_mmdb,
                                                                     monkeypatch):
    path = tmp_path / "geo.mmdb"
    shutil.copy(test_mmdb, path)
    g = GeoLocator(str(path), compile=True)
    assert g.load_index() and g.index.key_of("127.0.1.1") == "DE"
    first = g.index
    calls = []

    def broken(*a, **kw):
        calls.append(1)
        raise MMDBError("the search tree runs past the end of the file")

    monkeypatch.setattr(geo_module, "load_or_build", broken)
    errors = []
    globalLogPublisher.addObserver(errors.append)
    try:
        _rewrite(path, tmp_path, [(["127.0.1.0/24"], "FR")])
        clock = Clock()
        svc = g.reload_service(60, clock=clock, in_thread=defer.maybeDeferred)
        svc.startService()                       # runs a check at once
        assert calls == [1]
        assert g.index is first                  # still answering from the previous index
        assert g.country("127.0.1.1") == "FR"    # while geoip2 has the new file
        clock.advance(60)
        assert calls == [1]                      # the same file version is not tried again
        _rewrite(path, tmp_path, [(["127.0.1.0/24"], "JP")])
        monkeypatch.undo()
        clock.advance(60)
        assert g.index is not first and g.index.key_of("127.0.1.1") == "JP"
        svc.stopService()
    finally:
        globalLogPublisher.removeObserver(errors.append)
    assert any("not built" in str(e.get("log_format", "")) and "past the end" in
               str(e.get("err", "")) for e in errors)
