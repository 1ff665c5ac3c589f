"""Life without the database: the plan snapshot on disk, and a server that starts without its
database, follows a SQLite file that appears, reappears or is replaced, and PostgreSQL that is
stopped and started again (a private PostgreSQL instance of the test's own)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import dns.rcode
import pytest
import pytest_twisted
import sqlalchemy as sa
from twisted.internet import threads
from twisted.logger import globalLogPublisher

from dnsd import models, snapshot
from dnsd.config import parse_config
from dnsd.db import make_engine
from dnsd.plan import build_plan, row
from tests.dns_support import ADDR, ZONE, Running, make_env, query, until, write_table
from tests.helpers import free_port

Z = ZONE


def _plan():
    cfg = parse_config('[dns]\nzone = "m.test"\n')
    rows = [row(id=i, name=f"de{i}", country="DE", ipv4=f"192.0.2.{i}",
                last_sync_at=dt.datetime(2026, 1, 1)) for i in range(1, 6)]
    return build_plan({"version": 9, "mirrors": rows}, cfg, dt.datetime(2026, 1, 1, 1))


def test_round_trip_keeps_the_plan_and_its_shared_records(tmp_path):
    plan = _plan()
    path = snapshot.write(tmp_path, 0, plan, now=1000.0)
    assert path == tmp_path / "plan-0.json" and not list(tmp_path.glob(".plan-*"))
    snap = snapshot.loads(path.read_bytes(), str(path))
    assert snap.plan == plan and snap.plan_version == 9 and snap.written == 1000.0
    # a mirror is one object in by_name and in the pools, as in the plan that was written
    assert snap.plan.by_name["de2"] is snap.plan.pool("A", "country", "DE")[1]
    assert snap.plan.by_name["de2"].score_detail == plan.by_name["de2"].score_detail


def test_the_newest_valid_snapshot_wins_and_bad_ones_are_skipped_with_a_reason(tmp_path):
    plan = _plan()
    snapshot.write(tmp_path, 0, plan, now=1000.0)
    newer = dataclasses.replace(plan, version=10)
    snapshot.write(tmp_path, 1, newer, now=2000.0)
    problems = []
    assert snapshot.newest(tmp_path, problems).plan_version == 10 and not problems
    # damaged: a byte flipped in the payload
    p1 = tmp_path / "plan-1.json"
    data = bytearray(p1.read_bytes())
    data[-10] ^= 1
    p1.write_bytes(bytes(data))
    # another format version, and a file that is not a snapshot at all
    head, _, payload = (tmp_path / "plan-0.json").read_bytes().partition(b"\n")
    h = json.loads(head)
    (tmp_path / "plan-2.json").write_bytes(json.dumps({**h, "version": 99}).encode() + b"\n"
                                           + payload)
    (tmp_path / "plan-3.json").write_text("hello\n")
    problems = []
    snap = snapshot.newest(tmp_path, problems)
    assert snap.plan_version == 9                              # the only good one left
    assert sorted(Path(p.split(":")[0]).name for p in problems) == ["plan-1.json", "plan-2.json",
                                                                     "plan-3.json"]
    assert any("checksum mismatch" in p for p in problems)
    assert any("format version 99, this code reads 1" in p for p in problems)


def test_writes_that_overlap_leave_the_newest_plan_whole(tmp_path):
    """Each swap writes its plan on a pool thread, so two writes of one slot can overlap (plans
    swapped faster than a write and its fsync). They used to share one temporary file: the second
    truncated what the first was writing, the first renamed a mix into place (a snapshot that
    fails its checksum: absent when the database is down), the second's rename failed."""
    import threading

    base = _plan()
    plans = [dataclasses.replace(base, version=v, built_at=base.built_at + dt.timedelta(
        seconds=v)) for v in range(1, 41)]
    errors: list[BaseException] = []

    def write(mine):
        for plan in mine:
            try:
                snapshot.write(tmp_path, 0, plan)
            except Exception as e:                # reported below
                errors.append(e)

    threads_ = [threading.Thread(target=write, args=(plans[k::4],)) for k in range(4)]
    for t in threads_:
        t.start()
    for t in threads_:
        t.join()
    assert not errors, errors[:2]
    problems: list[str] = []
    snap = snapshot.newest(tmp_path, problems)
    assert not problems and snap is not None
    assert snap.plan_version == 40                 # an older plan never overwrites a newer one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan-0.json"]   # no temporary left
    # (the same plan written again, as a rebuild with no change does, is written)
    assert snapshot.write(tmp_path, 0, plans[-1]).exists()


