"""admin.maintainers and the contact rule (dnsd.recipients) on the table, SQLite and PostgreSQL:
who is a contact, the login links (once, for a while), and a maintainer's change."""

from __future__ import annotations

import datetime as _dt
import email
import email.policy

import pytest
import sqlalchemy as sa

from admin import maintainers, store
from dnsd import recipients
from dnsd.models import audit, login_links, outbox, sessions, users
from dnsd.records.maintainers import Maintainer
from dnsd.validation import Rules

T0 = _dt.datetime(2026, 12, 8, 10, 0)
LAB = Rules(allow_private=True)
SETTINGS = maintainers.LinkSettings(base_url="https://mirrors.example.org/", sender="m@example.org",
                                    title="Example", minutes=15)
LONG = ("x" * 64) + "@" + ".".join(["a" * 61, "b" * 61, "c" * 57]) + ".example"  # 254 characters


def mirror(conn, cc, host, people, **kw):
    return store.add_mirror(conn, actor="setup", mail=None, country=cc, hostname=host,
                            ipv4=kw.pop("ipv4", "192.0.2.10"), http_url=f"http://{host}/",
                            maintainers_=people, rules=LAB, **kw)


def link_token(message) -> str:
    text = email.message_from_bytes(bytes(message), policy=email.policy.default).get_content()
    return text.split("/maintainer/login/")[1].split()[0]


@pytest.fixture
def table(engine):
    with engine.begin() as conn:
        a = mirror(conn, "DE", "a.example.de", ["Jane <Jane@Example.de>"])
        b = mirror(conn, "DE", "b.example.de", ["J <jane@example.de>", "Bob <bob@example.com>"])
        c = mirror(conn, "FR", "c.example.fr", ["Jane <jane@example.de>"])
        store.retire(conn, f"#{c.id}", "alice", "gone", None)
    return engine, a, b, c


def test_contacts_are_live_mirrors_listing_the_address_in_any_case(table):
    engine, a, b, c = table
    with engine.connect() as conn:
        assert recipients.contact_mirrors(conn, " JANE@example.DE ") == {a.id, b.id}
        assert recipients.contact_mirrors(conn, "bob@example.com") == {b.id}
        assert recipients.contact_mirrors(conn, "nobody@example.com") == frozenset()
        assert recipients.contact_mirrors(conn, "") == frozenset()
    assert recipients.is_contact([Maintainer("", "Bob@Example.com")], "bob@example.COM")
    assert not recipients.is_contact([Maintainer("", "bob@example.com")], "")


def test_a_link_is_mailed_to_a_contact_only_and_works_once(table):
    engine, a, b, c = table
    with engine.begin() as conn:
        assert maintainers.request_link(conn, "bob@example.com", SETTINGS, T0)
        assert not maintainers.request_link(conn, "nobody@example.com", SETTINGS, T0)
        assert not maintainers.request_link(conn, "not an address", SETTINGS, T0)
        [(to, message)] = conn.execute(sa.select(outbox.c.recipients, outbox.c.message)).all()
    assert to == "bob@example.com"
    token = link_token(message)
    with engine.begin() as conn:
        assert maintainers.link_is_open(conn, token, T0)
        assert maintainers.use_link(conn, token, T0 + _dt.timedelta(minutes=14)) == \
            "bob@example.com"
        assert not maintainers.link_is_open(conn, token, T0)
        assert maintainers.use_link(conn, token, T0) is None
        assert maintainers.use_link(conn, "forged", T0) is None


def test_a_link_expires_and_old_ones_are_swept(table):
    engine, *_ = table
    with engine.begin() as conn:
        maintainers.request_link(conn, "bob@example.com", SETTINGS, T0)
        token_rows = conn.execute(sa.select(login_links)).all()
    assert len(token_rows) == 1
    later = T0 + _dt.timedelta(minutes=15)
    with engine.begin() as conn:
        assert conn.execute(sa.select(login_links.c.expires_at)).scalar_one() == later
        maintainers.request_link(conn, "bob@example.com", SETTINGS, later + _dt.timedelta(days=2))
        assert len(conn.execute(sa.select(login_links)).all()) == 1     # the old one swept


def test_using_a_link_spends_the_others_of_the_address(table):
    engine, *_ = table
    with engine.begin() as conn:
        for _ in range(3):
            maintainers.request_link(conn, "bob@example.com", SETTINGS, T0)
        maintainers.request_link(conn, "jane@example.de", SETTINGS, T0)
        tokens = [link_token(m) for m in conn.execute(
            sa.select(outbox.c.message).order_by(outbox.c.id)).scalars()]
    with engine.begin() as conn:
        assert maintainers.use_link(conn, tokens[1], T0) == "bob@example.com"
        assert [maintainers.link_is_open(conn, t, T0) for t in tokens] == [
            False, False, False, True]


def test_a_session_belongs_to_a_user_or_an_address_never_both(engine):
    with engine.begin() as conn:
        uid = conn.execute(users.insert().values(username="u", password_hash="$argon2id$x",
                                                 role="admin")).inserted_primary_key[0]
        conn.execute(sessions.insert().values(id="a" * 64, csrf="c", user_id=uid,
                                              created_at=T0, expires_at=T0))
        conn.execute(sessions.insert().values(id="b" * 64, csrf="c", maintainer_email=LONG,
                                              created_at=T0, expires_at=T0))
    for owner in ({"user_id": uid, "maintainer_email": "x@example.org"}, {}):
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(sessions.insert().values(id="c" * 64, csrf="c", created_at=T0,
                                                  expires_at=T0, **owner))


def test_a_maintainers_change_is_audited_and_mailed_under_a_long_address(engine):
    assert len(LONG) == 254
    mail = store.MailSettings(sender="m@example.org", list="list@example.org")
    with engine.begin() as conn:
        m = mirror(conn, "DE", "a.example.de", [f"Long <{LONG}>"])
        res = store.edit_by_maintainer(conn, m.id, LONG, mail, rules=LAB, provider_name="Ex",
                                       ipv4="192.0.2.11")
        assert set(res.changed) == {"provider_name", "ipv4"}
        assert store.edit_by_maintainer(conn, m.id, LONG, mail, rules=LAB,
                                        provider_name="Ex").changed == {}
        maintainers.add_note(conn, m.id, LONG, "hello")
    with engine.connect() as conn:
        actors = conn.execute(sa.select(audit.c.actor, audit.c.action)
                              .where(audit.c.actor == LONG)).all()
        assert [tuple(a) for a in actors] == [(LONG, "maintainer-edit"), (LONG, "note")]
        [(kind, author, to)] = conn.execute(sa.select(outbox.c.kind, outbox.c.author,
                                                      outbox.c.recipients)).all()
    assert (kind, author) == ("maintainer-edit", LONG)
    assert set(to.split(",")) == {"list@example.org", LONG}
