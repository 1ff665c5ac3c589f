#!/usr/bin/env python3
"""Benchmark of the network pages: what the map, the status page, a country page and the admin's
network overview cost with a large network, and whether the reactor stays free meanwhile.

    .venv/bin/python bench/pages.py                         # 1,000 mirrors, 14 days of probes
    .venv/bin/python bench/pages.py --mirrors 300 --days 3  # quicker

It builds a SQLite table of `--mirrors` mirrors spread over the countries of the demo list, each
probed every `--interval` seconds for `--days` days (raw results, as the probes keep them for
14 days), starts the web alone (`python -m admin.web.devserver`, the table's own pool and the
reactor's thread pool, as in production; it builds a plan per request, the costlier case), and
times with `--requests` sequential GETs per page: the first (cold) and the median of the rest.
While the overview's cold request runs (30 days read from the history) a second client asks for
the stylesheet every 20 ms: its slowest answer says how long the reactor was kept from answering.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import http.cookiejar
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PASSWORD = "bench-password-pages"


def seed(url: str, n: int, days: int, interval: int) -> str:
    """The table; returns the country with the most mirrors (its page is timed)."""
    import sqlalchemy as sa

    from admin.demo import demo_entries
    from dnsd.db import make_engine, upgrade
    from dnsd.models import mirror_health, mirrors, probe_results, utcnow

    engine = make_engine(url)
    upgrade(engine)
    now = utcnow()
    ccs = sorted({e["country"] for e in demo_entries()})
    per_country: dict[str, int] = {}
    with engine.begin() as conn:
        rows = []
        for i in range(n):
            cc = ccs[(i * 7) % len(ccs)] if i % 3 else ccs[i % 5]   # a few countries get many
            per_country[cc] = per_country.get(cc, 0) + 1
            host = f"m{i}.{cc.lower()}.bench.example"
            rows.append({"name": f"{cc.lower()}{per_country[cc]}", "hostname": host,
                         "country": cc, "ipv4": f"10.{i // 250}.{i % 250}.1",
                         "http_url": f"http://{host}/", "status": "active",
                         "status_since": now, "created_at": now, "updated_at": now,
                         "source": f"bench:{i}"})
        conn.execute(mirrors.insert(), rows)
        ids = list(conn.execute(sa.select(mirrors.c.id)).scalars())
        conn.execute(mirror_health.insert(), [
            {"mirror_id": m, "last_probe_at": now, "last_ok_at": now,
             "last_sync_at": now - _dt.timedelta(hours=1), "ipv4_up": True} for m in ids])
    per_mirror = days * 86400 // interval
    with engine.begin() as conn:
        batch = []
        for k, m in enumerate(ids):
            for j in range(per_mirror):
                ok = (k + j) % 29 != 0
                batch.append({"mirror_id": m, "at": now - _dt.timedelta(seconds=interval * j),
                              "url": "http://x/TIME", "vantage": "", "ok": ok,
                              "sync_age": 3600 if ok else None, "total_ms": 80.0})
                if len(batch) >= 20000:
                    conn.execute(probe_results.insert(), batch)
                    batch = []
        if batch:
            conn.execute(probe_results.insert(), batch)
    engine.dispose()
    print(f"seeded {len(ids)} mirrors in {len(per_country)} countries, "
          f"{len(ids) * per_mirror} probe results", flush=True)
    return max(per_country, key=per_country.get)


class Client:
    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> tuple[float, bytes]:
        t = time.perf_counter()
        with self.opener.open(self.base + path, timeout=120) as r:
            body = r.read()
        return time.perf_counter() - t, body

    def login(self, user: str) -> None:
        _t, page = self.get("/admin/login")
        token = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()
        data = urllib.parse.urlencode({"csrf": token, "username": user, "password": PASSWORD,
                                       "next": "/admin/"}).encode()
        self.opener.open(self.base + "/admin/login", data=data, timeout=60).read()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirrors", type=int, default=1000)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--interval", type=int, default=300)
    ap.add_argument("--requests", type=int, default=11)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        db = f"sqlite:///{d}/bench.sqlite"
        t = time.perf_counter()
        busiest = seed(db, args.mirrors, args.days, args.interval)
        print(f"seeding took {time.perf_counter() - t:.0f} s", flush=True)
        cfg = Path(d) / "bench.toml"
        cfg.write_text(f'[database]\nurl = "{db}"\n[probes]\nallow_private = true\n'
                       f"interval = {args.interval}\n[admin]\nmetrics = false\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "admin.web.devserver", "--config", str(cfg), "--quiet",
             "--create-user", "bench:admin"], cwd=ROOT, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "MIRRORDNS_DEV_PASSWORD": PASSWORD})
        try:
            port = int(proc.stdout.readline().split()[1])
            c = Client(f"http://127.0.0.1:{port}")
            c.login("bench")
            stalls: list[float] = []
            done = threading.Event()

            def poll():
                other = Client(c.base)
                while not done.is_set():
                    stalls.append(other.get("/static/style.css")[0])
                    time.sleep(0.02)

            watcher = threading.Thread(target=poll)
            watcher.start()
            cold, body = c.get("/admin/network")
            done.set()
            watcher.join()
            print(f"/admin/network cold: {cold * 1000:.0f} ms ({len(body) // 1024} KiB); "
                  f"stylesheet meanwhile: {len(stalls)} answers, median "
                  f"{statistics.median(stalls) * 1000:.1f} ms, slowest "
                  f"{max(stalls) * 1000:.1f} ms", flush=True)
            for path in ("/admin/network", "/", "/status", f"/country/{busiest.lower()}",
                         "/admin/"):
                times, size = [], 0
                for _ in range(args.requests):
                    dt, body = c.get(path)
                    times.append(dt)
                    size = len(body)
                print(f"{path:16} first {times[0] * 1000:6.0f} ms, median of the next "
                      f"{len(times) - 1}: {statistics.median(times[1:]) * 1000:6.0f} ms, "
                      f"{size // 1024} KiB", flush=True)
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
