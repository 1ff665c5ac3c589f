"""One probe of one mirror, against real HTTP servers on 127.0.0.x (Twisted web, same reactor)."""

from __future__ import annotations

import dataclasses
import time

import pytest
import pytest_twisted
from twisted.internet import reactor

from dnsd.config import Config, ProbesConfig
from dnsd.validation import is_forbidden_address
from probes.probe import Prober, Target, parse_timestamp, target_from_row
from tests.dns_support import until
from tests.probe_mirrors import FakeMirror, serve

ZONE = "mirrors.example.org"
NAMES = ("de1.mirrors.example.org", "de.mirrors.example.org", "www.mirrors.example.org")


def cfg(**kw) -> Config:
    base = {"allow_private": True, "timeout": 2.0, "connect_timeout": 1.0, "max_body": 4096}
    base.update(kw)
    return Config(probes=ProbesConfig(**base))


@pytest.fixture
def mirror(request):
    """A fake mirror on 127.0.0.x; returns (FakeMirror, Target)."""
    made = []

    def make(mode="fresh", address="127.0.0.2", hosts=None, **target_kw):
        m = FakeMirror(mode, hosts=hosts)
        port = serve(m, address)
        made.append((m, port))
        p = port.getHost().port
        t = Target(mirror_id=1, hostname="de1.example.net", country="DE", name="de1",
                   ipv4=address, http_url=f"http://de1.example.net:{p}/pub/", names=NAMES)
        return m, dataclasses.replace(t, **target_kw)

    yield make
    for m, port in made:
        m.stop()
        port.stopListening()


def run(c, t, geo=None):
    return Prober(c, reactor, geo=geo).probe(t)


# --- pure parts ----------------------------------------------------------------------------------

def test_timestamp_formats():
    assert parse_timestamp(b"1700000000 Tue Nov 14 22:13:20 UTC 2023\n") == 1700000000
    assert parse_timestamp(b"hello world") is None
    assert parse_timestamp(b"") is None
    assert parse_timestamp(b"https://www.php.net/|8.3.1|1700000000|1|en|manual-noalias",
                           "phpnet") == 1700000000
    assert parse_timestamp(b"just one field", "phpnet") is None
    trace = b"Tue Nov 14 22:13:20 UTC 2023\nDate: Tue, 14 Nov 2023 22:13:20 +0000\nCreator: ftpsync\n"
    assert parse_timestamp(trace, "debian-trace") == 1700000000
    assert parse_timestamp(b"Tue Nov 14 22:13:20 UTC 2023\n", "debian-trace") == 1700000000
    assert parse_timestamp(b"garbage\n", "debian-trace") is None


def test_forbidden_addresses():
    for a in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.1.1", "::1", "fe80::1", "fc00::1",
              "100.64.0.1", "0.0.0.0", "::ffff:127.0.0.1", "not-an-ip", "224.0.0.1"):
        assert is_forbidden_address(a), a
    for a in ("8.8.8.8", "2a00:1450:4001::1", "151.101.1.1"):
        assert not is_forbidden_address(a), a


def test_target_names_from_row():
    t = target_from_row({"id": 3, "name": "de2", "hostname": "m.example.net", "country": "DE",
                         "ipv4": "192.0.2.1", "ipv6": None, "http_url": "http://m.example.net/",
                         "https_url": ""}, ZONE, "www")
    assert t.names == ("de2.mirrors.example.org", "de.mirrors.example.org", "www.mirrors.example.org")
    assert t.https_url is None
    assert target_from_row({"id": 4, "name": None, "hostname": "x", "country": "DE"}, ZONE).names == ()


# --- against real servers ------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_fresh_mirror_passes_with_every_host_name(mirror):
    m, t = mirror("fresh")
    r = await run(cfg(), t)
    assert r.ok, r.log_lines()
    assert r.error_class == "" and r.http_status == 200
    assert r.address == "127.0.0.2" and r.family == 4 and r.ipv4_up is True and r.ipv6_up is None
    assert r.sync_age is not None and r.sync_age < 60
    assert r.ttfb_ms is not None and r.total_ms >= r.ttfb_ms
    assert r.url.endswith("/pub/TIME")
    timestamps = sorted(h for h, path in m.requests if path == "/pub/TIME")
    assert timestamps == sorted(["de1.example.net", *NAMES])
    # and a random path, once, with the mirror's own name (it must be a 404: probes.content)
    (other,) = [(h, path) for h, path in m.requests if path != "/pub/TIME"]
    assert other[0] == "de1.example.net" and other[1].startswith("/pub/mirrordns-no-such-file-")
    assert len(r.fetches) == 5 and all(f.ok for f in r.fetches)
    assert [f.check for f in r.fetches].count("404") == 1


