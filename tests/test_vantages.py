"""Nodes in network namespaces the test builds itself (tests/netlab.py, root only), each reaching
the fake mirrors over its own veth link and the machine's PostgreSQL through a forwarder:

- a node under load (probes hanging on silent mirrors and on host names a dead resolver never
  answers, DNS queries, a mail stuck on a silent SMTP server) stops within 5 s of SIGTERM, with
  nothing cut short recorded as a mirror failure and no traceback.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dns.message
import dns.query
import pytest
import sqlalchemy as sa

from dnsd.models import ACTIVE, bump_version, maintainers, mirror_health, mirrors, probe_results
from dnsd.outbox import queue_mail
from tests import netlab
from tests.cluster_support import (
    NEEDS_PG,
    PG_URL,
    Node,
    node_config,
    scratch_database,
    tracebacks,
)
from tests.helpers import free_port

pytestmark = [pytest.mark.skipif(not PG_URL, reason=NEEDS_PG),
              pytest.mark.skipif(bool(netlab.can_run()), reason=netlab.can_run() or "-")]


class Mirrors:
    """Fake mirrors on the lab's addresses: `fresh` serves a current timestamp file, `500` an
    error, `down` refuses connections, `hang` accepts and never answers."""

    def __init__(self, lab: netlab.Lab, port: int):
        self.lab, self.port = lab, port
        self.modes: dict[str, str] = {}
        self._servers: dict[str, ThreadingHTTPServer] = {}
        self._silent: list[socket.socket] = []

    def add(self, i: int, mode: str = "fresh") -> str:
        addr = self.lab.mirror_address(i)
        self.set(addr, mode)
        return addr

    def set(self, addr: str, mode: str) -> None:
        self.modes[addr] = mode
        if mode == "hang":
            s = socket.socket()
            s.bind((addr, self.port))
            s.listen(1024)                 # connections complete in the kernel; never accepted
            self._silent.append(s)
        elif mode == "down":
            srv = self._servers.pop(addr, None)
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        elif addr not in self._servers:
            modes = self.modes
            stamp = f"{int(time.time()) - 60}\n".encode()    # a timestamp file between syncs

            class Handler(BaseHTTPRequestHandler):
                def do_GET(self):
                    mode = modes.get(addr)
                    if mode == "fresh" and self.path.endswith("/TIME"):
                        body = stamp
                        self.send_response(200)
                    else:
                        body = b"oops\n"
                        self.send_response(500)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

                def log_message(self, *args):
                    pass

            srv = ThreadingHTTPServer((addr, self.port), Handler)
            srv.daemon_threads = True
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            self._servers[addr] = srv

    def close(self):
        for srv in self._servers.values():
            srv.shutdown()
            srv.server_close()
        for s in self._silent:
            s.close()


@pytest.fixture
def lab():
    with netlab.Lab() as lab:
        mirrors_ = Mirrors(lab, free_port())
        try:
            yield lab, mirrors_
        finally:
            mirrors_.close()


def add_mirrors(engine, rows):
    """rows: (name, ipv4 or None, hostname); all active, one maintainer each."""
    ids = {}
    with engine.begin() as c:
        for name, ipv4, host, port in rows:
            mid = c.execute(mirrors.insert().values(
                name=name, hostname=host, country="DE", ipv4=ipv4, status=ACTIVE,
                http_url=f"http://{host}:{port}/pub/")).inserted_primary_key[0]
            c.execute(maintainers.insert().values(mirror_id=mid, email=f"ops@{host}"))
            ids[name] = mid
        bump_version(c)
    return ids


def probes_config(vantage: str, *, interval: float, timeout: float, extra: str = "") -> str:
    return (f'vantage = "{vantage}"\nallow_private = true\ninterval = {interval}\n'
            f"timeout = {timeout}\nconnect_timeout = {timeout}\n{extra}")


def via(lab_ns: netlab.Namespace, lab: netlab.Lab, url: str) -> str:
    """The scratch database's URL as seen from inside a namespace (through a forwarder)."""
    u = sa.engine.make_url(url)
    port = lab.forward(lab_ns.host_ip, u.port or 5432)
    return u.set(host=lab_ns.host_ip, port=port).render_as_string(hide_password=False)


