"""Vantage points' cycles played through probes.store on a real table, as their probe nodes run
them (tests/test_vantage_verdicts.py, tests/test_transitions_once.py)."""

from __future__ import annotations

import datetime as _dt

from dnsd.config import Config, DNSConfig, MailConfig, ProbesConfig
from dnsd.records import vantages as _vantages
from probes import store
from probes.verdicts import standing
from tests.probe_support import add_mirror
from tests.probe_support import result_at as result

T0 = _dt.datetime(2026, 12, 1, 8, 0)
INTERVAL = 60


def cfg(**kw):
    p = {"interval": INTERVAL, "fail_after": 3, "pass_after": 2}
    p.update(kw)
    return Config(probes=ProbesConfig(**p), dns=DNSConfig(zone="mirrors.example.org"),
                  mail=MailConfig(list="mirrors@lists.example.org"))


class Net:
    """Mirrors, and vantage points that run cycles over them."""

    def __init__(self, engine, c, n=6):
        self.engine, self.cfg = engine, c
        with engine.begin() as conn:
            self.ids = [add_mirror(conn, name=f"de{i + 1}", emails=(f"ops{i + 1}@example.net",))
                        for i in range(n)]
        self.now = T0

    def probe(self, vantage, fails=(), *, skip=()):
        """The probes of a cycle of `vantage`, its end not yet: every mirror probed (each result
        in its own transaction), those in `fails` failing."""
        with self.engine.begin() as conn:
            store.start_cycle(conn, vantage, self.now)
        for mid in self.ids:
            if mid in skip:
                continue
            with self.engine.begin() as conn:
                store.record_probe(conn, result(mid, self.now, mid not in fails), self.cfg,
                                   self.now, vantage)

    def cycle(self, vantage, fails=(), *, skip=()):
        """One cycle of `vantage` (`probe`, then its end); returns what end_cycle said."""
        self.probe(vantage, fails, skip=skip)
        with self.engine.begin() as conn:
            return store.end_cycle(conn, self.cfg, vantage, self.now)

    def round(self, fails_by_vantage, vantages=("eu", "us", "ap")):
        """Each vantage one cycle, a few seconds apart, then the clock moves one interval."""
        out = {}
        for v in vantages:
            out[v] = self.cycle(v, fails_by_vantage.get(v, ()))
            self.now += _dt.timedelta(seconds=5)
        self.now += _dt.timedelta(seconds=INTERVAL - 5 * len(vantages))
        return out

    def standing(self, name):
        with self.engine.connect() as conn:
            v = _vantages.get_vantage(conn, name)
        return standing(v, now=self.now, interval=INTERVAL, min_pass_share=0.5).state


