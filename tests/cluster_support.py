"""Several mirrordns nodes as real processes on one PostgreSQL database, started with the command
line of the shipped systemd units (deploy/systemd/), for the multi-node tests.

`scratch_database()` makes a database of its own on the server of MIRRORDNS_TEST_DB_URL (a unique
name, dropped afterwards), so several processes can share it while the suite's own database stays
untouched. `Node` writes one node's config, runs `twistd` as its unit would, and stops it by
SIGTERM (timed) or SIGKILL.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from dnsd.db import make_engine, upgrade

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "deploy" / "systemd"
PG_URL = os.environ.get("MIRRORDNS_TEST_DB_URL", "")
NEEDS_PG = "several nodes share one PostgreSQL database: set MIRRORDNS_TEST_DB_URL"


@contextmanager
def scratch_database():
    """(url, engine) of a new, migrated database named after the suite's own plus a random
    suffix; dropped (with any connection left to it) when the block ends."""
    base = sa.engine.make_url(PG_URL)
    name = f"{base.database}_{secrets.token_hex(4)}"
    admin = sa.create_engine(base.set(drivername="postgresql+psycopg"),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        upgrade(engine)
        yield url, engine
    finally:
        engine.dispose()
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def unit_command(unit: str) -> list[str]:
    """ExecStart of deploy/systemd/<unit>, with /opt/mirrordns made this checkout and its venv."""
    text = (UNITS / unit).read_text()
    (line,) = [x for x in text.splitlines() if x.startswith("ExecStart=")]
    venv = str(Path(sys.executable).parent.parent)
    cmd = line.split("=", 1)[1].replace("/opt/mirrordns/.venv", venv).replace("/opt/mirrordns",
                                                                              str(ROOT))
    return shlex.split(cmd)


class Node:
    """One node: its config file, its twistd process, its log."""

    def __init__(self, workdir: Path, name: str, config: str, unit: str,
                 wrap: list[str] | None = None):
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name, self.unit = name, unit
        self.config = self.dir / "mirrordns.toml"
        self.config.write_text(config)
        self.log_path = self.dir / "twistd.log"
        self.wrap = wrap or []                 # e.g. ["ip", "netns", "exec", "v1"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> Node:
        env = dict(os.environ, MIRRORDNS_CONFIG=str(self.config), PYTHONUNBUFFERED="1")
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.wrap + unit_command(self.unit), cwd=self.dir, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_log(self, pattern: str, timeout: float = 30.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            if not self.alive():
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n"
                                     f"{self.log()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no /{pattern}/ in its log within {timeout} s:\n"
                             f"{self.log()[-3000:]}")

    def terminate(self, timeout: float = 20.0) -> float:
        """SIGTERM; the seconds until the process had exited."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        finally:
            self._log.close()
        return time.monotonic() - t0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        """Cleanup: whatever state it is in, it is gone afterwards."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if not self._log.closed:
            self._log.close()


def node_config(url: str, name: str, roles, *, listen_ip: str = "127.0.0.1",
                dns_port: int | None = None, smtp: str = "", dns: str = "", mail: str = "",
                probes: str = "enabled = false") -> str:
    """A node's config for the tests: its roles and name, the shared database, free ports, and
    extra lines for [dns], [mail] and [probes]."""
    from tests.helpers import free_port

    roles_list = ", ".join(f'"{r}"' for r in roles)
    return f"""
[node]
roles = [{roles_list}]
name = "{name}"
[database]
url = "{url}"
[dns]
zone_file = "{ROOT}/zones/mirrors.example.org.zone"
listen = ["{listen_ip}:{dns_port or free_port()}"]
{dns}
[admin]
listen = "{listen_ip}:{free_port()}"
[mail]
smtp = "{smtp or f'127.0.0.1:{free_port()}'}"
poll_interval = 0.1
{mail}
[probes]
{probes}
"""


def tracebacks(text: str) -> list[str]:
    """Tracebacks and unhandled errors in a node's log."""
    return [x for x in text.splitlines() if "Traceback" in x or "Unhandled" in x]
