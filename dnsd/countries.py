"""Countries: ISO codes, continent, UN M49 sub-region and a point for distances.

Read once from `data/countries.csv` (see scripts/make-countries-csv.py for its sources). The picker's
tiers (country, sub-region, continent, world) and the importers' alpha-3 codes both come from here.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CONTINENTS = {
    "AF": "Africa", "AN": "Antarctica", "AS": "Asia", "EU": "Europe",
    "NA": "North America", "OC": "Oceania", "SA": "South America",
}


@dataclass(frozen=True)
class Country:
    alpha2: str
    alpha3: str
    name: str
    continent: str            # AF AN AS EU NA OC SA (MaxMind's codes)
    subregion: str            # UN M49 sub-region name, e.g. "Western Europe"
    lat: float | None
    lon: float | None


@lru_cache(maxsize=1)
def _table() -> tuple[dict[str, Country], dict[str, Country]]:
    by2: dict[str, Country] = {}
    by3: dict[str, Country] = {}
    path = Path(__file__).with_name("data") / "countries.csv"
    with path.open(encoding="utf-8") as f:
        for r in csv.DictReader(f):
            c = Country(
                r["alpha2"], r["alpha3"], r["name"], r["continent"], r["subregion"],
                float(r["lat"]) if r["lat"] else None, float(r["lon"]) if r["lon"] else None,
            )
            by2[c.alpha2] = c
            by3[c.alpha3] = c
    return by2, by3


def get(alpha2: str) -> Country | None:
    return _table()[0].get(alpha2.upper())


def from_alpha3(alpha3: str) -> Country | None:
    return _table()[1].get(alpha3.upper())


def all_countries() -> list[Country]:
    return list(_table()[0].values())


def is_country(code: str) -> bool:
    return code.upper() in _table()[0]


def ring_key(country: str | None, continent: str | None) -> str:
    """The key of the answer rings a client is served from: its ISO country code when we know
    the country, else "@" and its continent code ("@EU"), else "" (unknown). The DNS answer path
    (dnsd.answer) and the compiled geo lookup (dnsd.geoindex) both use this one rule."""
    if country and country.upper() in _table()[0]:
        return country.upper()
    if continent in CONTINENTS:
        return "@" + continent
    return ""


# Codes people (and older mirror lists) use that ISO 3166-1 alpha-2 does not: mirmon and Apache
# wrote the United Kingdom as "uk" (closer.lua turned GeoIP's "gb" into "uk"), the EU writes Greece
# as "EL"; 'EU' and 'AP' were GeoIP's pseudo-countries.
NEAR_MISSES = {"UK": "GB", "EL": "GR"}


def hint(code: str) -> Country | None:
    """The country someone probably meant by a code that is not alpha-2: UK, an alpha-3 code or
    an English name ("DEU", "Germany" -> DE); None when there is no good guess."""
    c = (code or "").strip()
    if not c:
        return None
    if c.upper() in NEAR_MISSES:
        return get(NEAR_MISSES[c.upper()])
    if len(c) == 3 and c.isalpha():
        return from_alpha3(c)
    low = c.lower()
    for country in _table()[0].values():
        if country.name.lower() == low:
            return country
    return None


def distance_km(a: Country, b: Country) -> float | None:
    """Great-circle distance between two countries' points, None when one has no point."""
    if a.lat is None or b.lat is None:
        return None
    return haversine_km(a.lat, a.lon, b.lat, b.lon)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(h)))
