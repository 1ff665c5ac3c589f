"""Nodes in network namespaces the test builds itself (tests/netlab.py, root only), each reaching
the fake mirrors over its own veth link and the machine's PostgreSQL through a forwarder:

- three probe vantages, each a real probe node in its own namespace: one cut off from one mirror
  (the mirror stays), one cut off from every mirror (nothing is disabled, the list gets one
  mail), a mirror down for all (disabled, one mail to its maintainer, however close together
  the vantages end their cycles: tests/test_transitions_once.py forces that race), and a
  vantage killed with SIGKILL continues where the table says when it starts again;
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

from dnsd.models import (
    ACTIVE,
    DISABLED_PROBES,
    bump_version,
    maintainers,
    mirror_health,
    mirrors,
    outbox,
    probe_results,
    vantage_health,
    vantages,
)
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


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass                         # a probe that gave up mid-answer is no news here


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
                    elif mode == "fresh":                # a real mirror: 404 for what it lacks
                        body = b"not found\n"
                        self.send_response(404)
                    else:
                        body = b"oops\n"
                        self.send_response(500)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

                def log_message(self, *args):
                    pass

            srv = _QuietServer((addr, self.port), Handler)
            srv.daemon_threads = True
            # a connection the probe node gave up on can leave the queue between the server's
            # select and its accept: with a timeout that accept returns, and shutdown() with it
            # (blocking, it hung the test's teardown for good)
            srv.socket.settimeout(1.0)
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


def wait(pred, timeout, what, nodes=()):
    deadline = time.monotonic() + timeout
    while not pred():
        for n in nodes:
            assert n.alive(), f"{n.name} died:\n{n.log()[-3000:]}"
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def test_three_vantages_agree_before_a_mirror_goes_and_a_broken_one_says_so_once(lab, tmp_path):
    lab, fakes = lab
    spaces = {name: lab.namespace(name) for name in ("eu", "us", "ap")}
    with scratch_database() as (url, engine):
        addrs = {f"de{i}": fakes.add(i) for i in range(1, 7)}
        ids = add_mirrors(engine, [(n, a, f"{n}.example.net", fakes.port)
                                   for n, a in addrs.items()])
        probes = "fail_after = 2\npass_after = 1"

        def node(name):
            # a vantage with no cycle done in 3 intervals no longer counts (then eu alone would
            # decide de1): 3 s makes that 9 s, room for a loaded machine's slow cycle or restart
            ns = spaces[name]
            return Node(tmp_path, name, node_config(
                via(ns, lab, url), name, ["probes"], listen_ip=ns.ip,
                probes=probes_config(name, interval=3, timeout=1.0, extra=probes)),
                "mirrordns-probes.service", wrap=ns.wrap())

        nodes = {name: node(name).start() for name in spaces}
        all_nodes = list(nodes.values())

        def q(stmt):
            with engine.connect() as c:
                return c.execute(stmt)

        def cycles(name):
            return q(sa.select(vantages.c.last_cycle_at).where(vantages.c.name == name)).scalar()

        def after_cycles(n=2):
            """Wait until every live vantage finished n more cycles."""
            names = [x for x, nd in nodes.items() if nd.alive()]
            marks = {x: cycles(x) for x in names}
            for _ in range(n):
                wait(lambda: all(cycles(x) and cycles(x) != marks[x] for x in names), 30,
                     "a cycle of every vantage", all_nodes)
                marks = {x: cycles(x) for x in names}

        def view(name, mirror):
            return q(sa.select(vantage_health.c.failures_in_row, vantage_health.c.passes_in_row)
                     .where(vantage_health.c.vantage == name,
                            vantage_health.c.mirror_id == ids[mirror])).first()

        def status(mirror):
            return q(sa.select(mirrors.c.status).where(mirrors.c.id == ids[mirror])).scalar()

        def kinds():
            return [r.kind for r in q(sa.select(outbox.c.kind, outbox.c.recipients)
                                      .order_by(outbox.c.id))]

        try:
            wait(lambda: all(cycles(x) for x in nodes), 60, "every vantage's first cycle",
                 all_nodes)
            # 1. eu loses its route to de1: the mirror stays, eu's view shows why
            spaces["eu"].cut(addrs["de1"])
            wait(lambda: (view("eu", "de1") or (0,))[0] >= 2, 30, "eu sees de1 fail", all_nodes)
            after_cycles(1)
            assert status("de1") == ACTIVE and kinds() == []
            assert view("us", "de1").passes_in_row > 0 and view("ap", "de1").passes_in_row > 0
            # 2. us loses every mirror: broken, one mail, nothing disabled
            spaces["us"].cut_all_mirrors()
            wait(lambda: q(sa.select(vantages.c.broken_since).where(vantages.c.name == "us"))
                 .scalar() is not None, 30, "us found broken", all_nodes)
            after_cycles(2)
            assert all(status(m) == ACTIVE for m in addrs) and kinds() == ["vantage-broken"]
            (subject,) = q(sa.select(outbox.c.subject)).scalars()
            assert subject == "Probe vantage us is broken: only 0 of 6 mirrors pass from it"
            # 3. de2 goes down for everyone: eu and ap (the ones that count) agree
            fakes.set(addrs["de2"], "down")
            wait(lambda: status("de2") == DISABLED_PROBES, 30, "de2 disabled", all_nodes)
            after_cycles(1)
            assert status("de1") == ACTIVE and kinds() == ["vantage-broken", "disabled"]
            (to,) = q(sa.select(outbox.c.recipients).where(outbox.c.kind == "disabled")).scalars()
            assert to == "ops@de2.example.net"
            (reason,) = q(sa.select(mirrors.c.status_reason).where(mirrors.c.id == ids["de2"])
                          ).scalars()
            assert reason.startswith("2 failed probes in a row from 2 of 2 vantages: refused")
            # 4. ap killed outright and started again: it continues from its own counters.
            # eu reaches de1 again first: while ap is away (its restart may take longer than 3
            # intervals on a loaded machine, and then it does not count) eu alone decides
            spaces["eu"].mend(addrs["de1"])
            wait(lambda: view("eu", "de1").passes_in_row > 0, 30, "eu sees de1 pass", all_nodes)
            before = view("ap", "de2").failures_in_row
            nodes["ap"].kill()
            nodes["ap"] = node("ap").start()
            all_nodes = list(nodes.values())
            after_cycles(1)
            assert view("ap", "de2").failures_in_row > before
            assert status("de2") == DISABLED_PROBES and kinds() == ["vantage-broken", "disabled"]
            assert status("de1") == ACTIVE
        finally:
            for n in nodes.values():
                n.stop()
        for n in nodes.values():
            assert not tracebacks(n.log()), n.log()[-3000:]


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
