"""The network at a glance: the world map, the country pages, the public status page and the
admin's network overview.

Every word here about serving and borrowing is the plan's: a mirror serves when the plan says so
(dnsd.serving's verdict, admin.web.plans), and a country *borrows* when the picker answers it from
another tier than its own (dnsd.picker.select_tier on the country's location, as `cc.<zone>` is
answered): no rule is restated here. The map is inline SVG drawn on the server from the bundled
outlines in dnsd/data/world-map.json (Natural Earth, public domain: dnsd/data/NOTICE.md), one
path per country coloured by its count of serving mirrors, borrowers hatched, each a link to the
country's page; countries too small to outline are dots, drawn when they have mirrors.

What a page needs is computed off the reactor thread: the map of a plan once per plan (the plan
is immutable; `MapCache` keeps the last one), the history bars in one bounded query, the 30 days
of network health one day per query, past days kept (they do not change).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from markupsafe import Markup

from admin.web import graphs, plans, public, queries, sorting
from admin.web.framework import HTTPError, Response, Router, WebContext
from dnsd import countries, picker, serving, statuses
from probes import history

OUTLINES = Path(countries.__file__).with_name("data") / "world-map.json"
HISTORY_PROBES = 24          # cells in a status page history bar (mirmon shows about as many)
HEALTH_DAYS = 30
STATUS_TTL = 30              # seconds the status page is served as rendered
TODAY_TTL = 60               # seconds the overview's "today" is kept before it is read again

# serving mirrors -> colour class, most first; the legend reads them in reverse
SCALE = ((10, "n10", "10 or more"), (5, "n5", "5–9"), (3, "n3", "3–4"), (2, "n2", "2"),
         (1, "n1", "1"), (0, "n0", "none"))


@dataclass(frozen=True)
class Outlines:
    width: int
    height: int
    shapes: dict[str, str]                    # alpha-2 -> SVG path data
    dots: dict[str, tuple[float, float]]      # alpha-2 -> where a country too small to outline is


@lru_cache(maxsize=1)
def outlines() -> Outlines:
    d = json.loads(OUTLINES.read_text(encoding="utf-8"))
    return Outlines(int(d["width"]), int(d["height"]), d["shapes"],
                    {k: (float(x), float(y)) for k, (x, y) in d["dots"].items()})


def colour_class(n: int) -> str:
    return next(cls for low, cls, _w in SCALE if n >= low)


# --- what the plan says about a country ----------------------------------------------------------

@dataclass(frozen=True)
class Answered:
    """Where the picker answers a country from: its tier, the tier's key and its size."""

    tier: str                 # country | subregion | continent | world | backup | none
    key: str | None
    mirrors: int
    family: str | None = None  # None (any), "A" or "AAAA"

    @property
    def borrows(self) -> bool:
        return self.tier != "country"

    @property
    def words(self) -> str:
        if self.tier == "country":
            return "its own mirrors"
        if self.tier == "subregion":
            return f"its region, {self.key}"
        if self.tier == "continent":
            return f"its continent, {countries.CONTINENTS.get(self.key or '', self.key)}"
        if self.tier == "world":
            return "mirrors anywhere in the world"
        if self.tier == "backup":
            return "the backup mirrors"
        return "nothing: no mirror serves" + (" over IPv6" if self.family == "AAAA" else "")


def answered(plan, cc: str, family: str | None = None) -> Answered:
    tier, key, entries = picker.select_tier(plan, picker.Location.of_country(cc), family)
    return Answered(tier, key, len(entries), family)


@dataclass(frozen=True)
class CountryView:
    code: str
    name: str
    serving: int              # serving mirrors in the country (the plan's verdict)
    listed: int               # mirrors in the table, retired ones left out
    answered: Answered
    cls: str                  # colour class (SCALE)

    @property
    def borrows(self) -> bool:
        return self.answered.borrows

    @property
    def title(self) -> str:
        own = f"{self.serving} serving mirror{'' if self.serving == 1 else 's'}"
        if self.listed > self.serving:
            own += f" of {self.listed}"
        if not self.borrows:
            return f"{self.name}: {own}"
        return f"{self.name}: {own}; answered from {self.answered.words}"


@dataclass(frozen=True)
class MapShape:
    country: CountryView
    d: str | None             # path data, or None for a dot
    x: float = 0.0
    y: float = 0.0


