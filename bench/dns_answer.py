#!/usr/bin/env python3
"""The answer path alone, in process: microseconds per Answerer.answer() call for each query mix.

    .venv/bin/python bench/dns_answer.py            # GeoLite2 City, compiled index and geoip2
    .venv/bin/python bench/dns_answer.py --count 50000 --no-geoip2

No sockets, no reactor: the same five mirrors as bench/dns.sh, the bundled GeoLite2 City, and the
mixes of bench/dnsload.py (a fresh ECS /24 or /56 per query, one ECS subnet repeated, no ECS from
a fresh source address per query). Run once with the compiled geo index (what the DNS service
uses) and once with geoip2 alone (what the answer path did before the index, and still does until
the index is built). End-to-end CPU per query adds the socket calls and wakeups: bench/dns.sh.

The second table is the same mixes sent as BIND and Unbound send them once they know the server:
with a DNS COOKIE option (RFC 7873: a client cookie and the valid server cookie of that source
address) after the ECS option, to an Answerer with cookies on. `+cookie` runs `repeat`,
`fresh24` and `fresh56` from one resolver address; `noecs` sends from a fresh address per query
(each with its own server cookie).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dnsload import build_mix
from dnsd.answer import Answerer, compile_table
from dnsd.config import parse_config
from dnsd.cookies import CookieJar
from dnsd.geo import GeoLocator
from dnsd.plan import build_plan, row
from dnsd.zonefile import parse_zone

Z = "mirrors.example.org"
MIRRORS = [("de1", "DE", "127.10.1.1", 1.0), ("de2", "DE", "127.10.1.2", 1.0),
           ("fr1", "FR", "127.10.3.1", 1.0), ("us1", "US", "127.10.2.1", 3.0),
           ("us2", "US", "127.10.2.2", 1.0)]


COOKIE_KEY = bytes(range(16))
CLIENT_COOKIE = b"\x11" * 8


def answerer(geo: GeoLocator, cookies: bool = False) -> Answerer:
    cfg = parse_config(f'[dns]\nzone = "{Z}"\ngeo_name = "www"\nanswers = 2\nmin_candidates = 1\n')
    rows = [row(id=i, name=n, country=c, ipv4=ip, weight=w)
            for i, (n, c, ip, w) in enumerate(MIRRORS, 1)]
    plan = build_plan({"version": 1, "mirrors": rows}, cfg, dt.datetime.now(dt.UTC).replace(
        tzinfo=None))
    zone = parse_zone("@ SOA ns1 h 1 3600 600 604800 60\n@ NS ns1\nns1 A 127.0.0.1\n", Z)
    jar = CookieJar([COOKIE_KEY]) if cookies else None
    return Answerer(geo, compile_table(plan, zone, cfg, random.Random(1)), cookies=jar)


def with_cookie(packet: bytes, jar: CookieJar, src: str) -> bytes:
    """`packet` (whose last record is its OPT) with a COOKIE option appended: the client cookie
    and the server cookie `jar` gives `src` now, as a resolver sends once it has one."""
    server, _ = jar.respond(CLIENT_COOKIE, b"", src)
    opt = b"\x00\x0a" + (8 + len(server)).to_bytes(2, "big") + CLIENT_COOKIE + server
    qe = packet.index(b"\x00", 12) + 5                  # the OPT record starts here
    rdlen = int.from_bytes(packet[qe + 9:qe + 11], "big") + len(opt)
    return packet[:qe + 9] + rdlen.to_bytes(2, "big") + packet[qe + 11:] + opt


def run(a: Answerer, count: int, rounds: int = 1) -> dict[str, float]:
    """µs per answer for each mix: the fastest of `rounds` passes (on a shared machine the
    others measure the neighbours)."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for mix, us in run_once(a, count).items():
            best[mix] = min(us, best.get(mix, us))
    return best


def run_once(a: Answerer, count: int) -> dict[str, float]:
    rng = random.Random(3)
    sources = [f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}."
               f"{rng.randrange(256)}" for _ in range(count)]
    out = {}
    for mix in ("repeat", "fresh24", "fresh56", "noecs"):
        packets = build_mix(mix, f"www.{Z}", "A", count, subnet="217.0.0.0/24")
        packets = (packets * (count // len(packets) + 1))[:count]
        srcs = sources if mix == "noecs" else ["127.0.0.1"] * count
        if a.cookies is not None:
            packets = [with_cookie(p, a.cookies, s) for p, s in zip(packets, srcs, strict=True)]
            probe = dns_reply(a.answer(packets[0], srcs[0], True))
            sent = packets[0][-16:]                 # a valid, young server cookie comes back
            assert probe.rcode() == 0 and probe.answer, probe
            assert [o.server for o in probe.options if o.otype == 10] == [sent], probe
        answer = a.answer
        t = time.perf_counter()
        for p, s in zip(packets, srcs, strict=True):
            answer(p, s, True)
        out[mix] = (time.perf_counter() - t) / count * 1e6
    return out


def dns_reply(wire: bytes):
    import dns.message

    return dns.message.from_wire(wire)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=100_000, help="queries per mix")
    ap.add_argument("--no-geoip2", action="store_true", help="skip the run without the index")
    ap.add_argument("--rounds", type=int, default=1, help="passes per mix; the fastest counts")
    args = ap.parse_args()
    geo = GeoLocator("")
    rows = []
    if not args.no_geoip2:
        rows.append(("geoip2 (no index)", run(answerer(geo), args.count, args.rounds)))
    t = time.perf_counter()
    geo.load_index()
    print(f"compiled index of GeoLite2 City: {time.perf_counter() - t:.1f} s ({geo.index!r})")
    rows.append(("compiled index", run(answerer(geo), args.count, args.rounds)))
    rows.append(("index, +cookie", run(answerer(geo, cookies=True), args.count, args.rounds)))
    print(f"\nµs per Answerer.answer(), {args.count} queries per mix, www.{Z} A")
    print(f"{'':18} {'repeat':>8} {'fresh24':>8} {'fresh56':>8} {'no ECS':>8}")
    for label, r in rows:
        print(f"{label:18} {r['repeat']:8.2f} {r['fresh24']:8.2f} {r['fresh56']:8.2f} "
              f"{r['noecs']:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
