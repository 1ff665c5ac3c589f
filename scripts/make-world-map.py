#!/usr/bin/env python3
"""Regenerate dnsd/data/world-map.json, the country outlines of the network map (run by hand;
not a runtime dependency).

    npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz
    python3 scripts/make-world-map.py package/countries-50m.json > dnsd/data/world-map.json

Sources (dnsd/data/NOTICE.md): the outlines are Natural Earth's 1:50m Admin 0 countries (public
domain) as the npm package world-atlas 2.0.2 redistributes them in TopoJSON (ISC, Michael
Bostock); its countries carry ISO 3166-1 numeric codes, turned into alpha-2 codes with Debian's
iso-codes (/usr/share/iso-codes/json/iso_3166-1.json). Projected here (Equal Earth, without
Antarctica) into a 1000-unit-wide picture, each shared border simplified once (Douglas-Peucker,
TOLERANCE units) so neighbours still meet, and written as SVG path data in whole units. A
country too small to keep an outline at this size (and every one of dnsd/data/countries.csv the
data set leaves out) gets a point instead, where the page draws a dot.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
import sys

WIDTH = 1000
TOLERANCE = 0.45        # units of the picture (1000 wide): finer than a pixel at full width
MIN_AREA = 1.5          # square units: a smaller ring is dropped (tiny islands)
SOUTH = -58.0           # nothing south of this (Antarctica, South Georgia) is drawn
ISO_CODES = pathlib.Path("/usr/share/iso-codes/json/iso_3166-1.json")
COUNTRIES = pathlib.Path(__file__).resolve().parents[1] / "dnsd" / "data" / "countries.csv"
# world-atlas features without a numeric code, and what they belong to in our country table
UNCODED = {"Kosovo": "XK", "Somaliland": "SO", "N. Cyprus": "CY",
           "Indian Ocean Ter.": "CX", "Siachen Glacier": None}
SKIP = {"AQ"}

# Equal Earth (Šavrič, Patterson, Jenny 2018)
A1, A2, A3, A4 = 1.340264, -0.081106, 0.000893, 0.003796
M = math.sqrt(3) / 2


def equal_earth(lon: float, lat: float) -> tuple[float, float]:
    lam, phi = math.radians(lon), math.radians(lat)
    t = math.asin(M * math.sin(phi))
    t2 = t * t
    t6 = t2 * t2 * t2
    x = lam * math.cos(t) / (M * (A1 + 3 * A2 * t2 + t6 * (7 * A3 + 9 * A4 * t2)))
    y = t * (A1 + A2 * t2 + t6 * (A3 + A4 * t2))
    return x, y


X_MAX = equal_earth(180, 0)[0]
Y_TOP = equal_earth(0, 84.5)[1]        # just north of the land (Greenland, 83.7)
Y_BOTTOM = equal_earth(0, SOUTH)[1]
SCALE = WIDTH / (2 * X_MAX)
HEIGHT = round((Y_TOP - Y_BOTTOM) * SCALE)


def project(lon: float, lat: float) -> tuple[float, float]:
    x, y = equal_earth(lon, max(lat, SOUTH))
    return (x + X_MAX) * SCALE, (Y_TOP - y) * SCALE


def decode_arcs(topo) -> list[list[tuple[float, float]]]:
    sx, sy = topo["transform"]["scale"]
    tx, ty = topo["transform"]["translate"]
    out = []
    for arc in topo["arcs"]:
        x = y = 0
        pts = []
        for dx, dy in arc:
            x += dx
            y += dy
            pts.append((x * sx + tx, y * sy + ty))
        out.append([project(lon, lat) for lon, lat in one_side(pts)])
    return out


def one_side(pts):
    """A ring across the antimeridian (Russia's Chukotka, Wrangel Island, Fiji) stays on the side
    most of its points are on: the few beyond 180 degrees are pressed onto the edge, rather than
    drawn as a line across the whole picture."""
    if not any(abs(b[0] - a[0]) > 180 for a, b in zip(pts, pts[1:])):
        return pts
    east = sum(1 for lon, _lat in pts if lon > 0) * 2 >= len(pts)
    edge = 180.0 if east else -180.0
    return [(lon if (lon > 0) == east else edge, lat) for lon, lat in pts]


def simplify(pts, tol):
    """Douglas-Peucker, iterative; the ends stay (they are shared with the neighbour's arcs)."""
    if len(pts) < 3:
        return list(pts)
    keep = [False] * len(pts)
    keep[0] = keep[-1] = True
    stack = [(0, len(pts) - 1)]
    while stack:
        a, b = stack.pop()
        (ax, ay), (bx, by) = pts[a], pts[b]
        dx, dy = bx - ax, by - ay
        norm = math.hypot(dx, dy)
        best, where = -1.0, -1
        for i in range(a + 1, b):
            px, py = pts[i]
            d = (abs(dy * (px - ax) - dx * (py - ay)) / norm) if norm else math.hypot(px - ax,
                                                                                      py - ay)
            if d > best:
                best, where = d, i
        if best > tol:
            keep[where] = True
            stack += [(a, where), (where, b)]
    return [p for p, k in zip(pts, keep) if k]


def ring_points(ring, arcs):
    pts = []
    for i in ring:
        a = arcs[i] if i >= 0 else arcs[~i][::-1]
        pts.extend(a if not pts else a[1:])
    return pts


def area(pts) -> float:
    return abs(sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1]))) / 2


