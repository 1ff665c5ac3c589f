"""Following the table version by PostgreSQL LISTEN/NOTIFY, with the poll as the fallback.

`dnsd.models.bump_version` sends `NOTIFY mirrordns_version '<version>'` in the transaction that
changes the table; PostgreSQL delivers it when that transaction commits. A node that holds a plan
(dnsd.service) keeps one connection of its own for it, outside the SQLAlchemy pool, on a daemon
thread (never the reactor's): the thread LISTENs and hands every notification to
`on_version(version)` on the reactor thread, which rebuilds the plan at once when the version is
newer than the one it serves. After every (re)connection it calls `on_version(None)`, so a change
made while it was away is caught up without waiting for the poll.

The same listener follows other channels: the probe nodes hear requests to probe a mirror now
on `PROBE_CHANNEL` (probes.requests), with their own poll as the fallback.

The poll (`[dns] poll_interval`) keeps running beside it and is all there is where LISTEN cannot
work: SQLite, a streaming replica ("cannot execute LISTEN during recovery"; the listener retries
every `retry_max` seconds in case the replica is promoted), a pooler in transaction mode (set
`[dns] notify = false`: LISTEN through it never hears anything).
"""

from __future__ import annotations

import threading

import sqlalchemy as sa
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from dnsd.models import VERSION_CHANNEL

_log = Logger()


def conninfo(engine: sa.Engine) -> str:
    """A libpq connection string for the engine's database (the same host, user and options)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class VersionListener(service.Service):
    """LISTEN on the version channel (or `channel`) on a thread of its own; see the module
    docstring. `what` names what it follows in its log lines."""

    name = "version-listener"

    def __init__(self, engine: sa.Engine, reactor, on_version, *, poll_interval: float = 1.0,
                 wait: float = 0.5, retry_max: float = 60.0, connect_timeout: int = 5,
                 channel: str = VERSION_CHANNEL, what: str = "table changes"):
        self._conninfo = conninfo(engine)
        self.channel, self.what = channel, what
        self.reactor, self.on_version = reactor, on_version
        self.poll_interval = poll_interval
        self.wait, self.retry_max, self.connect_timeout = wait, retry_max, connect_timeout
        self.listening = False
        self.notifications = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done: defer.Deferred | None = None
        self._last_error = ""

    def startService(self):
        super().startService()
        self._stop.clear()
        self._done = defer.Deferred()
        self._thread = threading.Thread(target=self._run, name="mirrordns-listen", daemon=True)
        self._thread.start()

    def stopService(self):
        """Fires when the thread has closed its connection (within `wait` seconds, or the
        connect timeout if it is connecting); the thread is a daemon, so a stop never hangs on
        it for longer than that."""
        super().stopService()
        self._stop.set()
        d, self._done = self._done, None
        if d is None or d.called:
            return None
        return d.addTimeout(self.connect_timeout + 1, self.reactor).addErrback(lambda _f: None)

    # -- on the listener's thread ---------------------------------------------------------------

    def _call(self, f, *args):
        self.reactor.callFromThread(f, *args)

    def _run(self):
        done = self._done
        delay = 1.0
        try:
            while not self._stop.is_set():
                try:
                    self._listen()
                    delay = 1.0
                except Exception as e:             # the server went away, or cannot LISTEN
                    self._call(self._failed, f"{type(e).__name__}: {e}".strip(), delay)
                    self._stop.wait(delay)
                    delay = min(self.retry_max, delay * 2)
        finally:
            if done is not None:
                self._call(lambda: done.called or done.callback(None))

    def _listen(self):
        import psycopg
        from psycopg import sql

        with psycopg.connect(self._conninfo, autocommit=True,
                             connect_timeout=self.connect_timeout) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self._call(self._listening)
            while not self._stop.is_set():
                for n in conn.notifies(timeout=self.wait):
                    try:
                        version = int(n.payload)
                    except ValueError:
                        version = None
                    self._call(self._notified, version)

    # -- on the reactor thread -------------------------------------------------------------------

    def _listening(self):
        self.listening = True
        if self._last_error:
            _log.info("dns_notify_back: following {what} by LISTEN/NOTIFY again", what=self.what)
        else:
            _log.info("dns_notify_listening: following {what} by LISTEN/NOTIFY", what=self.what)
        self._last_error = ""
        self.on_version(None)

    def _notified(self, version):
        self.notifications += 1
        self.on_version(version)

    def _failed(self, err: str, retry: float):
        was = self.listening
        self.listening = False
        if was or err != self._last_error:
            _log.warn("dns_notify_unavailable: cannot LISTEN for {what} ({err}); following "
                      "them by polling every {poll} s, retrying from {retry:.0f} s up to {max:.0f} s",
                      what=self.what, err=err, poll=self.poll_interval, retry=retry,
                      max=self.retry_max)
        self._last_error = err
