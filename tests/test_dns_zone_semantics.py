"""What an authoritative server answers from its zone, end to end (a DNSService on 127.0.0.1,
dnspython over UDP and TCP), each behaviour checked against the RFC section it follows.

The wildcard cases are RFC 4592 section 2.2.1's own example zone and its listed answers; the
delegation, DS, CNAME, zone transfer, long name and OPT cases use the same zone's `subdel` cut
and a few more names.
"""

from __future__ import annotations

import re
import socket
import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.logger import globalLogPublisher

from dnsd.zonefile import ZoneError, parse_zone
from tests.dns_support import ADDR, Running, make_env, query

Z = "example"
# RFC 4592 2.2.1 (the SOA and SRV rdata filled in), then this test's additions below the line
ZONE_TEXT = """$ORIGIN example.
example.                 3600 IN  SOA   ns.example.com. hostmaster.example. 7 3600 600 604800 300
example.                 3600     NS    ns.example.com.
example.                 3600     NS    ns.example.net.
*.example.               3600     TXT   "this is a wildcard"
*.example.               3600     MX    10 host1.example.
sub.*.example.           3600     TXT   "this is not a wildcard"
host1.example.           3600     A     192.0.2.1
_ssh._tcp.host1.example. 3600     SRV   0 0 22 host1.example.
_ssh._tcp.host2.example. 3600     SRV   0 0 22 host2.example.
subdel.example.          3600     NS    ns.example.com.
subdel.example.          3600     NS    ns.example.net.
; ---- added for this test
child.example.           3600     NS    ns1.child.example.
child.example.           3600     NS    host1.example.
child.example.           3600     DS    12345 13 1 49FD46E6C4B45C55D4AC69CBD3CD34AC1AFE51DE
ns1.child.example.       3600     A     192.0.2.53
ns1.child.example.       3600     AAAA  2001:db8::53
unsigned.example.        3600     NS    ns.example.net.
alias.example.           300      CNAME host1.example.
alias2.example.          300      CNAME alias.example.
tonowhere.example.       300      CNAME missing.host1.example.
intochild.example.       300      CNAME www.child.example.
outside.example.         300      CNAME www.example.org.
loop1.example.           300      CNAME loop2.example.
loop2.example.           300      CNAME loop1.example.
download.example.        300      CNAME www.example.
mirror.example.          300      CNAME de2.example.
"""


@pytest.fixture
def env(tmp_path, test_mmdb):
    return make_env(tmp_path, test_mmdb, zone=Z, zone_text=ZONE_TEXT)


async def started(env):
    cfg, port = env
    return await Running(cfg, port).start()


def rrs(section, rdtype=None):
    return [(rr.name.to_text(), dns.rdatatype.to_text(rr.rdtype), rd.to_text())
            for rr in section for rd in rr if rdtype is None or rr.rdtype == rdtype]


def names(section):
    return [rr.name.to_text() for rr in section]


