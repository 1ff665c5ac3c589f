"""The geo lookup of the DNS answer path: every network of the mmdb mapped to its ring key.

geoip2 answers "where is this address" with a record of names, coordinates and subdivisions,
which costs tens of microseconds; the answer path only needs the ring key (dnsd.countries.ring_key:
country, else "@" continent, else ""). So when the mmdb is (re)loaded, `build()` walks its search
tree once (dnsd.mmdbtree) and keeps, per address family, the sorted first addresses of runs of
consecutive networks with the same key (adjacent networks with one key merged) and each run's key
number, in flat `array`s. A lookup is one `bisect` and two index operations, no objects made.

The ECS scope of an answer (RFC 7871) is the shortest prefix around the client's subnet whose
whole block lies in one run (so every address in it gets the same answer), capped by the source
prefix the resolver sent; it is never longer than the mmdb network's own prefix.

IPv6: the runs are kept as two arrays of 64-bit halves. An IPv4-mapped address (::ffff:a.b.c.d) is
looked up as IPv4. Where the database points IPv6 networks at its IPv4 tree (::/96, 6to4, Teredo:
see dnsd.mmdbtree), the run's key number is ALIAS_BASE + i and the lookup continues in the IPv4
runs with the 32 address bits that follow the alias prefix `aliases[i]`.

Building GeoLite2 City takes seconds of pure Python, so a large file is built in a child process
(`python -m dnsd.geoindex build MMDB OUT`, at lower CPU priority) that writes the index to a file;
the DNS process only reads that file (milliseconds, off the reactor). With a cache directory
(`[geoip] index_cache`), the file is kept there under a name made of the mmdb's path, size and
mtime, written atomically, so a restart with an unchanged mmdb just reads it. See
docs/benchmarks.md for the build's time and memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from pathlib import Path

from dnsd import countries
from dnsd.mmdbtree import ALIAS, NO_DATA, MMDBError, MMDBTree

FORMAT = 1
MAGIC = b"mirrordns-geoindex\n"
ALIAS_BASE = 0xFF00              # key numbers from here on are aliases to the IPv4 runs
SUBPROCESS_ABOVE = 1 << 20       # mmdb files larger than this are built in a child process
M32 = (1 << 32) - 1
M64 = (1 << 64) - 1
_MAPPED = 0xFFFF                 # the top 96 bits of ::ffff:a.b.c.d


def client_country(country: str | None, registered_country: str | None) -> str | None:
    """The country a client is in for us: where the database places it, else where its network
    is registered (upper case). geo.GeoLocator and the compiled index both use this."""
    cc = country or registered_country
    return cc.upper() if cc else None


def _rule_digest() -> str:
    """Changes when the ring-key rule's inputs (the country list, the continents) change, so an
    index cached under an older list is not used."""
    h = hashlib.sha256()
    for c in sorted(c.alpha2 for c in countries.all_countries()):
        h.update(c.encode() + b",")
    h.update(",".join(sorted(countries.CONTINENTS)).encode())
    return h.hexdigest()[:10]


class GeoIndexError(ValueError):
    """An index file that cannot be used (damaged, other format, other database version)."""


class GeoIndex:
    """Ring key (and ECS scope) of an address, from flat arrays. Immutable once built.

    A lookup first reads which runs start inside the address's first 16 bits (`_b4`, `_b6`: the
    run holding the first address of each such block), so it bisects only those: none for most
    of the IPv4 space, a few thousand at most for the busiest IPv6 /16. IPv4 reads lists made
    from the arrays (a list item is an int that exists, an array item an int made on each read);
    IPv6 bisects the contiguous arrays, which on a cold cache (a query after the thread slept)
    touch less memory than a list of 128-bit ints would. The tables and lists cost about 10 MB
    in the DNS process for GeoLite2 City (docs/benchmarks.md), nothing in the index file."""

    __slots__ = ("keys", "aliases", "stamp", "_s4", "_k4", "_h6", "_l6", "_k6", "_n6",
                 "_s4l", "_key4", "_b4", "_b6")

    def __init__(self, keys, aliases, s4: array, k4: array, h6: array, l6: array, k6: array,
                 stamp: tuple[int, int] | None = None):
        self.keys = tuple(keys)          # key number -> ring key
        self.aliases = tuple(aliases)    # alias number -> prefix length of the alias network
        self.stamp = stamp               # (size, mtime_ns) of the mmdb it was built from
        self._s4, self._k4 = s4, k4      # IPv4 run starts (+ a 2**32 sentinel), key numbers
        self._h6, self._l6, self._k6 = h6, l6, k6   # IPv6 run starts (high, low 64 bits), keys
        self._n6 = len(k6)
        # what lookups read (see the class docstring)
        self._s4l = s4l = s4.tolist()
        self._key4 = [self.keys[k] for k in k4]
        self._b4 = [bisect_right(s4l, t << 16) - 1 for t in range((1 << 16) + 1)]
        self._b6 = _blocks6(h6, l6)

    # -- lookups (the answer path) ---------------------------------------------------------------

    def _run4(self, a: int) -> int:
        b = self._b4
        h = a >> 16
        i = b[h]
        j = b[h + 1]
        if i == j:                       # no run starts inside this /16 (after its first address)
            return i
        return bisect_right(self._s4l, a, i, j + 1) - 1

    def key4(self, a: int) -> str:
        return self._key4[self._run4(a)]

    def _run6(self, a: int) -> int:
        b = self._b6
        t = a >> 112
        lo = b[t]
        up = b[t + 1]
        if lo == up:                     # no run starts inside this /16 (after its first address)
            return lo
        h = a >> 64
        hi = self._h6
        j = bisect_right(hi, h, lo, up + 1) - 1
        if hi[j] != h or self._l6[j] <= (a & M64):
            return j
        # runs start inside this /64 after the address: look among them by the low half
        k = bisect_left(hi, h, lo, j)
        i = bisect_right(self._l6, a & M64, k, j) - 1
        return i if i >= k else k - 1

    def key6(self, a: int) -> str:
        if a >> 32 == _MAPPED:
            return self.key4(a & M32)
        k = self._k6[self._run6(a)]
        if k >= ALIAS_BASE:
            return self.key4((a >> (96 - self.aliases[k - ALIAS_BASE])) & M32)
        return self.keys[k]

    def key_of(self, ip: str) -> str:
        """Ring key of an address string (a resolver's source address); "" if it is not one."""
        try:
            if ":" in ip:
                return self.key6(int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big"))
            return self.key4(int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big"))
        except (OSError, ValueError):
            return ""

    def ecs4(self, a: int, source: int) -> tuple[str, int]:
        """(ring key, scope prefix) for the IPv4 subnet a/source (a: the network address)."""
        s4 = self._s4l
        i = self._run4(a)
        # largest aligned block around a inside [s4[i], s4[i+1]): its size is below the lowest
        # bit where a differs from the address before the run and from the one after it
        lo = (a ^ (s4[i] - 1)).bit_length() if i else 33
        hi = (a ^ s4[i + 1]).bit_length()
        scope = 33 - (lo if lo < hi else hi)
        return self._key4[i], (scope if scope < source else source)

    def ecs6(self, a: int, source: int) -> tuple[str, int]:
        """(ring key, scope prefix) for the IPv6 subnet a/source."""
        if a >> 32 == _MAPPED and source > 96:
            key, scope = self.ecs4(a & M32, source - 96)
            return key, 96 + scope
        i = self._run6(a)
        k = self._k6[i]
        if k >= ALIAS_BASE:
            d = self.aliases[k - ALIAS_BASE]
            key, scope = self.ecs4((a >> (96 - d)) & M32, max(0, source - d))
            return key, min(source, d + scope)
        h6, l6 = self._h6, self._l6
        lo = (a ^ ((h6[i] << 64 | l6[i]) - 1)).bit_length() if i else 129
        hi = (a ^ (h6[i + 1] << 64 | l6[i + 1])).bit_length() if i + 1 < self._n6 else 129
        scope = 129 - (lo if lo < hi else hi)
        return self.keys[k], (scope if scope < source else source)

    def ecs(self, family: int, source: int, addr: bytes) -> tuple[str, int]:
        """(ring key, scope) for an ECS option's family (1, 2), source prefix and address bytes."""
        if family == 1:
            return self.ecs4(int.from_bytes(addr, "big") << (32 - 8 * len(addr)), source)
        return self.ecs6(int.from_bytes(addr, "big") << (128 - 8 * len(addr)), source)

    # -- inspection -----------------------------------------------------------------------------

    def runs(self, family: int) -> list[tuple[int, str | int]]:
        """(first address, ring key, or the alias prefix length as an int) of every run."""
        if family == 4:
            return [(self._s4[i], self.keys[k]) for i, k in enumerate(self._k4)]
        out = []
        for i, k in enumerate(self._k6):
            a = self._h6[i] << 64 | self._l6[i]
            out.append((a, self.aliases[k - ALIAS_BASE] if k >= ALIAS_BASE else self.keys[k]))
        return out

    def __repr__(self):
        return (f"<GeoIndex {len(self._k4)} IPv4 and {self._n6} IPv6 runs, "
                f"{len(self.keys)} keys>")

    # -- files ----------------------------------------------------------------------------------

    def _arrays(self):
        return (self._s4, self._k4, self._h6, self._l6, self._k6)

    def save(self, path: str | os.PathLike) -> None:
        """Write to `path` atomically (a temporary file beside it, then rename)."""
        path = Path(path)
        header = json.dumps({
            "format": FORMAT, "rule": _rule_digest(), "byteorder": sys.byteorder,
            "stamp": list(self.stamp) if self.stamp else None, "keys": list(self.keys),
            "aliases": list(self.aliases),
            "arrays": [[a.typecode, a.itemsize, len(a)] for a in self._arrays()],
        }).encode()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + len(header).to_bytes(4, "big") + header)
                for a in self._arrays():
                    a.tofile(f)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike, stamp: tuple[int, int] | None = None) -> GeoIndex:
        """Read an index file; GeoIndexError if it is damaged, of another format or rule, or (with
        `stamp`) built from another version of the mmdb."""
        data = Path(path).read_bytes()
        try:
            if not data.startswith(MAGIC):
                raise GeoIndexError("not a geo index file")
            p = len(MAGIC)
            n = int.from_bytes(data[p:p + 4], "big")
            h = json.loads(data[p + 4:p + 4 + n])
            p += 4 + n
            if h["format"] != FORMAT or h["rule"] != _rule_digest():
                raise GeoIndexError("written by another version")
            if h["byteorder"] != sys.byteorder:
                raise GeoIndexError("written on a machine of another byte order")
            if stamp is not None and tuple(h["stamp"] or ()) != tuple(stamp):
                raise GeoIndexError("built from another version of the database")
            arrays = []
            for typecode, itemsize, count in h["arrays"]:
                a = array(typecode)
                if a.itemsize != itemsize:
                    raise GeoIndexError("array item sizes differ on this machine")
                end = p + itemsize * count
                if end > len(data):
                    raise GeoIndexError("truncated")
                a.frombytes(data[p:end])
                arrays.append(a)
                p = end
            if p != len(data):
                raise GeoIndexError("trailing bytes")
            keys, aliases = h["keys"], h["aliases"]
            s4, k4, h6, l6, k6 = arrays
            _check(keys, aliases, s4, k4, h6, l6, k6)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, GeoIndexError):
                raise
            raise GeoIndexError(f"damaged ({e})") from e
        return cls(keys, aliases, s4, k4, h6, l6, k6,
                   tuple(h["stamp"]) if h["stamp"] else None)


