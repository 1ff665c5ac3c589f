"""Operators' tools: the outbox (pending, failed, sent; retry, discard), users (list, role, disable,
delete), `mirrorctl db backup` and its documented restore, all audited."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import pytest
import sqlalchemy as sa
from treq.testing import StubTreq

from admin import cli, store
from admin.outbox import due_rows
from admin.web import build_root
from dnsd import outbox as _outbox
from dnsd.db import make_engine, upgrade
from dnsd.models import audit, mirrors, outbox, sessions, users, utcnow
from dnsd.outbox import queue_mail
from tests.webfakes import add_user, csrf_of, login, make_ctx


def _three_mails(engine):
    with engine.begin() as conn:
        ids = [queue_mail(conn, kind="test", sender="m@example.org", to=[f"{n}@example.org"],
                          subject=f"mail {n}", body="b") for n in ("a", "b", "c")]
        conn.execute(outbox.update().where(outbox.c.id == ids[1]).values(
            failed=True, attempts=20, last_error="ConnectionRefusedError"))
        conn.execute(outbox.update().where(outbox.c.id == ids[2]).values(sent_at=utcnow()))
    return ids


def test_outbox_states_retry_and_discard(engine):
    a, b, c = _three_mails(engine)
    with engine.begin() as conn:
        assert _outbox.counts(conn) == {"pending": 1, "failed": 1, "sent": 1, "discarded": 0}
        assert [m.id for m in _outbox.select(conn, "failed")] == [b]
        m = store.retry_mail(conn, b, "alice")
        assert (m.state, m.attempts) == ("pending", 0)
        assert [d["id"] for d in due_rows(conn, utcnow(), 10)] == [a, b]
        assert store.discard_mail(conn, a, "alice").state == "discarded"
        assert [d["id"] for d in due_rows(conn, utcnow(), 10)] == [b]   # never sent now
        with pytest.raises(store.StoreError, match="was sent"):
            store.retry_mail(conn, c, "alice")
        with pytest.raises(store.StoreError, match="discarded already"):
            store.discard_mail(conn, a, "alice")
        with pytest.raises(store.NotFound):
            store.retry_mail(conn, 999, "alice")
        acts = conn.execute(sa.select(audit.c.action, audit.c.actor)).all()
    assert sorted(tuple(x) for x in acts) == [("mail-discard", "alice"), ("mail-retry", "alice")]


def test_users_role_disable_delete_and_the_last_admin(engine):
    add_user(engine, "root", role="admin")
    add_user(engine, "hugo", role="helper")
    with engine.begin() as conn:
        conn.execute(sessions.insert().values(id="s" * 64, user_id=2, csrf="c",
                                              expires_at=utcnow()))
        from admin.web import api
        api.issue_token(conn, "hugo")
        assert [(u.username, u.role, u.has_token) for u in store.list_users(conn)] == [
            ("hugo", "helper", True), ("root", "admin", False)]
        with pytest.raises(store.StoreError, match="last admin"):
            store.set_role(conn, "root", "helper", "root")
        with pytest.raises(store.StoreError, match="last admin"):
            store.set_user_disabled(conn, "root", True, "root")
        assert store.set_role(conn, "hugo", "admin", "root").role == "admin"
        u = store.set_user_disabled(conn, "hugo", True, "root")
        assert u.disabled and not u.has_token                      # token revoked
        assert conn.execute(sa.select(sessions.c.id)).all() == []  # sessions ended
        assert not store.set_user_disabled(conn, "hugo", False, "root").disabled
        with pytest.raises(store.StoreError, match="cannot delete yourself"):
            store.delete_user(conn, "root", "root")
        store.delete_user(conn, "hugo", "root")
        assert [u.username for u in store.list_users(conn)] == ["root"]
        acts = [r.action for r in conn.execute(sa.select(audit.c.action).order_by(audit.c.id))]
    assert acts == ["user-api-token", "user-role", "user-disable", "user-enable", "user-delete"]


def test_the_pages(sqlite_engine):
    from twisted.trial.unittest import SynchronousTestCase

    class T(SynchronousTestCase):
        def runTest(self):
            pass
    t = T()
    add_user(sqlite_engine, "root", role="admin")
    add_user(sqlite_engine, "hugo", role="helper")
    a, b, _c = _three_mails(sqlite_engine)
    ctx = make_ctx(sqlite_engine)
    stub = StubTreq(build_root(ctx))
    csrf = login(t, stub, "root")

    def get(path):
        r = t.successResultOf(stub.get("http://admin.test" + path, allow_redirects=False))
        return r.code, t.successResultOf(r.content()).decode()

    def post(path, **data):
        r = t.successResultOf(stub.post("http://admin.test" + path, data={"csrf": csrf, **data},
                                        allow_redirects=False))
        return r.code, t.successResultOf(r.content()).decode()
    code, body = get("/admin/outbox?state=failed")
    assert code == 200 and "mail b" in body and "ConnectionRefusedError" in body
    assert "mail a" not in body
    assert post(f"/admin/outbox/{b}/retry")[0] == 303
    assert post(f"/admin/outbox/{a}/discard")[0] == 303
    code, body = post(f"/admin/outbox/{a}/discard")
    assert code == 409 and "discarded already" in body
    with sqlite_engine.connect() as conn:
        states = {m.id: m.state for m in _outbox.select(conn)}
    assert (states[a], states[b]) == ("discarded", "pending")
    code, body = get("/admin/users")
    assert code == 200 and "hugo" in body
    assert post("/admin/users/hugo/role", role="admin")[0] == 303
    assert post("/admin/users/hugo/disable")[0] == 303
    code, body = post("/admin/users/root/delete")
    assert code == 409 and "cannot delete yourself" in body
    with sqlite_engine.connect() as conn:
        row = conn.execute(sa.select(users.c.role, users.c.disabled)
                           .where(users.c.username == "hugo")).one()
    assert tuple(row) == ("admin", True)
    # a disabled user is answered like an unknown one
    other = StubTreq(build_root(ctx))
    r = t.successResultOf(other.get("http://admin.test/admin/login"))
    token = csrf_of(t.successResultOf(r.content()))
    r = t.successResultOf(other.post("http://admin.test/admin/login", data={
        "csrf": token, "username": "hugo", "password": "pw-" + "x" * 12}, allow_redirects=False))
    assert r.code == 403 and b"Wrong user name or password" in t.successResultOf(r.content())


def test_mirrorctl_outbox_users_and_backup(engine, tmp_path, capsys):
    url = engine.url.render_as_string(hide_password=False)
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'[database]\nurl = "{url}"\n')
    add_user(engine, "root", role="admin")
    add_user(engine, "hugo", role="helper")
    a, b, _c = _three_mails(engine)
    with engine.begin() as conn:
        store.add_mirror(conn, actor="t", mail=None, country="DE", hostname="a.example.de",
                         http_url="http://a.example.de/")

    def run(*args):
        rc = cli.main(["--config", str(cfg), "--actor", "root", *args])
        out = capsys.readouterr()
        return rc, out.out, out.err
    rc, out, err = run("outbox", "list", "--state", "failed")
    assert rc == 0 and "mail b" in out and "mail a" not in out and "1 failed" in err
    assert run("outbox", "retry", str(b))[1].strip() == f"mail {b}: pending"
    assert run("outbox", "discard", str(a))[1].strip() == f"mail {a}: discarded"
    rc, out, _err = run("outbox", "show", str(b))
    assert rc == 0 and "# envelope: b@example.org" in out and "Subject: mail b" in out
    rc, _out, err = run("outbox", "retry", "999")
    assert rc == 1 and err.strip() == "mirrorctl: error: no mail #999 in the outbox"
    assert [u["username"] for u in json.loads(run("user", "list", "--json")[1])] == ["hugo",
                                                                                      "root"]
    assert run("user", "role", "hugo", "admin")[1].strip() == "user hugo is admin"
    assert run("user", "disable", "hugo")[1].strip() == "user hugo disabled"
    assert run("user", "delete", "hugo")[1].strip() == "user hugo deleted"
    rc, _out, err = run("user", "disable", "root")
    assert rc == 1 and "last admin" in err
    # a backup while the table is in use, and the documented restore
    dest = tmp_path / ("backup.sqlite" if engine.dialect.name == "sqlite" else "backup.dump")
    rc, out, err = run("db", "backup", str(dest))
    assert rc == 0 and dest.stat().st_size > 0 and "to restore:" in err
    rc, _out, err = run("db", "backup", str(dest))
    assert rc == 1 and "exists already" in err                  # never overwrites
    with engine.begin() as conn:
        conn.execute(mirrors.delete())
    if engine.dialect.name == "sqlite":
        engine.dispose()
        live = engine.url.database
        src = sqlite3.connect(dest)
        dst = sqlite3.connect(live)
        src.backup(dst)                       # what `sqlite3 FILE ".restore BACKUP"` does
        src.close()
        dst.close()
    else:
        libpq = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        subprocess.run(["pg_restore", "--clean", "--if-exists", "--no-owner",
                        f"--dbname={libpq}", str(dest)], check=True, capture_output=True)
    restored = make_engine(url)
    upgrade(restored)
    with restored.connect() as conn:
        assert conn.execute(sa.select(mirrors.c.hostname)).scalars().all() == ["a.example.de"]
    restored.dispose()