@pytest_twisted.ensureDeferred
async def test_wildcards_as_in_rfc4592_section_2_2_1(env):
    """RFC 4592 2.2.1: the answers the RFC lists for its example zone; 3.3.1: the closest
    encloser is the longest existing ancestor, empty non-terminals included; 4.3: the owner of a
    synthesised record is the name asked for."""
    s = await started(env)
    try:
        # host3.example. MX: synthesised from *.example. (owner host3, not *)
        r = await s.udp(query("host3.example", "MX"))
        assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
        assert rrs(r.answer) == [("host3.example.", "MX", "10 host1.example.")]
        # host3.example. A: the wildcard matches but has no A: NODATA with the SOA
        r = await s.udp(query("host3.example", "A"))
        assert r.rcode() == dns.rcode.NOERROR and not r.answer
        assert rrs(r.authority, dns.rdatatype.SOA)
        # foo.bar.example. TXT: several labels matched by one '*'
        r = await s.tcp(query("foo.bar.example", "TXT"))
        assert rrs(r.answer) == [("foo.bar.example.", "TXT", '"this is a wildcard"')]
        # host1.example. MX: host1 exists, so no wildcard: NODATA
        r = await s.udp(query("host1.example", "MX"))
        assert r.rcode() == dns.rcode.NOERROR and not r.answer
        # sub.*.example. MX: exists (the '*' in the middle is an ordinary label): NODATA
        r = await s.udp(query("sub.*.example", "MX"))
        assert r.rcode() == dns.rcode.NOERROR and not r.answer
        # _telnet._tcp.host1.example. SRV: the closest encloser _tcp.host1.example. is an empty
        # non-terminal and has no wildcard child: NXDOMAIN, although *.example. exists
        r = await s.udp(query("_telnet._tcp.host1.example", "SRV"))
        assert r.rcode() == dns.rcode.NXDOMAIN
        # host.subdel.example. A: below a cut: a referral, never the wildcard
        r = await s.udp(query("host.subdel.example", "A"))
        assert r.rcode() == dns.rcode.NOERROR and not r.flags & dns.flags.AA and not r.answer
        assert names(r.authority) == ["subdel.example."]
        # ghost.*.example. MX: the closest encloser is *.example., whose '*' child is missing
        r = await s.udp(query("ghost.*.example", "MX"))
        assert r.rcode() == dns.rcode.NXDOMAIN
        # the wildcard owner asked literally (RFC 4592 2.1.1: a '*' query is not special)
        r = await s.udp(query("*.example", "TXT"))
        assert rrs(r.answer) == [("*.example.", "TXT", '"this is a wildcard"')]
        # the client's letter case is the owner's (RFC 4343)
        r = await s.udp(query("HoSt3.Example", "MX"))
        assert r.answer[0].name.to_text() == "HoSt3.Example."
        # names the server generates exist: not matched by the wildcard (de2 is a mirror)
        r = await s.udp(query("de2.example", "TXT"))
        assert r.rcode() == dns.rcode.NOERROR and not r.answer
        r = await s.udp(query("de2.example", "A"))
        assert [rd.address for rr in r.answer for rd in rr] == [ADDR["de2"]]
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_delegation_is_a_referral_with_glue(env):
    """RFC 1034 4.3.2 step 3b and RFC 2181 6.1: at and below a zone cut the parent is not
    authoritative: AA clear, no answer, the child's NS in the authority section and the addresses
    of the name servers it holds (RFC 9471: glue below the cut, and in-zone addresses) in the
    additional section; nothing below the cut is answered from the parent."""
    s = await started(env)
    try:
        for name, t in (("child.example", "A"), ("child.example", "NS"), ("www.child.example", "A"),
                        ("a.b.child.example", "MX"), ("ns1.child.example", "A"),
                        ("ns1.child.example", "AAAA"), ("child.example", "SOA"),
                        ("deep.child.example", "DS"), ("child.example", "ANY")):
            for ask in (s.udp, s.tcp):
                r = await ask(query(name, t))
                assert r.rcode() == dns.rcode.NOERROR, (name, t)
                assert not r.flags & dns.flags.AA and not r.answer, (name, t)
                assert sorted(rrs(r.authority)) == [
                    ("child.example.", "NS", "host1.example."),
                    ("child.example.", "NS", "ns1.child.example.")], (name, t)
                assert sorted(rrs(r.additional)) == [
                    ("host1.example.", "A", "192.0.2.1"),
                    ("ns1.child.example.", "A", "192.0.2.53"),
                    ("ns1.child.example.", "AAAA", "2001:db8::53")], (name, t)
        # a cut whose name servers are out of the zone: a referral without glue
        r = await s.udp(query("x.unsigned.example", "A", use_edns=0))
        assert rrs(r.authority) == [("unsigned.example.", "NS", "ns.example.net.")]
        assert not r.additional and r.edns == 0      # the OPT still comes back (RFC 6891 6.1.1)
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_ds_at_the_cut_is_answered_by_the_parent(env):
    """RFC 4035 3.1.4.1: DS lives on the parent's side of the cut, so the parent answers it
    authoritatively (with NODATA and the SOA when the child is unsigned); below the cut a DS
    query is a referral like any other."""
    s = await started(env)
    try:
        r = await s.udp(query("child.example", "DS"))
        assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
        assert rrs(r.answer) == [("child.example.", "DS",
                                  "12345 13 1 49fd46e6c4b45c55d4ac69cbd3cd34ac1afe51de")]
        r = await s.udp(query("unsigned.example", "DS"))
        assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA and not r.answer
        assert rrs(r.authority, dns.rdatatype.SOA)[0][0] == "example."
        r = await s.udp(query("x.child.example", "DS"))
        assert not r.flags & dns.flags.AA and names(r.authority) == ["child.example."]
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_cname_chains_inside_the_zone_are_followed(env):
    """RFC 1034 3.6.2 and 4.3.2 step 3a: a CNAME is followed inside the zone and the target's
    records join the answer; RFC 6604 2.1: the rcode is the last name's (NXDOMAIN when the chain
    ends at a name that does not exist); a chain into a cut ends with the referral; a loop or an
    out-of-zone target ends the chain (the resolver goes on from there)."""
    s = await started(env)
    try:
        r = await s.udp(query("alias2.example", "A"))
        assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
        assert rrs(r.answer) == [("alias2.example.", "CNAME", "alias.example."),
                                 ("alias.example.", "CNAME", "host1.example."),
                                 ("host1.example.", "A", "192.0.2.1")]
        r = await s.udp(query("alias2.example", "MX"))           # NODATA at the end of the chain
        assert len(r.answer) == 2 and rrs(r.authority, dns.rdatatype.SOA)
        r = await s.udp(query("alias2.example", "CNAME"))        # the CNAME itself: not followed
        assert rrs(r.answer) == [("alias2.example.", "CNAME", "alias.example.")]
        r = await s.udp(query("tonowhere.example", "A"))
        assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA
        assert rrs(r.answer) == [("tonowhere.example.", "CNAME", "missing.host1.example.")]
        r = await s.udp(query("intochild.example", "A"))
        assert rrs(r.answer) == [("intochild.example.", "CNAME", "www.child.example.")]
        assert names(r.authority) == ["child.example."] and r.additional
        r = await s.udp(query("outside.example", "A"))
        assert rrs(r.answer) == [("outside.example.", "CNAME", "www.example.org.")]
        r = await s.tcp(query("loop1.example", "A"))
        assert r.rcode() == dns.rcode.NOERROR
        assert rrs(r.answer) == [("loop1.example.", "CNAME", "loop2.example."),
                                 ("loop2.example.", "CNAME", "loop1.example.")]
        # a chain to names answered from the mirror table: the geo name by client location
        r = await s.udp(query("download.example", "A"), source="127.0.2.9")      # a US client
        assert r.answer[0].rdtype == dns.rdatatype.CNAME
        assert r.answer[1].name.to_text() == "www.example."
        assert {rd.address for rd in r.answer[1]} == {ADDR["us1"], ADDR["us2"]}
        r = await s.udp(query("mirror.example", "AAAA"))       # de2 has no IPv6: NODATA
        assert len(r.answer) == 1 and rrs(r.authority, dns.rdatatype.SOA)
        r = await s.udp(query("mirror.example", "A", use_edns=0,
                              options=[dns.edns.ECSOption("198.51.100.0", 24)]))
        assert rrs(r.answer)[-1] == ("de2.example.", "A", ADDR["de2"])
        assert r.options[0].scopelen == 0                    # a mirror's name is not located
    finally:
        await s.stop()