def _blocks6(h6: array, l6: array) -> list[int]:
    """For each IPv6 /16 t (and t = 65536, past the end): the run holding address t << 112."""
    out = []
    i = 0
    n = len(h6)
    for t in range((1 << 16) + 1):
        start = t << 48                     # the /16's first address, in high halves (low 0)
        while i + 1 < n and h6[i + 1] <= start and (h6[i + 1] < start or l6[i + 1] == 0):
            i += 1
        out.append(i)
    return out


def _check(keys, aliases, s4, k4, h6, l6, k6) -> None:
    """The invariants lookups rely on (cheap: C-speed passes over the arrays)."""
    if not (len(s4) == len(k4) + 1 and len(k4) >= 1 and s4[0] == 0 and s4[-1] == 1 << 32):
        raise GeoIndexError("bad IPv4 runs")
    if not (len(h6) == len(l6) == len(k6) >= 1 and h6[0] == 0 and l6[0] == 0):
        raise GeoIndexError("bad IPv6 runs")
    if max(k4) >= len(keys):
        raise GeoIndexError("bad IPv4 key numbers")
    if any(k >= len(keys) and not ALIAS_BASE <= k < ALIAS_BASE + len(aliases) for k in set(k6)):
        raise GeoIndexError("bad IPv6 key numbers")
    if any(a >= b for a, b in zip(s4, s4[1:])):
        raise GeoIndexError("IPv4 runs out of order")
    starts6 = [h << 64 | lo for h, lo in zip(h6, l6)]
    if any(a >= b for a, b in zip(starts6, starts6[1:])):
        raise GeoIndexError("IPv6 runs out of order")


# -- building -------------------------------------------------------------------------------------

def stamp_of(path: str | os.PathLike) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def build(path: str | os.PathLike) -> GeoIndex:
    """Compile the mmdb at `path` in this process (CPU-bound pure Python: seconds for a City
    database; see `load_or_build` for running it elsewhere)."""
    stamp = stamp_of(path)
    with MMDBTree(str(path)) as db:
        keys: list[str] = [""]
        number = {"": 0}
        by_record: dict[int, int] = {}
        aliases: list[int] = []

        def key_number(rec: int, depth: int) -> int:
            if rec == NO_DATA:
                return 0
            if rec == ALIAS:
                if depth not in aliases:
                    aliases.append(depth)
                return ALIAS_BASE + aliases.index(depth)
            k = by_record.get(rec)
            if k is None:
                c = db.codes(rec)
                rk = countries.ring_key(client_country(c.country, c.registered_country),
                                        c.continent)
                k = number.get(rk)
                if k is None:
                    k = number[rk] = len(keys)
                    keys.append(rk)
                by_record[rec] = k
            return k

        v4 = db.ipv4_start()
        s4, k4 = array("Q"), array("H")
        last = -1
        for a, depth, rec in db.leaves(v4, 32):
            k = key_number(rec, depth)
            if k != last:
                s4.append(a)
                k4.append(k)
                last = k
        s4.append(1 << 32)
        h6, l6, k6 = array("Q"), array("Q"), array("H")
        if db.ip_version == 6:
            last = -1
            for a, depth, rec in db.leaves(0, 128, v4 if v4 < db.node_count else None):
                k = key_number(rec, depth)
                if k != last:
                    h6.append(a >> 64)
                    l6.append(a & M64)
                    k6.append(k)
                    last = k
        else:                             # an IPv4 database knows nothing of IPv6
            h6.append(0)
            l6.append(0)
            k6.append(0)
    if len(keys) >= ALIAS_BASE:
        raise MMDBError("more distinct locations than the index can number")
    return GeoIndex(keys, aliases, s4, k4, h6, l6, k6, stamp)


class BuildCancelled(Exception):
    """The build was stopped through its `cancel` event (the service is stopping)."""


def build_in_child(path: str | os.PathLike, out: str | os.PathLike, timeout: float = 600.0,
                   cancel: threading.Event | None = None) -> None:
    """Run `build` in a child process at lower CPU priority, writing the index to `out`, so a
    long build neither holds this process's GIL nor takes its CPU from the DNS answers. Setting
    `cancel` kills the child within a tenth of a second (BuildCancelled): a stopping server does
    not wait for a build it will not use."""
    pkg_root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                    else "")
    with tempfile.TemporaryFile("w+") as err, subprocess.Popen(
            [sys.executable, "-m", "dnsd.geoindex", "build", str(path), str(out)], env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err) as proc:
        deadline = time.monotonic() + timeout
        while True:
            try:
                rc = proc.wait(0.1)
                break
            except subprocess.TimeoutExpired:
                if (cancel is not None and cancel.is_set()) or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    if cancel is not None and cancel.is_set():
                        raise BuildCancelled(f"building the geo index of {path}") from None
                    raise MMDBError(f"building the geo index of {path} took over "
                                    f"{timeout:.0f} s") from None
        if rc != 0:
            err.seek(0)
            last = (err.read().strip().splitlines() or [f"exit status {rc}"])[-1]
            raise MMDBError(f"building the geo index of {path} failed: {last}")


