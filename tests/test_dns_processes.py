"""DNS in processes of its own: the whole node as operators run it (`twistd -n -y twistd.tac`).

The tac answers DNS from `[dns] workers` child processes (dnsd.processes), keeps a live plan for
the admin in the main process, sums the children's counters on /metrics, restarts a child that
dies, and leaves no child behind when it stops, however it stops.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import pytest

from admin.web import api
from dnsd.db import make_engine
from tests.dns_support import ADDR, ZONE, ZONE_TEXT, write_table
from tests.helpers import alive, children_of, free_port, stop_process
from tests.webfakes import add_user

ROOT = Path(__file__).resolve().parent.parent


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def _until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"not in {timeout} s: {what}")


class Node:
    def __init__(self, tmp_path: Path, mmdb: str, workers: int):
        db = tmp_path / "mirrors.sqlite"
        write_table(f"sqlite:///{db}")
        engine = make_engine(f"sqlite:///{db}")
        add_user(engine, "alice", role="admin")
        with engine.begin() as conn:
            self.token = api.issue_token(conn, "alice")
        engine.dispose()
        (tmp_path / "zone").write_text(ZONE_TEXT)
        self.dns_port, self.web_port = free_port(), free_port()
        cfg = tmp_path / "mirrordns.toml"
        cfg.write_text(f"""
