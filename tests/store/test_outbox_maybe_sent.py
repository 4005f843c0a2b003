"""A row that may have left the building is known as such, from the claim on (SQLite and PostgreSQL).

A worker killed mid-send records nothing; the next claim must still say "maybe sent", a cancel must
not drop it (CHT may have the follow-up), and a replay must not forget it.
"""

from __future__ import annotations

from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work


async def _enqueue(db: Database, key: str = "case:c1") -> int:
    async with unit_of_work(db) as uow:
        row_id = await uow.outbox.enqueue("cht", "follow-up", key, {"case_id": key}, case_id=key)
    assert row_id is not None
    return row_id


async def _claim(db: Database, worker: str) -> list:
    async with unit_of_work(db) as uow:
        return await uow.outbox.claim(worker, 10, 60, ("cht",))


async def test_a_claim_taken_by_a_worker_that_died_is_maybe_sent_on_the_next(db: Database) -> None:
    row_id = await _enqueue(db)
    (first,) = await _claim(db, "host:1:a")
    assert first.id == row_id and not first.maybe_sent and first.attempts == 0
    async with unit_of_work(db) as uow:  # the worker died mid-send: no attempt recorded, lease freed
        await uow.outbox.release("host:1:a")
    (second,) = await _claim(db, "host:2:b")
    assert second.id == row_id and second.attempts == 0
    assert second.maybe_sent, "an earlier try may have reached the receiver"


async def test_cancel_keeps_a_follow_up_that_may_have_been_sent_and_drops_one_never_taken(db: Database) -> None:
    taken, untouched = await _enqueue(db, "case:t"), await _enqueue(db, "case:u")
    async with unit_of_work(db) as uow:
        rows = await uow.outbox.claim("host:1:a", 1, 60, ("cht",))
        assert [r.id for r in rows] == [taken]
        await uow.outbox.release("host:1:a")
    async with unit_of_work(db) as uow:
        assert await uow.outbox.cancel_pending("case:t", "follow-up") == 0, "it may be in CHT: send a cancel"
        assert await uow.outbox.cancel_pending("case:u", "follow-up") == 1
        pending = {r.id for r in await uow.outbox.list(status="pending")}
    assert pending == {taken} and untouched not in pending


async def test_replay_of_a_dead_row_remembers_it_may_have_been_sent(db: Database) -> None:
    row_id = await _enqueue(db)
    await _claim(db, "host:1:a")
    async with unit_of_work(db) as uow:
        await uow.outbox.dead(row_id, "CHT answered 400")
        assert await uow.outbox.replay(row_id=row_id) == 1
    (again,) = await _claim(db, "host:1:b")
    assert again.id == row_id and again.attempts == 0 and again.maybe_sent


async def test_a_dead_workers_row_waits_out_what_it_may_still_have_in_flight(db: Database) -> None:
    """Another process releasing a just-killed worker's lease must not re-send while CHT may still be
    processing the orphaned request (it would not find that record yet, and create a second)."""
    row_id = await _enqueue(db)
    await _claim(db, "host:1:a")
    async with unit_of_work(db) as uow:
        assert await uow.outbox.release("host:1:a", grace_s=60) == 1
    assert await _claim(db, "host:2:b") == [], "not before the orphaned request has surely ended"
    async with unit_of_work(db) as uow:
        assert await uow.outbox.lease_owners("host:") == []  # released once, not pushed back again
        await uow.outbox.retry_later(row_id, 0, "test: time has passed")
    (again,) = await _claim(db, "host:2:b")
    assert again.id == row_id and again.maybe_sent
