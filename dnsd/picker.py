"""The picker: which mirrors a client gets, shared by the DNS answers and the HTTP closer.

Pure: it reads an immutable `ResolutionPlan` (dnsd.plan) and returns plain data, so the same code
answers `de.<zone>` over DNS, `/dyn/closer/` over HTTP and `mirrorctl resolve` in a terminal.

Rules (DESIGN.md, "Choosing a mirror"):

1. Candidates are *serving* mirrors (the plan decided that, with a reason for every other mirror),
   reachable over the family asked ("A" needs a working IPv4 address, "AAAA" a working IPv6 one;
   `family=None` = the closer, any mirror with a URL) and offering the protocol asked.
2. Tiers nearest first: country, UN M49 sub-region, continent, world, then backup mirrors. The first
   tier holding at least `min_candidates` mirrors wins; when none does, the world tier if it has any
   mirror at all, else the backups, else nothing ("none"). Backup mirrors never appear in the
   ordinary tiers.
3. Inside the tier: weighted random without repeats, weight = score, optionally scaled down by
   great-circle distance (`1 / (1 + km / 2000)`), and optionally capped so that no mirror holds more
   than `share_cap` of the tier's total weight.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass

from dnsd import countries

TIERS = ("country", "subregion", "continent", "world", "backup")
FAMILIES = (None, "A", "AAAA")
PROTOCOLS = ("http", "https", "ftp", "rsync")
DISTANCE_SCALE_KM = 2000.0


@dataclass(frozen=True)
class Location:
    """Where a client is, as far as the picker cares. All fields may be None (unknown client).

    `key` is what the DNS answer path groups clients by (the country code, else the continent
    code, else ""): two clients with the same key get answers from the same pre-encoded ring.
    """

    country: str | None = None      # ISO alpha-2, upper case
    continent: str | None = None    # AF AN AS EU NA OC SA
    lat: float | None = None
    lon: float | None = None

    @property
    def subregion(self) -> str | None:
        c = countries.get(self.country) if self.country else None
        return c.subregion if c else None

    @property
    def key(self) -> str:
        return self.country or (f"@{self.continent}" if self.continent else "")

    def point(self) -> tuple[float, float] | None:
        if self.lat is not None and self.lon is not None:
            return self.lat, self.lon
        c = countries.get(self.country) if self.country else None
        if c and c.lat is not None:
            return c.lat, c.lon
        return None

    @classmethod
    def of_country(cls, cc: str) -> Location:
        """A country name's location (`de.<zone>`): the country with its continent."""
        cc = cc.upper()
        c = countries.get(cc)
        return cls(cc, c.continent if c else None)

    @classmethod
    def of_continent(cls, code: str) -> Location:
        return cls(None, code.upper())

    def describe(self) -> str:
        if self.country:
            return f"{self.country} ({self.subregion or '?'}, {self.continent or '?'})"
        if self.continent:
            return f"continent {self.continent}"
        return "unknown location"


def as_location(location) -> Location:
    """Accept a Location, a country code ("DE") or None (unknown client)."""
    if location is None:
        return Location()
    if isinstance(location, Location):
        return location
    if isinstance(location, str):
        return Location.of_country(location) if location else Location()
    raise TypeError(f"not a location: {location!r}")


class Choice:
    """The picker's result. `excluded` is computed on first use (it visits every mirror)."""

    __slots__ = (
        "_excluded",
        "_family",
        "_plan",
        "_protocol",
        "_tier_key",
        "candidates",
        "chosen",
        "location",
        "tier",
    )

    def __init__(self, plan, location, tier, tier_key, chosen, candidates, family, protocol):
        self.location = location
        self.tier = tier
        self._tier_key = tier_key
        self.chosen = chosen
        self.candidates = candidates          # ((entry, weight), ...) of the winning tier
        self._plan = plan
        self._family = family
        self._protocol = protocol
        self._excluded = None

    @property
    def tier_description(self) -> str:
        return f"{self.tier} {self._tier_key}" if self._tier_key else self.tier

    @property
    def excluded(self) -> tuple:
        """((entry, reason), ...) for every mirror of the plan that was not a candidate."""
        if self._excluded is None:
            cand = {e.id for e, _w in self.candidates}
            out = []
            for e in self._plan.mirrors:
                if e.id in cand:
                    continue
                out.append((e, exclusion_reason(e, self._family, self._protocol,
                                                self.tier, self._tier_key)))
            self._excluded = tuple(out)
        return self._excluded

    def __repr__(self):
        return (f"Choice(tier={self.tier!r}, chosen={[e.name or e.hostname for e in self.chosen]},"
                f" candidates={len(self.candidates)})")


def exclusion_reason(entry, family, protocol, tier, tier_key) -> str:
    """Why a mirror is not among the candidates, in words for an admin."""
    if not entry.serving:
        return entry.reason
    why = entry.family_problem(family)
    if why:
        return why
    if protocol and not entry.url(protocol):
        return f"no {protocol} URL"
    if entry.backup:
        return "backup mirror, not needed" if tier != "backup" else "backup mirror"
    if tier == "backup":
        return "no tier had serving mirrors"    # cannot happen: a serving non-backup is in world
    if tier == "none":
        return "no serving mirror"
    where = {"country": entry.country, "subregion": entry.subregion,
             "continent": entry.continent}.get(tier)
    return f"in {where or entry.country}, outside the {tier} tier ({tier_key})"


def tiers_for(location: Location) -> list[tuple[str, str | None]]:
    """The (level, key) tiers to try, nearest first, for this location."""
    out: list[tuple[str, str | None]] = []
    if location.country:
        out.append(("country", location.country))
        sub = location.subregion
        if sub:
            out.append(("subregion", sub))
    if location.continent:
        out.append(("continent", location.continent))
    out.append(("world", None))
    return out


