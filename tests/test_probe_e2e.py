"""End to end in real time: real HTTP mirrors on 127.0.1.x, the probe loop on a real DB pool, the
plan and picker reading the table, and the outbox sending to a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import pytest_twisted
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from twisted.internet import reactor

import probes
from admin.outbox import OutboxSender
from dnsd import picker, plan
from dnsd.config import Config, DNSConfig, MailConfig, ProbesConfig
from dnsd.db import DBPool
from dnsd.geo import GeoLocator
from dnsd.models import ACTIVE, DISABLED_PROBES, mirror_health, mirrors, utcnow
from tests.dns_support import until
from tests.helpers import MailRecorder, free_port
from tests.probe_mirrors import FakeMirror, serve
from tests.probe_support import add_mirror


@pytest_twisted.ensureDeferred
async def test_outage_and_recovery_end_to_end(sqlite_engine, test_mmdb):
    e = sqlite_engine
    m1, m2 = FakeMirror("fresh"), FakeMirror("fresh")
    p1, p2 = serve(m1, "127.0.1.5"), serve(m2, "127.0.1.6")
    with e.begin() as c:
        ids = [add_mirror(c, name=f"de{i}", ipv4=f"127.0.1.{4 + i}",
                          http_url=f"http://de{i}.example.net:{p.getHost().port}/pub/",
                          emails=(f"ops{i}@example.net",))
               for i, p in ((1, p1), (2, p2))]
    smtp_port = free_port()
    rec = MailRecorder()
    ctl = Controller(rec, hostname="127.0.0.1", port=smtp_port)
    ctl.start()
    cfg = Config(
        dns=DNSConfig(zone="mirrors.example.org", min_candidates=1),
        probes=ProbesConfig(interval=1, timeout=0.5, connect_timeout=0.5, fail_after=2,
                            pass_after=2, allow_private=True, stats_interval=3600),
        mail=MailConfig(smtp=f"127.0.0.1:{smtp_port}", poll_interval=0.1, retry_base=0.2,
                        reply_to="admins@example.org"))
    pool = DBPool(e, reactor, 2)
    geo = GeoLocator(test_mmdb)
    loop = probes.makeService(cfg, pool, reactor, geo=geo)
    sender = OutboxSender(cfg, pool, reactor)

    def state(mid):
        with e.connect() as c:
            st = c.execute(sa.select(mirrors.c.status).where(mirrors.c.id == mid)).scalar()
            h = c.execute(sa.select(mirror_health).where(mirror_health.c.mirror_id == mid)
                          ).mappings().first()
        return st, (dict(h) if h else {})

    def chosen(family="A"):
        with e.connect() as c:
            rows = plan.load_rows(c)
        p = plan.build_plan(rows, cfg, utcnow())
        return {x.name for x in picker.pick(p, "DE", family=family, count=5).chosen}

    def kinds(to):
        return [m["Subject"] for rcpt, m in rec.messages if rcpt == [to]]

    loop.startService()
    sender.startService()
    try:
        await until(lambda: all(state(i)[1].get("passes_in_row", 0) >= 1 for i in ids),
                    timeout=15)
        assert chosen() == {"de1", "de2"}
        assert state(ids[0])[1]["geo_check"] == ""

        m1.mode = "500"                                          # de1 breaks
        await until(lambda: state(ids[0])[0] == DISABLED_PROBES, timeout=15)
        assert chosen() == {"de2"}                                # out of the DNS answers
        await until(lambda: len(kinds("ops1@example.net")) == 1, timeout=15)
        (subject,) = kinds("ops1@example.net")
        assert "taken out of the DNS rotation" in subject
        msg = next(m for rcpt, m in rec.messages if rcpt == ["ops1@example.net"])
        assert msg["Auto-Submitted"] == "auto-generated" and msg["Reply-To"] == "admins@example.org"
        assert "HTTP 500" in msg.get_content()
        before = state(ids[0])[1]["failures_in_row"]
        await until(lambda: state(ids[0])[1]["failures_in_row"] >= before + 2, timeout=15)
        assert len(kinds("ops1@example.net")) == 1               # once per outage

        m1.mode = "fresh"                                        # de1 is repaired
        await until(lambda: state(ids[0])[0] == ACTIVE, timeout=15)
        assert chosen() == {"de1", "de2"}
        await until(lambda: len(kinds("ops1@example.net")) == 2, timeout=15)
        assert "back in the DNS rotation" in kinds("ops1@example.net")[1]
        assert kinds("ops2@example.net") == []                   # the healthy mirror: no mail
    finally:
        loop.stopService()
        sender.stopService()
        m1.stop()
        m2.stop()
        await p1.stopListening()
        await p2.stopListening()
        ctl.stop()
        pool.stop()
