"""The UDP answer loop (dnsd.server.UDPAnswerThread), in C (dnsd/_udpio.c: recvmmsg/sendmmsg)
and in Python, over real sockets: every datagram answered once, to the address it came from,
with its own source address passed to the answerer, in bursts from many sources at once; an
answerer that raises or stays silent costs that datagram only; stop() ends a blocked loop."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
from twisted.logger import globalLogPublisher

from dnsd import server
from dnsd.server import UDPAnswerThread, udp_socket

LOOPS = [pytest.param(True, id="c"), pytest.param(False, id="python")]


def test_the_c_loop_is_built():
    # `make test` installs with `pip install -e .`, which compiles dnsd/_udpio.c; on a machine
    # without a C compiler the install goes on without it, and this says so rather than letting
    # the suite test the Python loop alone
    assert server._udpio is not None, "dnsd._udpio is not built: is gcc installed?"


class Echo:
    """answer(): the source address and the datagram back; b"drop" unanswered; b"boom" raises."""

    def __init__(self):
        self.calls = 0

    def answer(self, data, src, udp):
        assert udp is True
        self.calls += 1
        if data == b"drop":
            return None
        if data == b"boom":
            raise ValueError("boom")
        if data == b"huge":
            return b"x" * 70_000                     # over any UDP datagram: sendto fails
        if data.startswith(b"slow"):
            time.sleep(0.3)
        return src.encode() + b" " + data


def _serve(native, host="127.0.0.1"):
    sock = udp_socket(host, 0)
    t = UDPAnswerThread(sock, Echo(), native=native)
    t.start()
    return t, sock.getsockname()[:2]


@pytest.mark.parametrize("native", LOOPS)
def test_bursts_from_many_sources_each_get_their_own_answers(native):
    t, addr = _serve(native)
    clients = []
    try:
        for i in range(6):                           # 127.0.0.x and several ports per address
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            c.bind((f"127.0.0.{1 + i % 3}", 0))
            c.settimeout(3)
            clients.append(c)
        for n in range(200):                         # sent before any is read: batches form
            for c in clients:
                c.sendto(b"q%d" % n, addr)
        for c in clients:
            src = c.getsockname()[0].encode()
            got = [c.recv(100) for _ in range(200)]
            assert sorted(got) == sorted(src + b" q%d" % n for n in range(200))
            c.settimeout(0.2)
            with pytest.raises(TimeoutError):        # nothing more, nothing twice
                c.recv(100)
    finally:
        for c in clients:
            c.close()
        t.stop()
    assert t.answerer.calls == 6 * 200 and not t.alive


@pytest.mark.parametrize("native", LOOPS)
def test_ipv6(native):
    t, addr = _serve(native, "::1")
    c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    c.settimeout(3)
    try:
        c.sendto(b"six", addr)
        assert c.recvfrom(100) == (b"::1 six", (*addr, 0, 0))
    finally:
        c.close()
        t.stop()


@pytest.mark.parametrize("native", LOOPS)
def test_an_answerer_that_raises_or_stays_silent_costs_one_datagram(native):
    failures = []

    def observer(event):
        if event.get("log_failure") is not None:
            failures.append(event)

    globalLogPublisher.addObserver(observer)
    t, addr = _serve(native)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(3)
    try:
        for data in (b"boom", b"drop", b"after", b"boom", b"last"):
            c.sendto(data, addr)
        assert c.recv(100) == b"127.0.0.1 after"
        assert c.recv(100) == b"127.0.0.1 last"
    finally:
        c.close()
        t.stop()
        globalLogPublisher.removeObserver(observer)
    assert len(failures) == 2
    assert all(f["log_failure"].check(ValueError) for f in failures)
    assert failures[0]["log_format"] == "dns udp answer failed"


@pytest.mark.parametrize("native", LOOPS)
def test_a_datagram_larger_than_the_buffer_is_cut_at_8192_bytes(native):
    t, addr = _serve(native)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(3)
    try:
        c.sendto(b"x" * 9000, addr)
        assert c.recv(10000) == b"127.0.0.1 " + b"x" * 8192
    finally:
        c.close()
        t.stop()


@pytest.mark.parametrize("native", LOOPS)
def test_stop_ends_a_loop_that_waits_and_closes_the_socket(native):
    t, _ = _serve(native)
    done = threading.Event()

    def stop():
        t.stop()
        done.set()

    threading.Thread(target=stop).start()
    assert done.wait(5) and not t.alive and t.sock.fileno() == -1


@pytest.mark.parametrize("native", LOOPS)
def test_an_empty_datagram_is_answered_and_a_reply_that_cannot_be_sent_is_dropped(native):
    t, addr = _serve(native)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(3)
    try:
        for data in (b"a", b"huge", b"", b"c"):         # one batch: the reply to "huge" fails
            c.sendto(data, addr)
        assert [c.recv(100) for _ in range(3)] == [b"127.0.0.1 a", b"127.0.0.1 ", b"127.0.0.1 c"]
    finally:
        c.close()
        t.stop()
    assert t.answerer.calls == 4


@pytest.mark.parametrize("native", LOOPS)
def test_a_socket_shut_down_under_the_loop_ends_it(native):
    """Not a spin: a shut-down socket returns at once, every time, with nothing."""
    t, _ = _serve(native)
    time.sleep(0.1)                                      # the thread waits in its receive
    with contextlib.suppress(OSError):                   # ENOTCONN, and the receive returns
        t.sock.shutdown(socket.SHUT_RDWR)
    t._thread.join(5)
    assert not t.alive
    t.stop()


@pytest.mark.parametrize("native", LOOPS)
def test_a_loop_still_answering_at_the_stop_timeout_closes_its_own_socket(native):
    """stop() does not close the descriptor under a thread that still uses it (its number could
    be another socket's by the time the thread sends); the thread closes it when it ends."""
    t, addr = _serve(native)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(3)
    try:
        for i in range(3):
            c.sendto(b"slow%d" % i, addr)
        time.sleep(0.1)                                  # the thread is in the first answer
        t.stop(timeout=0.05)
        assert t.alive and t.sock.fileno() != -1
        t._thread.join(5)
        assert not t.alive and t.sock.fileno() == -1
    finally:
        c.close()
