"""The mirror page's graphs (admin.web.graphs): labels that read, ticks that never overlap, and a
colour scale whose every step stays apart for colour-blind readers (simulated with the Machado,
Oliveira and Fernandes 2009 matrices at full severity, compared in CIELAB)."""

from __future__ import annotations

import datetime as _dt
import itertools
import re
from pathlib import Path

import pytest
from markupsafe import escape

from admin.web import graphs
from admin.web.framework import make_jinja_env

CSS = Path(__file__).resolve().parents[1] / "admin" / "static" / "style.css"

SIMULATIONS = {
    "normal": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    "protanopia": ((0.152286, 1.052583, -0.204868), (0.114503, 0.786281, 0.099216),
                   (-0.003882, -0.048116, 1.051998)),
    "deuteranopia": ((0.367322, 0.860646, -0.227968), (0.280085, 0.672501, 0.047413),
                     (-0.011820, 0.042940, 0.968881)),
    "tritanopia": ((1.255528, -0.076749, -0.178779), (-0.078411, 0.930809, 0.147602),
                   (0.004733, 0.691367, 0.303900)),
}


def _linear(hex_colour: str) -> list[float]:
    out = []
    for i in (1, 3, 5):
        c = int(hex_colour[i:i + 2], 16) / 255
        out.append(c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4)
    return out


def _lab(rgb: list[float]) -> tuple[float, float, float]:
    x = (0.4124 * rgb[0] + 0.3576 * rgb[1] + 0.1805 * rgb[2]) / 0.95047
    y = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    z = (0.0193 * rgb[0] + 0.1192 * rgb[1] + 0.9505 * rgb[2]) / 1.08883

    def f(t):
        return t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116
    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def _seen(hex_colour: str, how: str) -> tuple[float, float, float]:
    m, rgb = SIMULATIONS[how], _linear(hex_colour)
    return _lab([min(1.0, max(0.0, sum(m[i][j] * rgb[j] for j in range(3)))) for i in range(3)])


def delta_e(a: str, b: str, how: str) -> float:
    return sum((p - q) ** 2 for p, q in zip(_seen(a, how), _seen(b, how))) ** 0.5


def test_the_uptime_scale_has_fine_steps_in_order():
    lows = [s.low for s in graphs.UPTIME_SCALE]
    assert len(lows) >= 7 and lows == sorted(lows, reverse=True) and lows[-1] == 0
    assert graphs.step_of(1.0).label == "≥ 99.9%" and graphs.step_of(0.0).label == "< 50%"
    assert graphs.step_of(0.995).label == "99–99.9%" and graphs.step_of(0.9499).label == "90–95%"


@pytest.mark.parametrize("how", sorted(SIMULATIONS))
def test_neighbouring_steps_stay_apart_for_colour_blind_readers(how):
    colours = [s.colour for s in graphs.UPTIME_SCALE]
    gaps = [delta_e(a, b, how) for a, b in itertools.pairwise(colours)]
    assert min(gaps) >= 12, (how, [round(g, 1) for g in gaps])
    assert min(delta_e(c, "#ffffff", how) for c in colours) >= 15      # every bar shows on white


def _no_overlap(ticks, width=graphs.WIDTH):
    spans = sorted((t.lx - graphs.label_width(t.label) / 2,
                    t.lx + graphs.label_width(t.label) / 2) for t in ticks)
    assert all(abs(t.lx - t.x) <= graphs.label_width(t.label) / 2 for t in ticks)  # by its mark
    assert all(a >= 0 and b <= width for a, b in spans), spans
    assert all(b1 + graphs.TICK_GAP <= a2 for (_a1, b1), (a2, _b2) in itertools.pairwise(spans)), \
        spans


def test_day_ticks_never_overlap_and_months_always_show():
    start = _dt.date(2026, 1, 1)
    for k in range(366):                       # every end date of a year: every layout
        end = start + _dt.timedelta(days=k)
        g = graphs.uptime_days({}, end)
        _no_overlap(g["xticks"])
        firsts = [end - _dt.timedelta(days=i) for i in range(90)]
        months = {f"{d:%b} 1" for d in firsts if d.day == 1}
        labels = [t.label for t in g["xticks"]]
        assert months <= set(labels), (end, labels)
        assert len(labels) >= 5, (end, labels)


