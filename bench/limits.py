#!/usr/bin/env python3
"""Benchmarks of the DNS server's limits: TCP (memory under slow readers, UDP latency with
thousands of connections held) and response rate limiting (a flood from one /24).

    python bench/limits.py tcp        (make bench-tcp)
    python bench/limits.py rrl        (make bench-rrl)

Each run starts `python -m dnsd.worker` (the DNS server alone) on the bench/dns zone, table and
geo database, pinned to core 0, and drives it from this process pinned to core 1, with the load
generator of bench/dnsload.py. The TCP scenarios run against gdnsd too (the reference of
bench/dns.sh, on the same names as static records, one UDP and one TCP thread, 4,096 TCP clients
allowed), when it is installed. Figures are printed as one JSON object per scenario and a summary;
docs/benchmarks.md has the latest ones. Run under `flock /tmp/mirrordns-bench.lock` on a shared
machine. Environment: BENCH_LIMITS_PORT (default 15340), BENCH_LIMITS_KEEP=1 keeps the temp dir.

tcp, scenario "slow readers": 10 connections pipeline 4.7 MB of queries for a 1.5 kB TXT answer
between them and never read; the server's peak RSS growth (VmHWM after resetting it) is the
figure; the bar is under 20 MB. Scenario "held": 2,000 connections from 40 loopback addresses,
each having asked one query, stay open while UDP queries are paced at 2,000 q/s; UDP p99 is the
figure (bar: under 2 ms), next to the same run with no connection held, and fresh TCP queries
made meanwhile must be answered (the truncation fallback works).

rrl: rrl_rate = 50, slip 2. A flood at 20,000 q/s from 40 addresses of one /24 (its own process,
counting the replies it gets) while other clients (20 other /24s, 25 q/s each, under the limit)
are paced for 10 s; the flood's full answers per second (bar: no more than the rate, plus the
first second's burst) and the other clients' p99 (bar: under 2 ms), next to the same clients
alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.dnsload import TcpHolders, queries, run_paced

HERE = ROOT / "bench" / "dns"
ZONE = "mirrors.example.org"
PY = sys.executable
BIG = "big"                                  # a TXT answer of about 1.5 kB, added to the zone


def log(msg: str) -> None:
    print(f"bench/limits.py: {msg}", file=sys.stderr, flush=True)


class Server:
    """dnsd.worker on a fresh copy of the bench zone and table, pinned to core 0."""

    def __init__(self, work: Path, port: int, dns_extra: str):
        self.work, self.port = work, port
        zone = (HERE / "mirrordns.zone").read_text()
        chunk = "x" * 250
        zone += f'{BIG} 300 TXT ' + " ".join(f'"{chunk}"' for _ in range(6)) + "\n"
        (work / "mirrordns.zone").write_text(zone)
        if not (work / "geo.mmdb").exists():
            subprocess.run([PY, str(HERE / "make_mmdb.py"), str(work / "geo.mmdb")], check=True)
        toml = (HERE / "mirrordns.toml").read_text().replace("@PERF@", str(work)).replace(
            "@PORT@", str(port)).replace("@WORKERS@", "1")
        toml = toml.replace("[geoip]", dns_extra.strip() + "\n\n[geoip]")
        (work / "mirrordns.toml").write_text(toml)
        db = work / "mirrordns.sqlite"
        if db.exists():
            db.unlink()
        subprocess.run([PY, str(HERE / "setup_db.py"), str(work / "mirrordns.toml")], check=True,
                       capture_output=True)
        self.proc = None

    def __enter__(self):
        cmd = [PY, "-m", "dnsd.worker", "--config", str(self.work / "mirrordns.toml"), "--ready"]
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", "0"] + cmd
        self.err = open(self.work / "server.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.err,
                                     start_new_session=True)
        line = self.proc.stdout.readline().strip()
        if line != b"ready":
            raise SystemExit(f"the server did not start: see {self.work / 'server.log'}")
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mb(self, field: str = "VmRSS") -> float:
        for line in open(f"/proc/{self.pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def reset_peak(self) -> None:
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")                          # VmHWM := VmRSS (Linux)

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.err.close()


class Gdnsd(Server):
    """gdnsd 3 (the speed reference of bench/dns.sh) on the same names as static records: de with
    both DE mirrors, the big TXT; one UDP and one TCP thread, pinned to core 0."""

    def __init__(self, work: Path, port: int, tcp_clients: int, tcp_timeout: int):
        self.work, self.port = work / "gdnsd", port
        shutil.rmtree(self.work, ignore_errors=True)
        (self.work / "zones").mkdir(parents=True)
        for d in ("run", "state"):
            (self.work / d).mkdir()
        chunk = "x" * 250
        (self.work / "zones" / ZONE).write_text(
            "$TTL 3600\n@ SOA ns1 hostmaster ( 1 3600 600 604800 60 )\n@ NS ns1\n"
            "ns1 A 127.0.0.1\nde 60 A 127.10.1.1\nde 60 A 127.10.1.2\n"
            f"{BIG} 300 TXT " + " ".join(f'"{chunk}"' for _ in range(6)) + "\n")
        (self.work / "config").write_text(
            "options => {\n"
            f"  listen => [ 127.0.0.1:{port} ]\n"
            "  udp_threads => 1\n  tcp_threads => 1\n"
            f"  tcp_clients_per_thread => {tcp_clients}\n  tcp_timeout => {tcp_timeout}\n"
            f"  run_dir => {self.work}/run\n  state_dir => {self.work}/state\n}}\n")
        self.proc = None

    def __enter__(self):
        cmd = ["gdnsd", "-c", str(self.work), "start"]
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", "0"] + cmd
        self.err = open(self.work / "server.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=self.err, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        import dns.message
        import dns.query

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                dns.query.udp(dns.message.make_query(f"de.{ZONE}", "A"), "127.0.0.1",
                              port=self.port, timeout=0.5)
                return self
            except Exception:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        raise SystemExit(f"gdnsd did not start: see {self.work / 'server.log'}")


def frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def slow_readers(srv: Server, conns: int = 10, total_bytes: int = 4_700_000,
                 push_seconds: float = 5.0) -> dict:
    """Pipeline `total_bytes` of queries over `conns` connections that never read."""
    import dns.message

    q = dns.message.make_query(f"{BIG}.{ZONE}", "TXT").to_wire()
    per_conn = total_bytes // conns
    data = frame(q) * (per_conn // (len(q) + 2) + 1)
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=3) for _ in range(conns)]
    for s in socks:
        s.setblocking(False)
    offs = [0] * conns                           # bytes each connection took
    done = [False] * conns                       # all sent, or reset by the server
    time.sleep(0.2)
    before = srv.rss_mb()
    srv.reset_peak()
    deadline = time.monotonic() + push_seconds
    peak = before
    cut = 0                                      # connections the server reset meanwhile
    while time.monotonic() < deadline and not all(done):
        for i, s in enumerate(socks):
            if done[i]:
                continue
            try:
                offs[i] += s.send(data[offs[i]:offs[i] + 65536])
                done[i] = offs[i] >= len(data)
            except BlockingIOError:
                pass
            except OSError:
                cut += 1
                done[i] = True
        peak = max(peak, srv.rss_mb())
        time.sleep(0.005)
    sent = sum(offs)
    hwm = srv.rss_mb("VmHWM")
    # the idle timeout (5 s here, gdnsd's shortest) ends the connections
    time.sleep(6.5)
    reset = 0
    for s in socks:
        try:
            s.setblocking(True)
            s.settimeout(1)
            while s.recv(65536):
                pass
        except (ConnectionResetError, OSError):
            reset += 1
        s.close()
    after = srv.rss_mb()
    return {"scenario": "slow readers", "connections": conns,
            "bytes_offered": len(data) * conns, "bytes_the_server_took": sent,
            "rss_before_mb": round(before, 1), "rss_peak_mb": round(max(peak, hwm), 1),
            "rss_growth_mb": round(max(peak, hwm) - before, 1), "bar_mb": 20,
            "connections_reset_while_pushing": cut,
            "connections_ended_by_server": reset, "rss_after_mb": round(after, 1)}


def udp_latency(srv: Server, rate: float, seconds: float, name: str = f"de.{ZONE}") -> dict:
    res = run_paced(queries(name, "A", 65536), ("127.0.0.1", srv.port), rate, seconds)
    return {"sent": res.sent, "answered": res.answered, "p50_ms": _r(res.latency_ms(0.5)),
            "p99_ms": _r(res.latency_ms(0.99)), "max_ms": _r(res.latency_ms(1.0))}


def _r(v):
    return None if v is None else round(v, 3)


def fresh_tcp(port: int, n: int) -> dict:
    import dns.message
    import dns.query

    ok = 0
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            r = dns.query.tcp(dns.message.make_query(f"de.{ZONE}", "A"), "127.0.0.1", port=port,
                              timeout=2)
            ok += bool(r.answer)
            lat.append(time.perf_counter() - t0)
        except (OSError, dns.exception.DNSException):
            pass
    lat.sort()
    return {"fresh_tcp_queries": n, "answered": ok,
            "p99_ms": _r(lat[int(len(lat) * 0.99) - 1] * 1000) if lat else None}


def held(srv: Server, count: int = 2000, rate: float = 2000, seconds: float = 10) -> dict:
    import dns.message

    base = udp_latency(srv, rate, seconds)
    sources = [f"127.0.50.{i}" for i in range(1, 41)]
    q = dns.message.make_query(f"de.{ZONE}", "A").to_wire()
    rss0 = srv.rss_mb()
    with TcpHolders(("127.0.0.1", srv.port), count, frame(q), timeout=5, sources=sources) as h:
        time.sleep(1.0)
        established = _established(srv.port)
        rss1 = srv.rss_mb()
        loaded = udp_latency(srv, rate, seconds)
        fresh = fresh_tcp(srv.port, 100)
        closed = h.closed()
    return {"scenario": "held connections", "held": count, "refused": h.refused,
            "established_at_server": established, "closed_by_server_meanwhile": closed,
            "rss_before_mb": round(rss0, 1), "rss_held_mb": round(rss1, 1),
            "kb_per_connection": round((rss1 - rss0) * 1024 / max(1, count), 1),
            "udp_rate": rate, "udp_without": base, "udp_with": loaded, "bar_p99_ms": 2,
            "fresh_tcp": fresh}


def _established(port: int) -> int | None:
    if not shutil.which("ss"):
        return None
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True).stdout
    return len(out.splitlines())


def flood(port: int, rate: float, seconds: float, sources: list[str]) -> dict:
    """Send `rate` queries a second from `sources` for `seconds`, a millisecond's worth at a
    time, reading replies only to count them (full answers, truncated): a flooder, not a client."""
    import dns.message

    wire = dns.message.make_query(f"de.{ZONE}", "A", use_edns=0).to_wire()
    socks = []
    for src in sources:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    sent = 0
    got = {"full": 0, "tc": 0}

    def drain():
        for s in socks:
            while True:
                try:
                    data = s.recv(4096)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                got["tc" if data[2] & 0x02 else "full"] += 1

    t0 = time.perf_counter()
    while True:
        el = time.perf_counter() - t0
        if el >= seconds:
            break
        due = int(el * rate)
        while sent < due:
            try:
                socks[sent % len(socks)].send(wire)
            except (BlockingIOError, ConnectionRefusedError):
                pass
            sent += 1
        drain()
        time.sleep(0.0005)
    time.sleep(0.5)
    drain()
    for s in socks:
        s.close()
    answers, truncated = got["full"], got["tc"]
    return {"sent": sent, "seconds": seconds, "full_answers": answers, "truncated": truncated}


def rrl(srv: Server, rate_limit: float, flood_rate: float = 20000, probe_rate: float = 500,
        seconds: float = 10) -> dict:
    """The flood (a separate process) from 40 addresses of 127.0.60.0/24; the other clients
    from 20 other /24s at probe_rate / 20 each, under the limit as a real resolver of one
    prefix would be, paced by bench/dnsload.py in this process."""
    probe_srcs = [f"127.0.{61 + j}.1" for j in range(20)]
    pk = queries(f"de.{ZONE}", "A", 65536)
    alone = run_paced(pk, ("127.0.0.1", srv.port), probe_rate, seconds, sources=probe_srcs)
    fl = subprocess.Popen([PY, __file__, "flood", "--port", str(srv.port), "--rate",
                           str(flood_rate), "--seconds", str(seconds + 1)],
                          stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)                            # the flood is on: measure the others meanwhile
    res = run_paced(pk, ("127.0.0.1", srv.port), probe_rate, seconds, sources=probe_srcs)
    f = json.loads(fl.communicate(timeout=seconds + 30)[0])
    return {"scenario": "rrl flood", "rrl_rate": rate_limit,
            "flood_sent": f["sent"], "flood_seconds": f["seconds"],
            "flood_rate": round(f["sent"] / f["seconds"]),
            "flood_full_answers": f["full_answers"],
            "flood_full_answers_per_s": round(f["full_answers"] / f["seconds"], 1),
            "flood_truncated": f["truncated"], "bar_answers_per_s": rate_limit,
            "others_sent": res.sent, "others_answered": res.answered,
            "others_truncated": res.truncated, "others_p50_ms": _r(res.latency_ms(0.5)),
            "others_p99_ms": _r(res.latency_ms(0.99)),
            "others_alone_p99_ms": _r(alone.latency_ms(0.99)), "bar_p99_ms": 2,
            "others_behind": res.behind}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench/limits.py", description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["tcp", "rrl", "flood"])
    ap.add_argument("--port", type=int)
    ap.add_argument("--rate", type=float)
    ap.add_argument("--seconds", type=float)
    args = ap.parse_args(argv)
    if args.what == "flood":                  # the flooder of `rrl`, as its own process
        if shutil.which("taskset"):
            os.sched_setaffinity(0, {1} if os.cpu_count() > 1 else {0})
        print(json.dumps(flood(args.port, args.rate, args.seconds,
                               [f"127.0.60.{i}" for i in range(1, 41)])))
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {1} if os.cpu_count() > 1 else {0})
    port = int(os.environ.get("BENCH_LIMITS_PORT", "15340"))
    work = Path(tempfile.mkdtemp(prefix="mirrordns-bench-limits."))
    out = []
    try:
        if args.what == "tcp":
            gdnsd = shutil.which("gdnsd") is not None
            extra = ("tcp_idle_timeout = 5.0\ntcp_max_connections = 4096\n"
                     "snapshot_dir = \"\"")
            with Server(work, port, extra) as srv:
                log(f"slow readers (server pid {srv.pid})")
                out.append({"server": "mirrordns", **slow_readers(srv)})
            if gdnsd:
                with Gdnsd(work, port, 4096, 5) as srv:
                    log("slow readers, gdnsd")
                    out.append({"server": "gdnsd", **slow_readers(srv)})
            extra = ("tcp_idle_timeout = 120.0\ntcp_max_connections = 4096\n"
                     "snapshot_dir = \"\"")
            with Server(work, port, extra) as srv:
                log("2,000 held connections")
                out.append({"server": "mirrordns", **held(srv)})
            if gdnsd:
                with Gdnsd(work, port, 4096, 120) as srv:
                    log("2,000 held connections, gdnsd")
                    out.append({"server": "gdnsd", **held(srv)})
        else:
            with Server(work, port, "rrl_rate = 50\nrrl_slip = 2\nsnapshot_dir = \"\"") as srv:
                log("a 20,000 q/s flood from one /24")
                out.append(rrl(srv, 50))
    finally:
        if os.environ.get("BENCH_LIMITS_KEEP"):
            log(f"work files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    for o in out:
        print(json.dumps(o))
    return 0


if __name__ == "__main__":
    sys.exit(main())
