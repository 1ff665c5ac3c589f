"""admin.store: the operations people make on the mirror table, on SQLite and PostgreSQL.

Every change must move the table version, leave an audit row and (for additions and status
changes) queue a mail, all in the caller's transaction.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from admin import store
from admin.passwords import hash_password, needs_rehash, verify_password
from admin.store import MailSettings, StoreError
from dnsd import models
from dnsd.models import audit, outbox, users
from dnsd.records.maintainers import Maintainer
from dnsd.validation import Rules

MAIL = MailSettings(sender="mirrors@example.org", list="list@example.org", reply_to="")
LAB = Rules(allow_private=True)          # the documentation addresses below are not public


def _add(conn, **kw):
    args = {"actor": "alice", "mail": MAIL, "country": "DE", "hostname": "mirror.example.de",
            "ipv4": "192.0.2.10", "http_url": "http://mirror.example.de/pub", "rules": LAB}
    args.update(kw)
    return store.add_mirror(conn, **args)


def _hash(conn, name):
    return conn.execute(sa.select(users.c.password_hash).where(users.c.username == name)).scalar()


def _count(conn, table) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def _outbox(conn) -> list:
    return conn.execute(sa.select(outbox.c.kind, outbox.c.recipients, outbox.c.subject,
                                  outbox.c.mirror_id).order_by(outbox.c.id)).all()


def test_add_assigns_next_free_name_and_records_everything(engine):
    with engine.begin() as conn:
        v0 = models.current_version(conn)
        a = _add(conn, maintainers_=["Jane Doe <jane@example.de>"])
        b = _add(conn, hostname="m2.example.de", ipv4=None)
        c = _add(conn, hostname="m9.example.de", name="de9")
        d = _add(conn, hostname="m3.example.de", country="de")
        assert [a.name, b.name, c.name, d.name] == ["de1", "de2", "de9", "de3"]
        assert models.current_version(conn) == v0 + 4
        assert a.http_url == "http://mirror.example.de/pub/"          # base URLs end in /
        assert a.status == models.ACTIVE
        assert store.get_mirror(conn, "de1").maintainers == (Maintainer("Jane Doe",
                                                                        "jane@example.de"),)
        mails = _outbox(conn)
        assert [m.kind for m in mails] == ["mirror-added"] * 4
        assert mails[0].recipients == "list@example.org,jane@example.de"
        assert "de1 (mirror.example.de) added in DE by alice" in mails[0].subject
        row = conn.execute(sa.select(audit).where(audit.c.mirror_id == a.id)).one()
        assert row.actor == "alice" and row.action == "add" and row.before == ""
        after = json.loads(row.after)
        assert after["name"] == "de1" and after["ipv4"] == "192.0.2.10"


def test_add_defaults_declared_ipv6_and_https_from_what_was_given(engine):
    with engine.begin() as conn:
        m = _add(conn, ipv6="2001:DB8:de:0::1", https_url="https://mirror.example.de/")
        assert (m.ipv6, m.has_ipv6, m.has_https) == ("2001:db8:de::1", True, True)
        n = _add(conn, hostname="m2.example.de", ipv6="2001:db8:de::2", has_ipv6=False)
        assert n.has_ipv6 is False


def test_add_refuses_a_host_already_in_the_table_until_it_is_retired(engine):
    with engine.begin() as conn:
        first = _add(conn)
        with pytest.raises(store.StoreError, match=f"already in the table as {first.name}"):
            _add(conn)
        assert _count(conn, models.mirrors) == 1
        store.retire(conn, first.name, "alice", "moved", MAIL)
        assert _add(conn).name != first.name               # a new life on the same host


@pytest.mark.parametrize("kw, message", [
    ({"country": "XX"}, "'XX' is not an ISO 3166-1 alpha-2 country code"),
    ({"hostname": "not a host"}, "'not a host' is not a host name"),
    ({"ipv4": "192.0.2.300"}, "'192.0.2.300' is not an IPv4 address"),
    ({"ipv6": "192.0.2.1"}, "'192.0.2.1' is not an IPv6 address"),
    ({"http_url": "ftp://x.example/"}, "is not a http:// URL with a host"),
    ({"https_url": "https:///nohost"}, "is not a https:// URL with a host"),
    ({"name": "de-2"}, "'de-2' is not a mirror name"),
    ({"weight": -1}, "the weight is a number from 0 to 1000"),
    ({"cores": "many"}, "the number of cores must be a whole number"),
    ({"maintainers_": ["nobody"]}, "'nobody' does not look like a mail address"),
    ({"maintainers_": ["Jane\r\nBcc: x@evil.example <j@example.org>"]}, "control characters"),
    ({"ipv4": "10.0.0.1", "rules": store.STRICT}, "10.0.0.1 is a private, loopback"),
    ({"ipv4": None, "http_url": None}, "a mirror needs a URL or an address"),
    ({"http_url": None, "ftp_url": "ftp://mirror.example.de/"}, "cannot be active"),
    ({"country": "UK"}, "did you mean GB"),
    ({"http_url": 'http://mirror.example.de/"><b>'}, "must not hold spaces"),
    ({"status": "retired"}, "a new mirror is pending, active or disabled-by-admin"),
])
def test_add_refuses_bad_input_with_one_clear_message(engine, kw, message):
    with engine.begin() as conn:
        with pytest.raises(StoreError, match=message.replace("(", r"\(").replace("?", r"\?")):
            _add(conn, **kw)
        assert _count(conn, models.mirrors) == 0


def test_a_taken_name_is_refused(engine):
    with engine.begin() as conn:
        _add(conn, name="de2")
        with pytest.raises(StoreError, match="name de2 is already used by mirror.example.de"):
            _add(conn, hostname="other.example.de", name="de2")


def test_nothing_stays_when_the_transaction_rolls_back(engine):
    with engine.begin() as conn:
        v0 = models.current_version(conn)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        m = _add(conn)
        store.disable(conn, m.name, "alice", "test", MAIL)
        raise RuntimeError("roll back")
    with engine.begin() as conn:
        assert models.current_version(conn) == v0
        for t in (models.mirrors, models.audit, models.outbox, models.notes):
            assert _count(conn, t) == 0


def test_edit_changes_only_what_differs(engine):
    with engine.begin() as conn:
        m = _add(conn)
        v = models.current_version(conn)
        res = store.edit_mirror(conn, "de1", "bob", ipv4="192.0.2.10", weight=2,
                                ipv6="2001:db8::7", provider_name="Example GmbH", rules=LAB)
        assert res.changed == {"weight": (1.0, 2.0), "ipv6": (None, "2001:db8::7"),
                               "provider_name": ("", "Example GmbH")}
        assert models.current_version(conn) == v + 1
        row = conn.execute(sa.select(audit).where(audit.c.action == "edit")).one()
        assert json.loads(row.before) == {"weight": 1.0, "ipv6": None, "provider_name": ""}
        assert row.actor == "bob"
        # no change: no version move, no audit row
        same = store.edit_mirror(conn, "de1", "bob", weight=2.0)
        assert same.changed == {} and models.current_version(conn) == v + 1
        assert _count(conn, audit) == 2
        # clearing an address, renaming, and finding a mirror by id or host name
        store.edit_mirror(conn, f"#{m.id}", "bob", ipv6="", name="de7", rules=LAB)
        with pytest.raises(StoreError, match="cannot be active"):
            store.edit_mirror(conn, "de7", "bob", http_url="")        # its only http(s) URL
        with pytest.raises(StoreError, match="private, loopback"):
            store.edit_mirror(conn, "de7", "bob", ipv4="10.0.0.1")   # strict by default
        other = _add(conn, hostname="other.example.de")
        with pytest.raises(StoreError, match="already in the table as de7"):
            store.edit_mirror(conn, other.name, "bob", hostname="mirror.example.de")
        got = store.get_mirror(conn, "mirror.example.de")
        assert (got.name, got.ipv6) == ("de7", None)
        with pytest.raises(StoreError, match="'status' cannot be edited"):
            store.edit_mirror(conn, "de7", "bob", status="active")
        with pytest.raises(StoreError, match="nothing to change"):
            store.edit_mirror(conn, "de7", "bob")


def test_disable_enable_retire_with_notes_mails_and_versions(engine):
    with engine.begin() as conn:
        _add(conn, maintainers_=["jane@example.de"])
        v = models.current_version(conn)
        with pytest.raises(StoreError, match="needs a reason"):
            store.disable(conn, "de1", "alice", "  ", MAIL)
        d = store.disable(conn, "de1", "alice", "hardware move", MAIL)
        assert (d.status, d.status_reason) == (models.DISABLED_ADMIN, "hardware move")
        with pytest.raises(StoreError, match="already disabled by an admin: hardware move"):
            store.disable(conn, "de1", "alice", "again", MAIL)
        e = store.enable(conn, "de1", "bob", MAIL)
        assert (e.status, e.status_reason) == (models.ACTIVE, "")
        with pytest.raises(StoreError, match="already active"):
            store.enable(conn, "de1", "bob", MAIL)
        r = store.retire(conn, "de1", "carol", "", MAIL)
        assert (r.status, r.status_reason) == (models.RETIRED, "retired")
        with pytest.raises(StoreError, match="is retired"):
            store.disable(conn, "de1", "alice", "x", MAIL)
        assert models.current_version(conn) == v + 3
        kinds = [(m.kind, m.recipients) for m in _outbox(conn)][1:]
        assert kinds == [("mirror-disabled", "list@example.org,jane@example.de"),
                         ("mirror-enabled", "list@example.org,jane@example.de"),
                         ("mirror-retired", "list@example.org,jane@example.de")]
        actions = conn.execute(sa.select(audit.c.action, audit.c.actor)
                               .order_by(audit.c.id)).all()
        assert [tuple(a) for a in actions] == [("add", "alice"), ("disable", "alice"),
                                               ("enable", "bob"), ("retire", "carol")]
        texts = [n.text for n in store.get_mirror(conn, "de1").notes]
        assert texts == ["Retired (was active): retired", "Enabled (was disabled-by-admin)",
                         "Disabled (was active): hardware move"]
        # retired mirrors keep their name: the next DE mirror is de2
        assert _add(conn, hostname="new.example.de").name == "de2"
        # a retired host used again may not come back while its successor lives
        assert _add(conn).name == "de3"                          # mirror.example.de again
        with pytest.raises(StoreError, match="already in the table as de3"):
            store.enable(conn, "de1", "bob", MAIL)


def test_admin_disable_outranks_the_probes(engine):
    with engine.begin() as conn:
        m = _add(conn)
        conn.execute(models.mirrors.update().values(status=models.DISABLED_PROBES,
                                                    status_reason="3 failed probes"))
        d = store.disable(conn, m.name, "alice", "moving racks", MAIL)
        assert d.status == models.DISABLED_ADMIN
        assert "Disabled (was disabled-by-probes)" in store.get_mirror(conn, "de1").notes[0].text


def test_no_mail_settings_means_no_mail(engine):
    with engine.begin() as conn:
        _add(conn, mail=None)
        store.disable(conn, "de1", "alice", "x", None)
        assert _count(conn, outbox) == 0


def test_notes_maintainers_list_and_show(engine):
    with engine.begin() as conn:
        _add(conn)
        _add(conn, country="US", hostname="mirror.example.com", ipv4="198.51.100.1")
        _add(conn, country="US", hostname="m2.example.com", ipv4="198.51.100.2")
        store.disable(conn, "us2", "alice", "slow", MAIL)
        v = models.current_version(conn)
        store.add_note(conn, "us1", "bob", "called the provider")
        with pytest.raises(StoreError, match="the note is empty"):
            store.add_note(conn, "us1", "bob", "")
        people = store.set_maintainers(conn, "us1", "bob", ["A <a@example.com>", "b@example.com"])
        assert people == (Maintainer("A", "a@example.com"), Maintainer("", "b@example.com"))
        assert models.current_version(conn) == v          # notes and maintainers: no DNS change
        assert [m.name for m in store.list_mirrors(conn)] == ["de1", "us1", "us2"]
        assert [m.name for m in store.list_mirrors(conn, country="us")] == ["us1", "us2"]
        assert [m.name for m in store.list_mirrors(conn, status="disabled-by-admin")] == ["us2"]
        with pytest.raises(StoreError, match="'broken' is not a status"):
            store.list_mirrors(conn, status="broken")
        shown = store.get_mirror(conn, "us1")
        assert shown.maintainers == people and shown.health.last_probe_at is None
        assert shown.notes[0].text == "called the provider"
        conn.execute(models.mirror_health.insert().values(mirror_id=shown.id, uptime_7d=0.9))
        assert store.get_mirror(conn, "us1").health.uptime_7d == 0.9
        with pytest.raises(StoreError, match="no mirror named us9"):
            store.get_mirror(conn, "us9")
        assert store.next_free_name(conn, "us") == "us3"


def test_users_and_passwords(engine):
    h = hash_password("correct horse")
    assert h.startswith("$argon2id$")
    assert verify_password(h, "correct horse") and not verify_password(h, "wrong")
    assert not verify_password("garbage", "x") and not needs_rehash(h)
    with engine.begin() as conn:
        u = store.add_user(conn, "Alice", h, "helper", "alice@example.org")
        assert (u.username, u.role) == ("alice", "helper")
        assert _hash(conn, "alice") == h
        with pytest.raises(StoreError, match="user alice exists already"):
            store.add_user(conn, "alice", h)
        with pytest.raises(StoreError, match="'root' is not a role"):
            store.add_user(conn, "bob", h, "root")
        with pytest.raises(StoreError, match="argon2 hash"):
            store.add_user(conn, "bob", "plaintext")
        store.set_password(conn, "alice", hash_password("new one"))
        assert verify_password(_hash(conn, "alice"), "new one")
        with pytest.raises(StoreError, match="no user named zed"):
            store.set_password(conn, "zed", h)
