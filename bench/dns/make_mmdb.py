#!/usr/bin/env python3
"""Build a tiny MaxMind-format (GeoIP2-Country layout) test database.

Copied from shared/reference/dns-peers/make_mmdb.py (written for the geodns
anchors, not fetched code) so the three servers of bench/dns.sh read the very
same file.  Uses the PyPI package ``mmdb-writer`` (in the project's .venv).
The record layout is the subset of GeoIP2-Country that gdnsd's plugin_geoip
(continent.code, country.iso_code), the PowerDNS geoip backend
(country.iso_code, continent.code) and geoip2 (dnsd) read.

Networks (all loopback or documentation ranges, nothing routable):
  127.0.1.0/24, 192.0.2.0/24,   2001:db8:de::/48  -> DE (EU)
  127.0.2.0/24, 198.51.100.0/24, 2001:db8:5::/48  -> US (NA)
  127.0.3.0/24, 203.0.113.0/24                    -> FR (EU)
  127.0.4.0/24                                    -> JP (AS)  (no mirror there)
Anything else (e.g. 127.0.0.1) is absent from the database -> default.

Usage: make_mmdb.py OUT.mmdb
"""
import sys

from mmdb_writer import MMDBWriter
from netaddr import IPSet

CONTINENTS = {
    "EU": {"code": "EU", "geoname_id": 6255148, "names": {"en": "Europe"}},
    "NA": {"code": "NA", "geoname_id": 6255149, "names": {"en": "North America"}},
    "AS": {"code": "AS", "geoname_id": 6255147, "names": {"en": "Asia"}},
}
COUNTRIES = {
    "DE": ("EU", 2921044, "Germany"),
    "US": ("NA", 6252001, "United States"),
    "FR": ("EU", 3017382, "France"),
    "JP": ("AS", 1861060, "Japan"),
}
NETS = {
    "DE": ["127.0.1.0/24", "192.0.2.0/24", "2001:db8:de::/48"],
    "US": ["127.0.2.0/24", "198.51.100.0/24", "2001:db8:5::/48"],
    "FR": ["127.0.3.0/24", "203.0.113.0/24"],
    "JP": ["127.0.4.0/24"],
}


def record(cc):
    cont, gid, name = COUNTRIES[cc]
    return {
        "continent": CONTINENTS[cont],
        "country": {"iso_code": cc, "geoname_id": gid, "names": {"en": name}},
        "registered_country": {"iso_code": cc, "geoname_id": gid, "names": {"en": name}},
    }


def main(out):
    # ip_version=6 + ipv4_compatible: IPv4 data lives in ::/96 (v4compat),
    # the place gdnsd and libmaxminddb look for IPv4 lookups in a v6 DB.
    w = MMDBWriter(ip_version=6, ipv4_compatible=True,
                   database_type="GeoIP2-Country",
                   languages=["en"],
                   description={"en": "geodns anchors test DB (fake data)"})
    for cc, nets in NETS.items():
        w.insert_network(IPSet(nets), record(cc))
    w.to_db_file(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "geo.mmdb")
