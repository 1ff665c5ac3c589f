"""More than one mirror per download: RFC 6249 `Link` headers and RFC 5854 Metalink documents.

MirrorBrain and Mirrorbits hand a download client the other mirrors too, so that a download
manager can fall back when one fails or fetch pieces from several at once: a redirect carries
`Link: <url>; rel=duplicate; pri=N; geo=cc` for further mirrors of the same file (RFC 6249
section 3) and a `rel=describedby` link to a Metalink document (RFC 6249 section 5), which
lists the mirrors with their country and priority and the file's size and hashes (RFC 5854).
The closer's `action=download` and `action=metalink` use these (admin.closer.resource); here they are
plain functions of plain data.
"""

from __future__ import annotations

import datetime as _dt
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from xml.etree import ElementTree as ET

NS = "urn:ietf:params:xml:ns:metalink"
MEDIA_TYPE = "application/metalink4+xml"
MAX_PRIORITY = 999999                 # RFC 5854 4.2.16.2 and RFC 6249 3.2: 1 (first) to 999999

# The dist tree's checksum files: (suffix, dnsd.checksums algorithm, the IANA "Hash Function
# Textual Name" a Metalink uses), strongest first. MD5 and SHA-1 files are left out: RFC 5854
# section 7 counts them among the hashes to avoid.
CHECKSUM_FILES = ((".sha512", "sha512", "sha-512"), (".sha256", "sha256", "sha-256"))


@dataclass(frozen=True)
class Location:
    """One mirror's URL of the file, in the order the closer would choose them."""
    url: str
    country: str = ""                 # ISO 3166-1 alpha-2 ("" unknown)


@dataclass(frozen=True)
class Digest:
    type: str                         # "sha-256", "sha-512"
    hex: str


def priorities(n: int) -> list[int]:
    """1, 2, 3, ...: the order of the choice, capped at what the RFCs allow."""
    return [min(i + 1, MAX_PRIORITY) for i in range(n)]


def duplicate_links(locations: Sequence[Location], describedby: str = "") -> str:
    """The value of one `Link` header: each further mirror as `rel=duplicate` with its `pri`
    (and `geo` when known), then the Metalink document as `rel=describedby`. '' for none."""
    parts = []
    for loc, pri in zip(locations, priorities(len(locations))):
        geo = f"; geo={loc.country.lower()}" if len(loc.country) == 2 else ""
        parts.append(f"<{loc.url}>; rel=duplicate; pri={pri}{geo}")
    if describedby:
        parts.append(f'<{describedby}>; rel=describedby; type="{MEDIA_TYPE}"')
    return ", ".join(parts)


def metalink(path: str, locations: Sequence[Location], *, origin: str, published: _dt.datetime,
             generator: str, size: int | None = None, digests: Sequence[Digest] = ()) -> bytes:
    """An RFC 5854 Metalink document for one file: its name (the last part of `path`, never a
    path: RFC 5854 4.1.2.1), size and hashes when known, and every location in order with its
    priority and country. `origin` is this document's own address (`dynamic`: ask again for a
    newer one); `published` is when it was made (UTC)."""
    ET.register_namespace("", NS)
    root = ET.Element(f"{{{NS}}}metalink")
    ET.SubElement(root, f"{{{NS}}}generator").text = generator
    ET.SubElement(root, f"{{{NS}}}origin", dynamic="true").text = origin
    ET.SubElement(root, f"{{{NS}}}published").text = rfc3339(published)
    f = ET.SubElement(root, f"{{{NS}}}file", name=posixpath.basename(path.rstrip("/")))
    if size is not None:
        ET.SubElement(f, f"{{{NS}}}size").text = str(size)
    for d in digests:
        ET.SubElement(f, f"{{{NS}}}hash", type=d.type).text = d.hex
    for loc, pri in zip(locations, priorities(len(locations))):
        attrs = {"priority": str(pri)}
        if len(loc.country) == 2:
            attrs["location"] = loc.country.lower()
        ET.SubElement(f, f"{{{NS}}}url", attrs).text = loc.url
    ET.indent(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True) + b"\n"


def rfc3339(t: _dt.datetime) -> str:
    """'2026-12-01T10:00:00Z' (RFC 5854 3.2: RFC 3339 date-time, here always UTC)."""
    if t.tzinfo is not None:
        t = t.astimezone(_dt.UTC).replace(tzinfo=None)
    return t.replace(microsecond=0).isoformat() + "Z"
