"""The closer alone on a loopback port, for bench/closer (wrk drives it).

The plan is the real php.net mirror list of 2013 (tests/fixtures, 85 serving mirrors in 50
countries, given https URLs) plus two backups; the geo lookup is the real dnsd.geo over the test
mmdb, and the closer sits behind a trusted proxy (127.0.0.1), so each request goes through the
X-Forwarded-For rule, a geo lookup (cached per /24), the picker's tier for that country and a
weighted draw: the whole production path of `action=download`, minus TLS.

With DIST_FILES=n (environment) the closer also gets a [closer] dist_root of n empty files
(plus the files the benchmark asks for), so every redirect also looks the file up in the dist
index; the port is written once the first walk of that tree (on a worker thread) has finished.
DIST_REFRESH=s walks it again every s seconds during the run.

Usage: closer_server.py PORT_FILE  (writes the port it listens on to PORT_FILE when ready)
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from twisted.internet import reactor
from twisted.web import resource, server

from admin import closer
from admin.web.framework import WebContext
from dnsd import countries
from dnsd.config import parse_config
from dnsd.geo import GeoLocator
from dnsd.plan import build_plan, row
from tests.helpers import write_test_mmdb

FIXTURE = HERE.parent / "tests" / "fixtures" / "php-net-mirrors-2013-09-19.tsv"
NOW = _dt.datetime(2026, 11, 21, 9, 0, 0)
BENCH_FILES = ("httpd/httpd-2.4.66.tar.gz", "httpd/KEYS",
               "tomcat/tomcat-11/v11.0.0/bin/apache-tomcat-11.0.0.tar.gz")


class Holder:
    def __init__(self, plan):
        self.current = plan


def rows() -> list[dict]:
    out = []
    with FIXTURE.open(encoding="utf-8") as f:
        for i, r in enumerate(csv.DictReader(f, delimiter="\t"), start=1):
            c = countries.from_alpha3(r["country_alpha3"])
            if c is None or r["mirror_type"] != "MIRROR_STANDARD":
                continue
            host = r["hostname"]
            out.append(row(
                id=i, name=host.split(".")[0], hostname=host, country=c.alpha2,
                ipv4=f"192.0.2.{i % 250 + 1}",          # serving means the DNS can answer it
                https_url=f"https://{host}/dist/", http_url=f"http://{host}/dist/",
                status="active" if r["status"] == "MIRROR_OK" else "disabled-by-probes",
                last_probe_at=NOW, last_ok_at=NOW, last_sync_at=NOW - _dt.timedelta(hours=1),
            ))
    n = len(out) + 1000
    for j, host in enumerate(("backup1.example.org", "backup2.example.org")):
        out.append(row(id=n + j, hostname=host, country="US", backup=True,
                       ipv4=f"198.51.100.{j + 1}", https_url=f"https://{host}/dist/"))
    return out


def make_dist(top: Path, n: int) -> Path:
    """n empty files in folders of 500, plus the benchmark's own files."""
    dist = top / "dist"
    for i in range(n):
        d = dist / f"project{i // 500}"
        if i % 500 == 0:
            d.mkdir(parents=True)
        (d / f"release-{i}.tar.gz").touch()
    for f in BENCH_FILES:
        (dist / f).parent.mkdir(parents=True, exist_ok=True)
        (dist / f).touch()
    return dist


def main(port_file: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="closer-bench-"))
    reactor.addSystemEventTrigger("after", "shutdown", shutil.rmtree, work, True)
    n = int(os.environ.get("DIST_FILES", "0"))
    closer_cfg = ""
    if n:
        refresh = int(os.environ.get("DIST_REFRESH", "60"))
        closer_cfg = f'[closer]\ndist_root = "{make_dist(work, n)}"\ndist_refresh = {refresh}\n'
    cfg = parse_config('[admin]\ntrusted_proxies = ["127.0.0.1"]\n' + closer_cfg)
    plan = build_plan({"version": 1, "mirrors": rows()}, cfg, NOW)
    mmdb = work / "test.mmdb"
    write_test_mmdb(str(mmdb))
    ctx = WebContext(cfg=cfg, pool=None, reactor=reactor, plan=Holder(plan),
                     geo=GeoLocator(str(mmdb)))
    root = resource.Resource()
    pages = closer.mount(root, ctx)
    refresher = closer.refresher(root)
    site = server.Site(root)
    site.log = lambda request: None        # no access log in the measurement
    port = reactor.listenTCP(0, site, interface="127.0.0.1", backlog=1024)
    serving = sum(1 for e in plan.mirrors if e.serving and not e.backup)
    dist = pages.closer.dist
    t0 = time.monotonic()

    def ready(_=None):
        walked = (f", dist index of {dist.entries} paths walked in {time.monotonic() - t0:.2f} s"
                  if dist.root else "")
        Path(port_file).write_text(str(port.getHost().port))
        print(f"closer bench server: {serving} serving mirrors{walked}, port "
              f"{port.getHost().port}", flush=True)

    def start():
        refresher.startService()
        reactor.addSystemEventTrigger("before", "shutdown", refresher.stopService)
        if dist.root is None:
            ready()
        else:
            dist.refresh().addCallback(ready)

    reactor.callWhenRunning(start)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1])
