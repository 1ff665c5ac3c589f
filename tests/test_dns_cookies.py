"""DNS Cookies (RFC 7873, RFC 9018) and NSID (RFC 5001): the server cookie construction against
RFC 9018's own test vectors, then end to end with dnspython."""

from __future__ import annotations

import dns.edns
import dns.message
import dns.rcode
import pytest
import pytest_twisted
from twisted.internet import threads

from dnsd.cookies import CookieJar, SecretError, SecretFile, parse_secrets
from tests.dns_support import ZONE, Running, make_env, query

SECRET = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")       # RFC 9018 appendix A
COOKIE = 10


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def test_rfc9018_appendix_a_vectors():
    """RFC 9018 A.1-A.3: the same secret, client cookies and addresses give the same server
    cookies, byte for byte; A.2 is A.1's client 40 minutes later, renewed."""
    clock = Clock(1559731985)
    jar = CookieJar([SECRET], clock)
    c1 = bytes.fromhex("2464c4abcf10c957")
    server, valid = jar.respond(c1, b"", "198.51.100.100")
    assert not valid and server.hex() == "010000005cf79f111f8130c3eee29480"          # A.1
    clock.t = 1559734385
    server, valid = jar.respond(c1, server, "198.51.100.100")
    assert valid and server.hex() == "010000005cf7a871d4a564a1442aca77"              # A.2
    clock.t = 1559734700
    server, _ = jar.respond(bytes.fromhex("fc93fc62807ddb86"), b"", "203.0.113.203")
    assert server.hex() == "010000005cf7a9acf73a7810aca2381e"                        # A.3


def test_validity_window_and_rotation():
    """RFC 9018 4.3: valid up to an hour old and five minutes ahead; younger than half an hour
    it is returned as it is. RFC 9018 5: an older secret still validates, the reply is made with
    the current one."""
    clock = Clock(1_700_000_000)
    jar = CookieJar([SECRET], clock)
    client = b"\x01" * 8
    first, _ = jar.respond(client, b"", "192.0.2.1")
    clock.t += 600
    assert jar.respond(client, first, "192.0.2.1") == (first, True)         # fresh: kept
    assert jar.respond(client, first, "192.0.2.2")[1] is False              # bound to the address
    assert jar.respond(b"\x02" * 8, first, "192.0.2.1")[1] is False         # and the client cookie
    clock.t += 3000                                                          # 1 h after
    renewed, valid = jar.respond(client, first, "192.0.2.1")
    assert valid and renewed != first
    clock.t += 2 * 3600
    assert jar.respond(client, first, "192.0.2.1")[1] is False               # too old
    ahead = CookieJar.make(SECRET, client, bytes([192, 0, 2, 1]), int(clock.t) + 600)
    assert jar.respond(client, ahead, "192.0.2.1")[1] is False               # from the future
    new = bytes(range(16))
    jar.set_keys([new, SECRET])
    old_made = CookieJar.make(SECRET, client, bytes([192, 0, 2, 1]), int(clock.t))
    reply, valid = jar.respond(client, old_made, "192.0.2.1")
    assert valid and reply == CookieJar.make(new, client, bytes([192, 0, 2, 1]), int(clock.t))
    assert jar.respond(client, b"\x01\x00\x00\x00" + bytes(12), "2001:db8::1")[1] is False


def test_secret_file_reloads_and_rejects_bad_lines(tmp_path):
    f = tmp_path / "secrets"
    f.write_text("# current\n" + SECRET.hex() + "\n")
    jar = CookieJar()
    w = SecretFile(str(f), jar)
    assert w.check() and jar.keys == (SECRET,) and not w.check()
    f.write_text("00" * 16 + "\n" + SECRET.hex() + "\n")
    assert w.check() and jar.keys == (bytes(16), SECRET)
    with pytest.raises(SecretError, match=r"x:2: a secret is 32 hex digits"):
        parse_secrets(SECRET.hex() + "\nnope\n", "x")
    with pytest.raises(SecretError, match="no secret"):
        parse_secrets("# nothing\n", "x")


@pytest.fixture
def env(tmp_path, test_mmdb):
    (tmp_path / "secrets").write_text(SECRET.hex() + "\n")
    return make_env(tmp_path, test_mmdb, 'cookie_secret_file = "secrets"\nnsid = "dns1.test"')


def cookie_of(r):
    return [o.data if hasattr(o, "data") else o.to_wire() for o in r.options
            if o.otype == COOKIE]


def opt(code, data):
    return dns.edns.GenericOption(code, data)


