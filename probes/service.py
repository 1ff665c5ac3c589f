"""The probe loop: every mirror probed once per `[probes] interval`, spread evenly over it.

A cycle reads the mirror list, then starts mirror i at i * window / n plus a random jitter of up
to one slot (window: `spread_window`, the interval less one timeout, so the cycle ends within its
interval), so the probes trickle out instead of leaving in a burst (and a mirror's probe does not
fall at the same second each cycle). At most `concurrency` probes run at once (a DeferredSemaphore);
a hanging mirror holds one slot for one timeout and nobody waits for it. Results are written in
batches (one transaction per batch, each mirror's verdict, version bump and mail in it together),
because one transaction per probe is what limits a SQLite table, not the network.

The cycle's Deferred fires when every probe of it is recorded, and LoopingCall waits for it, so
cycles never overlap; a cycle that runs long only delays the next. Every step catches and logs per
mirror, so one bad row or one bug in one probe never stops the loop. Time comes from the reactor.

Stopping (SIGTERM) takes as long as one batch write, not as long as the slowest probe: probes not
started yet are dropped, probes in flight are cancelled (sockets closed, a host-name lookup
abandoned on its daemon thread) and their outcome is not recorded, since a probe cut short says
nothing about the mirror; results that were complete are written before the pool closes (the pool
service is this service's parent and waits for the Deferred stopService returns).

Beside the cycle, the service serves requests to probe one mirror now (probes.requests): it
checks for them every `request_poll` seconds, and on PostgreSQL also whenever one is NOTIFYed;
each due mirror is probed once, through the same semaphore and batched recording as the cycle.
"""

from __future__ import annotations

import random
import time

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from dnsd.jobs import run_once
from dnsd.models import PROBE_CHANNEL
from probes import history, requests, store
from probes.probe import CanaryUnavailable, Prober, ProbeResult, utc_from_ts


def spread_window(p) -> float:
    """Seconds over which a cycle starts its probes: the interval less one probe timeout (at
    least half the interval), so the last probe ends within the interval. Spread over the whole
    interval, a cycle would end just after the next tick was due, LoopingCall would skip that
    tick, and every mirror would be probed every two intervals."""
    return max(p.interval / 2, p.interval - p.timeout)


