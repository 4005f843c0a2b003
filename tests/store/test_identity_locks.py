"""Identity locks (``UnitOfWork.lock``): a large defaulter list locks its 20,000 identities in one transaction,
and a request that locks another identity meanwhile does not wait for it (PostgreSQL; SQLite's transactions
already run one at a time)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work

# SQLite runs one write transaction at a time: nothing to wait for but the writer itself
PG_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
KEYS = [f"Patient|http://bench.example/mrn|m-{i}" for i in range(20_000)]


async def test_twenty_thousand_identities_lock_in_one_transaction(db: Database) -> None:
    async with unit_of_work(db) as uow:
        await uow.lock(KEYS)  # one lock-table lock per key would exhaust max_locks_per_transaction
        await uow.lock(KEYS[:1])  # a key already held: no wait on itself
        if not db.is_sqlite:
            held = await uow.conn.execute(text("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()"))
            assert held.scalar_one() < 100


async def _lock_in_other_transaction(db: Database, keys: list[str], locked: asyncio.Event) -> None:
    async with unit_of_work(db) as uow:
        await uow.lock(keys)
        locked.set()


@PG_ONLY
async def test_a_long_list_holds_its_identities_only(db: Database) -> None:
    """A CHT push (one identity) while a 10,000-defaulter list holds its 20,000: it waits only when it is one of
    them (it waited for every list: the list held all of the 512 hash buckets the keys used to share)."""
    async with unit_of_work(db) as uow:
        await uow.lock(KEYS)
        other, same = asyncio.Event(), asyncio.Event()
        outsider = asyncio.create_task(_lock_in_other_transaction(db, ["Patient|cht|someone-else"], other))
        twin = asyncio.create_task(_lock_in_other_transaction(db, [KEYS[12_345]], same))
        await asyncio.wait_for(other.wait(), 10)  # not held by the list: no wait
        await outsider
        await asyncio.sleep(0.3)
        assert not same.is_set()  # the list's own identity waits for the list
    await asyncio.wait_for(twin, 10)  # ... and goes on once it has committed
    assert same.is_set()


@PG_ONLY
async def test_a_rolled_back_holder_lets_the_waiter_go(db: Database) -> None:
    got = asyncio.Event()
    with pytest.raises(RuntimeError):
        async with unit_of_work(db) as uow:
            await uow.lock(KEYS[:3])
            waiter = asyncio.create_task(_lock_in_other_transaction(db, KEYS[2:4], got))
            await asyncio.sleep(0.3)
            assert not got.is_set()
            raise RuntimeError("the list failed")
    await asyncio.wait_for(waiter, 10)
    assert got.is_set()