@pytest_twisted.ensureDeferred
async def test_cookies_end_to_end(env):
    """RFC 7873 5.2.3: a client cookie alone gets the normal answer and a server cookie; 5.2.5:
    presenting it is valid; 5.2.4: a bad server cookie is answered as if only the client cookie
    were there; 5.2.2: a COOKIE option of a bad length is FORMERR; 5.4: a query with no question
    and only a cookie gets NOERROR and the server cookie."""
    cfg, port = env
    s = await Running(cfg, port).start()
    try:
        client = bytes.fromhex("0102030405060708")
        r = await s.udp(query(f"static.{ZONE}", "A", use_edns=0, options=[opt(COOKIE, client)]))
        assert r.rcode() == dns.rcode.NOERROR and r.answer
        (got,) = cookie_of(r)
        assert got[:8] == client and len(got) == 24 and got[8] == 1     # version 1 (RFC 9018)
        server = got[8:]
        r = await s.udp(query(f"static.{ZONE}", "A", use_edns=0,
                              options=[opt(COOKIE, client + server)]))
        assert cookie_of(r) == [client + server]           # valid and fresh: sent back as is
        bad = server[:-1] + bytes([server[-1] ^ 1])
        r = await s.tcp(query(f"static.{ZONE}", "A", use_edns=0, options=[opt(COOKIE, client + bad)]))
        assert r.rcode() == dns.rcode.NOERROR and r.answer
        assert cookie_of(r)[0][:8] == client and cookie_of(r)[0][8:] != bad
        r = await s.udp(query(f"static.{ZONE}", "A", use_edns=0, options=[opt(COOKIE, client[:7])]))
        assert r.rcode() == dns.rcode.FORMERR and r.edns == 0
        # QDCOUNT 0, only the OPT with a client cookie
        q = query(f"static.{ZONE}", "A", use_edns=0, options=[opt(COOKIE, client)])
        w = q.to_wire()
        qend = w.index(b"\x00\x00\x01\x00\x01", 12) + 5
        w = w[:4] + b"\x00\x00" + w[6:12] + w[qend:]
        out = await threads.deferToThread(_udp, port, w)
        r = dns.message.from_wire(out)
        assert r.rcode() == dns.rcode.NOERROR and not r.question
        assert cookie_of(r)[0][:8] == client
        # cookies in error replies too (here: outside the zone)
        r = await s.udp(query("www.example.com", "A", use_edns=0, options=[opt(COOKIE, client)]))
        assert r.rcode() == dns.rcode.REFUSED and cookie_of(r)[0][:8] == client
    finally:
        await s.stop()


def _udp(port, wire):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(3)
        c.sendto(wire, ("127.0.0.1", port))
        return c.recv(4096)


@pytest_twisted.ensureDeferred
async def test_nsid_only_when_asked(env):
    """RFC 5001 2.3: the NSID option comes back with the configured identifier when the query
    carried an (empty) NSID option, and not otherwise."""
    cfg, port = env
    s = await Running(cfg, port).start()
    try:
        r = await s.udp(query(f"www.{ZONE}", "A", use_edns=0, options=[dns.edns.NSIDOption(b"")]))
        assert [o.nsid for o in r.options if o.otype == dns.edns.NSID] == [b"dns1.test"]
        r = await s.udp(query(f"www.{ZONE}", "A", use_edns=0,
                              options=[dns.edns.NSIDOption(b""), dns.edns.ECSOption("198.51.100.0",
                                                                                    24)]))
        assert {o.otype for o in r.options} == {dns.edns.NSID, dns.edns.ECS}
        r = await s.udp(query(f"www.{ZONE}", "A", use_edns=0))
        assert not r.options
        r = await s.udp(query(f"nx.{ZONE}", "A", use_edns=0, options=[dns.edns.NSIDOption(b"")]))
        assert r.rcode() == dns.rcode.NXDOMAIN and r.options[0].nsid == b"dns1.test"
    finally:
        await s.stop()


def test_unknown_options_are_ignored_and_cookies_can_be_off(tmp_path, test_mmdb):
    """RFC 6891 6.1.2: unknown options are ignored. `cookies = false` leaves COOKIE options
    unanswered, as a server without cookie support does."""
    from dnsd.answer import Answerer, compile_table
    from dnsd.zonefile import zone_for

    cfg, _port = make_env(tmp_path, test_mmdb, "cookies = false")
    zone, _ = zone_for(cfg)
    a = Answerer(None, compile_table(None, zone, cfg))
    q = query(f"static.{ZONE}", "A", use_edns=0,
              options=[opt(100, b""), opt(COOKIE, b"\x01" * 8)])
    r = dns.message.from_wire(a.answer(q.to_wire(), "127.0.0.1", True))
    assert r.rcode() == dns.rcode.NOERROR and r.answer and r.edns == 0 and not r.options
