#!/usr/bin/env python3
"""Benchmark of the probe loop: one full cycle over N simulated mirrors on loopback.

    .venv/bin/python bench/probes.py                      # 5,000 mirrors, Twisted's Agent (shipped)
    .venv/bin/python bench/probes.py --mirrors 1000 --client requests   # the alternative, compared

A child process serves every mirror: one tiny HTTP/1.1 responder (a raw Twisted protocol, so the
server costs little CPU) listening on `--addresses` loopback addresses 127.0.10.x. Mirror i is
reached at one of those addresses with Host m<i>.bench; 5% of the mirrors never answer (i % 20 == 0:
each costs one full timeout), 5% drip their body over ~2 s (i % 20 == 1), the rest answer at once.

The parent runs the real loop: ProbeService.run_cycle() on a real SQLite table with the real DB pool
(every result recorded, verdicts applied, batched), with `interval` = 1 s so the cycle measures
capacity rather than the deliberate spreading (in production the cycle is spread over `interval`).
It prints the cycle time and the peak resident memory of the probing process (and of the server).
Target: 5,000 mirrors in under 60 s with under 300 MB on the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# --- the server (child process) -------------------------------------------------------------------

def serve(addresses: int, drip_seconds: float) -> None:
    from twisted.internet import protocol, reactor

    stamp = int(time.time()) - 600

    class Mirror(protocol.Protocol):
        buf = b""

        def dataReceived(self, data):
            self.buf += data
            if b"\r\n\r\n" not in self.buf:
                return
            host = b""
            target = self.buf.split(b" ", 2)[1] if self.buf.count(b" ") >= 2 else b""
            for line in self.buf.split(b"\r\n"):
                if line[:5].lower() == b"host:":
                    host = line[5:].strip().split(b".")[0]
                    break
            self.buf = b""
            digits = bytes(c for c in host if 48 <= c <= 57)
            kind = int(digits) % 20 if digits else 2
            body = b"%d\n" % stamp
            if kind == 0:
                return                                   # hang: never answer
            if not target.endswith(b"/TIME"):            # the content check's random path
                self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                                     b"Connection: close\r\n\r\n")
                self.transport.loseConnection()
                return
            if kind == 1:                                # drip: headers, then a byte at a time
                body = body[:-1] + b"    \n"
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                                     b"Connection: close\r\n\r\n" % len(body))
                step = drip_seconds / len(body)
                for n, ch in enumerate(body):
                    reactor.callLater(step * (n + 1), self._write, bytes([ch]))
                reactor.callLater(step * (len(body) + 1), self.transport.loseConnection)
                return
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close"
                                 b"\r\n\r\n%s" % (len(body), body))
            self.transport.loseConnection()

        def _write(self, b):
            if self.transport.connected:
                self.transport.write(b)

    f = protocol.Factory.forProtocol(Mirror)
    ports = {}
    for i in range(addresses):
        addr = f"127.0.10.{i + 1}"
        ports[addr] = reactor.listenTCP(0, f, interface=addr, backlog=1024).getHost().port
    print(json.dumps(ports), flush=True)

    def report_rss():
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(json.dumps({"rss_mb": rss}), flush=True)

    reactor.callLater(0, lambda: None)
    stdin_reader = threading.Thread(target=lambda: (sys.stdin.read(), reactor.callFromThread(
        lambda: (report_rss(), reactor.stop()))), daemon=True)
    stdin_reader.start()
    reactor.run()


# --- the alternative client: requests on a thread pool of its own ---------------------------------

class RequestsProber:
    """The same fetches as probes.probe.Prober, made with `requests` on a dedicated ThreadPool (one
    Session per thread, timeout=(connect, read) on every call). Kept here only for the comparison."""

    def __init__(self, cfg, reactor, threads: int):
        from twisted.python.threadpool import ThreadPool

        from probes.probe import Prober

        self.cfg, self.reactor = cfg, reactor
        self.summary = Prober(cfg, reactor)
        self.pool = ThreadPool(minthreads=threads, maxthreads=threads, name="requests-probes")
        self.pool.start()
        self.local = threading.local()
        reactor.addSystemEventTrigger("during", "shutdown", self.pool.stop)

    def probe(self, t):
        from twisted.internet import threads

        return threads.deferToThreadPool(self.reactor, self.pool, self._probe, t)

    def _session(self):
        import requests

        s = getattr(self.local, "s", None)
        if s is None:
            s = self.local.s = requests.Session()
        return s

    def _fetch(self, url, address, host, deadline):
        from dataclasses import replace
        from urllib.parse import urlsplit, urlunsplit

        import requests

        from probes.probe import Fetch, parse_timestamp

        p = self.cfg.probes
        u = urlsplit(url)
        direct = urlunsplit((u.scheme, f"{address}:{u.port}", u.path, "", ""))
        f = Fetch(url=url, host=host, address=address, family=4)
        start = time.time()
        try:
            r = self._session().get(direct, headers={"Host": host, "User-Agent": p.user_agent},
                                    timeout=(p.connect_timeout, max(0.1, deadline - start)),
                                    allow_redirects=False, stream=True)
            ttfb = (time.time() - start) * 1000
            body = b""
            for chunk in r.iter_content(1024):
                body += chunk
                if len(body) > p.max_body:
                    raise ValueError("too-large")
                if time.time() > deadline:
                    raise requests.Timeout("deadline")
            r.close()
        except requests.Timeout:
            return replace(f, error_class="timeout", error="timeout")
        except Exception as e:
            return replace(f, error_class="error", error=str(e)[:100])
        ts = parse_timestamp(body)
        return replace(f, status=r.status_code, ttfb_ms=ttfb, total_ms=(time.time() - start) * 1000,
                       timestamp=ts, error_class="" if ts and r.status_code == 200 else "no-timestamp")

    def _probe(self, t):
        start = self.reactor.seconds()
        deadline = time.time() + self.cfg.probes.timeout
        url = self.summary.timestamp_url(t.http_url)
        own = url.split("/")[2].split(":")[0]
        host_port = url.split("/")[2].split(":")[1]
        runs = [self._fetch(url, t.ipv4, f"{own}:{host_port}", deadline)]
        if runs[0].ok:
            runs += [self._fetch(url, t.ipv4, f"{n}:{host_port}", deadline) for n in t.names]
        return self.summary._summarise(t, start, [("http", url, t.ipv4, 4)], [runs], t.ipv4,
                                       None)


# --- the benchmark (parent) ----------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirrors", type=int, default=5000)
    ap.add_argument("--addresses", type=int, default=50)
    ap.add_argument("--client", choices=("twisted", "requests"), default="twisted")
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=15.0)
    ap.add_argument("--drip", type=float, default=2.0, help="seconds a slow mirror takes")
    ap.add_argument("--verbose", action="store_true", help="print one error of each class")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve(a.addresses, a.drip)
        return 0

    server = subprocess.Popen([sys.executable, __file__, "--serve", "--addresses", str(a.addresses),
                               "--drip", str(a.drip)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ports = json.loads(server.stdout.readline())
        result = run_cycle(a, ports)
    finally:
        server_rss = None
        try:
            server.stdin.close()
            line = server.stdout.readline()
            server_rss = json.loads(line)["rss_mb"] if line else None
            server.wait(timeout=10)
        except Exception:
            server.kill()
    result["server_rss_mb"] = server_rss
    print(f"probe cycle: {result['mirrors']} mirrors ({result['hanging']} hanging, {result['slow']} "
          f"slow) with {a.client}, concurrency {a.concurrency}, timeout {a.timeout:g} s")
    print(f"  one full cycle      {result['cycle_s']:.1f} s   (target < 60 s)")
    print(f"  peak RSS (probes)   {result['rss_mb']} MB   (target < 300 MB; server process "
          f"{server_rss} MB)")
    print(f"  CPU (probes)        {result['cpu_s']:.1f} s user+system")
    print(f"  verdicts            {result['passed']} passed, {result['failed']} failed "
          f"({result['by_class']})")
    print(json.dumps(result))
    return 0


def run_cycle(a, ports: dict) -> dict:
    import sqlalchemy as sa
    from twisted.internet import defer, reactor, task

    from dnsd.config import Config, DatabaseConfig, ProbesConfig
    from dnsd.db import DBPool, make_engine, upgrade
    from dnsd.models import ACTIVE, mirror_health, mirrors
    from probes.service import ProbeService

    tmp = tempfile.mkdtemp(prefix="bench-probes-")
    url = f"sqlite:///{tmp}/bench.sqlite"
    engine = make_engine(url)
    upgrade(engine)
    addrs = sorted(ports)
    rows = []
    for i in range(a.mirrors):
        addr = addrs[i % len(addrs)]
        rows.append({"name": f"de{i}", "hostname": f"m{i}.bench", "country": "DE", "ipv4": addr,
                         "http_url": f"http://m{i}.bench:{ports[addr]}/", "status": ACTIVE})
    with engine.begin() as c:
        c.execute(mirrors.insert(), rows)
    cfg = Config(database=DatabaseConfig(url=url),
                 probes=ProbesConfig(interval=1, timeout=a.timeout, connect_timeout=5,
                                     allow_private=True, concurrency=a.concurrency))
    pool = DBPool(engine, reactor, 2)
    prober = RequestsProber(cfg, reactor, a.concurrency) if a.client == "requests" else None
    svc = ProbeService(cfg, pool, reactor, prober=prober)
    out = {}

    async def go(_reactor):
        t0, c0 = time.monotonic(), os.times()
        await svc.run_cycle()
        c1 = os.times()
        out["cycle_s"] = time.monotonic() - t0
        out["cpu_s"] = (c1.user - c0.user) + (c1.system - c0.system)
        pool.stop()

    try:
        task.react(lambda r: defer.ensureDeferred(go(r)))
    except SystemExit:
        pass
    with engine.connect() as c:
        h = c.execute(sa.select(mirror_health.c.failures_in_row, mirror_health.c.last_error)).all()
    by_class: dict[str, int] = {}
    samples: dict[str, str] = {}
    for f, err in h:
        if f:
            k = (err or "?").split(":", 1)[0]
            by_class[k] = by_class.get(k, 0) + 1
            samples.setdefault(k, err)
    if a.verbose:
        for k, err in samples.items():
            print(f"  e.g. {err}", file=sys.stderr)
    return {"mirrors": a.mirrors, "hanging": len(range(0, a.mirrors, 20)),
                "slow": len(range(1, a.mirrors, 20)), "client": a.client, "cycle_s": round(out["cycle_s"], 2),
                "cpu_s": round(out["cpu_s"], 1),
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                "passed": sum(1 for f, _ in h if not f), "failed": sum(1 for f, _ in h if f),
                "by_class": by_class}


if __name__ == "__main__":
    sys.exit(main())
