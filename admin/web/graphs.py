"""Inline SVG graphs for the mirror page, computed on the server (STYLE B11).

The geometry is worked out here as plain numbers; the jinja macros in
templates/admin/_graphs.html draw it (autoescaped, no scripts, allowed by a strict CSP: colours
are SVG presentation attributes, not style). Missing buckets are drawn hatched grey, "no data",
so a gap in probing is not mistaken for an outage.

Readable: the drawing is 960 units wide (about its size on a laptop, so 13-unit text reads as
13 px), each axis has a title with its unit, and tick labels are placed only where they do not
overlap the ones already placed (`place_ticks`, most important first: month starts before
mid-months, midnights before noons). The uptime colours are an 8-step scale from ColorBrewer's
RdYlBu (dark blue = all probes passed, dark red = most failed), which stays distinguishable in
every step under protanopia, deuteranopia and tritanopia (tests/test_graphs.py simulates them);
the bar's height says the same thing, so colour is never the only cue.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass

WIDTH = 960
HEIGHT = 230
LEFT = 76          # y tick labels and the y-axis title
RIGHT = 14
TOP = 10
BOTTOM = 50        # x tick labels and the x-axis title
FONT = 13          # px, as the stylesheet sets it (svg.graph text)
CHAR_W = 0.62      # a tick label character's width, in FONT units (system-ui digits and letters)
TICK_GAP = 14      # the least room between two x tick labels


@dataclass(frozen=True)
class Step:
    """One step of the uptime colour scale: days whose share of passed probes is >= `low`."""

    low: float
    colour: str
    label: str


UPTIME_SCALE = (
    Step(0.999, "#313695", "≥ 99.9%"),
    Step(0.99, "#4575b4", "99–99.9%"),
    Step(0.97, "#74add1", "97–99%"),
    Step(0.95, "#abd9e9", "95–97%"),
    Step(0.90, "#fdae61", "90–95%"),
    Step(0.75, "#f46d43", "75–90%"),
    Step(0.50, "#d73027", "50–75%"),
    Step(0.0, "#a50026", "< 50%"),
)
NO_DATA = "no probes"


def step_of(share: float) -> Step:
    return next(s for s in UPTIME_SCALE if share >= s.low)


def share_class(share: float) -> str:
    """A day's share of passed probes in a word (the network overview's stacks): up, part or
    down."""
    return "up" if share >= 0.99 else ("part" if share >= 0.5 else "down")


CLASS_COLOURS = {"up": step_of(1.0).colour, "part": step_of(0.92).colour,
                 "down": step_of(0.0).colour}
"""The stacks' colours: the ends of the uptime scale, and its first warm step between them."""


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    colour: str        # "" = no data (drawn hatched)
    title: str


@dataclass(frozen=True)
class Tick:
    x: float
    y: float
    label: str
    lx: float = 0.0    # where the label's centre is (x, moved inwards at the drawing's edges)


def label_width(label: str) -> float:
    return len(label) * FONT * CHAR_W


def place_ticks(candidates: Iterable[tuple[int, float, str]]) -> list[Tick]:
    """Of (priority, x, label) candidates, the ones whose labels (centred on x, moved inwards
    to stay on the drawing) do not overlap a label placed before them (lower priority number
    first, then left to right); returned left to right."""
    placed: list[tuple[float, float, Tick]] = []
    for _prio, x, label in sorted(candidates, key=lambda c: (c[0], c[1])):
        half = label_width(label) / 2
        lx = min(max(x, 2 + half), WIDTH - 2 - half)
        a, b = lx - half, lx + half
        if all(b + TICK_GAP <= pa or a >= pb + TICK_GAP for pa, pb, _t in placed):
            placed.append((a, b, Tick(round(x, 2), 0, label, round(lx, 2))))
    return [t for _a, _b, t in sorted(placed, key=lambda p: p[2].x)]


def _frame() -> dict:
    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT, "top": TOP,
            "bottom": HEIGHT - BOTTOM, "xtitle_y": HEIGHT - 8, "xtick_y": HEIGHT - BOTTOM + 19,
            "ytitle_x": 16, "ytitle_y": TOP + (HEIGHT - BOTTOM - TOP) / 2,
            "mid_x": LEFT + (WIDTH - RIGHT - LEFT) / 2}


def uptime_days(days: dict[_dt.date, tuple[int, int]], end: _dt.date, n: int = 90) -> dict:
    """Bars for the last n days ending with `end`; days maps date -> (probes, passes)."""
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - BOTTOM - TOP
    step = plot_w / n
    bars, cands = [], []
    total_p = total_ok = 0
    for i in range(n):
        day = end - _dt.timedelta(days=n - 1 - i)
        x = LEFT + i * step
        probes, passes = days.get(day, (0, 0))
        if probes <= 0:
            bars.append(Bar(round(x + 0.5, 2), TOP, round(max(step - 1, 1), 2), plot_h, "",
                            f"{day:%Y-%m-%d}: no probes"))
        else:
            share = passes / probes
            total_p += probes
            total_ok += passes
            h = max(plot_h * share, 2)
            bars.append(Bar(round(x + 0.5, 2), round(TOP + plot_h - h, 2),
                            round(max(step - 1, 1), 2), round(h, 2), step_of(share).colour,
                            f"{day:%Y-%m-%d}: {share * 100:.1f}% up ({passes}/{probes} probes)"))
        cands.extend(_day_candidates(day, i, n, x + step / 2))
    xt = place_ticks(cands)
    yt = [Tick(LEFT - 8, round(TOP + plot_h * (1 - f), 2), f"{f * 100:g}%")
          for f in (0, 0.25, 0.5, 0.75, 1)]
    return {**_frame(), "bars": bars, "xticks": xt, "yticks": yt,
            "xtitle": f"day (UTC), last {n} days", "ytitle": "probes passed (%)",
            "scale": UPTIME_SCALE, "no_data": NO_DATA,
            "overall": (total_ok / total_p) if total_p else None}