@dataclass(frozen=True)
class WorldMap:
    width: int
    height: int
    shapes: tuple[MapShape, ...]
    countries: dict[str, CountryView]
    min_candidates: int

    @property
    def key(self) -> tuple:
        """What the drawing depends on: equal keys, equal maps."""
        return self.min_candidates, tuple(self.countries.values())

    @property
    def scale(self) -> tuple:
        return SCALE

    @property
    def borrowing(self) -> int:
        return sum(1 for c in self.countries.values() if c.listed and c.borrows)

    @property
    def with_mirrors(self) -> int:
        return sum(1 for c in self.countries.values() if c.serving)


def country_views(plan) -> dict[str, CountryView]:
    """Every country of dnsd.countries as the plan sees it."""
    by_cc = queries.serving_by_country(plan)
    listed: dict[str, int] = {}
    for e in plan.mirrors:
        if e.status in statuses.LIVE:
            listed[e.country] = listed.get(e.country, 0) + 1
    out = {}
    for c in countries.all_countries():
        n = by_cc.get(c.alpha2, 0)
        out[c.alpha2] = CountryView(c.alpha2, c.name, n, listed.get(c.alpha2, 0),
                                    answered(plan, c.alpha2), colour_class(n))
    return out


def world_map(plan) -> WorldMap:
    """Pure: the map of one plan (every outline, and a dot for each small country that has
    mirrors)."""
    o = outlines()
    views = country_views(plan)
    shapes = [MapShape(views[cc], d) for cc, d in o.shapes.items() if cc in views]
    shapes += [MapShape(views[cc], None, x, y) for cc, (x, y) in o.dots.items()
               if cc in views and views[cc].listed]
    return WorldMap(o.width, o.height, tuple(shapes), views, plan.min_candidates)


class MapCache:
    """The map's markup per link style, rendered once for what it shows.

    The same plan object (the live plan of a DNS node, until the next one) costs nothing; another
    plan costs the country views (a tier look-up per country, on a worker thread), and the SVG is
    rendered again only when they differ from the last map's (`WorldMap.key`): a web running
    alone builds a plan per request, and the map still renders once per change. Filled on the
    reactor thread when the worker's result comes back."""

    def __init__(self, ctx: WebContext):
        self.ctx = ctx
        self._plan = None
        self._maps: dict[str, tuple[WorldMap, Markup]] = {}

    async def get(self, plan, link: str) -> tuple[WorldMap, Markup]:
        """`link` is "public" (/country/xx) or "admin" (/admin/?country=XX)."""
        hit = self._maps.get(link)
        if hit is not None and plan is self._plan:
            return hit
        env = self.ctx.jinja

        def build():
            m = world_map(plan)
            if hit is not None and hit[0].key == m.key:
                return hit[0], hit[1]
            html = env.get_template("_worldmap.html").module.world_map(m, link)
            return m, Markup(str(html))

        out = await self.ctx.run_in_thread(build)
        if plan is not self._plan:
            self._plan, self._maps = plan, {}
        self._maps[link] = out
        return out


# --- the country page --------------------------------------------------------------------------

@dataclass(frozen=True)
class CountryMirror:
    """A mirror of the country as the public sees it: its display fields as the public list
    shows them (admin.web.public.public_mirror: only safe links), and the plan's verdict, never a
    reason an admin typed (those stay on the admin pages)."""

    shown: public.PublicMirror
    serving: bool
    state: str                # "serving", the plan's reason for an active mirror, or the status
    sync_age: float | None
    freshness: str            # mirmon's class (dnsd.serving.freshness)

    @property
    def label(self) -> str:
        return self.shown.label


def country_mirrors(plan, cc: str, cfg) -> list[CountryMirror]:
    out = []
    for e in plan.mirrors:
        if e.country != cc or e.status not in statuses.LIVE:
            continue
        if e.serving:
            state = "serving"
        elif e.status == statuses.ACTIVE:
            state = e.reason
        else:
            state = statuses.word(e.status)
        out.append(CountryMirror(public.public_mirror(e), e.serving, state, e.sync_age,
                                 serving.freshness(e.sync_age, cfg)))
    return sorted(out, key=lambda m: (not m.serving, sorting.natural(m.label)))


# --- the status page ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    cls: str                  # fail | fresh | oldish | old | unknown
    title: str


