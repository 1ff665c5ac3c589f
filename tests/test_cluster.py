"""Several nodes as real processes on one real PostgreSQL database, each started with the command
line of its shipped systemd unit: two senders and one SMTP server deliver every mail once, even
with one sender killed mid-batch; two schedulers send the weekly report once; three DNS nodes
follow a change (two by NOTIFY, their polls an hour apart, one by its poll alone, as on a
replica). What these assert is behaviour, not speed: the machine running them may be loaded."""

from __future__ import annotations

import asyncio
import datetime as _dt
import email
import email.policy
import os
import signal
import threading
import time
from collections import Counter

import dns.message
import dns.query
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from admin import store
from dnsd.models import (
    ACTIVE,
    DISABLED_PROBES,
    bump_version,
    job_runs,
    maintainers,
    mirrors,
    outbox,
    utcnow,
)
from dnsd.outbox import queue_mail
from dnsd.validation import Rules
from tests.cluster_support import (
    NEEDS_PG,
    PG_URL,
    Node,
    node_config,
    scratch_database,
    tracebacks,
)
from tests.helpers import free_port

pytestmark = pytest.mark.skipif(not PG_URL, reason=NEEDS_PG)


def config(url, name, roles, *, dns_port=None, smtp_port=None, dns_extra=""):
    return node_config(url, name, roles, dns_port=dns_port, dns=dns_extra,
                       smtp=f"127.0.0.1:{smtp_port or free_port()}",
                       mail="claim_lease = 2.0\nretry_base = 0.5")


@pytest.fixture
def cluster(tmp_path):
    nodes: list[Node] = []
    with scratch_database() as (url, engine):
        def add(name, roles, unit, **kw):
            n = Node(tmp_path, name, config(url, name, roles, **kw), unit)
            nodes.append(n)
            return n
        try:
            yield url, engine, add
        finally:
            for n in nodes:
                n.stop()


def until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