class ProbeService(service.Service):
    name = "probes"
    _log = Logger()

    def __init__(self, cfg, pool, reactor, prober=None, geo=None, rng=None, batch_delay=0.5,
                 batch_max=200):
        self.cfg, self.pool, self.reactor = cfg, pool, reactor
        self.prober = prober or Prober(cfg, reactor, geo=geo)
        self.rng = rng or random.Random()
        self.sem = defer.DeferredSemaphore(max(1, cfg.probes.concurrency))
        self.batch_delay, self.batch_max = batch_delay, batch_max
        self._pending: list[tuple[ProbeResult, defer.Deferred, bool]] = []   # (.., in cycle)
        self._flush_call = None
        self._loop = self._stats = None
        self._loop_done = self._stats_done = None
        self._delayed: dict = {}             # each mirror's callLater -> its d, until d fires
        self._inflight: set[defer.Deferred] = set()
        self._stopping = False
        self.dropped = 0                     # probes cut short by a stop, not recorded
        self.cycles = 0
        self.vantage = store.vantage_of(cfg)      # this node's name as a vantage point
        self.last_cycle_seconds: float | None = None
        self._req_loop = self._req_loop_done = None
        self._serving: defer.Deferred | None = None    # a pass over the requests, while it runs
        self._serve_again = False
        self._on_request: set[int] = set()             # mirrors probed on request right now
        self.listener = None                           # NOTIFY of requests (PostgreSQL)
        self.on_request_probes = 0

    # --- service ---------------------------------------------------------------------------------
    def startService(self):
        super().startService()
        self._stopping = False
        self._loop = task.LoopingCall(self.run_cycle)
        self._loop.clock = self.reactor
        self._loop_done = self._loop.start(self.cfg.probes.interval, now=True).addErrback(
            lambda f: self._log.failure("probe loop stopped", f))
        self._stats = task.LoopingCall(self.run_maintenance)
        self._stats.clock = self.reactor
        self._stats_done = self._stats.start(self.cfg.probes.stats_interval, now=False).addErrback(
            lambda f: self._log.failure("history loop stopped", f))
        self._req_loop = task.LoopingCall(self.serve_requests)
        self._req_loop.clock = self.reactor
        self._req_loop_done = self._req_loop.start(self.cfg.probes.request_poll,
                                                   now=False).addErrback(
            lambda f: self._log.failure("probe request loop stopped", f))
        engine = getattr(self.pool, "engine", None)
        if self.cfg.dns.notify and engine is not None and engine.dialect.name == "postgresql":
            from dnsd.follow import VersionListener

            self.listener = VersionListener(
                engine, self.reactor, lambda _mirror_id: self.serve_requests(),
                poll_interval=self.cfg.probes.request_poll, channel=PROBE_CHANNEL,
                what="probe requests")
            self.listener.startService()

    def stopService(self):
        """Fires once the cycle in flight has ended (see the module docstring) and every complete
        result is written."""
        super().stopService()
        self._stopping = True
        waits = []
        if self.listener is not None:
            waits.append(defer.maybeDeferred(self.listener.stopService))
            self.listener = None
        for lc, done in ((self._loop, self._loop_done), (self._stats, self._stats_done),
                         (self._req_loop, self._req_loop_done)):
            if lc is not None and lc.running:
                lc.stop()
                waits.append(done)
        for call, d in list(self._delayed.items()):
            if call.active():               # not started: drop it (a started one is in flight)
                call.cancel()
                d.callback(None)
        inflight = list(self._inflight)
        for d in inflight:
            d.cancel()
        if inflight:
            self._log.info("stopping: {n} probes in flight cancelled, not recorded",
                           n=len(inflight))
        if self._pending:                   # the cycle waits for these: write them now
            waits.append(self._flush())
        return defer.DeferredList(waits)

    # --- one cycle -------------------------------------------------------------------------------
    def run_cycle(self) -> defer.Deferred:
        return defer.ensureDeferred(self._cycle())

    async def _cycle(self):
        start = self.reactor.seconds()
        try:
            c = self.cfg
            targets = await self.pool.run_readonly(
                lambda conn: store.load_targets(conn, c.dns.zone, c.dns.geo_name))
        except Exception:
            self._log.failure("probe cycle could not read the mirror list")
            return
        try:
            now = utc_from_ts(start)
            await self.pool.run(lambda conn: store.start_cycle(conn, self.vantage, now))
        except Exception:
            self._log.failure("probe cycle could not be started")
            return
        await self.refresh_canary()
        n = len(targets)
        slot = spread_window(self.cfg.probes) / n if n else 0
        done = []
        for i, t in enumerate(targets):
            delay = i * slot + self.rng.uniform(0, slot) if slot else 0
            d = defer.Deferred()
            call = self.reactor.callLater(delay, self._start_one, t, d)
            self._delayed[call] = d
            d.addBoth(lambda r, call=call: (self._delayed.pop(call, None), r)[1])
            done.append(d)
        await defer.DeferredList(done, consumeErrors=True)
        if self._pending:
            await self._flush()
        if self._stopping:
            return
        self.cycles += 1
        self.last_cycle_seconds = self.reactor.seconds() - start
        self._log.info("probe cycle {cycle} done: {n} mirrors in {seconds:.1f} s",
                       cycle=self.cycles, n=n, seconds=self.last_cycle_seconds)
        try:
            now = utc_from_ts(self.reactor.seconds())
            t0 = time.perf_counter()
            res = await self.pool.run(lambda conn: store.end_cycle(conn, self.cfg, self.vantage,
                                                                   now))
        except Exception:
            self._log.failure("judging the cycle failed")
            return
        self._log.info("cycle {cycle} of vantage {vantage} judged in {seconds:.2f} s: {passed} of "
                       "{total} passed", cycle=self.cycles, vantage=self.vantage,
                       seconds=time.perf_counter() - t0, passed=res["passed"], total=res["total"])
        if res["broken"] and not res["was_broken"]:
            self._log.warn("vantage {vantage} is broken: only {passed} of {total} mirrors passed "
                           "from it; its results do not count until a cycle passes again",
                           vantage=self.vantage, passed=res["passed"], total=res["total"])
        elif res["was_broken"] and not res["broken"]:
            self._log.info("vantage {vantage} counts again: {passed} of {total} mirrors passed",
                           vantage=self.vantage, passed=res["passed"], total=res["total"])

    async def refresh_canary(self):
        """Once a cycle, what the origin publishes about the canary file (probes.content). When
        the origin does not answer, the cycle checks against what it said last time (or, before
        it ever answered, goes without the canary check): an origin's outage is not a mirror's."""
        if not self.cfg.probes.canary_path:
            return
        try:
            c = await self.prober.load_canary()
        except CanaryUnavailable as e:
            self._log.warn("canary: {why}; {what}", why=str(e),
                           what="checking against the last published one"
                           if self.prober.canary else "no canary check this cycle")
            return
        except Exception:
            self._log.failure("canary: reading it from the origin failed")
            return
        if c != self.prober.canary:
            self._log.info("canary {path}: {size} bytes, SHA-256 {sha}", path=c.path,
                           size=c.size, sha=c.sha256)
        self.prober.canary = c

    def _start_one(self, t, d: defer.Deferred):
        defer.ensureDeferred(self.probe_and_record(t)).chainDeferred(d)

    async def probe_and_record(self, t, *, in_cycle: bool = True) -> dict | None:
        """Probe one mirror and record it; never raises (the loop must not die). A probe cut
        short by stopService is not recorded. `in_cycle=False`: a probe on request, outside
        the cycle's share (probes.store.record_probe)."""
        if self._stopping:
            return None
        running = self.sem.run(self.prober.probe, t)
        self._inflight.add(running)
        try:
            r = await running
        except defer.CancelledError:
            r = None
        except Exception:
            if self._stopping:
                r = None
            else:
                self._log.failure("probe of {mirror} crashed", mirror=t.name or t.hostname)
                return None
        finally:
            self._inflight.discard(running)
        if self._stopping or r is None:
            self.dropped += 1
            return None
        # passes at debug level: 5,000 mirrors make 17 probes a second
        (self._log.debug if r.ok else self._log.info)(
            "probe {mirror} ok={ok} class={error_class} ms={ms}", mirror=t.name or t.hostname,
            mirror_id=t.mirror_id, ok=r.ok, error_class=r.error_class,
            ms=None if r.total_ms is None else round(r.total_ms, 1))
        try:
            return await self._enqueue(r, in_cycle)
        except Exception:
            self._log.failure("recording the probe of {mirror} failed", mirror=t.name or t.hostname)
            return None

    # --- batched recording -----------------------------------------------------------------------
    def _enqueue(self, r: ProbeResult, in_cycle: bool = True) -> defer.Deferred:
        d = defer.Deferred()
        self._pending.append((r, d, in_cycle))
        if len(self._pending) >= self.batch_max:
            self._flush()
        elif self._flush_call is None:
            self._flush_call = self.reactor.callLater(self.batch_delay, self._flush)
        return d

    def _flush(self) -> defer.Deferred:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        batch, self._pending = self._pending, []
        if not batch:
            return defer.succeed(None)
        cfg, vantage = self.cfg, self.vantage
        now = utc_from_ts(self.reactor.seconds())

        def thd(conn):
            out = []
            for r, _d, in_cycle in batch:
                # a savepoint per mirror: one bad row rolls back alone, not the batch
                try:
                    with conn.begin_nested():
                        out.append(store.record_probe(conn, r, cfg, now, vantage,
                                                      in_cycle=in_cycle))
                except Exception as e:
                    out.append(e)
            return out

        def fire(results):
            for (r, d, _c), res in zip(batch, results):
                if isinstance(res, Exception):
                    self._log.error("recording mirror {mirror_id} failed: {err!r}",
                                    mirror_id=r.mirror_id, err=res)
                    d.callback(None)
                    continue
                if res["changed"]:
                    self._log.warn("mirror {mirror_id} is now {status}",
                                   mirror_id=r.mirror_id, status=res["status"])
                d.callback(res)

        def failed(f):
            self._log.failure("recording a batch of {n} probes failed", f, n=len(batch))
            for _r, d, _c in batch:
                d.callback(None)

        return self.pool.run(thd).addCallbacks(fire, failed)

    # --- probes on request -----------------------------------------------------------------------
    def serve_requests(self) -> defer.Deferred:
        """Probe the mirrors whose request this vantage has not served yet (probes.requests).
        One pass at a time: a call while one runs asks for another pass after it. Fires once the
        probes are started (their results are recorded like the cycle's); never fails."""
        if self._serving is not None:
            self._serve_again = True
            return self._serving
        self._serve_again = False
        d = self._serving = defer.ensureDeferred(self._serve_requests())

        def done(_):
            self._serving = None
            if self._serve_again and not self._stopping:
                self.serve_requests()
        d.addBoth(done)
        return d

    async def _serve_requests(self):
        if self._stopping:
            return
        c, vantage = self.cfg, self.vantage
        now = utc_from_ts(self.reactor.seconds())
        try:
            reqs = await self.pool.run_readonly(
                lambda conn: requests.due(conn, vantage, now, c.probes.request_gap))
            reqs = [r for r in reqs if r.mirror_id not in self._on_request]
            if not reqs or self._stopping:
                return

            def thd(conn):
                requests.claim(conn, vantage, reqs, now)
                return store.load_targets(conn, c.dns.zone, c.dns.geo_name,
                                          ids=[r.mirror_id for r in reqs])
            targets = await self.pool.run(thd)
        except Exception:
            self._log.failure("reading the probe requests failed")
            return
        why = {r.mirror_id: r for r in reqs}
        for t in targets:
            if self._stopping:
                return
            r = why[t.mirror_id]
            self._log.info("probe {mirror} on request: {reason} (by {by}, {n} request(s))",
                           mirror=t.name or t.hostname, mirror_id=t.mirror_id, reason=r.reason,
                           by=r.requested_by, n=r.requests)
            self._on_request.add(t.mirror_id)
            self.on_request_probes += 1
            d = defer.ensureDeferred(self.probe_and_record(t, in_cycle=False))
            d.addBoth(lambda _r, mid=t.mirror_id: self._on_request.discard(mid))

    # --- history ---------------------------------------------------------------------------------
    def run_maintenance(self) -> defer.Deferred:
        return defer.ensureDeferred(self._maintenance())

    async def _maintenance(self):
        """Roll-ups and the score inputs, once per `stats_interval` across all probe nodes."""
        now = utc_from_ts(self.reactor.seconds())
        job = history.maintenance_job(self.cfg)
        try:
            done = await self.pool.run(lambda conn: run_once(
                conn, job, now, lambda c: {**history.maintain(c, self.cfg, now),
                                           "probe_requests_expired": requests.expire(c, now)}))
            if done and any(done.values()):
                self._log.info("probe history rolled up: {done}", done=done)
        except Exception:
            self._log.failure("probe history maintenance failed")
