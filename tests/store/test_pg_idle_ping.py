"""PostgreSQL: a pooled connection the server dropped is replaced before a unit of work uses it, once it
has sat idle (``db.PING_IDLE_S``); one back from a unit of work a moment ago is not pinged (a ping is
three round trips with asyncpg: BEGIN, a statement, ROLLBACK)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from ltfu.store import db as db_module
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # PostgreSQL's pool


async def _backend_pid(database: Database) -> int:
    async with database.transaction() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_connection_dropped_while_idle_is_replaced(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    first = await _backend_pid(db)
    other = await asyncpg.connect(db.settings.sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:  # the server drops the pooled connection (a restart, an idle timeout)
        assert await other.fetchval("SELECT pg_terminate_backend($1)", first)
    finally:
        await other.close()
    monkeypatch.setattr(db_module, "PING_IDLE_S", 0.0)  # it has sat idle long enough
    async with unit_of_work(db) as uow:
        await uow.resources.create({"resourceType": "Patient", "gender": "female"})
    assert await _backend_pid(db) != first


async def test_a_connection_just_used_is_not_pinged(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    pings: list[Any] = []
    real = db.engine.dialect.do_ping
    monkeypatch.setattr(db.engine.dialect, "do_ping", lambda conn: pings.append(conn) or real(conn))
    monkeypatch.setattr(db_module, "PING_IDLE_S", 3600.0)
    for _ in range(3):
        await _backend_pid(db)
    assert pings == []
    monkeypatch.setattr(db_module, "PING_IDLE_S", 0.0)
    await _backend_pid(db)
    assert len(pings) == 1
