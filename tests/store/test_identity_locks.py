"""Identity locks of a large defaulter list fit in PostgreSQL's lock table (a few thousand slots)."""

from __future__ import annotations

from sqlalchemy import text

from ltfu.store.db import Database
from ltfu.store.uow import LOCK_BUCKETS, unit_of_work


async def test_twenty_thousand_identities_lock_in_one_transaction(db: Database) -> None:
    keys = [f"Patient|http://bench.example/mrn|m-{i}" for i in range(20_000)]
    async with unit_of_work(db) as uow:
        await uow.lock(keys)  # one lock per key would exhaust max_locks_per_transaction
        await uow.lock(keys[:1])  # a key already held: no wait on itself
        if not db.is_sqlite:
            held = await uow.conn.execute(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
            )
            assert 0 < held.scalar_one() <= LOCK_BUCKETS
