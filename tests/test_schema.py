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
