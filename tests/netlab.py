"""A small network lab for the multi-vantage tests (root only): network namespaces joined to this
one by veth pairs, fake mirrors on addresses of a local interface here, a TCP forwarder that lets
a namespace reach the machine's PostgreSQL, and routes to cut a namespace off.

    with Lab() as lab:
        m = lab.mirror_address(1)                 # 10.X.0.1 on the lab's own interface here
        v = lab.namespace("v1")                   # veth 10.X.1.1 (here) <-> 10.X.1.2 (inside)
        v.cut(m)                                  # v1 can no longer reach that mirror
        db = lab.forward(v.host_ip, 5432)         # 10.X.1.1:port -> 127.0.0.1:5432

Every name carries a random tag and every address a /16 nobody on the machine uses, so labs of
parallel test runs do not meet; `close()` (the context manager's exit) removes everything, also
after a failure.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path


def can_run() -> str:
    """'' when a lab can be built here, else why not (for a skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    return ""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


def _free_net() -> ipaddress.IPv4Network:
    used = sh("ip", "-4", "-o", "addr").stdout + sh("ip", "-4", "route").stdout
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{secrets.randbelow(120) + 128}.0.0/16")
        if f"10.{net.network_address.packed[1]}." not in used:
            return net
    raise RuntimeError("no free 10.x.0.0/16 for the lab")


@dataclass
class Namespace:
    lab: Lab
    name: str
    host_ip: str                       # this side of the veth
    ip: str                            # inside the namespace
    cuts: set = field(default_factory=set)

    def wrap(self) -> list[str]:
        """The prefix that runs a command inside (`ip netns exec` also bind-mounts
        /etc/netns/<name>/resolv.conf over /etc/resolv.conf)."""
        return ["ip", "netns", "exec", self.name]

    def cut(self, address: str) -> None:
        """This namespace can no longer reach `address` (connects fail at once: unreachable)."""
        sh("ip", "-n", self.name, "route", "add", "unreachable", f"{address}/32")
        self.cuts.add(address)

    def mend(self, address: str) -> None:
        sh("ip", "-n", self.name, "route", "del", "unreachable", f"{address}/32")
        self.cuts.discard(address)

    def cut_all_mirrors(self) -> None:
        """Every mirror unreachable; the veth link itself (and the database behind it) stays."""
        sh("ip", "-n", self.name, "route", "replace", "unreachable", str(self.lab.mirror_net))

    def resolv_conf(self, text: str) -> None:
        d = Path("/etc/netns") / self.name
        d.mkdir(parents=True, exist_ok=True)
        (d / "resolv.conf").write_text(text)


class Lab:
    def __init__(self):
        self.tag = secrets.token_hex(3)
        self.net = _free_net()
        b = self.net.network_address.packed[1]
        self.prefix = f"10.{b}"
        self.mirror_net = ipaddress.ip_network(f"{self.prefix}.0.0/24")
        self.dummy = f"md{self.tag}m"
        self.namespaces: list[Namespace] = []
        self._threads: list[_Forwarder] = []
        self._dummy_up = False

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def mirror_address(self, i: int) -> str:
        """10.X.0.i on the lab's own interface here; every namespace routes to it."""
        if not self._dummy_up:              # a veth pair as the dummy (no dummy module needed)
            sh("ip", "link", "add", self.dummy, "type", "veth", "peer", "name", self.dummy + "p")
            sh("ip", "link", "set", self.dummy, "up")
            self._dummy_up = True
        a = f"{self.prefix}.0.{i}"
        sh("ip", "addr", "add", f"{a}/32", "dev", self.dummy)
        return a

    def namespace(self, short: str) -> Namespace:
        n = len(self.namespaces) + 1
        name = f"md{self.tag}{short}"
        host, inside = f"md{self.tag}h{n}", f"md{self.tag}v{n}"
        host_ip, ip = f"{self.prefix}.{n}.1", f"{self.prefix}.{n}.2"
        sh("ip", "netns", "add", name)
        ns = Namespace(self, name, host_ip, ip)
        self.namespaces.append(ns)
        sh("ip", "link", "add", host, "type", "veth", "peer", "name", inside)
        sh("ip", "link", "set", inside, "netns", name)
        sh("ip", "addr", "add", f"{host_ip}/30", "dev", host)
        sh("ip", "link", "set", host, "up")
        sh("ip", "-n", name, "addr", "add", f"{ip}/30", "dev", inside)
        sh("ip", "-n", name, "link", "set", inside, "up")
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "route", "add", str(self.mirror_net), "via", host_ip)
        return ns

    def forward(self, listen_ip: str, target_port: int, target_ip: str = "127.0.0.1") -> int:
        """A TCP forwarder listen_ip:<free port> -> target; returns the port."""
        f = _Forwarder(listen_ip, (target_ip, target_port))
        self._threads.append(f)
        return f.port

    def close(self) -> None:
        for f in self._threads:
            f.close()
        for ns in self.namespaces:
            for pid in sh("ip", "netns", "pids", ns.name, check=False).stdout.split():
                try:                       # only processes the test started in its namespace
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns.name, check=False)   # takes the veth pair with it
            shutil.rmtree(Path("/etc/netns") / ns.name, ignore_errors=True)
        if self._dummy_up:
            sh("ip", "link", "del", self.dummy, check=False)


class _Forwarder:
    """Accepts on (ip, free port) and pipes each connection to `target`, on threads."""

    def __init__(self, ip: str, target: tuple[str, int]):
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._open.discard(a)

    def close(self):
        self._closed = True
        try:                      # wakes the accept() (close alone leaves it blocked on Linux)
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for s in list(self._open):
            try:
                s.close()
            except OSError:
                pass
