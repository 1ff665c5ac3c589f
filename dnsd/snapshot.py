"""The plan on disk: what a DNS process answers from when it starts and the database does not.

Each DNS process writes every plan it swaps in from the database to `<snapshot_dir>/plan-<slot>.json`
(slot 0 for the main process, 1.. for extra workers), through a temporary file, fsync and an
atomic rename, so a crash leaves the old snapshot or the new one, never half of one. At start it
reads the newest valid snapshot of the folder and answers from it until the database answers.

The file is one header line and one payload line, both JSON. The header names the format and its
version, the SHA-256 of the payload, when it was written and the plan's version. The payload is
the plan encoded generically: a dataclass becomes its class (which must live in a `dnsd` module)
and its init fields, so plan records can gain fields without this module knowing them; tuples,
frozensets, read-only mappings and datetimes are tagged; an object met twice (a mirror in several
pools) is written once and referred to. A snapshot that is truncated, fails its checksum, has
another format version, or was written by code whose records had other required fields is
treated as absent, with a log line saying why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import importlib
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

FORMAT = "mirrordns-plan-snapshot"
VERSION = 1


class SnapshotError(Exception):
    """A snapshot that cannot be used, worded for the log."""


@dataclass(frozen=True)
class Snapshot:
    plan: object                 # the ResolutionPlan
    path: str
    written: float               # Unix time the file was written
    plan_version: int

    def age(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.written)


# -- generic encoding ----------------------------------------------------------------------------


def encode(obj) -> object:
    """A JSON-ready form of `obj` (see the module docstring). Raises SnapshotError."""
    seen: dict[int, int] = {}

    def enc(o):
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        if isinstance(o, _dt.datetime):
            return {"$dt": o.isoformat()}
        if isinstance(o, tuple):
            return {"$t": [enc(v) for v in o]}
        if isinstance(o, list):
            return [enc(v) for v in o]
        if isinstance(o, frozenset):
            return {"$fs": [enc(v) for v in o]}
        if isinstance(o, MappingProxyType):
            return {"$mp": [[enc(k), enc(v)] for k, v in o.items()]}
        if isinstance(o, dict):
            return {"$d": [[enc(k), enc(v)] for k, v in o.items()]}
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            ref = seen.get(id(o))
            if ref is not None:
                return {"$ref": ref}
            cls = type(o)
            if not cls.__module__.startswith("dnsd."):
                raise SnapshotError(f"cannot snapshot a {cls.__qualname__} "
                                    f"from {cls.__module__}")
            n = seen[id(o)] = len(seen)
            fields = {f.name: enc(getattr(o, f.name)) for f in dataclasses.fields(o) if f.init}
            return {"$dc": f"{cls.__module__}:{cls.__qualname__}", "$id": n, "f": fields}
        raise SnapshotError(f"cannot snapshot a {type(o).__name__}")

    return enc(obj)


def decode(data) -> object:
    """The object `encode` described. Raises SnapshotError."""
    made: dict[int, object] = {}

    def dec(o):
        if isinstance(o, list):
            return [dec(v) for v in o]
        if not isinstance(o, dict):
            return o
        if "$dt" in o:
            return _dt.datetime.fromisoformat(o["$dt"])
        if "$t" in o:
            return tuple(dec(v) for v in o["$t"])
        if "$fs" in o:
            return frozenset(dec(v) for v in o["$fs"])
        if "$mp" in o:
            return MappingProxyType({_key(dec(k)): dec(v) for k, v in o["$mp"]})
        if "$d" in o:
            return {_key(dec(k)): dec(v) for k, v in o["$d"]}
        if "$ref" in o:
            try:
                return made[o["$ref"]]
            except KeyError:
                raise SnapshotError(f"reference to object {o['$ref']} before it") from None
        if "$dc" in o:
            cls = _dataclass(o["$dc"])
            init = {f.name for f in dataclasses.fields(cls) if f.init}
            kwargs = {k: dec(v) for k, v in o["f"].items() if k in init}
            try:
                obj = cls(**kwargs)
            except TypeError as e:
                raise SnapshotError(f"written by another version of {cls.__qualname__} ({e})") \
                    from None
            made[o["$id"]] = obj
            return obj
        raise SnapshotError(f"unknown object {sorted(o)[:3]}")

    return dec(data)


def _key(k):
    return tuple(k) if isinstance(k, list) else k


def _dataclass(name: str):
    mod, _, qual = name.partition(":")
    if not mod.startswith("dnsd."):
        raise SnapshotError(f"class {name} is not one of dnsd's")
    try:
        obj = importlib.import_module(mod)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise SnapshotError(f"class {name} no longer exists") from None
    if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
        raise SnapshotError(f"{name} is not a record class")
    return obj


# -- files ---------------------------------------------------------------------------------------


def dumps(plan, now: float | None = None) -> bytes:
    payload = json.dumps(encode(plan), separators=(",", ":")).encode()
    header = {"format": FORMAT, "version": VERSION, "sha256": hashlib.sha256(payload).hexdigest(),
              "written": time.time() if now is None else now,
              "plan_version": int(getattr(plan, "version", 0))}
    return json.dumps(header).encode() + b"\n" + payload + b"\n"


def loads(data: bytes, path: str = "<snapshot>") -> Snapshot:
    head, sep, rest = data.partition(b"\n")
    try:
        header = json.loads(head)
    except ValueError:
        raise SnapshotError("no header line") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SnapshotError("not a plan snapshot")
    if header.get("version") != VERSION:
        raise SnapshotError(f"format version {header.get('version')}, this code reads {VERSION}")
    payload = rest[:-1] if rest.endswith(b"\n") else rest
    if not sep or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise SnapshotError("checksum mismatch (truncated or damaged)")
    try:
        plan = decode(json.loads(payload))
    except ValueError as e:
        raise SnapshotError(f"unreadable payload: {e}") from None
    return Snapshot(plan, path, float(header.get("written", 0)), int(header.get("plan_version", 0)))


def path_for(folder: Path, slot: int) -> Path:
    return Path(folder) / f"plan-{slot}.json"


_slots_lock = threading.Lock()
_slots: dict[Path, _Slot] = {}


@dataclass
class _Slot:
    """One snapshot file of this process: its writes take turns, and the built_at of the plan
    last written, so that a write that lost the race to a newer plan's does not replace it."""

    lock: threading.Lock
    written: object = None


