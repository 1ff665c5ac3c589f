"""From an imported list to a working zone, with no hand edit: the php.net list imported with
mirrorctl, one probe cycle against fake mirrors on loopback through a test resolver, and every
country answers over UDP and TCP with the addresses the probes found.

The scenario (tests/import_to_zone_run.py) runs in a network namespace of its own, because the
php.net URLs name port 80: there every 127.x address and port 80 are the test's alone. It needs
root and iproute2, as CI has.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="needs root and iproute2 for a network namespace (port 80 on loopback)")


@pytest.fixture
def netns():
    name = f"mdns-i2z-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                       check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@needs_netns
def test_the_php_net_list_becomes_a_zone_that_answers_every_country(netns, tmp_path):
    p = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-m",
                        "tests.import_to_zone_run", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=180)
    lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    assert p.returncode == 0 and lines, (p.stdout[-3000:], p.stderr[-5000:])
    out = json.loads(lines[0][len("RESULT "):])
    assert out["mirrors"] == 88
    # imported: no addresses, so nothing serves and country names answer nothing (NODATA)
    assert out["serving_before"] == 0
    assert all(v == [] for v in out["before"].values())
    # after one probe cycle: every mirror the list calls working serves, on resolved addresses
    assert out["pinned"] == 0
    assert out["not_serving"] == {n: "disabled by admin: php.net list: does not work "
                                     "(MIRROR_DOESNOTWORK)" for n in ("cn1", "ru2", "us3")}
    assert out["serving_after"] == 85
    known = set(out["resolver_addresses"])
    for cc, got in out["after"].items():
        assert got["udp"], f"{cc} answers nothing"
        assert set(got["udp"]) <= known and set(got["tcp"]) <= known, cc
    for name, addrs in out["own"].items():                 # every mirror's own name, too
        assert addrs == out["expected_own"][name], name
