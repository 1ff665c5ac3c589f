"""The closer's decisions, without HTTP: which mirror a visitor gets and what the lists hold.

Uses the picker's own candidate selection and weighted drawer (dnsd.picker), so the closer and
the DNS answer agree on tiers and weights.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from twisted.internet import threads

from admin.closer.archive import ArchiveLookup, AtticIndex
from admin.closer.dist import DistIndex
from admin.closer.heads import GuardedHead, HeadCache
from admin.closer.templates import LISTS, PageIndex, TemplateStore
from admin.web.clients import ProxyRule
from dnsd import countries, picker, serving

_TIER_RANK = {t: i for i, t in enumerate((*picker.TIERS, "none"))}


def _slash(u: str) -> str:
    return u if u.endswith("/") else u + "/"


class PlanView:
    """What the closer derives from one immutable plan, computed once per (plan, country).

    Uses the picker's own candidate selection and weighted drawer, so the closer and the DNS
    answer agree on tiers and weights; only the draw itself happens per request.
    """

    def __init__(self, plan, allow_http: bool):
        self.plan = plan
        self.web = ("https", "http") if allow_http else ("https",)
        self._pick: dict = {}
        self._lists: dict = {}
        self._locs: dict = {}

    def location(self, cc: str | None) -> picker.Location:
        loc = self._locs.get(cc)
        if loc is None:
            loc = self._locs[cc] = picker.as_location(cc)
        return loc

    def web_url(self, e) -> str | None:
        for proto in self.web:
            u = e.url(proto)
            if u:
                return _slash(u)
        return None

    def candidates(self, cc: str | None):
        """(protocol, tier, tier_key, Drawer): the nearest tier any allowed protocol reaches,
        https at equal distance, backups last. Distance comes first: a few https mirrors far
        away must not take every visitor from the http mirrors next door (nor be hammered)."""
        hit = self._pick.get(cc)
        if hit is not None:
            return hit
        loc = self.location(cc)
        options = []
        for proto in self.web:                                   # https first
            tier, key, cands = picker.candidates(self.plan, loc, protocol=proto)
            drawer = picker.Drawer([e for e, _ in cands], [w for _, w in cands])
            options.append((proto, tier, key, drawer))
        hit = min(options, key=lambda o: _TIER_RANK[o[1]])       # min keeps the first of equals
        self._pick[cc] = hit
        return hit

    def lists(self, cc: str | None) -> dict[str, tuple[str, ...]]:
        """The four lists, nearest first: by tier (country, sub-region, continent, world), inside a
        tier by distance (500 km steps), then score.

        `http` holds each mirror's web URL (https when it has one, plain http only when [closer]
        allow_http): old templates loop over `http` alone and must still offer every mirror.
        """
        hit = self._lists.get(cc)
        if hit is not None:
            return hit
        loc = self.location(cc)
        point = loc.point()

        def nearest(e):
            km = 0.0
            if point is not None and e.lat is not None:
                km = countries.haversine_km(point[0], point[1], e.lat, e.lon)
            return (round(km / 500), -e.score, e.hostname)

        order, seen = [], set()
        for level, key in picker.tiers_for(loc):
            tier = sorted(self.plan.pool(None, level, key), key=nearest)
            for e in tier:
                if e.id not in seen:
                    seen.add(e.id)
                    order.append(e)
        backups = sorted(self.plan.pool(None, "backup", None), key=lambda e: (-e.score, e.hostname))
        out = {
            "http": tuple(u for e in order if (u := self.web_url(e))),
            "https": tuple(_slash(e.https) for e in order if e.https),
            "ftp": tuple(_slash(e.ftp) for e in order if e.ftp),
            "rsync": tuple(_slash(e.rsync) for e in order if e.rsync),
            "backup": tuple(u for e in backups if (u := self.web_url(e))),
        }
        self._lists[cc] = out
        return out

    def entry_for_url(self, url: str):
        for e in self.plan.mirrors:
            if e.serving and any(_slash(u) == url for u in e.urls.values()):
                return e
        return None

    def synced_since(self, since, cfg):
        """keep(entry) for mirrors.cgi's update=: synced at or after `since` (naive UTC), by
        the sync age the plan holds; a mirror whose sync time is unknown cannot show it. Backups
        pass when they are not age-filtered (dnsd.serving.age_filtered)."""
        built = self.plan.built_at

        def keep(e):
            if not serving.age_filtered(e, cfg):
                return True
            return e.sync_age is not None and (built - since).total_seconds() >= e.sync_age
        return keep


@dataclass
class Selection:
    """One visitor's answer: the preferred mirror and the lists, before any rendering."""

    cca2: str | None            # the country chosen for (override or geo), upper case
    protocol: str | None
    tier: str
    tier_key: str | None
    entry: object | None        # the preferred plan entry (None: no mirror at all)
    preferred: str              # its base URL, ending in '/' ('' when there is none)
    lists: dict
    asked: bool = False         # the visitor's own Preferred was accepted
    others: tuple = ()          # further mirrors of the same draw, in its order (entries)


