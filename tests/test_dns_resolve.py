"""`mirrorctl resolve` (subprocess) and the standalone worker launcher (`python -m dnsd.worker`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dns.edns
import dns.message
import dns.query

from tests.dns_support import ADDR, ZONE, make_env, mirrorctl


def test_resolve_prints_answer_and_reasons(tmp_path, test_mmdb):
    cfg, _port = make_env(tmp_path, test_mmdb)
    res = mirrorctl(cfg, "resolve", "www", "--client", "198.51.100.20")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"www.{ZONE} A for client 198.51.100.20 at US" in out
    assert "tier: country US (2 candidates)" in out
    assert ADDR["us1"] in out and ADDR["us2"] in out
    lines = {ln.split()[0]: ln for ln in out.split("not chosen:")[1].strip().splitlines()}
    assert "hardware move" in lines["at1"] and "disabled by admin" in lines["at1"]
    assert "outside the country tier" in lines["de1"]
    assert "no address" in lines["jp1"]

    res = mirrorctl(cfg, "resolve", "de", "--type", "AAAA")
    assert res.returncode == 0, res.stderr
    assert "tier: subregion Western Europe" in res.stdout
    assert "de2" in res.stdout and "no IPv6 address" in res.stdout

    res = mirrorctl(cfg, "resolve", "de1")
    assert ADDR["de1"] in res.stdout and "own name" in res.stdout

    res = mirrorctl(cfg, "resolve", "www", "--client", "not-an-ip")
    assert res.returncode == 1 and "not an IP address" in res.stderr


def _children_of(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_worker_launcher_two_processes_share_the_port(tmp_path, test_mmdb):
    cfg, port = make_env(tmp_path, test_mmdb)
    p = subprocess.Popen([sys.executable, "-m", "dnsd.worker", "--config", cfg.path,
                          "--workers", "2", "--ready"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        children = _children_of(p.pid)
        assert len(children) == 1                          # one extra worker, same port
        with open(f"/proc/{children[0]}/cmdline", "rb") as f:
            assert b"--single" in f.read()
        # "ready" means every worker has its plan: no SERVFAIL from either process
        for _ in range(40):
            r = dns.query.udp(dns.message.make_query(f"de2.{ZONE}", "A"), "127.0.0.1",
                              port=port, timeout=3)
            assert r.answer[0][0].address == ADDR["de2"]
        # the workers share one cookie secret: a server cookie from one is valid on the other
        # (each query from a new socket, so the kernel spreads them over both processes)
        client = b"\x05" * 8
        cookies = set()
        server = b""
        for _ in range(40):
            q = dns.message.make_query(f"de2.{ZONE}", "A", use_edns=0,
                                       options=[dns.edns.GenericOption(10, client + server)])
            r = dns.query.udp(q, "127.0.0.1", port=port, timeout=3)
            server = [o.server for o in r.options if o.otype == 10][0]
            cookies.add(server)
        assert len(cookies) == 1
        # and each keeps its own plan snapshot
        snaps = cfg.resolve_path(cfg.dns.snapshot_dir)
        for _ in range(50):
            if {f.name for f in snaps.glob("plan-*.json")} == {"plan-0.json", "plan-1.json"}:
                break
            time.sleep(0.1)
        assert {f.name for f in snaps.glob("plan-*.json")} == {"plan-0.json", "plan-1.json"}
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
        assert not any(_alive(c) for c in children)       # reaped before the launcher exits
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