def test_records_that_changed_shape_make_a_snapshot_absent(tmp_path):
    """A field added without a default to a plan record (as another issue may do) makes older
    snapshots unreadable: they are skipped, not half-loaded."""
    data = snapshot.encode(_plan())
    entry = data["f"]["mirrors"]["$t"][0]
    del entry["f"]["hostname"]                                  # as if written before 'hostname'
    with pytest.raises(snapshot.SnapshotError, match="written by another version of MirrorEntry"):
        snapshot.decode(data)
    entry["f"]["hostname"] = "x"
    entry["f"]["gone_field"] = 1                                # a field that was removed since
    assert snapshot.decode(data).mirrors[0].hostname == "x"
    with pytest.raises(snapshot.SnapshotError, match="not one of dnsd's"):
        snapshot.decode({"$dc": "os:system", "$id": 0, "f": {}})


def _snapshot_file(cfg) -> Path:
    return cfg.resolve_path(cfg.dns.snapshot_dir) / "plan-0.json"


def _move_away(db: str) -> list[str]:
    moved = []
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.replace(db + suffix, db + suffix + ".away")
            moved.append(suffix)
    return moved


def _set_address(url: str, name: str, ipv4: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.update(models.mirrors).where(models.mirrors.c.name == name)
                     .values(ipv4=ipv4))
        models.bump_version(conn)
    engine.dispose()


def addrs(r):
    return {rd.address for rr in r.answer for rd in rr if hasattr(rd, "address")}


@pytest_twisted.ensureDeferred
async def test_start_from_the_snapshot_then_follow_the_sqlite_file(tmp_path, test_mmdb):
    """Database absent at start: the snapshot is served (its age logged and exported); when the
    file appears the database's plan replaces it; when the file is replaced by another (a new
    inode, same version number) under the running server, the new file is read."""
    cfg, port = make_env(tmp_path, test_mmdb)
    db = cfg.database.url.split("sqlite:///", 1)[1]
    s = await Running(cfg, port).start()
    await until(lambda: _snapshot_file(cfg).exists())
    await s.stop()
    moved = _move_away(db)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        s = Running(cfg, port)
        s.svc.startService()
        await until(lambda: s.svc.plan.source == "snapshot")
        assert not os.path.exists(db)                   # the pool did not create an empty file
        assert addrs(await s.udp(query(f"de2.{Z}", "A"))) == {ADDR["de2"]}
        assert addrs(await s.udp(query(f"www.{Z}", "A"), source="127.0.2.7")) == {ADDR["us1"],
                                                                                 ADDR["us2"]}
        assert s.registry.get_sample_value("dnsd_plan_source", {"source": "snapshot"}) == 1
        assert 0 <= s.registry.get_sample_value("dnsd_plan_data_age_seconds") < 120
        (line,) = [e for e in events if "dns_plan_from_snapshot" in (e.get("log_format") or "")]
        assert line["path"] == str(_snapshot_file(cfg)) and line["age"].endswith(" s")
        await until(lambda: not s.svc.plan.db_ok)
        assert "does not exist" in s.svc.plan.last_error
        # the file comes back, changed meanwhile
        for suffix in moved:
            os.replace(db + suffix + ".away", db + suffix)
        moved = []
        _set_address(cfg.database.url, "de2", "192.0.2.99")
        await until(lambda: s.svc.plan.source == "database", timeout=5)
        assert addrs(await s.udp(query(f"de2.{Z}", "A"))) == {"192.0.2.99"}
        # replaced by another file with the same version number: a new inode is reason enough
        version = s.svc.plan.version
        other = tmp_path / "other.sqlite"
        shutil.copy(db, other)
        _set_address(f"sqlite:///{other}", "de2", "192.0.2.77")
        eng = make_engine(f"sqlite:///{other}")
        with eng.begin() as conn:
            conn.execute(models.table_version.update().values(version=version))
        eng.dispose()
        os.replace(other, db)
        await until(lambda: addrs_now(s) == {"192.0.2.77"}, timeout=5)
        assert s.svc.plan.version == version
    finally:
        globalLogPublisher.removeObserver(events.append)
        for suffix in moved:
            os.replace(db + suffix + ".away", db + suffix)
        await s.stop()


def addrs_now(s):
    e = s.svc.plan.current.by_name.get("de2")
    return {e.ipv4} if e else set()