[database]
url = "sqlite:///{db}"
[dns]
zone = "{ZONE}"
zone_file = "zone"
listen = ["127.0.0.1:{self.dns_port}"]
poll_interval = 0.2
workers = {workers}
[geoip]
database = "{mmdb}"
[admin]
listen = "127.0.0.1:{self.web_port}"
[probes]
enabled = false
[mail]
smtp = "127.0.0.1:{free_port()}"
poll_interval = 3600
""")
        self.log_path = tmp_path / "twistd.log"
        self.log = self.log_path.open("wb")
        twistd = Path(sys.executable).with_name("twistd")
        self.proc = subprocess.Popen(
            [str(twistd), "-n", "--pidfile=", "--logfile=-", "-y", "twistd.tac"], cwd=ROOT,
            stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "MIRRORDNS_CONFIG": str(cfg)})
        try:
            _until(lambda: self.answers("de2"), 60, "DNS answers")
            _until(lambda: self.metrics() is not None, 30, "the web answers")
        except BaseException:
            self.stop()
            raise

    def answers(self, label: str) -> str | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"twistd exited: {self.log_path.read_text()[-3000:]}")
        try:
            r = dns.query.udp(dns.message.make_query(f"{label}.{ZONE}", "A"), "127.0.0.1",
                              port=self.dns_port, timeout=1)
        except (dns.exception.Timeout, OSError):
            return None
        return r.answer[0][0].address if r.answer else None

    def metrics(self) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics",
                                        timeout=3) as r:
                return r.read().decode()
        except OSError:
            return None

    def queries(self) -> float:
        text = self.metrics() or ""
        return sum(float(v) for v in re.findall(r'^dnsd_queries_total\{[^}]*\} (\S+)$', text,
                                                re.M))

    def settled_queries(self) -> float:
        """The count once every DNS process has reported its latest: unchanged over three
        report periods in a row (reports come each second; on a loaded machine one can be late,
        and a count taken before it would be short)."""
        last, same = self.queries(), 0
        while same < 3:
            time.sleep(1.3)
            now = self.queries()
            same = same + 1 if now == last else 0
            last = now
        return last

    def api(self, method: str, path: str, body: bytes = b"") -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{self.web_port}/api{path}", data=body,
                                     method=method, headers={
                                         "Authorization": f"Bearer {self.token}",
                                         "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status

    def country(self, cc: str) -> set[str]:
        r = dns.query.udp(dns.message.make_query(f"{cc}.{ZONE}", "A"), "127.0.0.1",
                          port=self.dns_port, timeout=2)
        return {rd.address for rrset in r.answer for rd in rrset}

    def dns_children(self) -> list[int]:
        return [p for p in children_of(self.proc.pid) if b"--child" in _cmdline(p)]

    def stop(self):
        stop_process(self.proc, 15)
        self.log.close()


def _ask_from_new_ports(port: int, n: int) -> int:
    """n answered queries, each from a socket of its own (SO_REUSEPORT hashes by source port);
    returns how many were sent (a query without an answer in 2 s is asked again)."""
    sent = answered = 0
    while answered < n:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(dns.message.make_query(f"de2.{ZONE}", "A").to_wire(), ("127.0.0.1", port))
            sent += 1
            try:
                s.recv(4096)
                answered += 1
            except TimeoutError:
                pass
    return sent


@pytest.fixture
def node(tmp_path, test_mmdb, request):
    n = Node(tmp_path, test_mmdb, request.param)
    yield n
    n.stop()


@pytest.mark.parametrize("node", [1], indirect=True)
def test_dns_from_a_process_of_its_own_with_a_live_plan_and_summed_metrics(node):
    [child] = _until(node.dns_children, 30, "one DNS process")
    assert node.answers("de2") == ADDR["de2"]
    # the admin side has the live plan: the closer answers from it
    with urllib.request.urlopen(f"http://127.0.0.1:{node.web_port}/dyn/closer/?as_json=1&"
                                "cca2=de", timeout=3) as r:
        assert '"preferred": "http://de' in r.read().decode()
    before = node.settled_queries()
    _ask_from_new_ports(node.dns_port, 20)
    _until(lambda: node.queries() >= before + 20, 15, "the child's counts on /metrics")
    assert "dnsd_processes 1.0" in node.metrics()
    # the child's log lines are in the node's log, marked with the child, formatted as written
    assert re.search(r"\[dns-0\] dns plan version \d+ in \d+\.\d ms", node.log_path.read_text())

    # a DNS process that dies is started again, and the counters do not go back
    counted = node.queries()
    os.kill(child, signal.SIGKILL)
    [again] = _until(lambda: [p for p in node.dns_children() if p != child], 30,
                     "a new DNS process")
    _until(lambda: node.answers("de2") == ADDR["de2"], 30, "answers again")
    assert node.queries() >= counted
    assert "ended" in node.log_path.read_text()

    # stopping the node stops its DNS process
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(15) in (0, -signal.SIGTERM)    # twistd ends with the signal's status
    assert "Server Shut Down" in node.log_path.read_text()
    assert not alive(again)


@pytest.mark.parametrize("node", [2], indirect=True)
def test_two_dns_processes_are_summed_and_never_outlive_a_killed_node(node):
    kids = _until(lambda: (k := node.dns_children()) and len(k) == 2 and k, 30,
                  "two DNS processes")
    before = node.settled_queries()
    sent = _ask_from_new_ports(node.dns_port, 200)  # spread over both by the kernel
    _until(lambda: node.queries() >= before + 200, 15, "every query counted on /metrics")
    assert before + 200 <= node.settled_queries() <= before + sent     # counted once each
    # a change through the web is answered only once both DNS processes answer with it
    assert ADDR["de2"] in _until(lambda: node.country("de"), 10, "an answer for de")
    assert node.api("POST", "/mirrors/de2/disable", b'{"reason": "moving racks"}') == 200
    for _ in range(20):                             # whichever process the kernel picks
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(dns.message.make_query(f"de.{ZONE}", "A").to_wire(),
                     ("127.0.0.1", node.dns_port))
            reply = dns.message.from_wire(s.recv(4096))
        assert ADDR["de2"] not in {rd.address for rrset in reply.answer for rd in rrset}
    node.proc.send_signal(signal.SIGKILL)          # no chance to clean up
    node.proc.wait(5)
    _until(lambda: not any(alive(k) for k in kids), 10, "the DNS processes end with the node")
