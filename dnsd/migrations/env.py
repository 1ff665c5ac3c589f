"""Alembic environment: runs on the engine handed in by `dnsd.db.upgrade` (or a URL)."""

from alembic import context

from dnsd.models import metadata

config = context.config


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from dnsd.db import make_engine

        engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        context.configure(
            connection=conn,
            target_metadata=metadata,
            render_as_batch=conn.dialect.name == "sqlite",   # SQLite ALTER TABLE goes via batch
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        if conn.in_transaction():
            conn.commit()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `mirrorctl db upgrade`")
run_migrations_online()
