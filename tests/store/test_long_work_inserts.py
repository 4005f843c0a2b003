"""Long work's large inserts on SQLite run on a thread (``store/driver.py``), in the unit of work's transaction."""

from __future__ import annotations

import asyncio

from sqlalchemy import insert, text

from ltfu import turns
from ltfu.store import driver
from ltfu.store.db import Database
from ltfu.store.driver import compiled
from ltfu.store.schema import search_index
from ltfu.store.uow import unit_of_work


async def _insert_runs(db: Database, runs: int, rows: int) -> None:
    async with unit_of_work(db) as uow:
        assert uow.driver is not None
        c = compiled(insert(search_index), uow.driver.dialect, ["res_type", "res_id", "param", "value"])
        for r in range(runs):
            await uow.driver.execute_many(c, [{"res_type": "Patient", "res_id": f"p{r}-{i}", "param": "given",
                                               "value": "akinyi"} for i in range(rows)])


async def test_many_runs_of_one_insert_on_a_thread_in_one_transaction(db: Database, monkeypatch) -> None:
    """The same INSERT sent again and again from a thread (a defaulter list's index rows): each one's cursor is
    let go of on the thread (kept alive, it held the cached statement and the next send failed: misuse)."""
    sent: list[str] = []
    real = asyncio.to_thread

    async def to_thread(fn, *args, **kw):  # noqa: ANN001, ANN202 - a spy
        sent.append(fn.__name__)
        return await real(fn, *args, **kw)

    monkeypatch.setattr(asyncio, "to_thread", to_thread)

    async def long_list() -> None:
        turns.long_work()
        await _insert_runs(db, 40, driver.THREAD_ROWS)

    await asyncio.create_task(long_list())
    async with db.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM search_index"))).scalar_one() == 40 * driver.THREAD_ROWS
    if db.is_sqlite:
        assert sent.count("_executemany") == 40 and "commit" in sent, sent
