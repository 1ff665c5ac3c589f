"""Who receives which mail, and how: (name, address) pairs from input to SMTP, never text split on
commas. A maintainer named "Doe, Jane" is one recipient; an applicant named
"Jane, attacker@evil.example, Doe" adds nobody; SMTP gets bare addresses and the To: header the
names, encoded; CR, LF and NUL are refused where they are typed, not found at send time."""

from __future__ import annotations

import email
import email.policy

import pytest
import pytest_twisted
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from twisted.internet import reactor

from admin import store, waitinglist
from admin.outbox import OutboxSender
from dnsd import recipients
from dnsd.config import Config, MailConfig
from dnsd.db import DBPool
from dnsd.errors import Invalid
from dnsd.models import maintainers as maintainers_table
from dnsd.models import outbox
from dnsd.outbox import queue_mail
from dnsd.records.maintainers import Maintainer
from tests.dns_support import until
from tests.helpers import free_port

MAIL = store.MailSettings(sender="mirrors@example.org", list="list@example.org")
EVIL = "Jane, attacker@evil.example, Doe"


def _rows(engine):
    with engine.connect() as conn:
        return conn.execute(sa.select(outbox.c.kind, outbox.c.recipients, outbox.c.message)
                            .order_by(outbox.c.id)).all()


def _to(raw: bytes) -> list[tuple[str, str]]:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return [(a.display_name, a.addr_spec) for a in msg["To"].addresses]


def test_the_audience_table_names_every_kind_queued():
    """Every kind the code queues is in dnsd.recipients.AUDIENCE (for_kind raises KeyError
    otherwise), and each policy does what its name says."""
    people = [Maintainer("Doe, Jane", "jane@example.org"), Maintainer("", "ops@example.org")]
    got = {k: [r.email for r in recipients.for_kind(k, list_address="list@example.org",
                                                   maintainers=people,
                                                   applicant=people[0], address="t@x.org")]
           for k in recipients.AUDIENCE}
    assert got["mirror-disabled"] == ["list@example.org", "jane@example.org", "ops@example.org"]
    assert got["disabled"] == ["jane@example.org", "ops@example.org"]
    assert got["weekly"] == ["list@example.org"] and got["reminder"] == got["disabled"]
    assert got["application"] == ["jane@example.org"] and got["test"] == ["t@x.org"]
    assert [r.email for r in recipients.for_kind("recovered", list_address="list@example.org")] \
        == ["list@example.org"]                                  # nobody else: the list hears
    assert recipients.for_kind("reminder", list_address="list@example.org") == ()


def test_a_comma_in_a_name_is_one_recipient_and_never_an_address(sqlite_engine):
    with sqlite_engine.begin() as conn:
        store.add_mirror(conn, actor="t", mail=MAIL, country="DE", hostname="m.example.de",
                         http_url="http://m.example.de/",
                         maintainers_=["Doe, Jane <jane@example.org>",
                                       Maintainer(EVIL, "evil-name@example.org")])
        store.disable(conn, "de1", "t", "disk full", MAIL)
    for kind, envelope, raw in _rows(sqlite_engine):
        assert envelope == "list@example.org,jane@example.org,evil-name@example.org", kind
        assert _to(raw) == [("", "list@example.org"), ("Doe, Jane", "jane@example.org"),
                            (EVIL, "evil-name@example.org")]
        assert b"attacker@evil.example>" not in raw                 # only ever a quoted name


def test_an_accepted_applicant_with_a_hostile_name_adds_no_recipient(sqlite_engine):
    v = waitinglist.validate({"name": EVIL, "email": "jane@example.org", "country": "DE",
                              "hostname": "m.example.de", "http_url": "http://m.example.de/"},
                             [("Doe, John", "john@example.org")])
    assert v.ok, v.errors
    with sqlite_engine.begin() as conn:
        app = waitinglist.create(conn, v, source_ip="192.0.2.1", base_url="https://m.example",
                                 sender="mirrors@example.org", title="Mirrors")
        store.accept_application(conn, app.id, "alice", None, MAIL)
        store.disable(conn, "de1", "alice", "moving", MAIL)
    kinds = {}
    for kind, envelope, raw in _rows(sqlite_engine):
        kinds[kind] = envelope.split(",")
        assert "attacker@evil.example" not in envelope
    assert kinds["application"] == ["jane@example.org"]
    assert kinds["mirror-disabled"] == ["list@example.org", "jane@example.org",
                                        "john@example.org"]