class Sink:
    """The one SMTP server: records each message; `on_data(subject)` may act before the 250."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.on_data = None
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        if self.on_data is not None:
            refuse = await asyncio.get_running_loop().run_in_executor(
                None, self.on_data, msg["Subject"])
            if refuse:
                return "451 4.3.0 try again later"
        with self.lock:
            self.messages.append(msg)
        return "250 OK"


def test_two_senders_deliver_every_mail_once_even_when_one_is_killed_mid_batch(cluster):
    url, engine, add = cluster
    n = 40
    with engine.begin() as c:
        for i in range(n):
            queue_mail(c, kind="test", sender="mirrors@example.org", to=[f"ops{i}@example.net"],
                       subject=f"mail {i}", body=f"body {i}\n")
    smtp_port = free_port()
    sink = Sink()
    ctl = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    ctl.start()
    a = add("a", ["admin"], "mirrordns-admin.service", smtp_port=smtp_port)
    b = add("b", ["admin"], "mirrordns-admin.service", smtp_port=smtp_port)
    state = {"a_seen": 0, "b_seen": 0, "killed_holding": None}

    def holder(subject):
        with engine.connect() as c:
            return c.execute(sa.select(outbox.c.claimed_by).where(outbox.c.subject == subject)
                             ).scalar() or ""

    def on_data(subject):
        who = holder(subject)[:2]
        if who == "b:":
            state["b_seen"] += 1
        if who != "a:" or state["killed_holding"] is not None:
            return False
        state["a_seen"] += 1
        if state["a_seen"] == 1:          # both senders at work before a goes on
            until(lambda: state["b_seen"] > 0, 30, "sender b sends too")
        if state["a_seen"] == 4:          # a dies in the middle of its batch, mid-conversation
            with engine.connect() as c:
                state["killed_holding"] = set(c.execute(sa.select(outbox.c.id).where(
                    outbox.c.claimed_by.like("a:%"), outbox.c.sent_at.is_(None))).scalars())
            os.kill(a.pid, signal.SIGKILL)
            return True
        return False

    sink.on_data = on_data
    try:
        a.start()
        b.start()
        until(lambda: state["killed_holding"] is not None, 60, "sender a killed mid-batch")
        t_kill = time.monotonic()
        until(lambda: len(sink.messages) >= n and all_sent(engine), 60, "every mail sent")
        took = time.monotonic() - t_kill
    finally:
        ctl.stop()
    ids = Counter(m["Message-ID"] for m in sink.messages)
    assert len(ids) == n and set(ids.values()) == {1}, "every mail exactly once"
    assert sorted(m["Subject"] for m in sink.messages) == sorted(f"mail {i}" for i in range(n))
    held = state["killed_holding"]
    assert len(held) > 1                          # a died holding its claimed rest ...
    with engine.connect() as c:
        rows = c.execute(sa.select(outbox.c.id, outbox.c.sent_at, outbox.c.claimed_by)
                         .where(outbox.c.id.in_(held))).all()
    assert all(r.sent_at is not None and r.claimed_by is None for r in rows)   # ... b sent it
    assert took >= 1.5                            # after the 2 s lease, not before
    assert not tracebacks(b.log()) and b.alive()


def all_sent(engine):
    with engine.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(outbox)
                         .where(outbox.c.sent_at.is_(None))).scalar() == 0


def test_two_schedulers_send_the_weekly_report_and_each_reminder_once(cluster):
    url, engine, add = cluster
    now = utcnow()
    with engine.begin() as c:
        c.execute(job_runs.insert().values(       # installed a week ago: the report is due
            job="weekly-report", last_run_at=now - _dt.timedelta(days=7, minutes=1)))
        for i in range(3):
            mid = c.execute(mirrors.insert().values(
                name=f"de{i + 1}", hostname=f"de{i + 1}.example.net", country="DE",
                status=DISABLED_PROBES, status_since=now.replace(year=now.year - 1),
                http_url=f"http://de{i + 1}.example.net/")).inserted_primary_key[0]
            c.execute(maintainers.insert().values(mirror_id=mid, email=f"ops{i}@example.net"))
    nodes = [add(f"s{i}", ["admin"], "mirrordns-admin.service") for i in range(2)]
    for node in nodes:
        node.start()
    for node in nodes:            # each node has checked every job once (debug line per check)
        node.wait_log(r"scheduled jobs checked", timeout=60)
    with engine.connect() as c:
        kinds = Counter(c.execute(sa.select(outbox.c.kind)).scalars())
    assert kinds == {"weekly": 1, "reminder": 3}
    logs = [n.log() for n in nodes]
    assert sum("scheduled job weekly-report queued" in x for x in logs) == 1
    assert not any(tracebacks(x) for x in logs)


def ask(port, name):
    q = dns.message.make_query(name, "A")
    try:
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=0.5)
    except dns.exception.Timeout:
        return set()
    return {rd.address for rrset in r.answer for rd in rrset}


def test_three_dns_nodes_follow_a_change_two_by_notify_one_by_its_poll(cluster):
    url, engine, add = cluster
    with engine.begin() as c:
        c.execute(mirrors.insert().values(name="de1", hostname="de1.example.net", country="DE",
                                          ipv4="192.0.2.10", status=ACTIVE,
                                          http_url="http://de1.example.net/"))
        bump_version(c)
    ports = [free_port() for _ in range(3)]
    # two nodes hear NOTIFY, with polls an hour apart: NOTIFY is the only way a change made
    # during the test can reach them (a deadline on a loaded machine would prove nothing more);
    # the third polls every second with NOTIFY off, as a node on a streaming replica does
    extras = ("poll_interval = 3600.0", "poll_interval = 3600.0",
              "poll_interval = 1.0\nnotify = false")
    nodes = [add(f"ns{i + 1}", ["dns"], "mirrordns-dns.service", dns_port=p, dns_extra=x).start()
             for i, (p, x) in enumerate(zip(ports, extras))]
    name = "de1.mirrors.example.org"
    until(lambda: all(ask(p, name) == {"192.0.2.10"} for p in ports), 60, "all nodes answer")
    for node in nodes[:2]:
        node.wait_log("dns_notify_listening", timeout=30)
    with engine.begin() as c:
        store.edit_mirror(c, "de1", "tester", ipv4="192.0.2.20",
                          rules=Rules(allow_private=True))      # a documentation address
    t0 = time.monotonic()
    seen = {}

    def followed():
        for node, p in zip(nodes, ports):
            if node.name not in seen and ask(p, name) == {"192.0.2.20"}:
                seen[node.name] = round(time.monotonic() - t0, 2)
        return len(seen) == 3

    until(followed, 60, "every node answers the change")
    assert set(seen) == {"ns1", "ns2", "ns3"}, seen
    for node in nodes:
        node.terminate()
        assert stopped_cleanly(node)


def stopped_cleanly(node) -> bool:
    """twistd exits by the signal it stopped on (systemd counts SIGTERM as a clean stop)."""
    return node.proc.returncode == -signal.SIGTERM and not tracebacks(node.log())