def _day_candidates(day: _dt.date, i: int, n: int, centre: float) -> list[tuple[int, float, str]]:
    """A day axis's tick candidates: month starts first, then mid-months and Mondays, then the
    ends (place_ticks keeps what fits)."""
    label = f"{day:%b} {day.day}"
    if day.day == 1:
        return [(0, centre, label)]
    if day.day == 15 or (n <= 31 and day.weekday() == 0):
        return [(1, centre, label)]
    if i in (0, n - 1):
        return [(2, centre, label)]
    return []


def stacked_days(days: list[tuple[_dt.date, dict[str, int]]], classes: tuple[str, ...]) -> dict:
    """Stacked bars, one per day (oldest first): the count of each class that day, bottom up in
    the order of `classes` (the network overview: mirrors up, part of the day, down), coloured
    by CLASS_COLOURS."""
    n = max(len(days), 1)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - BOTTOM - TOP
    step = plot_w / n
    most = max((sum(c.values()) for _d, c in days), default=0) or 1
    top, ystep = nice_axis(most)
    if ystep < 1:                                   # counts: whole numbers only
        top, ystep = float(max(most, 1)), 1.0
    bars, cands = [], []
    for i, (day, counts) in enumerate(days):
        x = LEFT + i * step
        if not sum(counts.values()):
            bars.append(Bar(round(x + 0.5, 2), TOP, round(max(step - 1, 1), 2), plot_h, "",
                            f"{day:%Y-%m-%d}: no probes"))
        y = TOP + plot_h
        words = ", ".join(f"{counts.get(c, 0)} {c}" for c in classes)
        for c in classes:
            k = counts.get(c, 0)
            if not k:
                continue
            h = plot_h * k / top
            y -= h
            bars.append(Bar(round(x + 0.5, 2), round(y, 2), round(max(step - 1, 1), 2),
                            round(h, 2), CLASS_COLOURS[c], f"{day:%Y-%m-%d}: {words}"))
        cands.extend(_day_candidates(day, i, n, x + step / 2))
    yt = []
    v = 0.0
    while v <= top + ystep / 1000:
        yt.append(Tick(LEFT - 8, round(TOP + plot_h * (1 - v / top), 2), f"{v:g}"))
        v += ystep
    return {**_frame(), "bars": bars, "xticks": place_ticks(cands), "yticks": yt,
            "xtitle": f"day (UTC), last {n} days", "ytitle": "mirrors probed",
            "max": top, "legend": [(CLASS_COLOURS[c], c) for c in classes]}


def rtt_hours(hours: dict[_dt.datetime, float], end: _dt.datetime, n: int = 168) -> dict:
    """A polyline of the hourly mean response time over the last n hours ending with `end`'s hour.

    Hours without data break the line (several polylines), again so a gap is visible.
    """
    end = end.replace(minute=0, second=0, microsecond=0)
    vals = [hours.get(end - _dt.timedelta(hours=n - 1 - i)) for i in range(n)]
    known = [v for v in vals if v is not None]
    top, ystep = nice_axis(max(known) if known else 100.0)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - BOTTOM - TOP
    step = plot_w / max(n - 1, 1)
    lines, cur = [], []
    for i, v in enumerate(vals):
        if v is None:
            if cur:
                lines.append(cur)
            cur = []
            continue
        cur.append((round(LEFT + i * step, 2), round(TOP + plot_h * (1 - min(v, top) / top), 2)))
    if cur:
        lines.append(cur)
    points = [" ".join(f"{x},{y}" for x, y in line) for line in lines if len(line) > 1]
    dots = [line[0] for line in lines if len(line) == 1]
    cands = []
    for i in range(n):
        t = end - _dt.timedelta(hours=n - 1 - i)
        if t.hour == 0:
            cands.append((0, LEFT + i * step, f"{t:%a} {t.day}"))
        elif t.hour == 12:
            cands.append((1, LEFT + i * step, "12:00"))
    xt = place_ticks(cands)
    yt = []
    v = 0.0
    while v <= top + ystep / 1000:
        yt.append(Tick(LEFT - 8, round(TOP + plot_h * (1 - v / top), 2), ms_label(v, top)))
        v += ystep
    return {**_frame(), "lines": points, "dots": dots, "xticks": xt, "yticks": yt,
            "xtitle": "hour (UTC), last 7 days", "ytitle": "response time",
            "max_ms": top, "mean": (sum(known) / len(known)) if known else None}


def ms_label(v: float, top: float) -> str:
    """A response-time tick: '250 ms', or seconds once the axis reaches 2 s ('1.5 s')."""
    if v == 0:
        return "0"
    if top >= 2000:
        return f"{v / 1000:g} s"
    return f"{v:g} ms"


def nice_axis(v: float, ticks: int = 4) -> tuple[float, float]:
    """(top, step) of an axis from 0 that holds v in about `ticks` steps of 1, 2 or 5 x 10^k,
    so the labels read in round numbers."""
    if v <= 0:
        return 1.0, 0.25
    raw = v / ticks
    k = 1.0
    while k * 10 <= raw:
        k *= 10
    while k > raw:
        k /= 10
    for m in (1, 2, 2.5, 5, 10):
        if m * k >= raw:
            step = m * k
            break
    top = step
    while top < v:
        top += step
    return round(top, 10), round(step, 10)