@pytest.mark.parametrize("name, address", [
    ("Jane\rDoe", "jane@example.org"), ("Jane\nBcc: x@evil.example", "jane@example.org"),
    ("Jane\x00", "jane@example.org"), ("Jane", "jane@example.org\r\nBcc: x@evil.example"),
    ("Jane", "Jane <jane@example.org>"), ("Jane", "a@b.example, c@d.example"),
])
def test_line_breaks_nul_and_lists_are_refused_where_they_are_typed(sqlite_engine, name, address):
    with sqlite_engine.begin() as conn:
        m = store.add_mirror(conn, actor="t", mail=None, country="DE", hostname="m.example.de",
                             http_url="http://m.example.de/")
        with pytest.raises(Invalid):
            store.set_maintainers(conn, f"#{m.id}", "t", [Maintainer(name, address)])
        with pytest.raises(Invalid):
            queue_mail(conn, kind="test", sender="m@example.org",
                       to=[recipients.Recipient(name, address)], subject="s", body="b")
    v = waitinglist.validate({"name": name, "email": address, "country": "DE",
                              "hostname": "x.example.de", "http_url": "http://x.example.de/"})
    assert not v.ok and v.errors.keys() & {"name", "email"}


class Recorder:
    def __init__(self):
        self.got = []

    async def handle_DATA(self, server, session, envelope):
        self.got.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest_twisted.ensureDeferred
async def test_smtp_gets_bare_addresses_and_the_header_encoded_names(sqlite_engine):
    port = free_port()
    rec = Recorder()
    ctl = Controller(rec, hostname="127.0.0.1", port=port)
    ctl.start()
    pool = DBPool(sqlite_engine, reactor, 1)
    try:
        with sqlite_engine.begin() as conn:
            queue_mail(conn, kind="admin-mail", sender="mirrors@example.org", subject="hi",
                       body="hello\n", to=[recipients.Recipient("Doe, Jane", "jane@example.org"),
                                           recipients.Recipient("Jürgen Groß", "jg@example.de"),
                                           recipients.Recipient(EVIL, "e@example.org")])
        cfg = Config(mail=MailConfig(smtp=f"127.0.0.1:{port}", from_="mirrors@example.org"))
        assert await OutboxSender(cfg, pool, reactor).send_due() == 1
        await until(lambda: rec.got, timeout=10)
        rcpts, raw = rec.got[0]
        assert rcpts == ["jane@example.org", "jg@example.de", "e@example.org"]
        head = raw.split(b"\r\n\r\n", 1)[0]
        assert b"=?utf-8?" in head.lower() or b"=?UTF-8?" in head       # RFC 2047 for Groß
        assert _to(raw) == [("Doe, Jane", "jane@example.org"), ("Jürgen Groß", "jg@example.de"),
                            (EVIL, "e@example.org")]
    finally:
        ctl.stop()
        pool.stop()


def test_why_not_says_who_is_left_out_and_for_kind_leaves_them_out():
    """One rule: the addresses for_kind drops are exactly those why_not explains."""
    people = [Maintainer("Jane", "jane@example.org"), Maintainer("Typo", "jane(at)example.org"),
              Maintainer("Nobody", ""), Maintainer("Jane again", "JANE@example.org"),
              Maintainer("Bad\nName", "bad@example.org")]
    got = recipients.audience("admin-mail", maintainers=people)
    assert [str(r) for r in got.to] == ["Jane <jane@example.org>"]
    assert [(x.name, x.email) for x in got.left_out] == [
        ("Typo", "jane(at)example.org"), ("Nobody", ""), ("Bad\nName", "bad@example.org"),
        ("Jane again", "JANE@example.org")]
    reasons = [x.reason for x in got.left_out]
    assert "does not look like a mail address" in reasons[0]
    assert reasons[1] == "no mail address is known for this maintainer"
    assert "line" in reasons[2]                         # a name must be one line
    assert reasons[3] == "the same address is listed twice: it gets one copy"
    assert recipients.for_kind("admin-mail", maintainers=people) == got.to
    assert recipients.why_not("admin-mail", maintainers=people) == got.left_out
    # nobody to name: said so, for the maintainers and for a list that is not configured
    assert [x.reason for x in recipients.why_not("admin-mail", maintainers=())] == [
        "no maintainer is listed for this mirror"]
    assert [x.reason for x in recipients.why_not("weekly")] == [
        "no list address is configured ([mail] list)"]
    # the probes' mails go to the list when no maintainer can be written to
    fallback = recipients.audience("disabled", list_address="list@example.org",
                                   maintainers=[Maintainer("Typo", "x@")])
    assert [r.email for r in fallback.to] == ["list@example.org"]
    assert [x.email for x in fallback.left_out] == ["x@"]


def test_a_stored_address_that_fails_validation_does_not_stop_a_change(sqlite_engine):
    """An old row with a broken address (written before the rules, or by hand): disabling the
    mirror still works and mails everyone else, instead of failing the whole change."""
    with sqlite_engine.begin() as conn:
        m = store.add_mirror(conn, actor="t", mail=None, country="DE", hostname="a.example.de",
                             http_url="http://a.example.de/", maintainers_=["A <a@example.de>"])
        conn.execute(sa.insert(maintainers_table).values(mirror_id=m.id, name="Old",
                                                         email="old at example.de"))
        store.disable(conn, f"#{m.id}", "alice", "broken", MAIL)
    (row,) = [r for r in _rows(sqlite_engine) if r[0] == "mirror-disabled"]
    assert row[1] == "list@example.org,a@example.de"
