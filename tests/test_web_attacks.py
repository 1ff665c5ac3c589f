"""The public web surface tried as an attacker would, over real HTTP on 127.0.0.1.

One server process (tests/serve_web.py: the listener's own Site over a seeded SQLite table, a
live plan, the closer with a document root and a dist tree) serves every test; requests go out
byte for byte as written (tests/rawhttp.py), so nothing between the test and the server
normalises a path or a header. Each class of issue 9 has its tests: files outside their roots,
bodies, headers and slow clients, logins, proxies and headers, our own error pages.
"""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from admin import store
from dnsd import validation
from dnsd.db import make_engine, upgrade
from tests import rawhttp
from tests.helpers import stop_process
from tests.rawhttp import request
from tests.webfakes import add_user

ROOT = Path(__file__).resolve().parent.parent
SECRET = "SECRET-7f3a9c"                   # in every file outside the roots
PW = "a long enough password"
FREE = 2                                   # [admin] login_free_failures below
ADDR_FREE = 6                              # [admin] login_address_free_failures below
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("attack")
    outside = d / "outside"
    outside.mkdir()
    for name in ("secret.html", "secret.md", "secret.ezt", "README.md", "page.html"):
        (outside / name).write_text(f"<p>{SECRET}</p>\n")
    doc = d / "docroot"
    (doc / "httpd").mkdir(parents=True)
    (doc / "httpd" / "download.html").write_text("<p>httpd download [preferred]</p>\n")
    (doc / "httpd" / "evil.html").symlink_to(outside / "secret.html")      # a file out
    (doc / "out").symlink_to(outside)                                      # a folder out
    (doc / "broken.html").write_text("<p>[if-any preferred]never closed</p>\n")
    dist = d / "dist"
    (dist / "httpd").mkdir(parents=True)
    (dist / "httpd" / "httpd-2.4.tar.gz").write_bytes(b"")
    (dist / "escape").symlink_to(outside)
    (dist / "httpd" / "leak.html").symlink_to(outside / "secret.html")
    static = ROOT / "admin" / "static"
    assert (static / "style.css").is_file()

    db = d / "web.sqlite"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    for name, role in (("alice", "admin"), ("bob", "admin"), ("carol", "admin"),
                       ("dave", "helper"), ("erin", "admin")):
        add_user(engine, name, PW, role)
    with engine.begin() as conn:
        store.add_mirror(conn, actor="seed", mail=None, country="DE", hostname="m1.example.de",
                         ipv4="192.0.2.10", https_url="https://m1.example.de/dist/",
                         status="active", rules=validation.Rules(allow_private=True))
    engine.dispose()
    cfg = d / "mirrordns.toml"
    cfg.write_text(f"""
[database]
url = "sqlite:///{db}"
[admin]
base_url = "https://mirrors.example.org"
trusted_proxies = ["127.0.0.1"]
login_free_failures = {FREE}
login_address_free_failures = {ADDR_FREE}
login_max_delay = 60
request_timeout = 1.0
idle_timeout = 1.5
[closer]
document_root = "{doc}"
dist_root = "{dist}"
[probes]
enabled = false
allow_private = true        # the mirror's documentation address
""")
    log = (d / "server.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "tests.serve_web", str(cfg), "--plan"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("PORT "), f"server did not start: {line!r} {_tail(log)}"
        port = int(line.split()[1])
        _wait_for_dist_index(port)
        yield {"port": port, "outside": outside, "doc": doc, "log": log}
    finally:
        stop_process(proc)
        log.close()


def _tail(log) -> str:
    log.seek(0)
    return log.read()[-3000:]


def _wait_for_dist_index(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        a = request(port, "GET", "/dyn/closer/not/there.tgz?as_json=1&cca2=de")
        if a.status == 200 and '"in_dist": false' in a.text:
            return
        time.sleep(0.05)
    raise AssertionError("the dist index was never built")


def assert_ours(a: rawhttp.Answer) -> None:
    """No version banner on anything we answer."""
    assert a.header("server") is None, a.headers


# --- 1. files outside their roots ------------------------------------------------------------

def _traversals(outside: Path) -> list[str]:
    o = str(outside).lstrip("/")
    enc = quote(str(outside), safe="")
    return [
        f"/dyn/{enc}%2Fsecret.cgi",                            # an absolute path, %2F-encoded
        f"/dyn/%2F{quote(o, safe='')}%2Fsecret.cgi",
        "/httpd/..%2F..%2Foutside%2Fsecret.cgi",               # climbing with encoded slashes
        "/httpd/..%2f..%2foutside%2fREADME.cgi",
        "/httpd/%2e%2e%2f%2e%2e%2foutside%2fsecret.cgi",       # encoded dots too
        "/%2e%2e/outside/secret.cgi",
        "/httpd/..%252F..%252Foutside%252Fsecret.cgi",         # double-encoded
        "/httpd/%252e%252e/%252e%252e/outside/secret.cgi",
        "/httpd/..%5C..%5Coutside%5Csecret.cgi",               # backslashes, encoded and raw
        "/httpd/..\\..\\outside\\secret.cgi",
        "/httpd/secret%00.cgi",                                # NUL
        "/httpd/%00/../../outside/secret.cgi",
        "/httpd/%C0%AE%C0%AE%C0%AFoutside%C0%AFsecret.cgi",    # overlong UTF-8 for . and /
        "/%C0%AE%C0%AE/outside/secret.cgi",
        "/httpd/%E0%80%AE%E0%80%AE%E0%80%AFsecret.cgi",
        "/out/secret.cgi",                                     # a folder symlinked out
        "/out/page.cgi",
        "/httpd/.hidden.cgi",
        "/static/..%2Fweb%2Fframework.py",                     # the static folder
        "/static/%2e%2e/web/framework.py",
        "/static/..%5Cweb%5Cframework.py",
        "/static/style.css%00",
        "/static/style.css%2F",
    ]


def test_no_encoding_reaches_a_file_outside_its_root(site):
    port = site["port"]
    for target in _traversals(site["outside"]):
        a = request(port, "GET", target)
        assert SECRET not in a.text, target
        assert a.status in (400, 404), (target, a.status)
        assert_ours(a)


def test_the_sites_own_404_for_a_refused_name(site):
    a = request(site["port"], "GET", "/httpd/..%2F..%2Foutside%2Fsecret.cgi")
    assert a.status == 404 and "<h1>Not found</h1>" in a.text


def test_a_symlinked_template_out_of_the_root_is_not_read(site):
    """httpd/evil.html links to a file outside: the page is the built-in default instead."""
    a = request(site["port"], "GET", "/httpd/evil.cgi?cca2=de")
    assert a.status == 200 and SECRET not in a.text
    assert "m1.example.de" in a.text                      # the default page, with the mirror
    a = request(site["port"], "GET", "/httpd/download.cgi?cca2=de")
    assert a.status == 200 and "httpd download https://m1.example.de/dist/" in a.text


def test_the_dist_index_does_not_follow_links_out_of_the_tree(site):
    port = site["port"]

    def in_dist(path):
        a = request(port, "GET", f"/dyn/closer/{path}?as_json=1&cca2=de")
        assert a.status == 200
        return '"in_dist": true' in a.text

    assert in_dist("httpd/httpd-2.4.tar.gz")
    assert not in_dist("escape/secret.html") and not in_dist("escape")
    assert not in_dist("httpd/leak.html")


# --- 2. bodies, headers, slow clients --------------------------------------------------------

def test_a_declared_huge_body_is_refused_before_it_is_sent(site):
    with socket.create_connection(("127.0.0.1", site["port"]), timeout=10) as s:
        s.sendall(b"POST /apply HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
                  b"x-www-form-urlencoded\r\nContent-Length: 10000000000\r\n\r\n")
        a = rawhttp.parse(rawhttp.read_answer(s, 5))        # no byte of the body sent
    assert a.status == 413 and "too large" in a.text
    assert_ours(a)


def test_a_body_over_the_limit_is_refused_with_its_content_length(site):
    a = request(site["port"], "POST", "/admin/login", FORM, b"a=" + b"x" * 70_000)
    assert a.status == 413
    a = request(site["port"], "POST", "/api/mirrors/de1/notes",
                {"Content-Type": "application/json"}, b'{"text": "' + b"x" * 70_000 + b'"}')
    assert a.status == 413 and a.header("content-type") == "application/json"   # as documented
    assert '"error"' in a.text


def test_a_chunked_body_is_cut_off_at_the_limit(site):
    with socket.create_connection(("127.0.0.1", site["port"]), timeout=10) as s:
        s.sendall(b"POST /apply HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
                  b"x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"4000\r\n" + b"a" * 0x4000 + b"\r\n"
        sent = 0
        try:
            while sent < 20_000_000:
                s.sendall(chunk)
                sent += 0x4000
                if select.select([s], [], [], 0)[0]:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        a = rawhttp.parse(rawhttp.read_answer(s, 5))
    assert a.status == 413
    assert sent < 8_000_000         # cut off near 64 KiB (plus what the socket buffers held)


def test_a_request_that_takes_no_body_refuses_one(site):
    a = request(site["port"], "GET", "/", {"Content-Length": "5"}, b"a=1&b")
    assert a.status == 413
    a = request(site["port"], "GET", "/dyn/closer/x?cca2=de", {"Content-Length": "3"}, b"a=1")
    assert a.status == 413


def test_a_form_to_a_route_without_one_is_405_and_too_many_fields_400(site):
    a = request(site["port"], "POST", "/", FORM, b"a=1&" * 1000)
    assert a.status == 405 and a.header("allow") == "GET"
    a = request(site["port"], "POST", "/apply", FORM, b"a&" * 5000)
    assert a.status == 400 and "fields" in a.text
    a = request(site["port"], "TRACE", "/admin/login", {"Content-Length": "2"}, b"{}")
    assert a.status == 405 and a.header("allow")


def test_header_count_and_size_are_bounded(site):
    many = "".join(f"X-H{i}: {i}\r\n" for i in range(150))
    a = rawhttp.send(site["port"], f"GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())
    assert a.status == 400
    a = rawhttp.send(site["port"], b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000
                     + b"\r\n\r\n")
    assert a.status == 431
    a = rawhttp.send(site["port"], b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert a.status == 431
    a = rawhttp.send(site["port"], b"GET /?" + b"a&" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert a.status == 414                     # parsed by Twisted before any page: bounded
    a = rawhttp.send(site["port"], b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + b"a=1;" * 2000
                     + b"\r\n\r\n")
    assert a.status == 431


def test_a_slow_client_is_cut_off_although_it_keeps_sending(site):
    """request_timeout = 1 s for the whole request: a byte every 0.2 s does not keep it alive."""
    with socket.create_connection(("127.0.0.1", site["port"]), timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        got = b""
        closed = False
        while time.monotonic() - t0 < 6 and not closed:
            try:
                s.sendall(b"X-Drip: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            closed, part = rawhttp.closed_within(s, 0.2)
            got += part
        elapsed = time.monotonic() - t0
    assert closed and elapsed < 5, elapsed
    assert got.startswith(b"HTTP/1.1 408")


def test_an_idle_kept_alive_connection_is_closed(site):
    with socket.create_connection(("127.0.0.1", site["port"]), timeout=10) as s:
        s.sendall(b"GET /static/style.css HTTP/1.1\r\nHost: x\r\n\r\n")
        a = rawhttp.parse(rawhttp.read_answer(s, 5))
        assert a.status == 200
        closed, _ = rawhttp.closed_within(s, 5)          # idle_timeout = 1.5 s
    assert closed


def test_a_slow_body_is_cut_off(site):
    with socket.create_connection(("127.0.0.1", site["port"]), timeout=10) as s:
        s.sendall(b"POST /apply HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
                  b"x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\na=")
        closed, got = rawhttp.closed_within(s, 5)
    assert closed and got.startswith(b"HTTP/1.1 408")


# --- 4. logins -------------------------------------------------------------------------------

class Browser:
    """Cookies and the login dance over raw HTTP, from one visitor address (X-Forwarded-For)."""

    def __init__(self, port: int, ip: str):
        self.port, self.ip, self.cookies = port, ip, {}

    def _headers(self, extra=None):
        h = {"X-Forwarded-For": self.ip, **(extra or {})}
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return h

    def _keep(self, a):
        for c in a.headers.get("set-cookie", []):
            k, _, rest = c.partition("=")
            v = rest.split(";", 1)[0]
            if v:
                self.cookies[k] = v
            else:
                self.cookies.pop(k, None)
        return a

    def get(self, path):
        return self._keep(request(self.port, "GET", path, self._headers()))

    def post(self, path, fields: dict, query: str = ""):
        body = "&".join(f"{k}={quote(v)}" for k, v in fields.items()).encode()
        return self._keep(request(self.port, "POST", path + query, self._headers(FORM), body))

    def login(self, user, password):
        form = self.get("/admin/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        return self.post("/admin/login", {"csrf": token, "username": user, "password": password,
                                          "next": "/admin/"})

    def csrf(self):
        return re.search(r'name="csrf" value="([^"]+)"', self.get("/admin/account").text)[1]


def test_failures_from_one_address_delay_that_address_only(site):
    port = site["port"]
    attacker, owner = Browser(port, "198.51.100.1"), Browser(port, "192.0.2.1")
    for _ in range(FREE):
        assert attacker.login("alice", "guess").status == 403
    a = attacker.login("alice", PW)                         # the right one, but it must wait
    assert a.status == 429 and int(a.header("retry-after")) >= 1
    assert "Too many failed attempts" in a.text
    a = owner.login("alice", PW)                            # alice at home: not locked out
    assert a.status == 303 and "mirrordns_session" in owner.cookies
    assert owner.get("/admin/").status == 200


def test_unknown_and_known_users_get_the_same_answers(site):
    port = site["port"]
    seen = {}
    for n, user in enumerate(("bob", "nobody-here")):
        b = Browser(port, f"198.51.100.{20 + n}")
        first = b.login(user, "guess")
        for _ in range(FREE - 1):
            b.login(user, "guess")
        then = b.login(user, "guess")
        seen[user] = [(a.status, re.sub(r'value="[^"]*"', "", a.text)) for a in (first, then)]
    assert seen["bob"] == seen["nobody-here"]
    assert [s for s, _ in seen["bob"]] == [403, 429]


def test_guessing_across_accounts_from_one_address_slows_it(site):
    port = site["port"]
    b = Browser(port, "203.0.113.50")
    for i in range(ADDR_FREE):
        assert b.login(f"user{i}", "guess").status == 403
    assert b.login("carol", PW).status == 429
    assert Browser(port, "203.0.113.51").login("carol", PW).status == 303


def test_the_password_form_is_throttled_too(site):
    b = Browser(site["port"], "192.0.2.60")
    assert b.login("erin", PW).status == 303
    csrf = b.csrf()
    new = "another long password"
    for _ in range(FREE):
        a = b.post("/admin/account/password", {"csrf": csrf, "current": "guess", "new": new,
                                                "again": new})
        assert a.status == 400
    a = b.post("/admin/account/password", {"csrf": csrf, "current": PW, "new": new, "again": new})
    assert a.status == 429


def test_login_csrf_is_signed_and_read_from_the_body_only(site):
    port = site["port"]
    b = Browser(port, "192.0.2.70")
    b.cookies["mirrordns_login"] = "x" * 24                  # planted, with a field to match
    a = b.post("/admin/login", {"csrf": "x" * 24, "username": "dave", "password": PW})
    assert a.status == 403 and "mirrordns_session" not in b.cookies
    b = Browser(port, "192.0.2.71")
    token = re.search(r'name="csrf" value="([^"]+)"', b.get("/admin/login").text)[1]
    a = b.post("/admin/login", {"username": "dave", "password": PW}, query=f"?csrf={token}")
    assert a.status == 403
    assert b.post("/admin/login", {"csrf": token, "username": "dave",
                                   "password": PW}).status == 303
    csrf = b.csrf()                                          # a session's token: the same rule
    a = b.post("/admin/logout", {}, query=f"?csrf={csrf}")
    assert a.status == 403 and b.get("/admin/").status == 200


# --- 7. proxies and headers ------------------------------------------------------------------

def test_cookies_are_secure_because_base_url_is_https(site):
    a = request(site["port"], "GET", "/admin/login", {"X-Forwarded-For": "192.0.2.80"})
    cookies = a.headers.get("set-cookie", [])
    assert cookies and all("Secure" in c and "HttpOnly" in c for c in cookies)


def test_metrics_behind_a_proxy_that_does_not_say_who(site):
    port = site["port"]
    assert request(port, "GET", "/metrics", {"X-Forwarded-For": "127.0.0.1"}).status == 200
    for headers in ({}, {"X-Forwarded-For": "garbage"}, {"X-Forwarded-For": "198.51.100.9"}):
        assert request(port, "GET", "/metrics", headers).status == 403, headers


def test_ids_that_do_not_fit_are_404(site):
    b = Browser(site["port"], "192.0.2.90")
    assert b.login("dave", PW).status == 303
    for path in ("/admin/mirrors/99999999999999999999", "/admin/mirrors/4294967296/edit",
                 "/admin/mirrors/%D9%A3", "/admin/applications/99999999999",
                 "/admin/mirrors/-1", "/api/mirrors/99999999999999999999"):
        a = b.get(path)
        assert a.status in (401, 404), (path, a.status)
        assert "Traceback" not in a.text


def test_admin_pages_are_never_cached_and_nothing_announces_a_version(site):
    b = Browser(site["port"], "192.0.2.91")
    assert b.get("/admin/login").header("cache-control") == "no-store"
    assert b.login("dave", PW).status == 303
    for path in ("/admin/", "/admin/account", "/admin/nope"):
        a = b.get(path)
        assert a.header("cache-control") == "no-store", path
        assert_ours(a)
    for path in ("/", "/static/style.css", "/mirrors.json", "/dyn/closer/x?cca2=de"):
        assert_ours(request(site["port"], "GET", path))


@pytest.mark.parametrize(("method", "path", "code", "kind"), [
    ("GET", "/no/such/page", 404, "html"),
    ("GET", "/nope.txt", 404, "html"),
    ("GET", "/static/nope.css", 404, "html"),
    ("GET", "/dyn/nothing-here", 404, "html"),
    ("GET", "/httpd/", 404, "html"),
    ("GET", "/admin/no/such", 404, "html"),
    ("GET", "/apply/no/such/link", 404, "html"),
    ("GET", "/api/nope", 404, "json"),
    ("POST", "/static/style.css", 405, "html"),
    ("POST", "/dyn/closer/x", 405, "html"),
    ("GET", "/broken.cgi?cca2=de", 500, "html"),
])
def test_our_own_error_pages_on_every_path(site, method, path, code, kind):
    a = request(site["port"], method, path, FORM if method == "POST" else None)
    assert a.status == code, (path, a.status, a.text[:200])
    assert_ours(a)
    if kind == "html":
        assert a.text.startswith("<!doctype html>") and 'href="/static/style.css"' in a.text
        assert "Twisted" not in a.text and "No Such Resource" not in a.text
    else:
        assert a.header("content-type") == "application/json" and '"error"' in a.text
    assert os.fspath(site["doc"]) not in a.text              # no file paths either
