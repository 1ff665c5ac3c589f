"""Zone files: what dnslib reads, checked against dnspython as the oracle; errors name file:line."""

from __future__ import annotations

from pathlib import Path

import dns.rdatatype
import dns.zone
import pytest

from dnsd.zonefile import ZoneError, load_zone, parse_zone
from tests.dns_support import ZONE_TEXT

ROOT = Path(__file__).resolve().parent.parent


def _ours(zone):
    out = set()
    for name, by_type in zone.records.items():
        for qtype, rrs in by_type.items():
            for rr in rrs:
                out.add((name, dns.rdatatype.to_text(qtype), rr.ttl))
    return out


def _oracle(text, origin):
    z = dns.zone.from_text(text, origin=origin, relativize=False)
    out = set()
    for name, node in z.nodes.items():
        for rds in node.rdatasets:
            for _rd in rds:
                out.add((name.to_text().rstrip(".").lower(), dns.rdatatype.to_text(rds.rdtype),
                         rds.ttl))
    return out


@pytest.mark.parametrize("text,origin", [
    (ZONE_TEXT, "mirrors.test"),
    ((ROOT / "zones" / "mirrors.example.org.zone").read_text(), "mirrors.example.org"),
])
def test_same_records_as_dnspython(text, origin):
    assert _ours(parse_zone(text, origin, "z")) == _oracle(text, origin)


def test_multiline_inherited_owner_origin_and_empty_non_terminals():
    z = parse_zone("""$TTL 300
@ SOA ns1 hostmaster (
        5     ; serial
        3600 600 604800 60 )
  NS ns1          ; owner inherited from the SOA line: the apex
$ORIGIN sub
www A 192.0.2.1
    AAAA 2001:db8::1
x.y TXT "a ; not a comment" "b"
""", "Example.ORG.", "f")
    assert z.origin == "example.org" and z.serial == 5 and z.negative_ttl == 60
    assert set(z.records) == {"example.org", "www.sub.example.org", "x.y.sub.example.org"}
    (txt,) = z.rrset("x.y.sub.example.org", 16)
    assert txt.rdata.data == [b"a ; not a comment", b"b"]
    assert {"sub.example.org", "y.sub.example.org"} <= z.names
    assert z.rrset("www.sub.example.org", 28)[0].ttl == 300


@pytest.mark.parametrize("text,message", [
    ("@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\n\nmail IN MX mail\n", r"f\.zone:4: bad record 'mail IN MX mail'"),
    ("@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nwww A 300.1.1.1\n", r"f\.zone:3: bad record 'www A 300"),
    ("@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nwww BOGUS x\n", r"f\.zone:3: bad record"),
    ("@ NS ns1\n", r"f\.zone: the apex example\.org needs exactly one SOA record \(found 0\)"),
    ("@ SOA ns1 h 1 2 3 4 5\n", r"needs at least one NS record"),
    ("@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nwww.other.net. A 192.0.2.1\n",
     r"f\.zone:3: 'www\.other\.net' is outside the zone example\.org"),
    ("@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nw CNAME x\nw A 192.0.2.1\n", r"w\.example\.org has a CNAME"),
    ("@ SOA ns1 h ( 1 2 3 4 5\n@ NS ns1\n", r"f\.zone:1: '\(' not closed"),
    ("$INCLUDE other\n", r"f\.zone:1: unsupported or malformed directive"),
    ("@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nsub SOA ns1 h 1 2 3 4 5\n", r"SOA must be at the apex"),
])
def test_errors_name_file_and_line(text, message):
    with pytest.raises(ZoneError, match=message):
        parse_zone(text, "example.org", "f.zone")


def test_missing_file(tmp_path):
    with pytest.raises(ZoneError, match="zone file not found"):
        load_zone(tmp_path / "nope.zone", "example.org")