@pytest_twisted.ensureDeferred
async def test_no_snapshot_and_no_database_serve_the_static_zone(tmp_path, test_mmdb):
    """With neither, the zone file's names are answered; names that need the plan get SERVFAIL
    (never NXDOMAIN, which resolvers would cache); then the database appears."""
    cfg, port = make_env(tmp_path, test_mmdb, table=False)
    db = cfg.database.url.split("sqlite:///", 1)[1]
    s = Running(cfg, port)
    s.svc.startService()
    try:
        await until(lambda: not s.svc.plan.db_ok)
        r = await s.udp(query(f"static.{Z}", "A"))
        assert r.rcode() == dns.rcode.NOERROR and addrs(r) == {"192.0.2.80"}
        r = await s.tcp(query(Z, "SOA"))
        assert r.rcode() == dns.rcode.NOERROR and r.answer
        r = await s.udp(query(f"deep.{Z}", "A"))                   # an empty non-terminal
        assert r.rcode() == dns.rcode.NOERROR and not r.answer
        for name in (f"de2.{Z}", f"de.{Z}", f"www.{Z}", f"europe.{Z}", f"anything.{Z}"):
            r = await s.udp(query(name, "A"))
            assert r.rcode() == dns.rcode.SERVFAIL, name
        r = await s.udp(query(f"x.y.{Z}", "A"))                     # below any one-label name
        assert r.rcode() == dns.rcode.NXDOMAIN
        assert s.registry.get_sample_value("dnsd_plan_source", {"source": "none"}) == 1
        await threads.deferToThread(write_table, f"sqlite:///{db}")
        # the first read may catch the new file between its schema and its rows: wait for them
        await until(lambda: s.svc.plan.source == "database" and addrs_now(s) == {ADDR["de2"]},
                    timeout=5)
        assert addrs(await s.udp(query(f"de2.{Z}", "A"))) == {ADDR["de2"]}
    finally:
        await s.stop()


# -- PostgreSQL stopped and started again ---------------------------------------------------------


def _pg_bin() -> Path | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


class PrivatePG:
    """A PostgreSQL instance of this test's own, in a temporary folder, run as `postgres`."""

    def __init__(self):
        self.bin = _pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="mirrordns-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_pg(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                    "postgres", "--no-sync")

    def _as_pg(self, *cmd):
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True,
                       capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self):
        self._as_pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-l",
                    str(self.dir / "log"), "-o", f"-p {self.port} -k {self.dir} -h 127.0.0.1 "
                    f"-c fsync=off", "start")

    def stop(self):
        self._as_pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop")

    def remove(self):
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_pg():
    if _pg_bin() is None or shutil.which("runuser") is None:
        pytest.skip("needs the PostgreSQL server binaries (/usr/lib/postgresql/*/bin) and runuser")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("needs a 'postgres' system user to run a private PostgreSQL instance")
    pg = PrivatePG()
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()


@pytest_twisted.ensureDeferred
async def test_postgresql_stopped_and_restarted(tmp_path, test_mmdb, private_pg):
    """The server keeps answering while PostgreSQL is down, and follows it when it is back;
    started while it is down, it answers from the snapshot until it is back."""
    cfg, port = make_env(tmp_path, test_mmdb, db_url=private_pg.url)
    s = await Running(cfg, port).start()
    try:
        await until(lambda: _snapshot_file(cfg).exists())
        assert addrs(await s.udp(query(f"de2.{Z}", "A"))) == {ADDR["de2"]}
        await threads.deferToThread(private_pg.stop)
        await until(lambda: not s.svc.plan.db_ok, timeout=5)
        assert addrs(await s.udp(query(f"de2.{Z}", "A"))) == {ADDR["de2"]}
        assert len(addrs(await s.tcp(query(f"www.{Z}", "A")))) == 2
        await threads.deferToThread(private_pg.start)
        await threads.deferToThread(_set_address, private_pg.url, "de2", "192.0.2.98")
        await until(lambda: s.svc.plan.db_ok and addrs_now(s) == {"192.0.2.98"}, timeout=10)
        assert addrs(await s.udp(query(f"de2.{Z}", "A"))) == {"192.0.2.98"}
    finally:
        await s.stop()
    # a restart during an outage: the snapshot, then the database when it answers
    await threads.deferToThread(private_pg.stop)
    s = Running(cfg, port)
    s.svc.startService()
    try:
        await until(lambda: s.svc.plan.source == "snapshot")
        assert addrs(await s.udp(query(f"de2.{Z}", "A"))) == {"192.0.2.98"}
        t0 = time.monotonic()
        await threads.deferToThread(private_pg.start)
        await threads.deferToThread(_set_address, private_pg.url, "de2", "192.0.2.97")
        await until(lambda: s.svc.plan.source == "database" and addrs_now(s) == {"192.0.2.97"},
                    timeout=15)
        assert time.monotonic() - t0 < 15
    finally:
        await s.stop()
