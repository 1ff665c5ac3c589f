"""RFC 6249 Link headers and RFC 5854 Metalink documents (admin.closer.links), pure.

Every document is validated against RFC 5854's schema (tests/fixtures/metalink4.rng, read by
lxml's RELAX NG) and read back field by field; the schema itself is shown to refuse what the RFC
refuses, so a pass means something.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from lxml import etree

from admin.closer.links import (
    MEDIA_TYPE,
    NS,
    Digest,
    Location,
    duplicate_links,
    metalink,
    priorities,
    rfc3339,
)
from dnsd.checksums import digest_of

SCHEMA = etree.RelaxNG(etree.parse(str(Path(__file__).parent / "fixtures" / "metalink4.rng")))
M = f"{{{NS}}}"
WHEN = dt.datetime(2026, 12, 1, 10, 11, 12, 345678)
LOCS = [Location("https://de1.example.net/dist/httpd/httpd-2.4.66.tar.gz", "DE"),
        Location("https://fr1.example.net/pub/httpd/httpd-2.4.66.tar.gz", "FR"),
        Location("http://backup.example.org/httpd/httpd-2.4.66.tar.gz", "")]


def valid(doc: bytes) -> etree._Element:
    root = etree.fromstring(doc)
    if not SCHEMA.validate(root):
        raise AssertionError(f"not valid Metalink 4: {SCHEMA.error_log}")
    return root


def test_link_header_lists_the_next_mirrors_with_priority_and_country():
    """RFC 6249 3: rel=duplicate, pri from the order (1 first), geo the country code."""
    v = duplicate_links(LOCS[1:], describedby="https://m.example.org/dyn/closer/x?action=metalink")
    assert v == ('<https://fr1.example.net/pub/httpd/httpd-2.4.66.tar.gz>; rel=duplicate; pri=1; '
                 'geo=fr, '
                 '<http://backup.example.org/httpd/httpd-2.4.66.tar.gz>; rel=duplicate; pri=2, '
                 '<https://m.example.org/dyn/closer/x?action=metalink>; rel=describedby; '
                 f'type="{MEDIA_TYPE}"')
    assert duplicate_links([]) == ""
    assert priorities(3) == [1, 2, 3] and priorities(1_000_001)[-1] == 999999


def test_metalink_document_is_valid_and_says_what_it_should():
    sha = "ab" * 32
    doc = metalink("httpd/httpd-2.4.66.tar.gz", LOCS,
                   origin="https://m.example.org/dyn/closer/httpd/httpd-2.4.66.tar.gz"
                          "?action=metalink", published=WHEN, generator="mirrordns/0.2.0",
                   size=9_876_543, digests=[Digest("sha-512", "cd" * 64), Digest("sha-256", sha)])
    assert doc.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    root = valid(doc)
    assert root.tag == f"{M}metalink"
    assert root.findtext(f"{M}generator") == "mirrordns/0.2.0"
    origin = root.find(f"{M}origin")
    assert origin.get("dynamic") == "true" and origin.text.endswith("?action=metalink")
    assert root.findtext(f"{M}published") == "2026-12-01T10:11:12Z"
    (f,) = root.findall(f"{M}file")
    assert f.get("name") == "httpd-2.4.66.tar.gz"           # a name, never a path (RFC 4.1.2.1)
    assert f.findtext(f"{M}size") == "9876543"
    assert [(h.get("type"), h.text) for h in f.findall(f"{M}hash")] == [
        ("sha-512", "cd" * 64), ("sha-256", sha)]
    urls = [(u.get("priority"), u.get("location"), u.text) for u in f.findall(f"{M}url")]
    assert urls == [("1", "de", LOCS[0].url), ("2", "fr", LOCS[1].url), ("3", None, LOCS[2].url)]


def test_metalink_without_size_or_hashes_and_with_odd_characters_is_still_valid():
    loc = Location("https://m.example.net/a%20b/x&y.tar.gz", "de")
    root = valid(metalink("a b/x&y.tar.gz", [loc], origin="https://o/?a=1&b=2",
                          published=WHEN.replace(tzinfo=dt.UTC), generator="g"))
    f = root.find(f"{M}file")
    assert f.get("name") == "x&y.tar.gz" and f.find(f"{M}size") is None
    assert f.find(f"{M}url").text == loc.url
    assert root.findtext(f"{M}origin") == "https://o/?a=1&b=2"


@pytest.mark.parametrize("broken", [
    b'<metalink xmlns="urn:ietf:params:xml:ns:metalink"/>',                       # no file
    b'<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="x">'
    b'<url priority="0">http://a/x</url></file></metalink>',                      # pri 0
    b'<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="x">'
    b'<url location="deu">http://a/x</url></file></metalink>',                    # 3 letters
    b'<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="x">'
    b'<size>big</size></file></metalink>',
    b'<metalink xmlns="urn:ietf:params:xml:ns:metalink"><published>yesterday</published>'
    b'<file name="x"/></metalink>',
    b'<metalink xmlns="http://www.metalinker.org/"><file name="x"/></metalink>',  # Metalink 3
])
def test_the_schema_refuses_what_rfc_5854_refuses(broken):
    assert not SCHEMA.validate(etree.fromstring(broken))


def test_rfc3339_is_utc_to_the_second():
    assert rfc3339(WHEN) == "2026-12-01T10:11:12Z"
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert rfc3339(dt.datetime(2026, 12, 1, 12, 0, tzinfo=plus2)) == "2026-12-01T10:00:00Z"


def test_checksum_files_of_the_dist_tree():
    h512 = "ef" * 64
    assert digest_of(f"{h512}  httpd-2.4.66.tar.gz\n".encode(), "httpd/httpd-2.4.66.tar.gz",
                     "sha512") == h512
    assert digest_of(f"SHA512 (httpd-2.4.66.tar.gz) = {h512}".encode(), "x/httpd-2.4.66.tar.gz",
                     "sha512") == h512
    assert digest_of(("ab" * 32).encode(), "x", "sha512") is None      # a sha256 is not one
