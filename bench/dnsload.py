#!/usr/bin/env python3
"""Paced DNS load from Python: pre-built queries sent at a fixed rate, replies matched by ID.

dnsperf replays a file of queries and cannot vary an EDNS option per query, so benchmarks that
need a fresh ECS subnet per query, many source addresses or TCP connections held open use this.
It is a small library first (used by bench/dns.sh, meant for any benchmark of the DNS server) and a
command second:

    python bench/dnsload.py --server 127.0.0.1:15302 --rate 15000 --duration 10 \\
        --name www.mirrors.example.org --mix fresh24 --pid 12345

    from bench.dnsload import ecs_queries, run_paced
    packets = ecs_queries("www.example.org", "A", fresh_v4_subnets(150_000, 24))
    result = run_paced(packets, ("127.0.0.1", 53), rate=15_000, duration=10)
    print(result.sent, result.answered, result.latency_ms(0.99))

How it works: every packet is built before the clock starts (a template from dnspython, then the
ID and the ECS address spliced in as bytes), so sending costs one `sendto`. The sender keeps to
the schedule `t0 + i / rate` by spinning on `epoll.poll(0)` between sends (the load generator owns
its core; sleeping would send in millisecond bursts instead of a steady stream), reading replies as
they arrive. A reply is matched to its query by the 16-bit ID (packet i carries ID i % 65536), so a
reply later than 65536 queries (4.4 s at 15,000 q/s) counts as lost. After the last send it waits
`grace` seconds for stragglers. Latencies are client-side, from just before `sendto` to just after
`recvfrom`.

Sources: `sources=["127.0.5.1", "127.0.5.2", ...]` binds one socket per local address (anything in
127.0.0.0/8 works on Linux loopback) and sends packet i from socket i % len(sources): a flood from
many resolver addresses or prefixes, for rate limiting. `TcpHolders` opens connections and keeps them
open (optionally with a partial query), for connection limits. `cpu_seconds(pids)` reads a server's
CPU time from /proc, so a run can report CPU per answered query.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import select
import socket
import struct
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["Result", "SourceResult", "run_paced", "queries", "ecs_queries", "fresh_v4_subnets",
           "fresh_v6_subnets", "TcpHolders", "cpu_seconds"]


# --- packets ---------------------------------------------------------------------------------------

def _template(name: str, qtype: str, ecs: tuple[int, int] | None, payload: int = 1232) -> bytes:
    """Wire form of one query (ID 0, RD clear); with `ecs` = (family, prefix), an ECS option whose
    address bytes are the message's last bytes (zeroed here, spliced in by ecs_queries)."""
    import dns.edns
    import dns.message

    if ecs is None:
        q = dns.message.make_query(name, qtype, use_edns=0, payload=payload)
    else:
        fam, prefix = ecs
        addr = "0.0.0.0" if fam == 4 else "::"
        q = dns.message.make_query(name, qtype, use_edns=0, payload=payload,
                                   options=[dns.edns.ECSOption(addr, prefix)])
    q.id = 0
    q.flags = 0
    return q.to_wire()


def queries(name: str, qtype: str = "A", count: int = 65536, edns: bool = True) -> list[bytes]:
    """`count` copies of one query, IDs 0, 1, 2, ... (mod 65536)."""
    import dns.message

    if edns:
        t = _template(name, qtype, None)
    else:
        q = dns.message.make_query(name, qtype)
        q.id, q.flags = 0, 0
        t = q.to_wire()
    body = t[2:]
    return [struct.pack("!H", i & 0xFFFF) + body for i in range(count)]


def ecs_queries(name: str, qtype: str, subnets: list[tuple[int, bytes]], prefix: int) -> list[bytes]:
    """One query per subnet, each with its own ECS option. `subnets` are (family 4|6, address
    bytes) as made by fresh_v4_subnets / fresh_v6_subnets (the address truncated to `prefix`)."""
    if not subnets:
        return []
    fam = subnets[0][0]
    n = (prefix + 7) // 8
    t = _template(name, qtype, (fam, prefix))
    body = t[2:len(t) - n]
    out = []
    for i, (f, addr) in enumerate(subnets):
        if f != fam or len(addr) != n:
            raise ValueError("every subnet must have the family and prefix of the first")
        out.append(struct.pack("!H", i & 0xFFFF) + body + addr)
    return out


