"""What the browser tests share: Debian's Chromium under playwright (never `playwright install`),
the screenshots' folder, waiting for a server to answer, and polling without timing anything.

The `browser` and `page` fixtures are in tests/conftest.py, built from what is here (playwright is
imported only when a test asks for them).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"          # git-ignored; look at what lands here
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1360, "height": 900}


def wait_ready(proc, url: str, log: Path, what: str = "twistd", limit: float = 60) -> None:
    """Wait until `url` answers 200, or fail with the tail of the server's log when the process
    exits or `limit` seconds pass (a bound for a broken run, not a measurement)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start: {log.read_text()[-3000:]}")


def wait_until(check, what: str, limit: float = 20.0):
    """Poll until check() is true; the limit only bounds a broken run, it measures nothing."""
    deadline = time.monotonic() + limit
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.1)


def screenshot(page, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot under tests/artifacts/ and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    return path


@contextlib.contextmanager
def twistd(config: Path, ready_url: str, log_path: Path):
    """The whole process as operators run it (`twistd -n -y twistd.tac`, the config from
    $MIRRORDNS_CONFIG), its output in `log_path`; yields once `ready_url` answers, and stops it
    (terminate, then kill) on the way out."""
    log = log_path.open("wb")
    exe = Path(sys.executable).with_name("twistd")
    proc = subprocess.Popen([str(exe), "-n", "--pidfile=", "--logfile=-", "-y", "twistd.tac"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "MIRRORDNS_CONFIG": str(config)})
    try:
        wait_ready(proc, ready_url, log_path)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class TimeFile(http.server.BaseHTTPRequestHandler):
    """A mirror that is up: /pub/TIME holds the time it was started (mirmon's format), as a sync
    leaves it, anything else 404. One value for every fetch: a time read per request differs
    between the probe's fetches for two Host names when they straddle a second."""

    stamp = 0

    def do_GET(self):
        if self.path == "/pub/TIME":
            body = f"{self.stamp}\n".encode()
            self.send_response(200)
        else:
            body = b"not found\n"
            self.send_response(404)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve_mirror(address: str) -> http.server.ThreadingHTTPServer:
    """A real HTTP mirror on `address` (a 127.0.x.y of its own, port chosen by the system) for
    the probes of a twistd under test; `.shutdown()` it when done."""
    handler = type("SyncedTimeFile", (TimeFile,), {"stamp": int(time.time())})
    srv = http.server.ThreadingHTTPServer((address, 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv
