"""Reading a MaxMind DB file's search tree and the few record fields the DNS answer needs.

The format is public (https://maxmind.github.io/MaxMind-DB/): a binary trie of `node_count` nodes,
each two records of `record_size` bits (left: bit 0, right: bit 1); a record below `node_count` is
another node, equal to it means "no data", above it points into the data section. The data
section holds typed values (maps, strings, pointers to shared values, ...).

Why not `maxminddb`'s own iteration: it decodes every record in full (a City record has names in
eight languages) and takes about 40 s for GeoLite2 City; walking the tree here and decoding only
`country.iso_code`, `registered_country.iso_code` and `continent.code`, once per distinct record
and with shared sub-maps decoded once, takes a few seconds. Metadata still comes from `maxminddb`.

IPv6 databases keep IPv4 at ::/96 and point the IPv4-mapped (::ffff:0:0/96), Teredo (2001::/32) and
6to4 (2002::/16) networks at that same node ("aliases"); `leaves()` reports a record that points
to the IPv4 node as ALIAS instead of walking the IPv4 tree again under it.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass

import maxminddb

ALIAS = -1                       # leaves(): this network is the IPv4 tree seen from IPv6
NO_DATA = -2                     # leaves(): the database has nothing for this network


class MMDBError(ValueError):
    """The file is not a MaxMind DB this reader understands, or it is damaged."""


@dataclass(frozen=True)
class Codes:
    """The three fields the ring key is made of (None when the record lacks one)."""

    country: str | None
    registered_country: str | None
    continent: str | None


_WANT = {b"country": 0, b"registered_country": 1, b"continent": 2}


class MMDBTree:
    """An open .mmdb file: `leaves()` walks its tree, `codes(record)` reads a leaf's fields."""

    def __init__(self, path: str):
        try:
            with maxminddb.open_database(path, maxminddb.MODE_MMAP) as r:
                meta = r.metadata()
        except (OSError, maxminddb.InvalidDatabaseError, ValueError) as e:
            raise MMDBError(f"{path}: not a MaxMind DB file ({e})") from e
        self.node_count = meta.node_count
        self.record_size = meta.record_size
        self.ip_version = meta.ip_version
        self.database_type = meta.database_type
        if self.record_size not in (24, 28, 32):
            raise MMDBError(f"{path}: record size {self.record_size} is not 24, 28 or 32")
        with open(path, "rb") as f:
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._node_bytes = self.record_size // 4
        tree_size = self.node_count * self._node_bytes
        if tree_size + 16 > len(self._mm):
            raise MMDBError(f"{path}: the search tree runs past the end of the file")
        view = memoryview(self._mm)         # slices of it copy nothing
        self._tree = view[:tree_size]
        self._data = view[tree_size + 16:]
        view.release()
        self._key_cache: dict[int, bytes] = {}
        self._code_cache: dict[int, tuple[str | None, int]] = {}
        self._ipv4_node = None

    def close(self) -> None:
        self._tree.release()
        self._data.release()
        self._mm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the search tree ---------------------------------------------------------------------------

    def _children(self, node: int) -> tuple[int, int]:
        nb = self._node_bytes
        o = node * nb
        v = int.from_bytes(self._tree[o:o + nb], "big")
        if nb == 7:                  # 28 bits: the middle nibble holds the left record's top bits
            return (v >> 32) | ((v >> 28 & 0xF) << 24), v & 0x0FFFFFFF
        half = nb * 4
        return v >> half, v & ((1 << half) - 1)

    def ipv4_start(self) -> int:
        """The record IPv4 lookups start from: node 0 in an IPv4 database, else the one 96 zero
        bits down (it may be a leaf, when the whole of ::/96 has one answer)."""
        if self._ipv4_node is None:
            rec = 0
            if self.ip_version == 6:
                for _ in range(96):
                    if rec >= self.node_count:
                        break
                    rec = self._children(rec)[0]
            self._ipv4_node = rec
        return self._ipv4_node

    def leaves(self, start: int, bits: int, alias: int | None = None) -> Iterator[tuple[int, int, int]]:
        """(first address, prefix length, record) of every leaf under record `start`, in address
        order, `bits` wide addresses. `record` is a data record (pass it to `codes`), NO_DATA, or
        ALIAS where a record equals `alias` (the IPv4 node, when walking IPv6)."""
        n = self.node_count
        children = self._children
        limit = 4 * n + 1024         # a tree is a trie: a DAG of shared nodes would never end
        count = 0
        stack = [(start, 0, 0)]
        pop, push = stack.pop, stack.append
        while stack:
            rec, depth, addr = pop()
            while rec < n and rec != alias:
                if depth >= bits:
                    raise MMDBError("the search tree is deeper than the address size")
                left, rec2 = children(rec)
                depth += 1
                push((rec2, depth, addr | (1 << (bits - depth))))
                rec = left
            count += 1
            if count > limit:
                raise MMDBError("the search tree has more networks than a trie of its size can")
            if rec == alias:
                yield addr, depth, ALIAS
            elif rec == n:
                yield addr, depth, NO_DATA
            else:
                yield addr, depth, rec

    # -- the data section ---------------------------------------------------------------------------

    def _head(self, o: int) -> tuple[int, int, int]:
        """(type, size, offset of the payload) of the value at data offset o (not a pointer)."""
        d = self._data
        c = d[o]
        t = c >> 5
        o += 1
        if t == 0:                   # extended type
            t = 7 + d[o]
            o += 1
        s = c & 0x1F
        if s >= 29:
            if s == 29:
                s = 29 + d[o]
                o += 1
            elif s == 30:
                s = 285 + int.from_bytes(d[o:o + 2], "big")
                o += 2
            else:
                s = 65821 + int.from_bytes(d[o:o + 3], "big")
                o += 3
        return t, s, o

    def _deref(self, o: int) -> tuple[int, int | None]:
        """(offset of the value, offset after the pointer) if o holds a pointer, else (o, None)."""
        d = self._data
        c = d[o]
        if c >> 5 != 1:
            return o, None
        ss, v = (c >> 3) & 3, c & 7
        if ss == 0:
            p = (v << 8) | d[o + 1]
        elif ss == 1:
            p = ((v << 16) | int.from_bytes(d[o + 1:o + 3], "big")) + 2048
        elif ss == 2:
            p = ((v << 24) | int.from_bytes(d[o + 1:o + 4], "big")) + 526336
        else:
            p = int.from_bytes(d[o + 1:o + 5], "big")
        return p, o + ss + 2

    def _skip(self, o: int) -> int:
        """Offset after the value at o."""
        c = self._data[o]
        if c >> 5 == 1:
            return o + ((c >> 3) & 3) + 2
        t, s, o = self._head(o)
        if t == 7:                   # map: s key/value pairs
            for _ in range(2 * s):
                o = self._skip(o)
            return o
        if t == 11:                  # array
            for _ in range(s):
                o = self._skip(o)
            return o
        if t == 14:                  # boolean: the value is the size field
            return o
        return o + s

    def _key(self, o: int) -> tuple[bytes, int]:
        """(map key bytes, offset after it)."""
        p, after = self._deref(o)
        k = self._key_cache.get(p)
        t, s, q = self._head(p)
        if k is None:
            if t != 2:
                raise MMDBError(f"a map key at data offset {p} is not a string")
            k = self._key_cache[p] = bytes(self._data[q:q + s])
        return k, after if after is not None else q + s

    def _code(self, o: int) -> tuple[str | None, int]:
        """(`iso_code` or `code` of the map at o, offset after the value at o), cached per map."""
        p, after = self._deref(o)
        hit = self._code_cache.get(p)
        if hit is None:
            t, s, q = self._head(p)
            code = None
            if t == 7:
                for _ in range(s):
                    k, q = self._key(q)
                    if k == b"iso_code" or k == b"code":
                        vp = self._deref(q)[0]
                        vt, vs, vq = self._head(vp)
                        if vt == 2:
                            code = bytes(self._data[vq:vq + vs]).decode("ascii", "replace")
                    q = self._skip(q)
            else:
                q = self._skip(p)
            hit = self._code_cache[p] = (code, q)
        return hit[0], (after if after is not None else hit[1])

    def codes(self, record: int) -> Codes:
        """The country, registered country and continent codes of a leaf's record."""
        o = record - self.node_count - 16
        if not 0 <= o < len(self._data):
            raise MMDBError(f"record {record} points outside the data section")
        got: list[str | None] = [None, None, None]
        t, s, q = self._head(self._deref(o)[0])
        if t == 7:
            found = 0
            for _ in range(s):
                k, q = self._key(q)
                i = _WANT.get(k)
                if i is None:
                    q = self._skip(q)
                else:
                    got[i], q = self._code(q)
                    found += 1
                    if found == 3:
                        break
        return Codes(*got)