def _cache_prefix(path: str | os.PathLike) -> str:
    p = Path(path).resolve()
    return f"{p.stem}-{hashlib.sha256(str(p).encode()).hexdigest()[:12]}-"


def cache_file(cache_dir: str | os.PathLike, path: str | os.PathLike,
               stamp: tuple[int, int]) -> Path:
    """Where the index of this version of the mmdb at `path` is kept in `cache_dir`."""
    return Path(cache_dir) / (_cache_prefix(path)
                              + f"{stamp[0]}-{stamp[1]}-f{FORMAT}-{_rule_digest()}.idx")


@contextlib.contextmanager
def _locked(cache_dir: Path, cancel: threading.Event | None = None):
    """One builder at a time per cache directory (DNS worker processes start together); waiting
    for another builder ends when `cancel` is set (BuildCancelled)."""
    with open(cache_dir / ".lock", "a") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if cancel is not None and cancel.wait(0.1):
                    raise BuildCancelled(f"waiting for another build in {cache_dir}") from None
                if cancel is None:
                    time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_or_build(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                  in_child: bool | None = None,
                  cancel: threading.Event | None = None) -> tuple[GeoIndex, str]:
    """(index of the mmdb at `path`, how it was got: "cache" or "built"). Blocking: run it on
    a thread. With `cache_dir`, a kept index of this exact file version is read; else the index is
    built (in a child process when `in_child`, by default for files over SUBPROCESS_ABOVE) and
    kept there, older versions' files removed. `cancel`: see build_in_child."""
    stamp = stamp_of(path)
    if in_child is None:
        in_child = stamp[0] > SUBPROCESS_ABOVE
    if not cache_dir:
        if not in_child:
            return build(path), "built"
        with tempfile.TemporaryDirectory(prefix="mirrordns-geoindex-") as d:
            out = Path(d) / "index.idx"
            build_in_child(path, out, cancel=cancel)
            return GeoIndex.load(out, stamp), "built"
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    f = cache_file(cache_dir, path, stamp)
    with _locked(cache_dir, cancel):
        with contextlib.suppress(FileNotFoundError, GeoIndexError):
            return GeoIndex.load(f, stamp), "cache"
        for tmp in cache_dir.glob(f.name + ".*.tmp"):  # a builder killed mid-write (we hold the lock)
            with contextlib.suppress(OSError):
                tmp.unlink()
        if in_child:
            build_in_child(path, f, cancel=cancel)
            ix = GeoIndex.load(f, stamp)
        else:
            ix = build(path)
            if ix.stamp != stamp:
                raise GeoIndexError(f"{path} changed while its index was built")
            ix.save(f)
        prefix = _cache_prefix(path)
        for old in cache_dir.glob("*.idx"):
            if old != f and old.name.startswith(prefix):
                with contextlib.suppress(OSError):
                    old.unlink()
    return ix, "built"


def main(argv=None) -> int:
    """`build MMDB OUT`: compile MMDB into the index file OUT (what load_or_build's child runs).
    `time MMDB`: compile it here and print the time, the peak memory and the run counts."""
    import resource

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 3 and args[0] == "build":
        with contextlib.suppress(OSError):
            os.nice(10)                   # the DNS answers on this machine come first
        try:
            ix = build(args[1])
            ix.save(args[2])
        except (OSError, MMDBError) as e:
            print(f"geoindex: {e}", file=sys.stderr)
            return 1
        return 0
    if len(args) == 2 and args[0] == "time":
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        ix = build(args[1])
        secs = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with tempfile.TemporaryDirectory() as d:
            ix.save(Path(d) / "i.idx")
            size = (Path(d) / "i.idx").stat().st_size
            t1 = time.perf_counter()
            GeoIndex.load(Path(d) / "i.idx")
            load_secs = time.perf_counter() - t1
        print(json.dumps({"build_s": round(secs, 2), "peak_rss_mb": round(rss / 1024, 1),
                          "rss_before_mb": round(rss0 / 1024, 1),
                          "ipv4_runs": len(ix.runs(4)), "ipv6_runs": len(ix.runs(6)),
                          "keys": len(ix.keys), "file_mb": round(size / 1e6, 2),
                          "load_s": round(load_secs, 3)}))
        return 0
    print("usage: python -m dnsd.geoindex build MMDB OUT | time MMDB", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