@dataclass(frozen=True)
class StatusRow:
    name: str | None
    hostname: str
    country: str
    country_name: str
    sync_age: float | None
    freshness: str
    last_probe: _dt.datetime | None
    cells: tuple[Cell, ...]

    @property
    def label(self) -> str:
        return self.name or self.hostname


def history_cells(probes: list[history.RecentProbe], cfg) -> tuple[Cell, ...]:
    """One cell per probe, oldest first: failed, or the freshness of what it read (mirmon's
    classes, dnsd.serving.freshness)."""
    out = []
    for p in probes:
        when = f"{p.at:%H:%M}"          # the bar covers hours: the time of day says which
        if not p.ok:
            out.append(Cell("fail", f"{when} failed{': ' + p.error_class if p.error_class else ''}"))
            continue
        f = serving.freshness(p.sync_age, cfg)
        out.append(Cell(f, f"{when} {f}, {serving.fmt_age(p.sync_age)}"))
    return tuple(out)


def status_rows(plan, recent: dict[int, list[history.RecentProbe]], cfg) -> list[StatusRow]:
    rows = []
    for e in plan.serving:
        c = countries.get(e.country)
        probes = recent.get(e.id, [])
        rows.append(StatusRow(e.name, e.hostname, e.country, c.name if c else e.country,
                              e.sync_age, serving.freshness(e.sync_age, cfg),
                              probes[-1].at if probes else None, history_cells(probes, cfg)))
    return sorted(rows, key=lambda r: (r.country_name, sorting.natural(r.label)))


def history_window(cfg) -> _dt.timedelta:
    """How far back the history bars look: enough for HISTORY_PROBES probes at the configured
    interval, and a little more, never more than two days."""
    return min(_dt.timedelta(days=2),
               _dt.timedelta(seconds=cfg.probes.interval * HISTORY_PROBES * 1.5))


# --- the admin's network overview ------------------------------------------------------------------

@dataclass(frozen=True)
class ThinCountry:
    country: CountryView
    answered_v6: Answered     # AAAA answers can borrow where A answers do not
    waiting: int              # offers on the waiting list


def thin_countries(m: WorldMap, plan, waiting: dict[str, int]) -> list[ThinCountry]:
    """Countries with mirrors in the table that the picker answers from elsewhere: fewer serving
    than [dns] min_candidates (the picker's rule, applied by select_tier)."""
    out = [ThinCountry(c, answered(plan, c.code, "AAAA"), int(waiting.get(c.code, 0)))
           for c in m.countries.values() if c.listed and c.borrows]
    return sorted(out, key=lambda t: (t.country.serving, -t.country.listed, t.country.name))


class HealthDays:
    """The last HEALTH_DAYS days of the whole network, from the probe history: a finished day
    does not change, so it is read once; today is read again when its copy is TODAY_TTL seconds
    old (a thousand mirrors probed every 5 minutes make 288,000 rows a day)."""

    def __init__(self, ctx: WebContext):
        self.ctx = ctx
        self.days: dict[_dt.date, history.NetworkDay] = {}
        self.today_read_at: float | None = None

    async def get(self, today: _dt.date) -> list[history.NetworkDay]:
        wanted = [today - _dt.timedelta(days=HEALTH_DAYS - 1 - i) for i in range(HEALTH_DAYS)]
        at = self.ctx.clock.seconds()
        stale = self.today_read_at is None or not 0 <= at - self.today_read_at < TODAY_TTL
        missing = [d for d in wanted if d not in self.days or (d == today and stale)]

        def thd(conn):
            return [history.network_day(conn, d) for d in missing]

        if missing:
            for nd in await self.ctx.pool.run_readonly(thd):
                self.days[nd.day] = nd
            if today in missing:
                self.today_read_at = at
        for d in [d for d in self.days if d < wanted[0]]:
            del self.days[d]
        return [self.days[d] for d in wanted]


HEALTH_CLASSES = ("up", "part", "down")


