"""Reply sections in wire form: what a zone lookup (`dnsd.zonefile.Lookup`) encodes to.

The answer path joins a reply from the query's own header and question and pre-encoded pieces, so
every piece is encoded against the question it will follow. A *triple* is one reply's pieces:
(counts without OPT, counts with OPT, the sections after the question, header flag bytes indexed
by the query's RD bit). Names in the sections compress against the question; for a name the zone
answers whatever the client asked below it (a referral below a cut, a wildcard match), the pieces
are encoded once per question length against a stand-in question of that length whose last labels
are the real suffix (`stand_in`), so every pointer lands in the client's own question.
"""

from __future__ import annotations

import struct

from dnslib import QTYPE, RD, RR, DNSLabel
from dnslib.label import DNSBuffer

_COUNTS = struct.Struct("!HHHH")
_PAD = b"\xff"                          # stand-in label bytes: never part of a zone name


def flags(aa: bool, rcode: int) -> tuple[bytes, bytes]:
    """Header bytes 2-3 of a reply (QR, AA, RD copied, RA clear), for RD clear and set."""
    f = 0x84 if aa else 0x80
    return bytes((f, rcode)), bytes((f | 1, rcode))


FLAGS_OK = flags(True, 0)


def triple(an: int, ns: int, body: bytes, ar: int = 0, fl=FLAGS_OK) -> tuple:
    return (_COUNTS.pack(1, an, ns, ar), _COUNTS.pack(1, an, ns, ar + 1), bytes(body), fl)


def rcode_of(trip) -> int:
    return trip[3][0][1]


def answer_count(trip) -> int:
    return int.from_bytes(trip[0][2:4], "big")


def stand_in(qlen: int, suffix: str) -> DNSLabel:
    """A name of wire length `qlen` ending in `suffix`, its first labels made of _PAD bytes."""
    tail = [p.encode("ascii") for p in suffix.split(".") if p]
    rest = qlen - (sum(len(p) + 1 for p in tail) + 1)
    labels: list[bytes] = []
    while rest > 0:
        n = min(rest - 1, 63)
        if rest - (n + 1) == 1:            # never leave one byte: a label needs at least two
            n -= 1
        labels.append(_PAD * n)
        rest -= n + 1
    if rest != 0:
        raise ValueError(f"no name of {qlen} octets ends in {suffix}")
    return DNSLabel(labels + tail)


def encode_lookup(lk, zone, qlabel: DNSLabel, qname: str, qtype: int, neg_soa: RR,
                  any_ttl: int) -> tuple[tuple, int | None]:
    """(triple, offset of the name a chain ends at or None) for one Lookup.

    `qname` is the name the lookup was made for; records owned by it are written under `qlabel`
    (the client's question, or a stand-in of the same length).
    """
    buf = DNSBuffer()
    buf.append(bytes(12))
    buf.encode_name(qlabel)
    buf.pack("!HH", qtype & 0xFFFF, 1)
    start = buf.offset
    an = ns = ar = 0
    target_at = None
    for owner, rr in lk.answer:
        at = _pack(buf, qlabel if owner == qname else DNSLabel(owner), rr)
        an += 1
        if rr.rtype == QTYPE.CNAME:
            target_at = at                      # the rdata of a CNAME is its target's name
    if lk.minimal_any:
        last = lk.answer[-1][0] if lk.answer else qname
        _pack(buf, qlabel if last == qname else DNSLabel(last),
              RR(qlabel, QTYPE.HINFO, 1, any_ttl, RD(b"\x07RFC8482\x00")))
        an += 1
    if lk.negative:
        _pack(buf, neg_soa.rname, neg_soa)
        ns = 1
    if lk.referral is not None:
        cut = DNSLabel(lk.referral)
        for rr in zone.rrset(lk.referral, QTYPE.NS):
            _pack(buf, cut, rr)
            ns += 1
        for rr in zone.glue(lk.referral):
            _pack(buf, rr.rname, rr)
            ar += 1
    body = bytes(buf.data[start:])
    fl = flags(lk.aa, lk.rcode)
    return triple(an, ns, body, ar, fl), (target_at if lk.dynamic else None)


def _pack(buf: DNSBuffer, rname, rr: RR) -> int:
    """Write one record owned by `rname` (as dnslib's RR.pack does); return where its rdata is."""
    buf.encode_name(rname)
    buf.pack("!HHI", rr.rtype, rr.rclass, rr.ttl)
    at_len = buf.offset
    buf.pack("!H", 0)
    start = buf.offset
    rr.rdata.pack(buf)
    buf.update(at_len, "!H", buf.offset - start)
    return start


def relocate(body: bytes, owner: bytes) -> bytes:
    """The records of `body`, each owned by a 2-byte pointer, re-owned by `owner` (a pointer).

    Only for bodies whose rdata holds no compression pointers (addresses, an uncompressed CNAME
    target, HINFO), which is what the plan's answers are."""
    out = []
    i, n = 0, len(body)
    while i < n:
        (rdlen,) = struct.unpack_from("!H", body, i + 10)
        out.append(owner)
        out.append(body[i + 2:i + 12 + rdlen])
        i += 12 + rdlen
    return b"".join(out)