def test_hour_ticks_never_overlap_and_every_midnight_shows():
    start = _dt.datetime(2026, 11, 1, 0, 30)
    for k in range(24):
        g = graphs.rtt_hours({}, start + _dt.timedelta(hours=k))
        _no_overlap(g["xticks"])
        assert sum(1 for t in g["xticks"] if t.label != "12:00") >= 6


def test_axes_say_their_units():
    end = _dt.date(2026, 11, 21)
    up = graphs.uptime_days({end: (10, 9)}, end)
    assert up["ytitle"] == "probes passed (%)" and "UTC" in up["xtitle"]
    assert [t.label for t in up["yticks"]] == ["0%", "25%", "50%", "75%", "100%"]
    now = _dt.datetime(2026, 11, 21, 9, 30)
    rtt = graphs.rtt_hours({now.replace(minute=0): 333.0}, now)
    assert [t.label for t in rtt["yticks"]] == ["0", "100 ms", "200 ms", "300 ms", "400 ms"]
    assert "UTC" in rtt["xtitle"]
    slow = graphs.rtt_hours({now.replace(minute=0): 4200.0}, now)
    assert [t.label for t in slow["yticks"]] == ["0", "2 s", "4 s", "6 s"]


@pytest.mark.parametrize(("v", "want"), [(0, (1, 0.25)), (0.3, (0.3, 0.1)), (7, (8, 2)),
                                         (105, (150, 50)), (333, (400, 100)),
                                         (999, (1000, 250)), (4200, (6000, 2000))])
def test_nice_axis(v, want):
    assert graphs.nice_axis(v) == pytest.approx(want)


def test_the_drawing_uses_the_stylesheet_text_size_and_the_scale():
    """The ticks are placed for graphs.FONT: the stylesheet must draw them at that size, which
    reads (at least 12 px on a drawing about as wide as it is shown)."""
    size = re.search(r"svg\.graph text \{[^}]*font-size: (\d+)px", CSS.read_text()).group(1)
    assert int(size) == graphs.FONT >= 12
    end = _dt.date(2026, 11, 21)
    days = {end - _dt.timedelta(days=i): (100, 100 - 7 * i) for i in range(8)}
    html = make_jinja_env().from_string(
        '{% from "admin/_graphs.html" import uptime_graph %}{{ uptime_graph(g) }}').render(
        g=graphs.uptime_days(days, end))
    fills = re.findall(r'<rect class="day"[^>]* fill="(#[0-9a-f]{6})"', html)
    assert fills[::-1] == [graphs.step_of((100 - 7 * i) / 100).colour for i in range(8)]
    assert html.count('fill="url(#no-data-uptime)"') == 82 + 1     # 82 days, and the legend
    for s in graphs.UPTIME_SCALE:
        assert str(escape(s.label)) in html
    assert "probes passed (%)" in html and 'rotate(-90)' in html


def test_stacked_days_count_in_whole_mirrors_with_the_scale_colours():
    start = _dt.date(2026, 10, 23)
    days = [(start + _dt.timedelta(days=i), {"up": i % 4, "part": 1, "down": i % 2})
            for i in range(30)] + [(start + _dt.timedelta(days=30), {})]
    g = graphs.stacked_days(days, ("up", "part", "down"))
    assert [t.label for t in g["yticks"]] == ["0", "2", "4", "6"]
    _no_overlap(g["xticks"])
    assert {"Oct 26", "Nov 1", "Nov 9"} <= {t.label for t in g["xticks"]}    # months, Mondays
    assert {b.colour for b in g["bars"]} == {*graphs.CLASS_COLOURS.values(), ""}
    assert g["legend"] == [(graphs.CLASS_COLOURS[c], c) for c in ("up", "part", "down")]
    assert g["ytitle"] == "mirrors probed" and g["xtitle"] == "day (UTC), last 31 days"
    one = graphs.stacked_days([(start, {"up": 1})], ("up",))
    assert [t.label for t in one["yticks"]] == ["0", "1"]
