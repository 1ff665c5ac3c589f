"""The closer end to end on a real listener on 127.0.0.1: the whole admin web tree (build_root),
the real geo lookup over the test mmdb, and clients that connect from chosen loopback addresses
(127.0.1.x is DE in the test database, 127.0.2.x US), so the location really comes from the
connecting address and X-Forwarded-For is believed only from a trusted proxy."""

from __future__ import annotations

import json
import random

import pytest_twisted
import treq
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.web.client import Agent
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.server import Site
from zope.interface import implementer

from admin.web import build_root
from admin.web.framework import WebContext
from dnsd.config import parse_config
from dnsd.geo import GeoLocator
from tests.closer_support import SERVING_WEB, Holder, make_plan, standard_rows
from tests.webfakes import SyncPool

DE = {SERVING_WEB["de1"], SERVING_WEB["de2"]}


@implementer(IAgentEndpointFactory)
class FromAddress:
    """Connect from a given local address (the server sees it as the client address)."""

    def __init__(self, source: str):
        self.source = source

    def endpointForURI(self, uri):
        return TCP4ClientEndpoint(reactor, uri.host.decode(), uri.port, timeout=10,
                                  bindAddress=(self.source, 0))


def client_from(source: str) -> HTTPClient:
    return HTTPClient(Agent.usingEndpointFactory(reactor, FromAddress(source)))


def serve(test_mmdb, config_text=""):
    cfg = parse_config(config_text)
    ctx = WebContext(cfg=cfg, pool=SyncPool(None), reactor=reactor,
                     plan=Holder(make_plan(standard_rows(), cfg)), geo=GeoLocator(test_mmdb))
    port = reactor.listenTCP(0, Site(build_root(ctx)), interface="127.0.0.1")
    return port, f"http://127.0.0.1:{port.getHost().port}"


async def fetch_json(client, url, headers=None):
    resp = await client.get(url, headers=headers or {})
    assert resp.code == 200
    return json.loads(await resp.text())


@pytest_twisted.ensureDeferred
async def test_location_from_the_connecting_address(test_mmdb):
    port, base = serve(test_mmdb)
    try:
        d = await fetch_json(client_from("127.0.1.5"), f"{base}/dyn/closer.cgi/httpd/?as_json=1")
        assert d["cca2"] == "de"
        d = await fetch_json(client_from("127.0.2.5"), f"{base}/dyn/closer.cgi/httpd/?as_json=1",
                             headers={"X-Forwarded-For": "192.0.2.10"})     # not trusted: ignored
        assert d["cca2"] == "us"
        resp = await client_from("127.0.1.5").get(
            f"{base}/dyn/closer.lua?action=download&filename=httpd/README", allow_redirects=False)
        assert resp.code == 302
        loc = resp.headers.getRawHeaders("location")[0]
        assert loc in {u + "httpd/README" for u in DE}
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_forwarded_for_from_a_trusted_proxy(test_mmdb):
    port, base = serve(test_mmdb, '[admin]\ntrusted_proxies = ["127.0.9.0/24"]\n')
    try:
        proxy = client_from("127.0.9.1")
        d = await fetch_json(proxy, f"{base}/dyn/closer/?as_json=1",
                             headers={"X-Forwarded-For": "198.51.100.20"})
        assert d["cca2"] == "us"
        # the same header from a visitor that is not a trusted proxy counts for nothing
        d = await fetch_json(client_from("127.0.3.7"), f"{base}/dyn/closer/?as_json=1",
                             headers={"X-Forwarded-For": "198.51.100.20"})
        assert d["cca2"] == "fr"
        # a page through the whole tree, with the admin listener's security headers
        resp = await treq.get(f"{base}/dyn/closer/httpd/?cca2=de")
        assert resp.code == 200
        assert resp.headers.getRawHeaders("x-content-type-options") == ["nosniff"]
        assert "We suggest" in await resp.text()
    finally:
        await port.stopListening()


def test_seeded_choice_is_spread_over_the_tier():
    # guard for the e2e expectations above: DE visitors get the DE tier (two https mirrors)
    from twisted.internet.task import Clock

    from admin.closer.choice import Closer
    cfg = parse_config("")
    c = Closer(cfg, Holder(make_plan(standard_rows(), cfg)), clock=Clock(), rng=random.Random(1))
    v = c.view()
    assert {c.select(v, "DE").preferred for _ in range(50)} == DE


@pytest_twisted.ensureDeferred
async def test_head_check_against_a_real_mirror(tmp_path):
    """The default HEAD against a static file server on loopback: present, missing, down; and
    without [probes] allow_private the same server is never contacted (the probes' guard)."""
    from twisted.web.static import File

    from admin.closer.heads import HeadCache
    from tests.helpers import free_port

    (tmp_path / "httpd").mkdir()
    (tmp_path / "httpd" / "KEYS").write_text("keys")
    seen = []

    class Recording(File):
        def render(self, request):
            seen.append(request.method)
            return super().render(request)

    port = reactor.listenTCP(0, Site(Recording(str(tmp_path))), interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}/"
    named = f"http://localhost:{port.getHost().port}/"
    try:
        guarded = HeadCache(reactor, ttl=60, timeout=5)
        assert await guarded.check(base + "httpd/KEYS") is False          # loopback: refused
        assert await guarded.check(named + "httpd/KEYS") is False         # ... also by name
        assert seen == []                                                  # never contacted
        hc = HeadCache(reactor, ttl=60, timeout=5, allow_private=True)
        assert await hc.check(base + "httpd/KEYS") is True
        assert seen == [b"HEAD"]
        assert await hc.check(base + "httpd/nope.tgz") is False
        assert await hc.check(f"http://127.0.0.1:{free_port()}/httpd/KEYS") is False   # refused
        assert hc.cached(base + "httpd/KEYS") is True
    finally:
        await port.stopListening()