def health_graphs(days: list[history.NetworkDay]) -> dict:
    """The pass share per day (graphs.uptime_days) and the mirrors per day by their day's share
    (graphs.share_class), stacked."""
    if not days:
        return {"share": None, "mirrors": None}
    share = graphs.uptime_days({d.day: (d.probes, d.passes) for d in days}, days[-1].day,
                               n=len(days))
    counts = []
    for d in days:
        c = {k: 0 for k in HEALTH_CLASSES}
        for _mid, n, ok in d.per_mirror:
            c[graphs.share_class(ok / n)] += 1
        counts.append((d.day, c))
    return {"share": share, "mirrors": graphs.stacked_days(counts, HEALTH_CLASSES)}


# --- the pages -------------------------------------------------------------------------------------

class NetworkPages:
    """/country/<cc>, /status (public) and /admin/network; the map for the mirror lists."""

    def __init__(self, ctx: WebContext):
        self.ctx = ctx
        self.maps = MapCache(ctx)
        self.health = HealthDays(ctx)
        self._status: tuple[float, int, Response] | None = None

    async def map_for(self, plan, link: str = "public") -> Markup:
        return (await self.maps.get(plan, link))[1]

    async def country_page(self, request, cc):
        c = countries.get(cc)
        if c is None:
            raise HTTPError(404, "There is no such country.")
        plan = await plans.current(self.ctx)
        cfg = self.ctx.cfg
        ms = await self.ctx.run_in_thread(country_mirrors, plan, c.alpha2, cfg)
        return await self.ctx.render_threaded(
            "public/country.html", request, title=c.name, country=c, mirrors=ms,
            answered=answered(plan, c.alpha2), serving=sum(1 for m in ms if m.serving),
            max_age=serving.max_sync_age(cfg))

    async def status_page(self, request):
        """Rendered at most once per STATUS_TTL seconds and plan version (a thousand mirrors
        are 24,000 cells): the page is the same for every visitor, probe results come minutes
        apart, and a change in the table shows at once."""
        plan = await plans.current(self.ctx)
        at = self.ctx.clock.seconds()
        kept = self._status
        if kept is not None and kept[1] == plan.version and 0 <= at - kept[0] < STATUS_TTL:
            return kept[2]
        page = await self._status_page(request, plan)
        self._status = (at, plan.version, page)
        return page

    async def _status_page(self, request, plan):
        cfg, now = self.ctx.cfg, self.ctx.now()
        since = now - history_window(cfg)
        recent = await self.ctx.pool.run_readonly(
            lambda conn: history.recent_by_mirror(conn, since, HISTORY_PROBES))
        rows = await self.ctx.run_in_thread(status_rows, plan, recent, cfg)
        not_serving = sum(1 for e in plan.mirrors if not e.serving and e.status in statuses.LIVE)
        html = await self.ctx.render_threaded(
            "public/status.html", request, title="Mirror status", rows=rows,
            not_serving=not_serving, probes_on=cfg.probes.enabled, cells=HISTORY_PROBES,
            max_age=serving.max_sync_age(cfg), generated=now)
        return Response(html, headers={b"cache-control": b"public, max-age=%d" % STATUS_TTL})

    async def admin_network(self, request):
        from admin import waitinglist

        plan = await plans.current(self.ctx)
        m, svg = await self.maps.get(plan, "admin")
        waiting = await self.ctx.pool.run_readonly(waitinglist.waiting_counts)
        days = await self.health.get(self.ctx.now().date())
        thin = await self.ctx.run_in_thread(thin_countries, m, plan, waiting)
        g = await self.ctx.run_in_thread(health_graphs, days)
        return await self.ctx.render_threaded(
            "admin/network.html", request, title="Network", world=m, world_svg=svg, thin=thin,
            graphs=g, days=days, serving_now=len(plan.serving), plan=plan)


def of(ctx: WebContext) -> NetworkPages:
    """The context's one NetworkPages (one map cache for the public and the admin pages), made
    on first use and kept on the context."""
    pages = ctx.__dict__.get("_network_pages")
    if pages is None:
        pages = ctx.__dict__["_network_pages"] = NetworkPages(ctx)
    return pages


def mount(root, ctx: WebContext) -> NetworkPages:
    """Called by admin.web.build_root: /country/<cc> and /status."""
    pages = of(ctx)
    country = Router(ctx)
    country.add("GET", r"(?P<cc>[A-Za-z]{2})", lambda request, cc: pages.country_page(
        request, cc.upper()), login=False)
    root.putChild(b"country", country)
    status = Router(ctx)
    status.add("GET", "", pages.status_page, login=False)
    root.putChild(b"status", status)
    return pages
