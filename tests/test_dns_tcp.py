"""DNS over TCP within bounds (RFC 7766 6.2), and the listeners: a slow reader is paused and
aborted, connection caps make room, the backlog is what is configured, the fd limit is one log
line while UDP answers, IPv4 and IPv6 wildcards can both be listed, a busy port is one line."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import time

import dns.message
import dns.query
import dns.rcode
import pytest
import pytest_twisted
from twisted.internet import threads

import dnsd
from dnsd.server import ListenError
from tests.dns_support import ADDR, ZONE, Running, make_env, query, until

BIG = query(f"big.{ZONE}", "TXT").to_wire()                  # a 1.5 kB answer


def frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def unsent(proto) -> int:
    t = proto.transport
    return len(t.dataBuffer) - t.offset + t._tempDataLen


def _push(port, n, source="127.0.0.1", seconds=3.0):
    """Pipeline n big queries without reading; return (socket, bytes the kernel took)."""
    c = socket.socket()
    c.bind((source, 0))
    c.connect(("127.0.0.1", port))
    c.setblocking(False)
    data = frame(BIG) * n
    sent = 0
    deadline = time.monotonic() + seconds
    while sent < len(data) and time.monotonic() < deadline:
        try:
            sent += c.send(data[sent:sent + 65536])
        except BlockingIOError:
            time.sleep(0.01)
    return c, sent


def _read_replies(c, n, timeout=10.0):
    c.setblocking(True)
    c.settimeout(timeout)
    buf = b""
    out = []
    while len(out) < n:
        chunk = c.recv(65536)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
            ln = struct.unpack("!H", buf[:2])[0]
            out.append(dns.message.from_wire(buf[2:2 + ln]))
            buf = buf[2 + ln:]
    return out


@pytest_twisted.ensureDeferred
async def test_a_client_that_does_not_read_is_paused_then_aborted(tmp_path, test_mmdb):
    cfg, port = make_env(tmp_path, test_mmdb, "tcp_max_unsent = 8192\ntcp_idle_timeout = 1.0")
    s = await Running(cfg, port).start()
    c = None
    try:
        c, sent = await threads.deferToThread(_push, port, 3000, "127.0.0.1", 1.0)
        await until(lambda: s.svc.tcp.connections == 1 and next(iter(s.svc.tcp._conns)).paused)
        (proto,) = list(s.svc.tcp._conns)
        # what waits for the client is bounded by the cap plus one reply, whatever it sent
        assert unsent(proto) <= 8192 + 65537 and sent > 100_000
        answered = s.svc.answerer.stats.by_type_rcode.get((16, 0), 0)
        assert answered < 3000
        # no query for the idle timeout: aborted (a reset), nothing kept for it
        await until(lambda: s.svc.tcp.connections == 0, timeout=5)
        assert s.registry.get_sample_value("dnsd_tcp_closed_total", {"why": "idle"}) == 1

        def gone():
            c.setblocking(True)
            c.settimeout(3)
            try:
                while c.recv(65536):
                    pass
                return "eof"
            except ConnectionResetError:
                return "reset"
        assert await threads.deferToThread(gone) == "reset"
    finally:
        if c is not None:
            c.close()
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_a_paused_connection_resumes_and_answers_everything_in_order(tmp_path, test_mmdb):
    cfg, port = make_env(tmp_path, test_mmdb, "tcp_max_unsent = 4096")
    s = await Running(cfg, port).start()
    try:
        def talk():
            qs = [query(f"big.{ZONE}", "TXT") for _ in range(400)]
            with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(b"".join(frame(q.to_wire()) for q in qs))
                return [q.id for q in qs], _read_replies(c, 400)
        ids, replies = await threads.deferToThread(talk)
        assert [r.id for r in replies] == ids
        assert all(len(r.answer[0][0].strings) == 6 for r in replies)
    finally:
        await s.stop()


def _connect(port, source="127.0.0.1"):
    c = socket.socket()
    c.bind((source, 0))
    c.settimeout(3)
    c.connect(("127.0.0.1", port))
    return c


def _ask(c, name="static"):
    q = query(f"{name}.{ZONE}", "A")
    c.sendall(frame(q.to_wire()))
    (r,) = _read_replies(c, 1, 3)
    return r


def _closed(c) -> bool:
    c.settimeout(3)
    try:
        return c.recv(10) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


@pytest_twisted.ensureDeferred
async def test_connection_caps_close_the_least_recently_active(tmp_path, test_mmdb):
    """RFC 7766 6.2.3: over a limit the server closes connections; the least recently active one
    goes, so a client falling back to TCP after a truncated answer always gets in."""
    cfg, port = make_env(tmp_path, test_mmdb, "tcp_max_connections = 4\ntcp_max_per_address = 2\n"
                                              "tcp_idle_timeout = 20")
    s = await Running(cfg, port).start()
    conns = []
    try:
        def per_address():
            a = _connect(port, "127.0.30.1")
            b = _connect(port, "127.0.30.1")
            conns.extend([a, b])
            _ask(a)
            _ask(b)
            _ask(a)                                 # a is now the more recently active
            cnew = _connect(port, "127.0.30.1")     # third from one address: b goes
            conns.append(cnew)
            return _ask(cnew), _closed(b), _ask(a)
        r_new, b_closed, r_a = await threads.deferToThread(per_address)
        assert r_new.answer and b_closed and r_a.answer
        await until(lambda: s.svc.tcp.connections == 2)

        def total():
            others = [_connect(port, f"127.0.31.{i}") for i in range(1, 4)]
            conns.extend(others)
            for o in others:
                _ask(o)
            # 2 + 3 = 5 > 4: the least recently active of all (the third 127.0.30.1 one, asked
            # just before a was) was closed when the last one came; a still answers
            a, cnew = conns[0], conns[2]
            return _closed(cnew), _ask(a).rcode(), [_ask(o).rcode() for o in others]
        cnew_closed, a_rcode, rcodes = await threads.deferToThread(total)
        assert cnew_closed and a_rcode == dns.rcode.NOERROR
        assert rcodes == [dns.rcode.NOERROR] * 3
        assert s.svc.tcp.connections == 4
        assert s.registry.get_sample_value("dnsd_tcp_closed_total", {"why": "evicted"}) == 2
    finally:
        for c in conns:
            c.close()
        await s.stop()


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read the backlog")
@pytest_twisted.ensureDeferred
async def test_listen_backlog(tmp_path, test_mmdb):
    cfg, port = make_env(tmp_path, test_mmdb, "tcp_backlog = 1500")
    s = await Running(cfg, port).start()
    try:
        out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                             check=True).stdout.split()
        somaxconn = int(open("/proc/sys/net/core/somaxconn").read())
        assert int(out[2]) == min(1500, somaxconn)       # Send-Q of a listener is its backlog
        assert dnsd.config.DNSConfig().tcp_backlog >= 1024
    finally:
        await s.stop()


def _worker(cfg, *extra, **kw):
    return subprocess.Popen([sys.executable, "-m", "dnsd.worker", "--config", cfg.path, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_at_the_fd_limit_one_line_and_udp_keeps_answering(tmp_path, test_mmdb):
    cfg, port = make_env(tmp_path, test_mmdb, "tcp_max_connections = 5000\n"
                                              "tcp_max_per_address = 5000\nsnapshot_dir = \"\"")

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    p = _worker(cfg, "--ready", preexec_fn=low_limit)
    conns = []
    try:
        assert p.stdout.readline().strip() == "ready"
        for _ in range(150):
            try:
                c = socket.create_connection(("127.0.0.1", port), timeout=2)
                conns.append(c)
            except OSError:
                pass
        deadline = time.monotonic() + 10             # until the server runs into its limit
        while len(os.listdir(f"/proc/{p.pid}/fd")) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        r = dns.query.udp(query(f"de2.{ZONE}", "A"), "127.0.0.1", port=port, timeout=3)
        assert [rd.address for rr in r.answer for rd in rr] == [ADDR["de2"]]
        for c in conns[-20:]:                        # still more connection attempts
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            except OSError:
                pass
        r = dns.query.udp(query(f"static.{ZONE}", "A"), "127.0.0.1", port=port, timeout=3)
        assert r.answer
    finally:
        for c in conns:
            c.close()
        p.terminate()
        _out, err = p.communicate(timeout=10)
    lines = [ln for ln in err.splitlines() if "dns_fd_limit" in ln]
    assert len(lines) == 1, err[-3000:]
    assert "out of file descriptors (the process may open 64)" in lines[0]
    assert "EMFILE recovery" not in err


def _v6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _v6_loopback(), reason="needs IPv6 on the loopback interface")
@pytest_twisted.ensureDeferred
async def test_ipv4_and_ipv6_wildcards_both_listen(tmp_path, test_mmdb):
    """The README's production line: 0.0.0.0 and [::] on one port (IPV6_V6ONLY)."""
    cfg, port = make_env(tmp_path, test_mmdb, listen=["0.0.0.0:{port}", "[::]:{port}"])
    s = await Running(cfg, port).start()
    try:
        for host in ("127.0.0.1", "::1"):
            r = await threads.deferToThread(dns.query.udp, query(f"de2.{ZONE}", "A"), host,
                                            timeout=3, port=port)
            assert [rd.address for rr in r.answer for rd in rr] == [ADDR["de2"]]
            r = await threads.deferToThread(dns.query.tcp, query(f"static.{ZONE}", "A"), host,
                                            timeout=3, port=port)
            assert r.answer
    finally:
        await s.stop()


