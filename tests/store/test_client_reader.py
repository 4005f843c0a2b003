"""The authentication read at the driver: what it sends to PostgreSQL per request."""

from __future__ import annotations

import pytest

from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # the asyncpg pool is PostgreSQL's
async def test_lookups_send_only_the_lookup(db: Database) -> None:
    """The lookup sets no session state, so releasing its connection sends nothing: no reset query
    (``RESET ALL``, ``UNLISTEN *``…), one round trip per authenticated request instead of two."""
    async with unit_of_work(db) as uow:
        await uow.clients.upsert("reader-a", "pw-reader-a-1", organization_id=None, is_admin=True)
    reader = db.client_reader
    first = await reader.lookup("reader-a")
    assert first is not None and first.client.is_admin
    sent: list[str] = []
    async with reader._pg.acquire() as conn:
        conn.add_query_logger(lambda record: sent.append(record.query))
    sent.clear()  # what the acquire above sent on release does not count
    for _ in range(3):
        assert await reader.lookup("reader-a") is not None
    assert await reader.lookup("nobody") is None
    assert len(sent) == 4, sent
    assert all(q.startswith("SELECT name, password_hash") for q in sent), sent
