"""The migrations and the models describe the same schema, on every database the tests get."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from dnsd import models


def test_migrations_match_models(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), models.metadata)
    assert diff == [], f"dnsd/models.py and the migrations differ: {diff}"


def test_version_bumps_in_the_callers_transaction(engine):
    with engine.begin() as conn:
        v0 = models.current_version(conn)
        assert models.bump_version(conn) == v0 + 1
    try:
        with engine.begin() as conn:
            models.bump_version(conn)
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    with engine.connect() as conn:
        assert models.current_version(conn) == v0 + 1


# --- the migration policy (docs/migrations.md) -----------------------------------------------------

FROZEN = {"0001": "e4a44d628e75b96e6911b481239bb8f7b939a90dc08aca44e53824f1e6cc95cc"}


def test_released_migrations_are_frozen():
    """0001 is the released schema: it is never regenerated or edited; changes are new revisions."""
    import hashlib
    from pathlib import Path

    versions = Path(models.__file__).parent / "migrations" / "versions"
    for rev, digest in FROZEN.items():
        (path,) = versions.glob(f"{rev}_*.py")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, (
            f"{path.name} changed: released migrations are frozen; add a new revision instead")


def test_one_head_in_a_line():
    from alembic.script import ScriptDirectory

    from dnsd.db import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1
    revs = list(script.walk_revisions())
    assert [r.down_revision for r in revs][-1] is None and all(
        r.down_revision for r in revs[:-1])                      # linear, back to 0001


def _engines_at(tmp_path, revision: str):
    """A fresh table at `revision` on SQLite, and on PostgreSQL when MIRRORDNS_TEST_DB_URL is set."""
    import os

    from dnsd.db import make_engine, upgrade

    for url in [f"sqlite:///{tmp_path}/old.sqlite", os.environ.get("MIRRORDNS_TEST_DB_URL", "")]:
        if not url:
            continue
        engine = make_engine(url)
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
                conn.exec_driver_sql("CREATE SCHEMA public")
        upgrade(engine, revision)
        yield engine


def test_upgrading_a_populated_table_keeps_everything(tmp_path):
    """A table as 0001 left it, with rows in it, upgraded to the head: nothing lost, the new
    columns take their defaults, existing applicants become their offer's first maintainer,
    the audit keeps its actors."""
    import datetime as dt

    import sqlalchemy as sa

    from dnsd.db import upgrade

    for engine in _engines_at(tmp_path, "0001"):
        now = dt.datetime(2026, 11, 1, 12, 0)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO mirrors (id, name, hostname, country, ipv4, http_url, provider_name,"
                " provider_url, provider_logo, status, status_reason, status_since, backup, "
                "weight, has_ipv6, has_https, source, created_at, updated_at) VALUES (1, 'de1', "
                "'m.example.de', 'DE', '192.0.2.1', 'http://m.example.de/', '', '', '', "
                "'active', '', %s, false, 1.0, false, false, '', %s, %s)"
                .replace("%s", "'2026-11-01 12:00:00'"))
            conn.exec_driver_sql(
                "INSERT INTO mirror_health (mirror_id, failures_in_row, passes_in_row, "
                "last_error, geo_check, updated_at, ipv4_up) VALUES (1, 0, 4, '', '', "
                "'2026-11-01 12:00:00', true)")
            conn.exec_driver_sql(
                "INSERT INTO applications (id, token, status, name, email, country, hostname, "
                "provider_name, provider_url, has_ipv6, has_https, comments, source_ip, "
                "created_at, updated_at, confirmed_at) VALUES (1, 'tok', 'new', 'Doe, Jane', "
                "'jane@example.org', 'FR', 'm.example.fr', '', '', false, false, '', '', "
                "'2026-11-01 12:00:00', '2026-11-01 12:00:00', '2026-11-01 12:00:00')")
            conn.exec_driver_sql(
                "INSERT INTO users (id, username, password_hash, role, email, failed_logins, "
                "created_at) VALUES (1, 'root', '$argon2id$x', 'admin', '', 0, "
                "'2026-11-01 12:00:00')")
            conn.exec_driver_sql(
                "INSERT INTO audit (at, actor, mirror_id, action, before, after) VALUES "
                "('2026-11-01 12:00:00', 'root', 1, 'edit', '', '{}')")
            conn.exec_driver_sql(
                "INSERT INTO outbox (id, created_at, kind, author, recipients, message, subject, "
                "attempts, next_attempt_at, failed, last_error) VALUES (1, '2026-11-01 12:00:00',"
                " 'test', '', 'a@example.org', %s, 's', 0, '2026-11-01 12:00:00', false, '')"
                .replace("%s", "x'41'" if engine.dialect.name == "sqlite" else "'\\x41'::bytea"))
        upgrade(engine)
        with engine.connect() as conn:
            m = conn.execute(sa.select(models.mirrors)).one()
            assert (m.name, m.ipv4, m.status_since) == ("de1", "192.0.2.1", now)
            h = conn.execute(sa.select(models.mirror_health)).one()
            assert (h.passes_in_row, h.ipv4_up, h.probed_ipv4) == (4, True, None)
            a = conn.execute(sa.select(models.applications)).one()
            assert (a.name, a.http_url, a.ipv4) == ("Doe, Jane", None, None)
            people = conn.execute(sa.select(models.application_maintainers.c.name,
                                            models.application_maintainers.c.email)).all()
            assert [tuple(p) for p in people] == [("Doe, Jane", "jane@example.org")]
            assert conn.execute(sa.select(models.users.c.disabled)).scalar_one() is False
            o = conn.execute(sa.select(models.outbox)).one()
            assert (o.discarded_at, bytes(o.message)) == (None, b"A")
            assert (o.claimed_by, o.claimed_until) == (None, None)      # 0002: free to claim
            # 0004: the agreed counters stay in mirror_health; each vantage starts its own view
            assert conn.execute(sa.select(sa.func.count()).select_from(
                models.vantage_health)).scalar() == 0
            # 0005: no mirror is in maintenance until somebody plans a window
            assert conn.execute(sa.select(sa.func.count()).select_from(
                models.maintenance_windows)).scalar() == 0
            # 0006: no probe requested yet
            assert conn.execute(sa.select(sa.func.count()).select_from(
                models.probe_requests)).scalar() == 0
            # 0007: the audit keeps its actor (the column only grew)
            assert conn.execute(sa.select(models.audit.c.actor)).scalar_one() == "root"
            assert conn.execute(sa.select(sa.func.count()).select_from(
                models.login_links)).scalar() == 0
            # 0008: no report, no day key
            for t in (models.mirror_reports, models.report_keys, models.report_mails):
                assert conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() == 0
        from admin import store
        with engine.begin() as conn:                             # ... and the old mirror can
            w = store.plan_maintenance(conn, "de1", "root", starts_at=now + dt.timedelta(days=1),
                                       ends_at=now + dt.timedelta(days=1, hours=1),
                                       reason="disks", now=now)
            assert w.mirror_id == 1                              # have one
        with engine.connect() as conn:                           # the models match the head
            from alembic.autogenerate import compare_metadata
            from alembic.migration import MigrationContext
            assert compare_metadata(MigrationContext.configure(conn), models.metadata) == []
        engine.dispose()


def test_0007_keeps_the_users_sessions(tmp_path):
    """Sessions open when 0007 runs stay their users' and valid (it only adds the maintainers'
    kind beside them)."""

    import sqlalchemy as sa

    from dnsd.db import upgrade

    for engine in _engines_at(tmp_path, "0006"):
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO users (id, username, password_hash, role, email, failed_logins, "
                "created_at, disabled) VALUES (1, 'root', '$argon2id$x', 'admin', '', 0, "
                "'2026-11-01 12:00:00', false)")
            conn.exec_driver_sql(
                "INSERT INTO sessions (id, user_id, csrf, created_at, expires_at) VALUES "
                "('s1', 1, 'c', '2026-11-01 12:00:00', '2026-11-01 13:00:00')")
        upgrade(engine)
        with engine.connect() as conn:
            s = conn.execute(sa.select(models.sessions)).one()
            assert (s.id, s.user_id, s.maintainer_email, s.csrf) == ("s1", 1, None, "c")
        engine.dispose()
