"""Figures as people read them: ages and durations in human units, times in milliseconds,
shares in percent, all rounded. One home for the web's filters (admin.web.framework registers
them) and mirrorctl's output, so a page and the terminal say the same thing the same way."""

from __future__ import annotations

import datetime as _dt

NONE = "–"


def duration(seconds) -> str:
    """3 d 4 h, 5 h 12 min, 40 s: two units at most, for ages and intervals."""
    if seconds is None:
        return NONE
    s = int(abs(seconds))
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        return f"{d} d {h} h" if h else f"{d} d"
    if h:
        return f"{h} h {m} min" if m else f"{h} h"
    if m:
        return f"{m} min"
    return f"{s} s"


def ago(when: _dt.datetime | None, now: _dt.datetime) -> str:
    """'5 min ago' ('in 5 min' for a time still to come), 'never' for no time."""
    if when is None:
        return "never"
    delta = (now - when).total_seconds()
    if delta < 0:
        return "in " + duration(-delta)
    return duration(delta) + " ago"


def ms(value) -> str:
    """A response time: '0.4 ms', '7.5 ms', '123 ms', '12.3 s'."""
    if value is None:
        return NONE
    v = float(value)
    if v >= 10_000:
        return f"{v / 1000:.1f} s"
    if v >= 10:
        return f"{v:.0f} ms"
    return f"{v:.1f} ms"


def percent(share, digits: int = 1) -> str:
    """A share (0..1) in percent: 0.98765 -> '98.8%'."""
    if share is None:
        return NONE
    return f"{share * 100:.{digits}f}%"


def number(value, unit: str = "") -> str:
    """A declared size or count without trailing zeros ('16 GB', '2.5 GB'); '?' when unknown."""
    if value is None or value == "":
        return "?" + (f" {unit}" if unit else "")
    return f"{float(value):g}" + (f" {unit}" if unit else "")
