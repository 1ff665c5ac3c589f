"""The web alone on a real loopback listener (admin.web.devserver), driven with requests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def test_devserver_login_over_a_real_socket(tmp_path):
    cfg = tmp_path / "mirrordns.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/m.sqlite"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "admin.web.devserver", "--config", str(cfg), "--quiet",
         "--create-user", "root:admin"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "MIRRORDNS_DEV_PASSWORD": "a long dev password"})
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT "), proc.stderr.read() if proc.poll() is not None else line
        base = f"http://127.0.0.1:{int(line.split()[1])}"
        s = requests.Session()
        r = s.get(f"{base}/admin/", timeout=10)          # follows the redirect to the login form
        assert r.status_code == 200 and "Log in" in r.text
        token = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)
        r = s.post(f"{base}/admin/login", data={"csrf": token, "username": "root",
                                                "password": "a long dev password"},
                   allow_redirects=False, timeout=10)
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        r = s.get(f"{base}/admin/", timeout=10)
        assert r.status_code == 200 and "<h1>Mirrors</h1>" in r.text
        assert r.headers["content-security-policy"].startswith("default-src 'none'")
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
