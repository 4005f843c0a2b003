"""Shared fixtures: every store test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.schema import metadata
from tests.support import postgres

ADMIN_PASSWORD = "admin-secret-1"
LOOPBACK = "127.0.0.0/8"  # LTFU_CALLBACK_ALLOWED_NETWORKS for tests whose callbacks listen on loopback
_pg_url: str | None = None
_pg_checked = False


def pg_url() -> str | None:
    global _pg_url, _pg_checked
    if not _pg_checked:
        _pg_checked = True
        _pg_url = postgres.create_database()
        if _pg_url is None:
            sys.stderr.write(
                "\n" + "!" * 78 + f"\n!! PostgreSQL unreachable at {postgres.ADMIN_URL}: PostgreSQL tests SKIPPED\n"
                + "!" * 78 + "\n"
            )
    return _pg_url


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _pg_url:
        postgres.drop_database(_pg_url)


def pytest_report_header(config: pytest.Config) -> str:
    return f"PostgreSQL for tests: {postgres.ADMIN_URL} (set LTFU_TEST_PG_URL to change)"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL with an empty schema, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ltfu.db'}"
        return
    url = pg_url()
    if url is None:
        pytest.skip(f"PostgreSQL unreachable at {postgres.ADMIN_URL}")
    yield url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    # Tests register callbacks on loopback: allowed here as an operator would allow a county network.
    return Settings(database_url=db_url, data_dir=tmp_path, admin_password=ADMIN_PASSWORD, workers=False,
                    callback_allowed_networks=LOOPBACK)


async def _truncate(db: Database) -> None:
    if db.is_sqlite:
        return
    async with db.transaction() as conn:
        names = ", ".join(t.name for t in metadata.sorted_tables)
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings)
    await database.upgrade()
    await _truncate(database)
    yield database
    await database.dispose()


class Api:
    """A requests session against a running server, authenticated as the admin client."""

    def __init__(self, url: str) -> None:
        import requests

        self.url = url
        self.session = requests.Session()
        self.session.auth = ("admin", ADMIN_PASSWORD)

    def __getattr__(self, method: str):  # get/post/put/delete with a path
        fn = getattr(self.session, method)
        return lambda path, **kw: fn(self.url + path, timeout=30, **kw)


@pytest.fixture
def server(settings: Settings) -> Iterator[Api]:
    """The real app under uvicorn on a free loopback port, on a fresh database."""
    import asyncio

    from ltfu.api.app import create_app
    from tests.support.server import ServerThread

    async def reset() -> None:
        database = Database(settings)
        await database.upgrade()
        await _truncate(database)
        await database.dispose()

    asyncio.run(reset())
    with ServerThread(create_app(settings)) as srv:
        yield Api(srv.url)
