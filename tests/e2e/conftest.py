"""End-to-end fixtures: a database URL per backend for the real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import pg_url
from tests.support import postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def e2e_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database for the processes of one test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ltfu.db'}"
        return
    if pg_url() is None:
        pytest.skip(f"PostgreSQL unreachable at {postgres.ADMIN_URL}")
    url = postgres.create_database()
    assert url is not None
    yield url
    postgres.drop_database(url)