def path_data(rings) -> str:
    """Whole units, relative moves after the first point of each ring: `M12 3l4-1 0 2z`."""
    out = []
    for pts in rings:
        q = []
        for x, y in pts:
            p = (round(x), round(y))
            if not q or q[-1] != p:
                q.append(p)
        if len(q) > 1 and q[0] == q[-1]:
            q.pop()
        if len(q) < 3:
            continue
        s = [f"M{q[0][0]} {q[0][1]}l"]
        nums = []
        for (x0, y0), (x1, y1) in zip(q, q[1:]):
            nums += [x1 - x0, y1 - y0]
        txt = ""
        for n in nums:
            txt += (str(n) if n < 0 or not txt else " " + str(n))
        s.append(txt + "z")
        out.append("".join(s))
    return "".join(out)


def main(src: str) -> None:
    topo = json.loads(pathlib.Path(src).read_text())
    numeric = {c["numeric"]: c["alpha_2"]
               for c in json.loads(ISO_CODES.read_text())["3166-1"]}
    table = {r["alpha2"]: r for r in csv.DictReader(COUNTRIES.open(encoding="utf-8"))}
    arcs = [simplify(a, TOLERANCE) for a in decode_arcs(topo)]
    rings_of: dict[str, list] = {}
    for g in topo["objects"]["countries"]["geometries"]:
        name = g["properties"]["name"]
        cc = numeric.get(g.get("id")) if g.get("id") else UNCODED.get(name)
        if cc is None and name not in UNCODED:
            print(f"no code for {name!r} ({g.get('id')})", file=sys.stderr)
        if cc is None or cc in SKIP or cc not in table:
            continue
        polys = g["arcs"] if g["type"] == "MultiPolygon" else [g["arcs"]]
        for poly in polys:
            for k, ring in enumerate(poly):
                pts = ring_points(ring, arcs)
                rings_of.setdefault(cc, []).append((k == 0, area(pts), pts))
    shapes, dots = {}, {}
    for cc, rings in sorted(rings_of.items()):
        kept = [pts for _outer, a, pts in rings if a >= MIN_AREA]
        d = path_data(kept)
        if d:
            shapes[cc] = d
        else:                                  # too small to draw: a dot at its largest ring
            pts = max(rings, key=lambda r: r[1])[2]
            dots[cc] = [round(sum(p[0] for p in pts) / len(pts), 1),
                        round(sum(p[1] for p in pts) / len(pts), 1)]
    for cc, r in sorted(table.items()):
        if cc in shapes or cc in dots or cc in SKIP or not r["lat"]:
            continue
        if float(r["lat"]) < SOUTH:
            continue
        x, y = project(float(r["lon"]), float(r["lat"]))
        dots[cc] = [round(x, 1), round(y, 1)]
    json.dump({"source": "Natural Earth 1:50m Admin 0 countries (public domain), via world-atlas "
                         "2.0.2; Equal Earth projection; see dnsd/data/NOTICE.md",
               "width": WIDTH, "height": HEIGHT, "shapes": shapes, "dots": dots},
              sys.stdout, separators=(",", ":"), sort_keys=False)
    sys.stdout.write("\n")
    print(f"{len(shapes)} outlines, {len(dots)} dots, "
          f"{sum(map(len, shapes.values()))} bytes of path data", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