@pytest_twisted.ensureDeferred
async def test_user_agent_is_sent(mirror):
    seen = []
    m, t = mirror("fresh")
    orig = m.render_GET
    m.render_GET = lambda req: (seen.append(req.getHeader("user-agent")), orig(req))[1]
    await run(cfg(), t)
    assert seen and all(s.startswith("mirrordns-probe/") for s in seen)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("mode, error_class", [
    ("stale", "stale"), ("500", "http-status"), ("wrong", "no-timestamp"),
    ("future", "no-timestamp"), ("big", "too-large"), ("bigchunked", "too-large"),
    ("redirect", "http-status"), ("hang", "timeout"), ("drip", "timeout"),
])
async def test_broken_mirrors_fail_with_their_class(mirror, mode, error_class):
    _m, t = mirror(mode)
    c = cfg(timeout=0.8) if mode in ("hang", "drip") else cfg()
    r = await run(c, t)
    assert not r.ok
    assert r.error_class == error_class, r.log_lines()
    assert r.ipv4_up is (mode == "stale")      # a stale mirror still answers; it is just old
    if mode == "redirect":
        assert "elsewhere.example" in r.error


@pytest_twisted.ensureDeferred
async def test_hanging_mirror_costs_one_timeout_and_frees_the_socket(mirror):
    m, t = mirror("hang")
    t0 = time.monotonic()
    r = await run(cfg(timeout=0.6), t)
    assert r.error_class == "timeout"
    assert time.monotonic() - t0 < 3           # one deadline for all fetches, not one each
    # the server sees the client go away (connection closed on cancel)
    assert m.pending                           # the request did reach the hanging server
    await until(lambda: all(req._disconnected for req in m.pending))


@pytest_twisted.ensureDeferred
async def test_wrong_host_when_a_name_is_not_served(mirror):
    _m, t = mirror("fresh", hosts=("de1.example.net", "de1.mirrors.example.org"))
    r = await run(cfg(), t)
    assert not r.ok and r.error_class == "wrong-host"
    assert "de.mirrors.example.org" in r.error


@pytest_twisted.ensureDeferred
async def test_refused_connection(mirror):
    _m, t = mirror("fresh")
    t = dataclasses.replace(t, http_url="http://de1.example.net:1/pub/")
    r = await run(cfg(), t)
    assert r.error_class == "refused" and r.ipv4_up is False


@pytest_twisted.ensureDeferred
async def test_private_address_refused_unless_allowed(mirror):
    m, t = mirror("fresh")
    r = await run(cfg(allow_private=False), t)
    assert not r.ok and r.error_class == "private-address"
    assert m.requests == []                    # not even connected
    r = await run(cfg(allow_private=True), t)
    assert r.ok


@pytest_twisted.ensureDeferred
async def test_redirect_followed_only_when_configured(mirror):
    target, _t = mirror("fresh", address="127.0.0.1")
    port = _t.http_url.rsplit(":", 1)[1].split("/")[0]
    m, t = mirror("redirect", address="127.0.0.3")
    m.location = f"http://localhost:{port}/pub/TIME"         # resolved, then checked again
    r = await run(cfg(follow_redirects=False), t)
    assert r.error_class == "http-status" and "localhost" in r.error
    r = await run(cfg(follow_redirects=True), t)
    assert r.ok, r.log_lines()
    assert r.address == "127.0.0.1"                           # where the redirect led
    assert ("localhost", "/pub/TIME") in target.requests


@pytest_twisted.ensureDeferred
async def test_redirect_to_a_private_address_is_refused_after_resolving(mirror):
    target, _t = mirror("fresh", address="127.0.0.1")
    port = _t.http_url.rsplit(":", 1)[1].split("/")[0]
    m, t = mirror("redirect", address="127.0.0.3")
    m.location = f"http://localhost:{port}/pub/TIME"
    prober = Prober(cfg(follow_redirects=True), reactor)
    prober.allow_private = False                # the pinned address is let through below
    # the one rule, as the probe (the pinned address) and dnsd.outbound (the redirect) see it
    import dnsd.validation as rule
    import probes.probe as pp
    orig = rule.is_forbidden_address
    rule.is_forbidden_address = pp.is_forbidden_address = lambda a: a != "127.0.0.3" and orig(a)
    try:
        r = await prober.probe(t)
    finally:
        rule.is_forbidden_address = pp.is_forbidden_address = orig
    assert r.error_class == "private-address" and "127.0.0.1" in r.error
    assert target.requests == []                # resolved, refused before connecting