def _raw(port, wire, tcp=False):
    if tcp:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as c:
            c.sendall(struct.pack("!H", len(wire)) + wire)
            n = struct.unpack("!H", c.recv(2))[0]
            out = b""
            while len(out) < n:
                out += c.recv(n - len(out))
            return out
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(3)
        c.sendto(wire, ("127.0.0.1", port))
        return c.recv(65535)


def raw(port, wire, tcp=False):
    return threads.deferToThread(_raw, port, wire, tcp)


@pytest_twisted.ensureDeferred
async def test_zone_transfers_and_mailb_are_not_implemented(env):
    """AXFR (RFC 5936), IXFR (RFC 1995), MAILB and MAILA (RFC 1035 3.2.3): the zone is made per
    query from the mirror table, so there is no zone to transfer. NOTIMP (RFC 1035 4.1.1: "does
    not support the requested kind of query"), the question echoed; never a NOERROR without the
    SOA an AXFR reply must start with (RFC 5936 2.2). docs/dns.md says why not REFUSED."""
    s = await started(env)
    try:
        # ... and the other Q-TYPEs and Meta-TYPEs (RFC 6895 3.1: 128-254), as gdnsd answers them
        for t in ("AXFR", "IXFR", "MAILB", "MAILA", "TSIG", "TKEY", "TYPE128"):
            for tcp in (False, True):
                q = query(Z, t, use_edns=0)
                r = dns.message.from_wire(await raw(s.port, q.to_wire(), tcp), one_rr_per_rrset=True)
                assert r.rcode() == dns.rcode.NOTIMP, t
                assert not r.answer and not r.flags & dns.flags.AA, t
                assert r.question[0].rdtype == dns.rdatatype.from_text(t) and r.edns == 0
        with pytest.raises(dns.query.TransferError):
            await threads.deferToThread(lambda: list(dns.query.xfr("127.0.0.1", Z, port=s.port,
                                                                   timeout=3)))
    finally:
        await s.stop()


