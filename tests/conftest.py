"""Shared fixtures: a fresh table on SQLite and (when MIRRORDNS_TEST_DB_URL is set) PostgreSQL,
a small test geo database built with mmdb-writer, and Debian's Chromium for the browser tests."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from dnsd.db import make_engine, upgrade
from tests.helpers import write_test_mmdb

PG_URL = os.environ.get("MIRRORDNS_TEST_DB_URL", "")


def _fresh(url: str) -> sa.Engine:
    engine = make_engine(url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:          # each test starts from an empty schema
            conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
    upgrade(engine)
    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    """The table, migrated to head, once per database kind."""
    if request.param == "postgresql":
        if not PG_URL:
            pytest.skip("PostgreSQL run needs MIRRORDNS_TEST_DB_URL (CI sets it when 127.0.0.1:5432 answers)")
        url = PG_URL
    else:
        url = f"sqlite:///{tmp_path}/mirrors.sqlite"
    e = _fresh(url)
    yield e
    e.dispose()


@pytest.fixture
def sqlite_engine(tmp_path):
    """The table on a SQLite file only, for tests about something other than the database."""
    e = _fresh(f"sqlite:///{tmp_path}/mirrors.sqlite")
    yield e
    e.dispose()


@pytest.fixture(scope="session")
def test_mmdb(tmp_path_factory):
    path = tmp_path_factory.mktemp("geo") / "test.mmdb"
    write_test_mmdb(str(path))
    return str(path)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium under playwright, once per module (tests/browser_support.py)."""
    from playwright.sync_api import sync_playwright

    from tests.browser_support import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh browser context and page per test."""
    from tests.browser_support import VIEWPORT

    ctx = browser.new_context(viewport=VIEWPORT)
    pg = ctx.new_page()
    pg.set_default_timeout(15000)
    yield pg
    ctx.close()