@pytest_twisted.ensureDeferred
async def test_hostname_only_mirror_resolving_to_a_private_address(mirror):
    """No table address: the name is resolved by the probe and checked before connecting."""
    m, t = mirror("fresh", address="127.0.0.1")
    port = t.http_url.rsplit(":", 1)[1].split("/")[0]
    t = dataclasses.replace(t, ipv4=None, names=(), hostname="localhost",
                            http_url=f"http://localhost:{port}/pub/")
    r = await run(cfg(allow_private=False), t)
    assert r.error_class == "private-address" and "localhost is " in r.error
    assert m.requests == [] and r.resolved
    r = await run(cfg(allow_private=True), t)
    assert r.ok and r.address == "127.0.0.1", r.log_lines()
    assert (r.resolved, r.probed_ipv4) == (True, "127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_ipv6_and_ipv4_checked_separately(mirror):
    _m, t = mirror("fresh", address="127.0.0.2")
    # IPv6 loopback with no listener on this port: refused; IPv4 is up, so the mirror passes.
    t = dataclasses.replace(t, ipv6="::1")
    r = await run(cfg(), t)
    assert r.ok and r.ipv4_up is True and r.ipv6_up is False
    assert any(f.family == 6 and f.error_class == "refused" for f in r.fetches)


@pytest_twisted.ensureDeferred
async def test_geo_check_flags_but_does_not_fail(mirror):
    class Geo:
        def country(self, ip):
            return {"127.0.0.2": "US"}.get(ip)

    _m, t = mirror("fresh")
    r = await run(cfg(), t, geo=Geo())
    assert r.ok and r.geo_check == "127.0.0.2 in US, not DE"


@pytest_twisted.ensureDeferred
async def test_geo_check_with_the_test_geoip_database(mirror, test_mmdb):
    import geoip2.database

    class Geo:                                  # the shape of dnsd.geo.GeoLocator: .country(ip)
        def __init__(self):
            self.r = geoip2.database.Reader(test_mmdb)

        def country(self, ip):
            try:
                return self.r.country(ip).country.iso_code
            except Exception:
                return None

    _m, t = mirror("fresh", address="127.0.1.9")           # 127.0.1.0/24 is DE in the test DB
    assert (await run(cfg(), t, geo=Geo())).geo_check == ""
    _m, t = mirror("fresh", address="127.0.2.9", country="DE")   # US
    assert (await run(cfg(), t, geo=Geo())).geo_check == "127.0.2.9 in US, not DE"


@pytest_twisted.ensureDeferred
async def test_phpnet_format(mirror):
    m, t = mirror("fresh")
    now = int(time.time())
    m.render_GET = lambda req: f"https://de1.php.net/|8.3.1|{now}|1|en\n".encode()
    r = await run(cfg(timestamp_format="phpnet", mirror_info_check=False,
                      not_found_check=False), t)
    assert r.ok and abs(r.timestamp - now) < 2


# --- HTTPS -----------------------------------------------------------------------------------------

@pytest.fixture
def tls_mirror():
    from twisted.internet import ssl

    from tests.probe_mirrors import make_ca_and_cert, serve_tls

    made = []

    def make(cert_names, address="127.0.0.4"):
        ca_pem, server_pem = make_ca_and_cert(cert_names)
        m = FakeMirror("fresh")
        http_port, tls_port = serve(m, address), serve_tls(m, address, server_pem)
        made.extend([http_port, tls_port])
        t = Target(mirror_id=1, hostname="de1.example.net", country="DE", name="de1",
                   ipv4=address, http_url=f"http://de1.example.net:{http_port.getHost().port}/pub/",
                   https_url=f"https://de1.example.net:{tls_port.getHost().port}/pub/", names=NAMES)
        return t, ssl.Certificate.loadPEM(ca_pem)

    yield make
    for p in made:
        p.stopListening()


@pytest_twisted.ensureDeferred
async def test_https_valid_for_every_name(tls_mirror):
    t, ca = tls_mirror(["de1.example.net", *NAMES])
    r = await Prober(cfg(), reactor, trust_root=ca).probe(t)
    assert r.ok and r.https_ok is True and r.tls_ok is True
    https = [f for f in r.fetches if f.url.startswith("https")]
    assert len(https) == 4 and all(f.ok and f.tls_ok for f in https)


@pytest_twisted.ensureDeferred
async def test_https_certificate_missing_a_name(tls_mirror):
    t, ca = tls_mirror(["de1.example.net"])           # no cert for the DNS names
    r = await Prober(cfg(), reactor, trust_root=ca).probe(t)
    assert r.ok                                       # http serves: the mirror stays in
    assert r.https_ok is False and r.tls_ok is False  # but not for https answers
    bad = [f for f in r.fetches if f.url.startswith("https") and not f.ok]
    assert {f.host.split(":")[0] for f in bad} == set(NAMES)
    assert all(f.error_class == "tls" for f in bad)


@pytest_twisted.ensureDeferred
async def test_https_untrusted_certificate(tls_mirror):
    t, _ca = tls_mirror(["de1.example.net", *NAMES])
    r = await Prober(cfg(), reactor).probe(t)         # platform CAs: our test CA is unknown
    assert r.https_ok is False
    assert [f.error_class for f in r.fetches if f.url.startswith("https")] == ["tls"]


@pytest_twisted.ensureDeferred
async def test_ip_literal_urls(mirror):
    m, t = mirror("fresh", address="127.0.0.2")
    port = t.http_url.rsplit(":", 1)[1].split("/")[0]
    t = dataclasses.replace(t, hostname="127.0.0.2", http_url=f"http://127.0.0.2:{port}/pub/",
                            names=())
    r = await run(cfg(not_found_check=False), t)
    assert r.ok and m.requests == [("127.0.0.2", "/pub/TIME")]