def _truncate(addr: bytes, prefix: int) -> bytes:
    n = (prefix + 7) // 8
    b = bytearray(addr[:n])
    if prefix % 8:
        b[-1] &= 0xFF << (8 - prefix % 8) & 0xFF
    return bytes(b)


_V4_SKIP = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.168.0.0/16", "198.18.0.0/15")]


def fresh_v4_subnets(count: int, prefix: int = 24, seed: int = 1) -> list[tuple[int, bytes]]:
    """`count` distinct random IPv4 /prefix networks in public unicast space (1.0.0.0 to
    223.255.255.255 without private, loopback, shared and benchmark ranges)."""
    rng = random.Random(seed)
    skip = [(int(n.network_address), int(n.broadcast_address)) for n in _V4_SKIP]
    seen: set[int] = set()
    out = []
    shift = 32 - prefix
    while len(out) < count:
        a = rng.randrange(1 << 24, 224 << 24) >> shift << shift
        if a in seen or any(lo <= a <= hi for lo, hi in skip):
            continue
        seen.add(a)
        out.append((4, _truncate(a.to_bytes(4, "big"), prefix)))
    return out


# Where IPv6 clients are: the RIRs' large allocations (2001::/16 holds many smaller ones).
V6_POOLS = ("2001:200::/23", "2001:400::/23", "2001:600::/23", "2001:800::/22", "2001:c00::/23",
            "2400::/12", "2600::/12", "2800::/12", "2a00::/12", "2c00::/12")


def fresh_v6_subnets(count: int, prefix: int = 56, seed: int = 1,
                     pools: tuple[str, ...] = V6_POOLS) -> list[tuple[int, bytes]]:
    """`count` distinct random IPv6 /prefix networks inside `pools` (by default the RIRs' blocks,
    where a geo database has data), each pool equally likely."""
    rng = random.Random(seed)
    nets = [ipaddress.ip_network(p) for p in pools]
    seen: set[int] = set()
    out = []
    shift = 128 - prefix
    while len(out) < count:
        n = rng.choice(nets)
        a = (int(n.network_address) + rng.randrange(n.num_addresses)) >> shift << shift
        if a in seen:
            continue
        seen.add(a)
        out.append((6, _truncate(a.to_bytes(16, "big"), prefix)))
    return out


# --- the paced run ---------------------------------------------------------------------------------

@dataclass
class Result:
    """What one run saw. `latencies` are seconds, one per answered query, in arrival order."""

    sent: int = 0
    answered: int = 0
    seconds: float = 0.0                 # from the first send to the last
    client_cpu: float = 0.0              # this process's CPU seconds during the run
    behind: int = 0                      # sends made later than 1 ms after their slot
    latencies: array = field(default_factory=lambda: array("d"))
    rcodes: Counter = field(default_factory=Counter)
    truncated: int = 0
    unmatched: int = 0                   # replies with an ID nothing was waiting for
    by_source: dict = field(default_factory=dict)   # source address -> SourceResult

    @property
    def lost(self) -> int:
        return self.sent - self.answered

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def latency_ms(self, q: float) -> float | None:
        if not self.latencies:
            return None
        s = sorted(self.latencies)
        return s[min(len(s) - 1, max(0, int(len(s) * q + 0.5) - 1))] * 1000

    def summary(self) -> dict:
        return {"sent": self.sent, "answered": self.answered, "lost": self.lost,
                "seconds": round(self.seconds, 3), "rate": round(self.rate),
                "behind": self.behind, "client_cpu": round(self.client_cpu, 3),
                "p50_ms": _r(self.latency_ms(0.50)), "p99_ms": _r(self.latency_ms(0.99)),
                "max_ms": _r(self.latency_ms(1.0)), "rcodes": dict(self.rcodes),
                "truncated": self.truncated, "unmatched": self.unmatched}


def _r(v):
    return None if v is None else round(v, 3)


@dataclass
class SourceResult:
    """What the queries sent from one source address saw (run_paced with `sources`)."""

    sent: int = 0
    answered: int = 0
    truncated: int = 0
    latencies: array = field(default_factory=lambda: array("d"))

    def latency_ms(self, q: float) -> float | None:
        return Result.latency_ms(self, q)


PACINGS = ("steady", "poisson", "burst")