class Closer:
    """The closer's decisions, without HTTP: testable with a plan, a clock and a seeded rng."""

    def __init__(self, cfg, plan_holder, *, clock, rng=None, head=None, run_in_thread=None):
        """run_in_thread(f, *args) -> Deferred runs file work off the reactor thread (the dist
        walk, template loads); tests pass one that runs f inline."""
        self.cfg = cfg
        self.holder = plan_holder
        self.clock = clock
        self.rng = rng or random.Random()
        run_in_thread = run_in_thread or threads.deferToThread
        self.run_in_thread = run_in_thread
        c = cfg.closer
        if c.dist_refresh <= 0:
            raise ValueError("[closer] dist_refresh must be a positive number of seconds")
        self.docroot = cfg.resolve_path(c.document_root) if c.document_root else None
        self.dist = DistIndex(cfg.resolve_path(c.dist_root) if c.dist_root else None,
                              clock=clock, run_in_thread=run_in_thread, interval=c.dist_refresh)
        self.templates = TemplateStore(self.docroot, clock, run_in_thread)
        self.archive_url = _slash(c.archive_url) if c.archive_url else ""
        guarded = GuardedHead(clock, c.head_timeout, allow_private=cfg.probes.allow_private)
        self.heads = HeadCache(clock, c.head_check_ttl, c.head_timeout, head or guarded,
                               allow_private=cfg.probes.allow_private) if c.head_check else None
        self.archive = ArchiveLookup(self.archive_url, head or guarded, clock) \
            if self.archive_url else None
        self.attic = AtticIndex(cfg.resolve_path(c.attic_root) if c.attic_root else None,
                                _slash(c.attic_url), clock=clock, run_in_thread=run_in_thread,
                                interval=c.dist_refresh)
        self.pages = PageIndex(self.docroot, clock, run_in_thread)
        self.proxies = ProxyRule(cfg.admin.trusted_proxies)
        self._view: PlanView | None = None

    def view(self) -> PlanView | None:
        plan = getattr(self.holder, "current", None) if self.holder is not None else None
        if plan is None:
            return None
        v = self._view
        if v is None or v.plan is not plan:
            v = self._view = PlanView(plan, self.cfg.closer.allow_http)
        return v

    def select(self, view: PlanView, cca2: str | None, asked: str | None = None, *,
               since=None, count: int = 1) -> Selection:
        """The preferred mirror (and `count` - 1 more of the same weighted draw in `others`).
        `since` (mirrors.cgi's update=) narrows the choice to mirrors synced since then, the
        tiers borrowing as usual; when none is left, a backup, as mirrors.cgi fell back."""
        lists = view.lists(cca2)
        if since is None:
            proto, tier, key, drawer = view.candidates(cca2)
        else:
            proto, tier, key, drawer = self._narrowed(view, cca2, view.synced_since(since,
                                                                                   self.cfg))
        if asked:
            want = _slash(asked)
            if any(want in lists[k] for k in LISTS):
                return Selection(cca2, proto, tier, key, view.entry_for_url(want), want, lists,
                                 asked=True)
        chosen = drawer.draw(max(1, count), self.rng)
        if not chosen:
            return Selection(cca2, proto, tier, key, None, "", lists)
        e = chosen[0]
        return Selection(cca2, proto, tier, key, e, view.web_url(e), lists,   # https if it has it
                         others=chosen[1:])

    def _narrowed(self, view: PlanView, cca2, keep):
        """view.candidates, with every tier narrowed by keep (not cached: per request)."""
        loc = view.location(cca2)
        options = []
        for proto in view.web:
            tier, key, cands = picker.candidates(view.plan, loc, protocol=proto, keep=keep)
            options.append((proto, tier, key,
                            picker.Drawer([e for e, _ in cands], [w for _, w in cands])))
        return min(options, key=lambda o: _TIER_RANK[o[1]])

    def backup_url(self, view: PlanView) -> str | None:
        b = view.plan.pool(None, "backup", None)
        if not b:
            return None
        drawer = picker.Drawer(b, [max(e.score, 0.0) or 1.0 for e in b])
        return view.web_url(drawer.draw(1, self.rng)[0])

    def explain(self, view: PlanView, sel: Selection, where: str) -> str:
        """action=info: location, tier, every mirror with its weight or the reason it is out."""
        loc = view.location(sel.cca2)
        lines = [
            f"visitor: {where}",
            f"location: {loc.describe()}",
            f"protocols: {', '.join(view.web)} (the nearest tier wins; https at equal distance)",
            f"protocol: {sel.protocol or '-'}",
            f"tier: {sel.tier}" + (f" {sel.tier_key}" if sel.tier_key else ""),
            f"preferred: {sel.preferred or '(none)'}"
            + (" (asked for with Preferred=)" if sel.asked else ""),
            f"plan version: {view.plan.version}, built {view.plan.built_at:%Y-%m-%d %H:%M:%S} UTC",
            "",
        ]
        ch = picker.pick(view.plan, loc, protocol=sel.protocol, count=0, rng=self.rng) \
            if sel.protocol else None
        total = sum(w for _e, w in ch.candidates) if ch else 0.0
        lines.append("candidates (weight, share of the tier):")
        for e, w in (ch.candidates if ch else ()):
            share = f"{100 * w / total:.1f}%" if total else "-"
            lines.append(f"  {e.label:<12} {e.country}  {w:8.3f}  {share:>6}  {view.web_url(e)}")
        if not ch or not ch.candidates:
            lines.append("  (none)")
        lines.append("")
        lines.append("not candidates:")
        for e, why in (ch.excluded if ch else ((e, e.reason or "no serving mirror")
                                                for e in view.plan.mirrors)):
            lines.append(f"  {e.label:<12} {e.country}  {why}")
        return "\n".join(lines) + "\n"
