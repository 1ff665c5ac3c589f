"""Opening the table and running work on it off the reactor thread.

`make_engine` is the one place that knows dialects (SQLite pragmas; PostgreSQL through psycopg 3).
`DBPool` is the one way Twisted code touches the table: `pool.run(thd)` calls `thd(conn)` inside a
transaction on a thread pool of its own and fires with whatever plain data `thd` returned.

A SQLite file is followed by path, as an operator expects: before each unit of work the pool
checks the file. If it is missing, the work fails with `DatabaseFileMissing` (SQLite would
otherwise create an empty file and keep a connection to it); if it is another file than the one
the pooled connections have open (restored, or replaced by a rename), those connections are closed
first, so the work sees the file now at the path. PostgreSQL connections are checked with a ping
when taken from the pool, so a restarted server is reconnected to.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class DatabaseFileMissing(Exception):
    """The SQLite file is not there (moved away, not restored yet, never created)."""


def sqlite_file(engine: sa.Engine) -> str | None:
    """The path of a file-backed SQLite engine's database, else None."""
    if engine.dialect.name != "sqlite":
        return None
    db = engine.url.database
    return None if not db or db == ":memory:" else db


def normalise_url(url: str, base_dir: Path | None = None) -> str:
    """SQLite paths relative to the config file's folder; plain postgresql:// means psycopg 3."""
    u = sa.engine.make_url(url)
    if u.drivername == "sqlite" and u.database and u.database != ":memory:" and base_dir:
        p = Path(u.database)
        if not p.is_absolute():
            u = u.set(database=str(base_dir / p))
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


class NoDatabase(Exception):
    """The SQLite file is not there and the caller may not create it."""


def sqlite_path(engine_or_url) -> Path | None:
    """The file of a SQLite table (None for PostgreSQL or an in-memory table)."""
    u = engine_or_url.url if isinstance(engine_or_url, sa.Engine) else sa.engine.make_url(
        engine_or_url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def make_engine(url: str, base_dir: Path | None = None, *, create: bool = True) -> sa.Engine:
    """The engine for `url`. With create=False a SQLite file that does not exist is an error
    (NoDatabase) instead of a new empty file: only `mirrorctl db upgrade` (and the services,
    which run after it) make the table."""
    url = normalise_url(url, base_dir)
    u = sa.engine.make_url(url)
    if u.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is not None and not create and not path.exists():
            raise NoDatabase(f"there is no table at {path}: run `mirrorctl db upgrade` to "
                             "create it (or give --config with the right [database] url)")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        memory = not u.database or u.database == ":memory:"
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            # one shared connection for an in-memory table, or every thread would see its own
            poolclass=sa.pool.StaticPool if memory else None,
        )

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            # pysqlite's own transaction handling is turned off so that BEGIN is ours (see below).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            for p in ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=30000",
                      "synchronous=NORMAL"):
                cur.execute(f"PRAGMA {p}")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn):
            # IMMEDIATE takes the write lock up front, so two writers wait instead of deadlocking;
            # readers (run_readonly) take a plain deferred BEGIN and never block writers under WAL.
            ro = conn.get_execution_options().get("mirrordns_readonly")
            conn.exec_driver_sql("BEGIN" if ro else "BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


class PoolClosed(Exception):
    """Work handed to the table's pool after it closed."""


class DBPool:
    """A thread pool of its own for the table; the reactor's pool stays free for everything else."""

    def __init__(self, engine: sa.Engine, reactor, threads_max: int = 4):
        self.engine = engine
        self._reactor = reactor
        memory = engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:")
        n = 1 if memory else max(1, threads_max)
        self._pool = ThreadPool(minthreads=1, maxthreads=n, name="mirrordns-db")
        self._started = False
        self._closed = False
        self._file = sqlite_file(engine)
        self._file_id = None
        self._file_lock = threading.Lock()
        self.generation = 0             # moves when the SQLite file at the path is another one

    def _follow_file(self) -> None:
        """See the module docstring. Runs on a pool thread, before each unit of work."""
        if self._file is None:
            return
        try:
            st = os.stat(self._file)
            ident = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            ident = None
        with self._file_lock:
            if ident != self._file_id:
                if self._file_id is not None:
                    self.engine.dispose()       # connections to the file that was there
                    self.generation += 1
                self._file_id = ident
        if ident is None:
            raise DatabaseFileMissing(f"the database file {self._file} does not exist")

    def start(self) -> None:
        if not self._started:
            self._pool.start()
            self._started = True
            self._shutdown_id = self._reactor.addSystemEventTrigger("during", "shutdown", self.stop)

    def stop(self) -> None:
        if self._started:
            self._started = False
            self._closed = True
            self._pool.stop()
            self.engine.dispose()

    def _ensure_started(self) -> None:
        if not self._started:
            if self._closed:
                raise PoolClosed("the table's thread pool has been closed (the node is stopping)")
            self.start()

    def run(self, thd: Callable[[sa.Connection], T]) -> defer.Deferred[T]:
        """Fire with thd(conn)'s result; thd runs in one transaction, committed if it returns."""
        try:
            self._ensure_started()
        except PoolClosed:
            return defer.fail()

        def in_thread():
            self._follow_file()
            with self.engine.begin() as conn:
                return thd(conn)

        return threads.deferToThreadPool(self._reactor, self._pool, in_thread)

    def run_readonly(self, thd: Callable[[sa.Connection], T]) -> defer.Deferred[T]:
        """Same as run, without the write lock SQLite would take (for the plan poller, pages)."""
        try:
            self._ensure_started()
        except PoolClosed:
            return defer.fail()

        def in_thread():
            self._follow_file()
            with self.engine.connect() as conn:
                conn.execution_options(mirrordns_readonly=True)
                try:
                    return thd(conn)
                finally:
                    conn.rollback()

        return threads.deferToThreadPool(self._reactor, self._pool, in_thread)


def upsert(conn: sa.Connection):
    """The dialect's `insert` construct, with `on_conflict_do_nothing/do_update` (PostgreSQL and
    SQLite, the two dialects the table runs on): one statement where a read-then-write would
    race between nodes."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def open_pool(cfg, reactor) -> DBPool:
    """The table's pool from a Config (dnsd.config.Config)."""
    engine = make_engine(cfg.database.url, cfg.base_dir)
    return DBPool(engine, reactor, cfg.database.pool_threads)


# --- schema -------------------------------------------------------------------------------------

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine_or_url):
    from alembic.config import Config as AlembicConfig

    ac = AlembicConfig()
    ac.set_main_option("script_location", str(MIGRATIONS))
    ac.attributes["engine"] = engine_or_url if isinstance(engine_or_url, sa.Engine) else None
    if isinstance(engine_or_url, str):
        ac.set_main_option("sqlalchemy.url", engine_or_url.replace("%", "%%"))
    return ac


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (alembic), then make sure the version row exists."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def schema_is_current(engine: sa.Engine) -> bool:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads()) == heads



