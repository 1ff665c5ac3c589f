"""Inline SVG graphs for the mirror page, computed on the server (STYLE B11).

The geometry is worked out here as plain numbers; the jinja macros in
templates/admin/_graphs.html draw it (autoescaped, no scripts, allowed by a strict CSP). Missing
buckets are drawn as grey "no data" so a gap in probing is not mistaken for an outage.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

WIDTH = 1200
HEIGHT = 150
LEFT = 40          # room for the y-axis labels
BOTTOM = 18        # room for the x-axis labels
TOP = 6


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    cls: str           # up | part | down | none
    title: str


@dataclass(frozen=True)
class Tick:
    x: float
    y: float
    label: str


def share_class(share: float) -> str:
    """A day's share of passed probes in a word (the bars' colour): up, part or down."""
    return "up" if share >= 0.99 else ("part" if share >= 0.5 else "down")


def uptime_days(days: dict[_dt.date, tuple[int, int]], end: _dt.date, n: int = 90) -> dict:
    """Bars for the last n days ending with `end`; days maps date -> (probes, passes)."""
    plot_w = WIDTH - LEFT
    plot_h = HEIGHT - BOTTOM - TOP
    step = plot_w / n
    bars, xt = [], []
    total_p = total_ok = 0
    for i in range(n):
        day = end - _dt.timedelta(days=n - 1 - i)
        x = LEFT + i * step
        probes, passes = days.get(day, (0, 0))
        if probes <= 0:
            bars.append(Bar(round(x + 0.5, 2), TOP, round(max(step - 1, 1), 2), plot_h, "none",
                            f"{day:%Y-%m-%d}: no probes"))
        else:
            share = passes / probes
            total_p += probes
            total_ok += passes
            h = max(plot_h * share, 2)
            cls = share_class(share)
            bars.append(Bar(round(x + 0.5, 2), round(TOP + plot_h - h, 2),
                            round(max(step - 1, 1), 2), round(h, 2), cls,
                            f"{day:%Y-%m-%d}: {share * 100:.1f}% up ({passes}/{probes} probes)"))
        if day.day == 1 or i == 0:
            xt.append(Tick(round(x, 2), HEIGHT - 4, f"{day:%b %d}"))
    yt = [Tick(LEFT - 4, round(TOP + plot_h * (1 - f), 2), f"{int(f * 100)}%")
          for f in (0, 0.5, 1)]
    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "top": TOP, "bottom": HEIGHT - BOTTOM,
            "bars": bars, "xticks": xt, "yticks": yt,
            "overall": (total_ok / total_p) if total_p else None}


def rtt_hours(hours: dict[_dt.datetime, float], end: _dt.datetime, n: int = 168) -> dict:
    """A polyline of the hourly mean response time over the last n hours ending with `end`'s hour.

    Hours without data break the line (several polylines), again so a gap is visible.
    """
    end = end.replace(minute=0, second=0, microsecond=0)
    vals = [hours.get(end - _dt.timedelta(hours=n - 1 - i)) for i in range(n)]
    known = [v for v in vals if v is not None]
    top = _nice_ceiling(max(known) if known else 100.0)
    plot_w = WIDTH - LEFT
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
    xt = []
    for i in range(n):
        t = end - _dt.timedelta(hours=n - 1 - i)
        if t.hour == 0:
            xt.append(Tick(round(LEFT + i * step, 2), HEIGHT - 4, f"{t:%a %d}"))
    yt = [Tick(LEFT - 4, round(TOP + plot_h * (1 - f), 2), f"{top * f:g}") for f in (0, 0.5, 1)]
    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "top": TOP, "bottom": HEIGHT - BOTTOM,
            "lines": points, "dots": dots, "xticks": xt, "yticks": yt, "max_ms": top,
            "mean": (sum(known) / len(known)) if known else None}


def _nice_ceiling(v: float) -> float:
    """The next of 1, 2, 5 x 10^k at or above v, so the axis reads in round numbers."""
    if v <= 0:
        return 1.0
    k = 1.0
    while k * 10 <= v:
        k *= 10
    while k > v:
        k /= 10
    for m in (1, 2, 5, 10):
        if m * k >= v:
            return m * k
    return 10 * k


def stacked_days(days: list[tuple[_dt.date, dict[str, int]]], classes: tuple[str, ...]) -> dict:
    """Stacked bars, one per day (oldest first): the count of each class that day, bottom up in
    the order of `classes` (the network overview: mirrors up, part of the day, down)."""
    n = max(len(days), 1)
    plot_w = WIDTH - LEFT
    plot_h = HEIGHT - BOTTOM - TOP
    step = plot_w / n
    top = _nice_ceiling(max((sum(c.values()) for _d, c in days), default=0) or 1)
    bars, xt = [], []
    for i, (day, counts) in enumerate(days):
        x = LEFT + i * step
        total = sum(counts.values())
        if not total:
            bars.append(Bar(round(x + 0.5, 2), TOP, round(max(step - 1, 1), 2), plot_h, "none",
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
                            round(h, 2), c, f"{day:%Y-%m-%d}: {words}"))
        monday = n <= 31 and day.weekday() == 0 and not 1 < day.day < 4 \
            and (day + _dt.timedelta(days=1)).day != 1 and (day + _dt.timedelta(days=2)).day != 1
        if day.day == 1 or i == 0 or monday:                       # months, and weeks apart
            xt.append(Tick(round(x, 2), HEIGHT - 4, f"{day:%b %d}"))
    steps = (0, 0.5, 1) if top % 2 == 0 else (0, 1)          # counts: whole numbers only
    yt = [Tick(LEFT - 4, round(TOP + plot_h * (1 - f), 2), f"{top * f:g}") for f in steps]
    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "top": TOP, "bottom": HEIGHT - BOTTOM,
            "bars": bars, "xticks": xt, "yticks": yt, "max": top}