def write(folder: Path, slot: int, plan, now: float | None = None) -> Path:
    """Write the snapshot of `plan` atomically (blocking: call it off the reactor thread).

    Every swap writes on a pool thread, so writes of one slot can overlap when plans are swapped
    faster than a write and its fsync take: they take turns here, each through a temporary file
    of its own, and a plan older (by `built_at`) than the one already written is skipped."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = path_for(folder, slot)
    with _slots_lock:
        st = _slots.setdefault(final.resolve(), _Slot(threading.Lock()))
    built = getattr(plan, "built_at", None)
    with st.lock:
        if built is not None and st.written is not None and built < st.written:
            return final
        data = dumps(plan, now)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".plan-{slot}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        st.written = built
    return final


def newest(folder: Path, problems: list[str] | None = None) -> Snapshot | None:
    """The valid snapshot of `folder` written last, or None; why others were skipped goes to
    `problems` (blocking: call it off the reactor thread)."""
    best = None
    try:
        files = sorted(Path(folder).glob("plan-*.json"))
    except OSError as e:
        if problems is not None:
            problems.append(f"{folder}: {e}")
        return None
    for p in files:
        try:
            snap = loads(p.read_bytes(), str(p))
        except (OSError, SnapshotError) as e:
            if problems is not None:
                problems.append(f"{p}: {e}")
            continue
        if best is None or (snap.written, snap.plan_version) > (best.written, best.plan_version):
            best = snap
    return best