def _name_of(octets: int) -> bytes:
    """A wire name of exactly `octets` octets (labels of 63, then the rest, then the root)."""
    out = b""
    left = octets - 1
    while left > 0:
        n = min(63, left - 1)
        if left - (n + 1) == 1:
            n -= 1
        out += bytes([n]) + b"a" * n
        left -= n + 1
    return out + b"\x00"


@pytest_twisted.ensureDeferred
async def test_names_over_255_octets_are_formerr(env):
    """RFC 1035 2.3.4 and 3.1: a name is at most 255 octets. A longer one is a malformed query:
    FORMERR, and the name is not echoed."""
    s = await started(env)
    try:
        for octets, rcode in ((255, dns.rcode.REFUSED), (256, dns.rcode.FORMERR),
                              (300, dns.rcode.FORMERR)):
            wire = bytes(12) + _name_of(octets) + b"\x00\x01\x00\x01"
            wire = b"\x12\x34\x00\x00\x00\x01" + wire[6:]
            for tcp in (False, True):
                out = await raw(s.port, wire, tcp)
                assert out[:2] == b"\x12\x34" and out[3] & 0xF == rcode, (octets, tcp)
                if rcode == dns.rcode.FORMERR:
                    assert out[4:6] == b"\x00\x00" and len(out) == 12      # nothing echoed
        # 255 octets ending in the zone: a well-formed name, answered (by the wildcard)
        inside = _name_of(255 - 8)[:-1] + b"\x07example\x00"
        wire = b"\x12\x35\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00" + inside + b"\x00\x0f\x00\x01"
        assert len(inside) == 255
        r = dns.message.from_wire(await raw(s.port, wire, tcp=True))
        assert r.rcode() == dns.rcode.NOERROR
        assert r.answer[0].name.to_wire() == inside and r.answer[0].rdtype == dns.rdatatype.MX
    finally:
        await s.stop()


@pytest_twisted.ensureDeferred
async def test_error_replies_keep_the_opt(env):
    """RFC 6891 6.1.1 and 7: a reply to a query with an OPT has an OPT, errors included
    (FORMERR, NOTIMP, REFUSED, BADVERS); an OPT that cannot be read gets a reply without one."""
    s = await started(env)
    try:
        # QDCOUNT 2 -> FORMERR, with OPT
        q = query("host1.example", "A", use_edns=0, payload=1400)
        w = bytearray(q.to_wire())
        qend = 12 + len(dns.name.from_text("host1.example").to_wire()) + 4
        w[5] = 2
        w = bytes(w[:qend]) + bytes(w[12:qend]) + bytes(w[qend:])
        r = dns.message.from_wire(await raw(s.port, w))
        assert r.rcode() == dns.rcode.FORMERR and r.edns == 0
        # opcode NOTIFY (not served) -> NOTIMP, with OPT
        q = query("host1.example", "SOA", use_edns=0)
        q.set_opcode(dns.opcode.NOTIFY)
        r = dns.message.from_wire(await raw(s.port, q.to_wire()))
        assert r.rcode() == dns.rcode.NOTIMP and r.edns == 0 and r.opcode() == dns.opcode.NOTIFY
        # outside the zone -> REFUSED, with OPT (and the DO bit copied, RFC 3225 3)
        r = await s.udp(query("www.example.com", "A", use_edns=0, want_dnssec=True))
        assert r.rcode() == dns.rcode.REFUSED and r.edns == 0 and r.ednsflags & dns.flags.DO
        # a malformed ECS option in a sound OPT -> FORMERR, with OPT
        r = await s.udp(query("www.example", "A", use_edns=0,
                              options=[dns.edns.GenericOption(8, b"\x00\x03\x08\x00\x01")]))
        assert r.rcode() == dns.rcode.FORMERR and r.edns == 0
        # trailing garbage after a sound OPT -> FORMERR, with OPT
        w = query("host1.example", "A", use_edns=0).to_wire() + b"\x00"
        out = await raw(s.port, w)
        assert out[3] & 0xF == dns.rcode.FORMERR and out[10:12] == b"\x00\x01"
        # EDNS version 1 -> BADVERS (RFC 6891 6.1.3), OPT version 0
        r = await s.tcp(query("host1.example", "A", use_edns=1))
        assert r.rcode() == dns.rcode.BADVERS and r.edns == 0
        # an OPT whose RDLENGTH runs past the message cannot be read: FORMERR without one
        w = bytearray(query("host1.example", "A", use_edns=0).to_wire())
        w[-1] = 9
        out = await raw(s.port, bytes(w))
        assert out[3] & 0xF == dns.rcode.FORMERR and out[10:12] == b"\x00\x00"
    finally:
        await s.stop()