def backup(engine: sa.Engine, dest: Path) -> str:
    """A consistent copy of the table while it is in use, to `dest` (which must not exist):
    SQLite's online backup API, or pg_dump's custom format for PostgreSQL. Returns how to
    restore it, in one line."""
    import shutil
    import sqlite3
    import subprocess

    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists already; give a new file name")
    path = sqlite_path(engine)
    if engine.dialect.name == "sqlite":
        if path is None:
            raise ValueError("an in-memory table cannot be backed up")
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(dest)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
        return f"stop mirrordns, copy {dest} over {path}, run `mirrorctl db upgrade`, start it"
    if engine.dialect.name == "postgresql":
        exe = shutil.which("pg_dump")
        if exe is None:
            raise FileNotFoundError("pg_dump is not installed (Debian: postgresql-client)")
        u = engine.url
        env = dict(os.environ)
        if u.password:
            env["PGPASSWORD"] = u.password
        libpq = u.set(drivername="postgresql", password=None).render_as_string(
            hide_password=False)
        res = subprocess.run([exe, "--format=custom", "--no-owner", f"--file={dest}", libpq],
                             env=env, capture_output=True, text=True, timeout=3600)
        if res.returncode != 0:
            dest.unlink(missing_ok=True)
            raise RuntimeError(f"pg_dump failed: {res.stderr.strip().splitlines()[-1:]}")
        return (f"pg_restore --clean --if-exists --no-owner --dbname=<url> {dest}, then "
                "`mirrorctl db upgrade`")
    raise ValueError(f"no backup for {engine.dialect.name}")


class DBPoolService(service.MultiService):
    """The pool as the parent of every part of a node: it starts before its children and closes
    only once all of them have stopped (their stopService Deferreds fired), so a part that
    writes its last results while stopping (the probes' pending batch, an outbox mark) still
    finds the pool open, and nothing is handed to a pool that has closed."""

    name = "db-pool"

    def __init__(self, pool: DBPool):
        super().__init__()
        self.pool = pool

    def startService(self):
        self.pool.start()
        super().startService()

    def stopService(self):
        d = defer.maybeDeferred(super().stopService)
        d.addBoth(lambda _: self.pool.stop())
        return d
