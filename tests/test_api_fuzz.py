"""Fuzz the JSON API against its own OpenAPI document with schemathesis (every check it has).

The admin web runs for real in a subprocess (tests/serve_web.py: build_root on 127.0.0.1, port
chosen by the kernel) over a seeded SQLite table, with an admin's API token; the schemathesis CLI
runs in another subprocess against /api/openapi.json: examples, coverage, fuzzing and stateful
phases, each operation bounded by --max-examples, so the run stays within about half a minute.
The seed is fixed for repeatable CI runs; set MIRRORDNS_FUZZ_SEED to explore others.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from admin import store
from admin.web import api
from dnsd.db import make_engine, upgrade
from tests.webfakes import add_user

ROOT = Path(__file__).resolve().parent.parent
MAX_EXAMPLES = int(os.environ.get("MIRRORDNS_FUZZ_EXAMPLES", "25"))
SEED = os.environ.get("MIRRORDNS_FUZZ_SEED", "1")


def _schemathesis() -> str:
    exe = Path(sys.executable).with_name("schemathesis")
    return str(exe) if exe.exists() else (shutil.which("schemathesis") or "schemathesis")


@pytest.fixture
def server(tmp_path):
    db = tmp_path / "fuzz.sqlite"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    add_user(engine, "alice", role="admin")
    with engine.begin() as conn:
        for cc, host, status in (("DE", "a.example.de", "active"), ("DE", "b.example.de", "active"),
                                 ("FR", "c.example.fr", "pending"),
                                 ("US", "d.example.us", "active")):
            store.add_mirror(conn, actor="seed", mail=None, country=cc, hostname=host,
                             http_url=f"http://{host}/", status=status,
                             maintainers_=[f"M <m@{host}>"])
        token = api.issue_token(conn, "alice")
    engine.dispose()
    cfg = tmp_path / "mirrordns.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{db}"\n[mail]\nlist = "list@example.org"\n')
    log = (tmp_path / "server.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "tests.serve_web", str(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)   # never hang the suite
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("PORT "), f"server did not start: {line!r}"
        yield f"http://127.0.0.1:{int(line.split()[1])}", token, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_api_survives_schemathesis(server):
    base, token, log = server
    cmd = [_schemathesis(), "--config-file", str(ROOT / "tests" / "schemathesis.toml"), "run",
           f"{base}/api/openapi.json",
           "--header", f"Authorization: Bearer {token}",
           "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", SEED,
           "--workers", "1", "--request-timeout", "10", "--no-color"]
    res = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=240,
                         env={**os.environ, "NO_COLOR": "1"})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert "No issues found" in out and " passed" in out, out[-3000:]
    log.seek(0)
    server_log = log.read()
    assert "Traceback" not in server_log, server_log[-4000:]