def test_a_busy_port_is_one_line_naming_address_and_cause(tmp_path, test_mmdb):
    cfg, port = make_env(tmp_path, test_mmdb, 'snapshot_dir = ""')
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", port))
    try:
        r = Running(cfg, port)
        with pytest.raises(ListenError, match=rf"^cannot listen on 127.0.0.1:{port}/udp: "
                                              r"Address already in use \(another program"):
            r.svc.privilegedStartService()
        r.pool.stop()
        # twistd (through makeService): the process ends with that one line
        svc = dnsd.makeService(cfg, r.pool, r.svc.reactor, registry=r.registry)
        with pytest.raises(SystemExit, match=rf"^mirrordns: cannot listen on 127.0.0.1:{port}/udp"):
            svc.privilegedStartService()
        # the DNS-only entry point: one line on stderr, exit status 2
        p = _worker(cfg)
        _out, err = p.communicate(timeout=30)
        assert p.returncode == 2
        (line,) = err.strip().splitlines()
        assert line.endswith(f"mirrordns: cannot listen on 127.0.0.1:{port}/udp: Address already "
                             f"in use (another program, or another listen entry, holds it)"), err
    finally:
        busy.close()


def _low_free_port() -> int:
    for port in range(950, 1024):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    pytest.skip("no free port below 1024")


def _privileged_ports() -> bool:
    try:
        return int(open("/proc/sys/net/ipv4/ip_unprivileged_port_start").read()) > 1000
    except OSError:
        return True


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None or not _privileged_ports(),
                    reason="needs root, setpriv (util-linux) and ports below 1024 privileged, to "
                           "run the server without CAP_NET_BIND_SERVICE")
def test_a_forbidden_port_says_why(tmp_path, test_mmdb):
    port = _low_free_port()
    cfg, _ = make_env(tmp_path, test_mmdb, 'snapshot_dir = ""', listen=[f"127.0.0.1:{port}"])
    p = subprocess.run(["setpriv", "--bounding-set=-net_bind_service", "--inh-caps=-all",
                        sys.executable, "-m", "dnsd.worker", "--config", cfg.path],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().endswith(
        f"cannot listen on 127.0.0.1:{port}/udp: Permission denied (ports below 1024 need root "
        f"or CAP_NET_BIND_SERVICE)"), p.stderr
