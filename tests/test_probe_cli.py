"""`mirrorctl probe NAME` and `mirrorctl mail test ADDRESS`, run as real processes against a
threaded HTTP server and an aiosmtpd server on loopback."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time

import pytest
from aiosmtpd.controller import Controller

from dnsd.db import make_engine, upgrade
from tests.helpers import free_port
from tests.probe_support import add_mirror


class Handler(http.server.BaseHTTPRequestHandler):
    stamp = 0        # the timestamp file, written once as a sync writes it (set by the fixture)

    def do_GET(self):
        if not self.path.endswith("/TIME"):             # a real mirror: 404 for what it lacks
            self.send_error(404)
            return
        body = f"{self.stamp}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def http_mirror():
    # static between two syncs: a time read per request differs when the probe's fetches for two
    # Host names straddle a second, which the probe rightly reads as two different sites
    handler = type("Synced", (Handler,), {"stamp": int(time.time()) - 7200})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def setup(tmp_path, smtp_port=25, allow_private=True):
    db = tmp_path / "m.sqlite"
    conf = tmp_path / "mirrordns.toml"
    conf.write_text(f"""
[database]
url = "sqlite:///{db}"
[probes]
allow_private = {"true" if allow_private else "false"}
timeout = 3
[mail]
smtp = "127.0.0.1:{smtp_port}"
from = "mirrors@example.org"
""")
    e = make_engine(f"sqlite:///{db}")
    upgrade(e)
    return conf, e


def mirrorctl(conf, *args):
    return subprocess.run([sys.executable, "-m", "admin.cli", "--config", str(conf), *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_probe_prints_the_result(tmp_path, http_mirror):
    conf, e = setup(tmp_path)
    with e.begin() as c:
        add_mirror(c, name="de1", ipv4="127.0.0.1", http_url=f"http://de1.example.net:{http_mirror}/")
    p = mirrorctl(conf, "probe", "de1")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("de1 (de1.example.net, DE): PASS")
    assert "Host: de.mirrors.example.org" in p.stdout
    assert "2 h ago (fresh)" in p.stdout and "IPv4 up" in p.stdout
    p = mirrorctl(conf, "probe", "de1", "--json")
    assert json.loads(p.stdout)["ok"] is True


def test_probe_refuses_private_unless_allowed(tmp_path, http_mirror):
    conf, e = setup(tmp_path, allow_private=False)
    with e.begin() as c:
        add_mirror(c, name="de1", ipv4="127.0.0.1", http_url=f"http://de1.example.net:{http_mirror}/")
    p = mirrorctl(conf, "probe", "de1")
    assert p.returncode == 1
    assert "FAIL  private-address" in p.stdout


def test_probe_unknown_mirror(tmp_path):
    conf, _e = setup(tmp_path)
    p = mirrorctl(conf, "probe", "xx9")
    assert p.returncode == 1 and "no mirror named 'xx9'" in p.stderr


def test_mail_test_sends_and_reports_failure(tmp_path):
    got = []

    class H:
        async def handle_DATA(self, server, session, envelope):
            got.append((envelope.rcpt_tos, envelope.content))
            return "250 OK"

    port = free_port()
    ctl = Controller(H(), hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        conf, _e = setup(tmp_path, smtp_port=port)
        p = mirrorctl(conf, "mail", "test", "me@example.net")
        assert p.returncode == 0, p.stderr
        assert got and got[0][0] == ["me@example.net"] and b"mirrordns test mail" in got[0][1]
    finally:
        ctl.stop()
    p = mirrorctl(conf, "mail", "test", "me@example.net")        # server gone
    assert p.returncode == 1 and "failed" in p.stderr


def test_mail_test_refuses_a_malformed_address(tmp_path):
    """One clear line, not a traceback, and no header injection through the To: line."""
    conf, _e = setup(tmp_path, smtp_port=free_port())
    for bad in ("me@example.net\nBcc: victim@example.org", "not an address"):
        p = mirrorctl(conf, "mail", "test", bad)
        assert p.returncode == 1 and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    assert "must not hold control characters" in mirrorctl(
        conf, "mail", "test", "me@example.net\nBcc: victim@example.org").stderr
    assert "does not look like a mail address" in mirrorctl(
        conf, "mail", "test", "not an address").stderr