def select_tier(plan, location, family=None, protocol=None, keep=None):
    """(tier, tier_key, entries) per the tier rule above; entries are plan mirror entries.
    `keep(entry)`, when given, narrows every tier before it is counted (the closer's
    `update=`: only mirrors synced since then), so a tier it empties borrows from the next."""
    loc = as_location(location)
    minc = max(1, plan.min_candidates)
    world = ()
    for level, key in tiers_for(loc):
        entries = plan.pool(family, level, key)
        if protocol:
            entries = tuple(e for e in entries if e.url(protocol))
        if keep is not None:
            entries = tuple(e for e in entries if keep(e))
        if level == "world":
            world = entries
        if len(entries) >= minc:
            return level, key, entries
    if world:
        return "world", None, world
    backups = plan.pool(family, "backup", None)
    if protocol:
        backups = tuple(e for e in backups if e.url(protocol))
    if keep is not None:
        backups = tuple(e for e in backups if keep(e))
    if backups:
        return "backup", None, backups
    return "none", None, ()


def weights_for(plan, entries: Sequence, location: Location) -> list[float]:
    """Score, times the distance factor when enabled, then the share cap when enabled."""
    ws = [max(0.0, e.score) for e in entries]
    if plan.distance_weighting:
        p = location.point()
        if p is not None:
            for i, e in enumerate(entries):
                if e.lat is not None:
                    km = countries.haversine_km(p[0], p[1], e.lat, e.lon)
                    ws[i] *= 1.0 / (1.0 + km / DISTANCE_SCALE_KM)
    if plan.share_cap:
        ws = cap_shares(ws, plan.share_cap)
    if ws and not any(ws):
        ws = [1.0] * len(ws)            # all zero: fall back to equal shares rather than nothing
    return ws


def cap_shares(ws: list[float], cap: float) -> list[float]:
    """Water-filling: lower the largest weights until none exceeds `cap` of the (new) total.

    When the cap cannot be met (cap x count < 1), every mirror gets an equal share.
    """
    n = len(ws)
    if n == 0 or cap <= 0 or cap >= 1:
        return list(ws)
    if cap * n <= 1:
        return [1.0] * n
    order = sorted(range(n), key=lambda i: ws[i], reverse=True)
    rest = sum(ws)
    k = 0
    # with the k largest capped, total T satisfies T = k*cap*T + rest -> T = rest / (1 - k*cap)
    while k < n:
        total = rest / (1 - k * cap)
        if ws[order[k]] <= cap * total + 1e-12:
            break
        rest -= ws[order[k]]
        k += 1
    total = rest / (1 - k * cap) if k < n else 0.0
    out = list(ws)
    for i in order[:k]:
        out[i] = cap * total
    return out


class Drawer:
    """Weighted draws without repeats from one candidate list (reused for a whole ring)."""

    def __init__(self, entries: Sequence, weights: Sequence[float]):
        self.entries = tuple(entries)
        self.weights = tuple(weights)
        cum, t = [], 0.0
        for w in self.weights:
            t += w
            cum.append(t)
        self.cum = cum
        self.total = t

    def draw(self, count: int, rng: random.Random) -> tuple:
        n = len(self.entries)
        count = min(n, count)       # everyone may be in; the order is still weighted
        if n == 0 or count == 0:
            return ()
        picked: list[int] = []
        seen = set()
        cum, total = self.cum, self.total
        tries = 0
        while len(picked) < count and tries < 8 * count:
            i = bisect.bisect_right(cum, rng.random() * total)
            if i >= n:
                i = n - 1
            tries += 1
            if i not in seen and self.weights[i] > 0:
                seen.add(i)
                picked.append(i)
        if len(picked) < count:
            # rejection was unlucky (a few heavy mirrors): draw the rest exactly
            rest = [i for i in range(n) if i not in seen]
            while len(picked) < count and rest:
                ws = [self.weights[i] for i in rest]
                t = sum(ws)
                if t <= 0:
                    j = rng.randrange(len(rest))
                else:
                    r, acc, j = rng.random() * t, 0.0, len(rest) - 1
                    for k, w in enumerate(ws):
                        acc += w
                        if r < acc:
                            j = k
                            break
                picked.append(rest.pop(j))
        return tuple(self.entries[i] for i in picked)


def candidates(plan, location, *, family=None, protocol=None, keep=None):
    """(tier, tier_key, ((entry, weight), ...)) without drawing."""
    loc = as_location(location)
    tier, key, entries = select_tier(plan, loc, family, protocol, keep)
    ws = weights_for(plan, entries, loc)
    return tier, key, tuple(zip(entries, ws))


def pick(plan, location, *, family=None, protocol=None, count=None, rng=None) -> Choice:
    """Choose up to `count` (default: the plan's `answers`) mirrors for a client at `location`.

    `location` is a Location, a country code or None; `family` None|"A"|"AAAA"; `protocol`
    None|"http"|"https"|"ftp"|"rsync"; `rng` a random.Random (tests pass a seeded one).
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be None, 'A' or 'AAAA', not {family!r}")
    if protocol is not None and protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
    loc = as_location(location)
    tier, key, cands = candidates(plan, loc, family=family, protocol=protocol)
    n = plan.answers if count is None else count
    drawer = Drawer([e for e, _ in cands], [w for _, w in cands])
    chosen = drawer.draw(n, rng or random)
    return Choice(plan, loc, tier, key, chosen, cands, family, protocol)
