"""Response rate limiting: the bucket arithmetic on a clock, then a real flood over UDP."""

from __future__ import annotations

import socket
import sys
import threading
import time

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest_twisted
from twisted.internet import threads

from dnsd.rrl import ALLOW, DROP, SLIP, RateLimiter
from tests.dns_support import ZONE, Running, make_env, query


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_bucket_per_prefix_with_slip():
    clock = Clock()
    rl = RateLimiter(5, slip=2, clock=clock)
    verdicts = [rl.check("192.0.2.7") for _ in range(11)]
    assert verdicts == [ALLOW] * 5 + [DROP, SLIP] * 3            # a burst of one second's worth
    assert rl.check("192.0.2.200") == DROP                        # same /24: same bucket
    assert rl.check("198.51.100.1") == ALLOW                      # another /24
    clock.t += 0.2                                                # 0.2 s x 5/s = one token
    assert rl.check("192.0.2.9") == ALLOW and rl.check("192.0.2.9") != ALLOW
    clock.t += 10                                                  # refills, up to the burst only
    assert [rl.check("192.0.2.1") for _ in range(6)].count(ALLOW) == 5


def test_ipv6_prefix_exempt_and_no_slip():
    clock = Clock()
    rl = RateLimiter(1, slip=0, ipv6_prefix=56, exempt=["203.0.113.0/24", "2001:db8:e::/48"],
                     clock=clock)
    assert rl.check("2001:db8:1:100::1") == ALLOW
    assert rl.check("2001:db8:1:1ff::2") == DROP                 # same /56
    assert rl.check("2001:db8:1:200::1") == ALLOW                # the next /56
    assert all(rl.check("203.0.113.5") == ALLOW for _ in range(50))
    assert all(rl.check("2001:db8:e::9") == ALLOW for _ in range(50))
    assert [rl.check("192.0.2.1") for _ in range(20)].count(SLIP) == 0


def test_memory_is_bounded():
    clock = Clock()
    rl = RateLimiter(10, clock=clock, max_tracked=100)
    for i in range(1000):
        rl.check(f"10.{i // 256}.{i % 256}.1")
    assert rl.tracked <= 100


def test_two_threads_at_once_while_buckets_are_forgotten():
    """Every UDP answer thread calls check() without a lock; forgetting buckets while another
    thread adds some once raised "dictionary changed size during iteration" (a lost answer)."""
    rl = RateLimiter(1e6, max_tracked=64)
    errors: list[BaseException] = []

    def work(k):
        try:
            for i in range(200_000):
                rl.check(f"10.{k}.{i % 250}.1")
        except Exception as e:
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)                  # switch threads as often as can be
    try:
        threads_ = [threading.Thread(target=work, args=(k,)) for k in range(2)]
        for t in threads_:
            t.start()
        for t in threads_:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors[:1]
    assert 0 < rl.tracked <= 64


def _flood(port, source, n, ask_cookie=None, wait=1.0):
    """Send n queries from `source`, fast but paced so that no socket buffer overflows; count the
    replies by kind."""
    got = {"answer": 0, "tc": 0, "badcookie": 0}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.bind((source, 0))
        c.setblocking(False)
        q = query(f"static.{ZONE}", "A", use_edns=0,
                  options=[dns.edns.GenericOption(10, ask_cookie)] if ask_cookie else [])
        wire = q.to_wire()
        for i in range(n):
            c.sendto(wire, ("127.0.0.1", port))
            if i % 10 == 9:
                time.sleep(0.002)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                out = c.recv(4096)
            except BlockingIOError:
                time.sleep(0.005)
                continue
            r = dns.message.from_wire(out)
            if r.rcode() == dns.rcode.BADCOOKIE:
                got["badcookie"] += 1
            elif r.flags & dns.flags.TC:
                got["tc"] += 1
            else:
                got["answer"] += 1
    return got


@pytest_twisted.ensureDeferred
async def test_a_flood_from_one_prefix_gets_the_rate_others_do_not_notice(tmp_path, test_mmdb):
    cfg, port = make_env(tmp_path, test_mmdb, "rrl_rate = 20\nrrl_slip = 2")
    s = await Running(cfg, port).start()
    try:
        t0 = time.monotonic()
        got = await threads.deferToThread(_flood, port, "127.0.9.1", 400)
        secs = time.monotonic() - t0
        # at most the burst (20) plus 20 a second while it lasted; half of the rest truncated
        assert 20 <= got["answer"] <= 20 + 20 * secs + 1, (got, secs)
        assert got["tc"] >= 50                       # about half of the ~380 over the rate
        # another /24 is answered meanwhile (its own bucket)
        r = await s.udp(query(f"static.{ZONE}", "A"), source="127.0.10.1")
        assert r.rcode() == dns.rcode.NOERROR and r.answer
        # TCP is never limited
        r = await s.tcp(query(f"static.{ZONE}", "A"))
        assert r.answer
        reg = s.registry
        dropped = reg.get_sample_value("dnsd_rrl_responses_total", {"action": "dropped"})
        slipped = reg.get_sample_value("dnsd_rrl_responses_total", {"action": "slipped"})
        # (a loaded machine may lose a datagram or two: the server's count is the upper one)
        assert slipped >= got["tc"] and dropped > 0 and dropped + slipped + got["answer"] <= 400
        # a client with a valid server cookie is not limited (it is not spoofed); one that
        # sent only a client cookie gets BADCOOKIE as its slip, with a server cookie to use
        client = b"\x07" * 8
        got = await threads.deferToThread(_flood, port, "127.0.11.1", 100, client)
        assert got["badcookie"] > 0 and got["tc"] == 0
        r = await s.udp(query(f"static.{ZONE}", "A", use_edns=0,
                              options=[dns.edns.GenericOption(10, client)]), source="127.0.11.1")
        server = [o.server for o in r.options if o.otype == 10][0]
        got = await threads.deferToThread(_flood, port, "127.0.11.1", 100, client + server)
        assert got["answer"] >= 90 and got["tc"] == got["badcookie"] == 0
        # (the bucket has refilled meanwhile: some of them were within the rate anyway)
        assert reg.get_sample_value("dnsd_rrl_responses_total", {"action": "cookie_exempt"}) >= 60
    finally:
        await s.stop()