def test_sigterm_under_load_stops_a_node_within_five_seconds(lab, tmp_path):
    lab, fakes = lab
    ns = lab.namespace("load")
    # the node's resolver: a name server that swallows every query (glibc waits 30 s for it)
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blackhole.bind((ns.host_ip, 53))
    asked: set[str] = set()

    def swallow():
        while True:
            try:
                data = blackhole.recv(4096)
            except OSError:
                return
            try:
                asked.add(str(dns.message.from_wire(data).question[0].name))
            except Exception:
                pass

    threading.Thread(target=swallow, daemon=True).start()
    ns.resolv_conf(f"nameserver {ns.host_ip}\noptions timeout:30 attempts:1\n")
    smtp = socket.socket()                       # an SMTP server that never says hello
    smtp.bind((ns.host_ip, 0))
    smtp.listen(16)
    with scratch_database() as (url, engine):
        rows = []
        for i in range(1, 21):
            rows.append((f"de{i}", fakes.add(i, "fresh"), f"de{i}.example.net", fakes.port))
        for i in range(21, 61):
            rows.append((f"de{i}", fakes.add(i, "hang"), f"de{i}.example.net", fakes.port))
        for i in range(61, 71):                  # no table address: the probe resolves the name
            rows.append((f"de{i}", None, f"de{i}.lab.test", fakes.port))
        ids = add_mirrors(engine, rows)
        with engine.begin() as c:
            queue_mail(c, kind="test", sender="mirrors@example.org", to=["ops@example.net"],
                       subject="stuck", body="stuck\n")
        dns_port = free_port()
        cfg = node_config(via(ns, lab, url), "load", ["dns", "probes", "admin"],
                          listen_ip=ns.ip, dns_port=dns_port, dns="poll_interval = 0.5",
                          smtp=f"{ns.host_ip}:{smtp.getsockname()[1]}",
                          probes=probes_config("load", interval=2, timeout=30.0))
        node = Node(tmp_path, "load", cfg, "mirrordns.service", wrap=ns.wrap()).start()
        stop_load = threading.Event()
        answered = []

        def dns_load():
            q = dns.message.make_query("de1.mirrors.example.org", "A")
            while not stop_load.is_set():
                try:
                    dns.query.udp(q, ns.ip, port=dns_port, timeout=0.2)
                    answered.append(1)
                except Exception:
                    pass

        load = threading.Thread(target=dns_load, daemon=True)
        try:
            load.start()
            fresh = [ids[f"de{i}"] for i in range(1, 21)]
            stuck = [ids[f"de{i}"] for i in range(21, 71)]

            def probed():
                with engine.connect() as c:
                    return c.execute(sa.select(sa.func.count(sa.distinct(
                        probe_results.c.mirror_id))).where(
                        probe_results.c.mirror_id.in_(fresh))).scalar()

            deadline = time.monotonic() + 60
            # the fresh mirrors recorded, every host-name lookup hanging, DNS answering
            while probed() < 20 or len(asked) < 10 or len(answered) < 10:
                assert time.monotonic() < deadline and node.alive(), node.log()[-3000:]
                time.sleep(0.1)
            took = node.terminate()
        finally:
            stop_load.set()
            load.join(5)
            node.stop()
            blackhole.close()
            smtp.close()
        log = node.log()
        assert took < 5.0, f"stopped in {took:.1f} s:\n{log[-3000:]}"
        assert not tracebacks(log), log[-3000:]
        assert "stopping: 50 probes in flight cancelled, not recorded" in log
        with engine.connect() as c:
            cut_short = c.execute(sa.select(sa.func.count()).select_from(probe_results).where(
                probe_results.c.mirror_id.in_(stuck))).scalar()
            counters = c.execute(sa.select(sa.func.max(mirror_health.c.failures_in_row)).where(
                mirror_health.c.mirror_id.in_(stuck))).scalar()
        assert cut_short == 0 and not counters      # cut short is not a mirror failure
