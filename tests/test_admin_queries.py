"""The admin pages' read queries and waiting-list decisions on both databases (SQLite, PostgreSQL)."""

from __future__ import annotations

import datetime as _dt

import pytest

from admin import store
from admin.web import admin_pages, queries
from dnsd.config import Config
from dnsd.models import applications, mirror_health, probe_results, utcnow
from dnsd.outbox import queue_mail
from dnsd.records.maintainers import Maintainer


def _seed(conn):
    a = store.add_mirror(conn, actor="t", mail=None, country="DE", hostname="a.example.de",
                         http_url="http://a.example.de/", maintainers_=["A <a@example.de>"])
    b = store.add_mirror(conn, actor="t", mail=None, country="US", hostname="b.example.com",
                         http_url="http://b.example.com/")
    store.disable(conn, f"#{b.id}", "alice", "broken", None)
    store.add_note(conn, f"#{a.id}", "alice", "one")
    store.add_note(conn, f"#{a.id}", "hugo", "two")
    now = utcnow()
    conn.execute(mirror_health.insert().values(mirror_id=a.id, uptime_7d=0.5, last_probe_at=now,
                                               last_ok_at=now, probed_ipv4="93.184.216.34",
                                               ipv4_up=True,
                                               last_sync_at=now - _dt.timedelta(hours=2)))
    conn.execute(probe_results.insert().values(mirror_id=a.id, at=now, url="http://x/", ok=True))
    queue_mail(conn, kind="admin-mail", sender="s@example.org", to=["a@example.de"], subject="hi",
               body="b", mirror_id=a.id, author="alice", auto=False)
    conn.execute(applications.insert().values(token="tok1", name="Ann", email="ann@example.fr",
                                              country="FR", hostname="m.example.fr",
                                              rsync_url="rsync://m.example.fr/pub/"))
    return a, b


def test_queries_agree_on_both_databases(engine):
    with engine.begin() as conn:
        a, _b = _seed(conn)
    now = utcnow()
    cfg = Config()
    with engine.connect() as conn:
        data = queries.mirror_list(plan=None, cfg=cfg, now=now)(conn)
        assert [g["country"] for g in data["groups"]] == ["DE", "US"]
        assert data["totals"]["active"] == 1 and data["totals"]["disabled-by-admin"] == 1
        assert data["totals"]["serving"] == 1 and data["groups"][0]["serving"] == 1
        de = data["groups"][0]["mirrors"][0]
        assert de.latest_note.text == "two" and de.serving and de.hostname == "a.example.de"
        assert round(de.sync_age) == 7200
        assert de.score.total == data["plan"].by_id[a.id].score     # the plan's own score
        assert queries.mirror_list("US", plan=None, cfg=cfg, now=now)(conn)["shown"] == 1
        page = queries.mirror_page(a.id, plan=None, cfg=cfg, now=now)(conn)
        assert [n.text for n in page.notes] == ["two", "one"]
        assert page.maintainers == (Maintainer("A", "a@example.de"),)
        assert len(page.results) == 1 and page.mails[0]["subject"] == "hi"
        assert {x["action"] for x in page.audit} >= {"add", "note"}
        assert (page.addresses.ipv4, page.addresses.pinned) == ("93.184.216.34", False)
        assert queries.mirror_page(999, plan=None, cfg=cfg, now=now)(conn) is None
        assert queries.sent_mails()(conn)[0]["mirror_name"] == a.name
        mails = admin_pages._mail_audience(conn, "all", None, "")
        assert [(m.mirror_id, bool(m.to)) for m in mails] == [(a.id, True), (_b.id, False)]
        apps = queries.applications_list(plan=None, cfg=cfg, now=now)(conn)
        assert apps["counts"]["new"] == 1 and apps["groups"][0]["country"] == "FR"
    with engine.begin() as conn:
        app_id = conn.execute(applications.select()).first().id
        m = store.accept_application(conn, app_id, "alice", None, None)
        assert (m.name, m.status) == ("fr1", "pending")          # rsync only: pending
        assert m.status_reason.startswith("it has no http or https URL")
        with pytest.raises(store.StoreError):
            store.set_application_status(conn, app_id, "alice", "declined")
    with engine.connect() as conn:
        app = queries.application(app_id, plan=None, cfg=cfg, now=now)(conn)
        assert app["app"].status == "accepted" and app["mirror"]["name"] == "fr1"
        assert app["mirror"]["serving"] is False