def test_generated_names_colliding_with_the_zone_file_stop_the_load(tmp_path, test_mmdb):
    """A country, continent or geo name that the zone file holds or delegates is a configuration
    error at load, naming both."""
    zone = tmp_path / "zone"
    for extra, words in (("de 300 A 192.0.2.7\n", f"de.example is the country name of DE and is "
                                                  f"also a name in {zone}: de.example. 300 IN A "
                                                  f"192.0.2.7"),
                         ("www 300 NS ns.example.net.\n", f"www.example is the geo name and is "
                                                          f"delegated (NS) in {zone}: www.example. "
                                                          f"300 IN NS ns.example.net."),
                         ("x.europe 300 TXT hi\n", f"europe.example is the continent name of EU "
                                                   f"and is also a name in {zone}, above "
                                                   f"x.europe.example: x.europe.example. 300 IN "
                                                   f'TXT "hi"')):
        cfg, port = make_env(tmp_path, test_mmdb, zone=Z, zone_text=ZONE_TEXT + extra,
                             table=False)
        with pytest.raises(ZoneError) as e:
            Running(cfg, port)
        assert words in str(e.value)


@pytest_twisted.ensureDeferred
async def test_a_mirror_name_colliding_with_the_zone_file_is_logged(tmp_path, test_mmdb):
    """Mirror names come from the table, which an admin edits at run time: a clash is logged
    with both names and the zone file's name keeps being served."""
    cfg, port = make_env(tmp_path, test_mmdb, zone=Z,
                         zone_text=ZONE_TEXT + "de1 300 TXT \"static\"\n")
    events = []
    globalLogPublisher.addObserver(events.append)
    s = await Running(cfg, port).start()
    try:
        lines = [e for e in events if "dns name collision" in (e.get("log_format") or "")]
        assert len(lines) == 1
        assert lines[0]["what"] == f"de1.example is the name of mirror de1 and is also a name in " \
                                   f"{tmp_path / 'zone'}: de1.example. 300 IN TXT \"static\""
        r = await s.udp(query("de1.example", "TXT"))
        assert [rd.to_text() for rr in r.answer for rd in rr] == ['"static"']
    finally:
        globalLogPublisher.removeObserver(events.append)
        await s.stop()


@pytest.mark.parametrize("text, message", [
    ("sub NS ns.sub\n", "sub.example is delegated to ns.sub.example, which is below the "
                        "delegation and has no glue"),
    ("sub NS ns.example.net.\nsub MX 10 mail\n", r"sub.example is delegated \(NS\): only NS, DS "
                                                 r"and glue may be there, not MX"),
    ("sub NS ns.example.net.\nwww.sub TXT hi\n", r"www.sub.example: only glue \(A, AAAA\) may be "
                                                 r"below the delegation sub.example, not TXT"),
    ("sub NS ns.example.net.\nx.sub NS ns.example.net.\n", "x.sub.example: a delegation below "
                                                           "the delegation sub.example"),
    ("host DS 1 13 2 49FD46E6C4B45C55D4AC69CBD3CD34AC1AFE51DE\n", "host.example: DS records "
                                                                  "belong at a delegation"),
    ("*.w NS ns.example.net.\n", r"\*.w.example: a wildcard cannot own NS records"),
])
def test_zone_cut_rules(text, message):
    base = "@ SOA ns hostmaster 1 2 3 4 5\n@ NS ns.example.net.\n"
    with pytest.raises(ZoneError) as e:
        parse_zone(base + text, Z, "z.zone")
    assert re.match("z.zone: " + message, str(e.value)), str(e.value)