def schedule(total: int, rate: float, pacing: str = "steady", seed: int = 1) -> array:
    """Send time of each query, in seconds from the start."""
    if pacing == "steady":
        return array("d", (i / rate for i in range(total)))
    if pacing == "poisson":
        rng = random.Random(seed)
        out = array("d", bytes(8 * total))
        t = 0.0
        for i in range(total):
            out[i] = t
            t += rng.expovariate(rate)
        return out
    if pacing == "burst":
        return array("d", (int(i / rate * 1000) / 1000 for i in range(total)))
    raise ValueError(f"unknown pacing {pacing!r} (known: {', '.join(PACINGS)})")


def run_paced(packets: list[bytes], server: tuple[str, int], rate: float, duration: float,
              sources: list[str] | None = None, grace: float = 1.0,
              pacing: str = "steady", seed: int = 1, on_reply=None) -> Result:
    """Send `rate` queries a second for `duration` seconds (packets reused in order when there are
    fewer than rate * duration; they must carry IDs i % 65536 as the builders above make them).
    `pacing` is "steady" (evenly spaced), "poisson" (random gaps averaging 1 / rate, as
    independent clients would send) or "burst" (a millisecond's worth at once, every millisecond).
    `on_reply(data)`, if given, sees every reply (for checks; it costs the sender time)."""
    total = int(rate * duration)
    if not packets or total <= 0:
        raise ValueError("nothing to send")
    fam = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    socks = []
    for src in (sources or [None]):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        if src is not None:
            s.bind((src, 0))
        s.connect(server)
        s.setblocking(False)
        socks.append(s)
    ep = select.epoll()
    by_fd = {}
    res = Result()
    per = []                                 # SourceResult of each socket
    for s, src in zip(socks, sources or [None]):
        ep.register(s.fileno(), select.EPOLLIN)
        sr = res.by_source.setdefault(src or "", SourceResult())
        by_fd[s.fileno()] = (s, sr)
        per.append(sr)
    sent_at = array("d", bytes(8 * 65536))
    pending = bytearray(65536)
    lat = res.latencies
    rcodes = res.rcodes
    clock = time.perf_counter
    npk = len(packets)
    nsock = len(socks)
    sends = [s.send for s in socks]

    def drain(events):
        for fd, _ev in events:
            sock, sr = by_fd[fd]
            recv = sock.recv
            while True:
                try:
                    data = recv(65535)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    continue                # an ICMP error from an earlier send: keep reading
                now = clock()
                if len(data) < 4:
                    res.unmatched += 1
                    continue
                qid = data[0] << 8 | data[1]
                if not pending[qid]:
                    res.unmatched += 1
                    continue
                pending[qid] = 0
                res.answered += 1
                sr.answered += 1
                lat.append(now - sent_at[qid])
                sr.latencies.append(now - sent_at[qid])
                rcodes[data[3] & 0xF] += 1
                if data[2] & 0x02:
                    res.truncated += 1
                    sr.truncated += 1
                if on_reply is not None:
                    on_reply(data)

    offs = schedule(total, rate, pacing, seed)
    poll = ep.poll
    cpu0 = time.process_time()
    t0 = clock()
    i = 0
    try:
        while i < total:
            el = clock() - t0
            while i < total and offs[i] <= el:
                if el - offs[i] > 0.001:
                    res.behind += 1
                qid = i & 0xFFFF
                pending[qid] = 1             # an older query with this ID still pending: lost
                sent_at[qid] = clock()
                res.sent += 1
                per[i % nsock].sent += 1
                try:
                    sends[i % nsock](packets[i % npk])
                except (BlockingIOError, ConnectionRefusedError):
                    pending[qid] = 0         # the socket buffer was full: counted as lost
                i += 1
            if i < total:
                wait = offs[i] - (clock() - t0)
                drain(poll(wait if wait > 0.002 else 0))
        res.seconds = clock() - t0
        end = clock() + grace
        while res.answered < res.sent and clock() < end:
            drain(poll(min(0.05, max(0.0, end - clock()))))
    finally:
        res.client_cpu = time.process_time() - cpu0
        ep.close()
        for s in socks:
            s.close()
    return res


# --- around a run ------------------------------------------------------------------------------------

def cpu_seconds(pids) -> float:
    """CPU time of these processes, all their threads, in seconds: the scheduler's own count
    (`/proc/PID/task/TID/schedstat`, nanoseconds on the CPU) rather than utime + stime, which
    are sampled at the clock tick (for a server waking thousands of times a second they agree
    on average, but only on average). Threads that already exited are not counted."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total / 1e9


def cpu_ticks_seconds(pids) -> float:
    """utime + stime of these processes from /proc/PID/stat (tick-sampled; see cpu_seconds)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])     # utime, stime (fields 14, 15 of stat)
    return total / tick


