"""Support for probe, outbox and report tests: the synchronous DB pool (tests.webfakes) for
Clock-driven tests, a scripted prober, and mirror rows."""

from __future__ import annotations

import sqlalchemy as sa
from twisted.internet import defer

from dnsd.models import ACTIVE, maintainers, mirror_health, mirrors, outbox, table_version
from probes.probe import ProbeResult
from tests.webfakes import SyncPool  # noqa: F401  (re-exported: the probe tests' pool)


class ScriptedProber:
    """Answers probes from a dict {mirror_id: ok or (ok, error_class)}; counts calls."""

    def __init__(self, reactor, outcomes: dict):
        self.reactor, self.outcomes, self.calls = reactor, outcomes, []

    def probe(self, t):
        """A mirror without pinned addresses "resolves" to 192.0.2.(200 + id), as the real
        prober would resolve its host name."""
        self.calls.append((self.reactor.seconds(), t.mirror_id))
        o = self.outcomes.get(t.mirror_id, True)
        ok, ec = (o, "" if o else "refused") if isinstance(o, bool) else o
        now = self.reactor.seconds()
        v4 = t.ipv4 if t.pinned else f"192.0.2.{200 + t.mirror_id % 50}"
        return defer.succeed(ProbeResult(
            mirror_id=t.mirror_id, at=now, ok=ok, error_class=ec,
            error="" if ok else "connection refused", url=f"http://{t.hostname}/TIME",
            address=v4, family=4, http_status=200 if ok else None, ttfb_ms=5.0,
            total_ms=10.0 if ok else None, timestamp=now - 600, sync_age=600,
            ipv4_up=ok if v4 else None, ipv6_up=None, https_ok=None,
            resolved=not t.pinned, probed_ipv4=v4, probed_ipv6=t.ipv6))


def result_at(mid, at, ok) -> ProbeResult:
    """A probe result of mirror `mid` started at `at` (naive UTC): a pass with a 10-minute-old
    timestamp, or a refused connection."""
    import datetime as _dt

    ts = at.replace(tzinfo=_dt.UTC).timestamp()
    return ProbeResult(mirror_id=mid, at=ts, ok=ok, error_class="" if ok else "refused",
                       error="" if ok else "connection refused", url="http://m/TIME",
                       address="192.0.2.10", family=4, http_status=200 if ok else None,
                       total_ms=10.0 if ok else None, timestamp=ts - 600 if ok else None,
                       sync_age=600 if ok else None, ipv4_up=ok)


def add_mirror(conn, name="de1", country="DE", status=ACTIVE, ipv4="192.0.2.10",
               emails=("ops@de1.example.net",), **kw) -> int:
    vals = {"name": name, "hostname": f"{name}.example.net", "country": country, "ipv4": ipv4,
                "http_url": f"http://{name}.example.net/", "status": status}
    vals.update(kw)
    mid = conn.execute(mirrors.insert().values(**vals)).inserted_primary_key[0]
    for e in emails:
        conn.execute(maintainers.insert().values(mirror_id=mid, name="Ops Team", email=e))
    return mid


def status_of(engine, mid):
    with engine.connect() as c:
        return c.execute(sa.select(mirrors.c.status, mirrors.c.status_reason)
                         .where(mirrors.c.id == mid)).one()


def health_of(engine, mid):
    with engine.connect() as c:
        return c.execute(sa.select(mirror_health).where(mirror_health.c.mirror_id == mid)
                         ).mappings().first()


def version(engine):
    with engine.connect() as c:
        return c.execute(sa.select(table_version.c.version)).scalar() or 0


def mails(engine, kind=None):
    with engine.connect() as c:
        q = sa.select(outbox).order_by(outbox.c.id)
        if kind:
            q = q.where(outbox.c.kind == kind)
        return [dict(r) for r in c.execute(q).mappings()]


def body_of(row) -> str:
    """The decoded text of a queued mail (set_content may choose quoted-printable)."""
    import email
    import email.policy

    return email.message_from_bytes(row["message"], policy=email.policy.default).get_content()
