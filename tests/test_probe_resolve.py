"""A mirror without table addresses gets them from its host name: the probe asks the resolver
([probes] nameservers, here a twisted.names server on 127.0.0.1), takes IP literals as they are,
probes over what it found and records it; a pinned address always wins over a resolved one."""

from __future__ import annotations

import dataclasses

import pytest
import pytest_twisted
from twisted.internet import reactor

from dnsd.config import Config, ProbesConfig
from probes.probe import Prober, Target
from tests import fake_resolver
from tests.helpers import free_port
from tests.probe_mirrors import FakeMirror, serve


@pytest.fixture
def world():
    """Two fake mirrors (127.0.0.21, 127.0.0.22 on one port each) and a resolver that knows
    where some host names are."""
    made = []
    m1, m2 = FakeMirror("fresh"), FakeMirror("fresh")
    p1, p2 = serve(m1, "127.0.0.21"), serve(m2, "127.0.0.22")
    dport = free_port()
    names, ports = fake_resolver.listen(reactor, {
        "one.example.net": ["127.0.0.21"],
        "two.example.net": ["127.0.0.22", "127.0.0.23"],    # the lowest one is probed
        "nowhere-good.example.net": ["10.9.8.7"],
    }, dport)
    made += [p1, p2, *ports]
    cfg = Config(probes=ProbesConfig(allow_private=True, timeout=3.0, connect_timeout=1.0,
                                     nameservers=(f"127.0.0.1:{dport}",)))
    yield {"cfg": cfg, "names": names, "m1": m1, "m2": m2, "p1": p1.getHost().port,
           "p2": p2.getHost().port}
    m1.stop()
    m2.stop()
    for p in made:
        p.stopListening()


def target(host, port, **kw):
    return Target(mirror_id=7, hostname=host, country="DE",
                  http_url=f"http://{host}:{port}/pub/", **kw)


@pytest_twisted.ensureDeferred
async def test_the_host_name_is_resolved_and_the_addresses_used_are_kept(world):
    r = await Prober(world["cfg"], reactor).probe(target("one.example.net", world["p1"]))
    assert r.ok, r.log_lines()
    assert (r.resolved, r.probed_ipv4, r.probed_ipv6, r.ipv4_up) == (True, "127.0.0.21", None,
                                                                      True)
    assert r.address == "127.0.0.21" and world["m1"].requests         # over what it resolved
    assert "one.example.net" in world["names"].asked
    r = await Prober(world["cfg"], reactor).probe(target("two.example.net", world["p2"]))
    assert r.ok and r.probed_ipv4 == "127.0.0.22"


@pytest_twisted.ensureDeferred
async def test_a_pinned_address_always_wins(world):
    t = target("one.example.net", world["p2"], ipv4="127.0.0.22")
    r = await Prober(world["cfg"], reactor).probe(t)
    assert r.ok and not r.resolved and r.probed_ipv4 == "127.0.0.22"
    assert world["m2"].requests and not world["m1"].requests
    assert "one.example.net" not in world["names"].asked              # never even asked


@pytest_twisted.ensureDeferred
async def test_an_ip_literal_in_the_url_is_taken_as_it_is(world):
    t = Target(mirror_id=7, hostname="mirror.example.net", country="DE",
               http_url=f"http://127.0.0.21:{world['p1']}/pub/")
    r = await Prober(world["cfg"], reactor).probe(t)
    assert r.ok, r.log_lines()
    assert (r.resolved, r.probed_ipv4) == (True, "127.0.0.21")
    assert world["names"].asked == []                                 # nothing to resolve


@pytest_twisted.ensureDeferred
async def test_names_that_do_not_resolve_or_only_to_private_addresses(world):
    r = await Prober(world["cfg"], reactor).probe(target("missing.example.net", world["p1"]))
    assert (r.ok, r.error_class, r.error) == (False, "dns", "missing.example.net does not "
                                                            "resolve")
    strict = dataclasses.replace(world["cfg"], probes=dataclasses.replace(
        world["cfg"].probes, allow_private=False))
    r = await Prober(strict, reactor).probe(target("nowhere-good.example.net", world["p1"]))
    assert r.error_class == "private-address" and "10.9.8.7" in r.error


@pytest_twisted.ensureDeferred
async def test_a_hung_system_resolver_costs_one_timeout(world):
    """The system's getaddrinfo cannot be cancelled: the probe stops waiting at its deadline."""
    class Hung:
        def resolveHostName(self, receiver, host, portNumber=0, **kw):
            receiver.resolutionBegan(None)          # ... and nothing more, ever
            return receiver

    cfg = dataclasses.replace(world["cfg"], probes=dataclasses.replace(
        world["cfg"].probes, nameservers=(), timeout=0.5))
    start = reactor.seconds()
    r = await Prober(cfg, reactor, resolver=Hung()).probe(target("one.example.net", world["p1"]))
    assert not r.ok and r.error_class == "dns" and reactor.seconds() - start < 3