class TcpHolders:
    """`count` TCP connections to `server` held open, each after sending `prefix` (b"" = nothing;
    b"\\x00" = half a length prefix, a query that never completes). `.closed()` counts how many
    the server has closed since. Use as a context manager; connections that fail to open are
    counted in `.refused`. With `sources`, connection i comes from local address
    sources[i % len(sources)] (a server may cap connections per client address)."""

    def __init__(self, server: tuple[str, int], count: int, prefix: bytes = b"",
                 timeout: float = 2.0, sources: list[str] | None = None):
        self.server, self.count, self.prefix, self.timeout = server, count, prefix, timeout
        self.sources = sources
        self.socks: list[socket.socket] = []
        self.refused = 0

    def __enter__(self):
        fam = socket.AF_INET6 if ":" in self.server[0] else socket.AF_INET
        for i in range(self.count):
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                if self.sources:
                    s.bind((self.sources[i % len(self.sources)], 0))
                s.connect(self.server)
                if self.prefix:
                    s.sendall(self.prefix)
            except OSError:
                self.refused += 1
                s.close()
                continue
            s.setblocking(False)
            self.socks.append(s)
        return self

    def closed(self) -> int:
        n = 0
        for s in self.socks:
            try:
                if s.recv(1, socket.MSG_PEEK) == b"":
                    n += 1
            except BlockingIOError:
                pass
            except OSError:
                n += 1
        return n

    def __exit__(self, *exc):
        for s in self.socks:
            s.close()
        self.socks = []


# --- the command ---------------------------------------------------------------------------------------

MIXES = ("fresh24", "fresh56", "repeat", "noecs")


def build_mix(mix: str, name: str, qtype: str, count: int, seed: int = 1,
              subnet: str = "192.0.2.0/24") -> list[bytes]:
    """The packets of one named mix: a fresh ECS /24 or /56 per query, one ECS subnet repeated
    (`subnet`), or no ECS (with EDNS)."""
    if mix == "fresh24":
        return ecs_queries(name, qtype, fresh_v4_subnets(count, 24, seed), 24)
    if mix == "fresh56":
        return ecs_queries(name, qtype, fresh_v6_subnets(count, 56, seed), 56)
    if mix == "repeat":
        net = ipaddress.ip_network(subnet)
        one = [(net.version, _truncate(net.network_address.packed, net.prefixlen))]
        return ecs_queries(name, qtype, one * min(count, 65536), net.prefixlen)
    if mix == "noecs":
        return queries(name, qtype, min(count, 65536))
    raise ValueError(f"unknown mix {mix!r} (known: {', '.join(MIXES)})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", required=True, help="HOST:PORT (IPv6: [ADDR]:PORT)")
    ap.add_argument("--rate", type=float, default=15000, help="queries per second")
    ap.add_argument("--duration", type=float, default=10, help="seconds of sending")
    ap.add_argument("--name", required=True, help="the name asked")
    ap.add_argument("--qtype", default="A")
    ap.add_argument("--mix", choices=MIXES, default="fresh24")
    ap.add_argument("--subnet", default="192.0.2.0/24", help="the ECS subnet of the repeat mix")
    ap.add_argument("--pacing", choices=PACINGS, default="steady")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--grace", type=float, default=1.0, help="seconds to wait for late replies")
    ap.add_argument("--source", action="append", default=None,
                    help="local address to send from (repeat for several; packets rotate)")
    ap.add_argument("--pid", type=int, action="append", default=[],
                    help="server process to read CPU time of (repeat for several)")
    args = ap.parse_args(argv)
    host, _, port = args.server.rpartition(":")
    host = host.strip("[]")
    packets = build_mix(args.mix, args.name, args.qtype, int(args.rate * args.duration), args.seed,
                        args.subnet)
    c0, k0 = cpu_seconds(args.pid), cpu_ticks_seconds(args.pid)
    res = run_paced(packets, (host, int(port)), args.rate, args.duration, args.source, args.grace,
                    args.pacing, args.seed)
    out = res.summary()
    out["mix"] = args.mix
    out["pacing"] = args.pacing
    if args.pid:
        cpu = cpu_seconds(args.pid) - c0
        out["server_cpu_ticks"] = round(cpu_ticks_seconds(args.pid) - k0, 3)
        out["server_cpu"] = round(cpu, 3)
        out["server_us_per_answer"] = round(cpu / res.answered * 1e6, 2) if res.answered else None
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
