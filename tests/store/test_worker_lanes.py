"""An ordered lane (one facility's notifications) moves many messages per worker round, still in order.

Claiming only the head of each order key per round capped a facility's notifications at one per round:
the full loop ran at 30 cases/s whatever the concurrency (bench/run.py, 1,000 cases at c=1, 16 and 64).
"""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from ltfu.delivery.attempt import Attempt, Handler
from ltfu.delivery.retry import Verdict
from ltfu.delivery.worker import Worker
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.outbox import OutboxRow
from ltfu.store.schema import outbox
from ltfu.store.uow import unit_of_work


class Recorder(Handler):
    destination = "notify"

    def __init__(self, fail: set[int] | None = None) -> None:
        self.sent: list[int] = []
        self.fail = fail or set()

    async def send(self, row: OutboxRow) -> Attempt:
        self.sent.append(row.payload["n"])
        if row.payload["n"] in self.fail:
            return Attempt(Verdict.RETRY, status_code=503, error="busy")
        return Attempt(Verdict.OK, status_code=200)


async def _queue(db: Database, lane: str, numbers: range) -> None:
    async with unit_of_work(db) as uow:
        for n in numbers:
            await uow.outbox.enqueue("notify", "event", lane, {"n": n})


async def _statuses(db: Database) -> dict[int, str]:
    async with db.transaction() as conn:
        rows = await conn.execute(select(outbox.c.payload, outbox.c.status))
        return {int(p.split(":")[1].strip(" }")): s for p, s in rows}


async def test_a_lane_drains_in_order_in_one_round(db: Database, settings: Settings) -> None:
    await _queue(db, "sub:a", range(1, 7))
    await _queue(db, "sub:b", range(101, 103))
    recorder = Recorder()
    assert await Worker(db, settings, [recorder]).run_once()
    assert [n for n in recorder.sent if n < 100] == [1, 2, 3, 4, 5, 6]
    assert [n for n in recorder.sent if n > 100] == [101, 102]
    assert set((await _statuses(db)).values()) == {"done"}


async def test_a_failed_message_stops_its_lane_only(db: Database, settings: Settings) -> None:
    await _queue(db, "sub:a", range(1, 5))
    await _queue(db, "sub:b", range(101, 104))
    recorder = Recorder(fail={2})
    await Worker(db, settings, [recorder]).run_once()
    assert [n for n in recorder.sent if n < 100] == [1, 2]  # 3 waits behind 2's retry
    assert [n for n in recorder.sent if n > 100] == [101, 102, 103]
    statuses = await _statuses(db)
    assert (statuses[1], statuses[2], statuses[3], statuses[4]) == ("done", "pending", "pending", "pending")


async def test_a_lane_longer_than_the_batch_goes_on_next_round(db: Database, settings: Settings) -> None:
    await _queue(db, "sub:a", range(1, 11))
    recorder = Recorder()
    worker = Worker(db, settings, [recorder], batch=4)
    await worker.run_once()
    assert recorder.sent == [1, 2, 3, 4]
    await worker.run_once()  # nothing of the lane was left leased by the first round
    assert recorder.sent == [1, 2, 3, 4, 5, 6, 7, 8]


class GroupRecorder(Recorder):
    """Sends a lane's due messages in one call, up to ``limit`` (as the notifier does with events)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.calls: list[list[int]] = []

    def group_limit(self, row: OutboxRow) -> int:
        return self.limit

    async def send(self, row: OutboxRow) -> Attempt:
        return await self.send_group([row])

    async def send_group(self, rows: list[OutboxRow]) -> Attempt:
        self.calls.append([r.payload["n"] for r in rows])
        return Attempt(Verdict.OK, status_code=200)


async def test_a_lane_goes_in_groups_in_order(db: Database, settings: Settings) -> None:
    await _queue(db, "sub:a", range(1, 8))
    recorder = GroupRecorder(limit=3)
    assert await Worker(db, settings, [recorder]).run_once()
    assert recorder.calls == [[1, 2, 3], [4, 5, 6], [7]]
    assert set((await _statuses(db)).values()) == {"done"}


async def test_a_group_stops_at_a_message_that_is_not_due(db: Database, settings: Settings) -> None:
    await _queue(db, "sub:a", range(1, 3))
    async with unit_of_work(db) as uow:
        await uow.outbox.enqueue("notify", "event", "sub:a", {"n": 3}, delay_s=3600)
    await _queue(db, "sub:a", range(4, 6))
    recorder = GroupRecorder(limit=10)
    await Worker(db, settings, [recorder]).run_once()
    assert recorder.calls == [[1, 2]]  # 4 and 5 wait behind 3: order before grouping
    statuses = await _statuses(db)
    assert [statuses[n] for n in range(1, 6)] == ["done", "done", "pending", "pending", "pending"]


async def test_a_failed_group_is_retried_whole(db: Database, settings: Settings) -> None:
    await _queue(db, "sub:a", range(1, 4))

    class Failing(GroupRecorder):
        async def send_group(self, rows: list[OutboxRow]) -> Attempt:
            await super().send_group(rows)
            return Attempt(Verdict.RETRY, status_code=503, error="busy")

    recorder = Failing(limit=10)
    await Worker(db, settings, [recorder]).run_once()
    assert recorder.calls == [[1, 2, 3]]
    async with db.transaction() as conn:
        rows = (await conn.execute(select(outbox.c.status, outbox.c.attempts, outbox.c.lease_owner))).all()
    assert [tuple(r) for r in rows] == [("pending", 1, None)] * 3  # each one attempt, none left leased


async def test_deliveries_in_flight_stay_within_the_concurrency(db: Database, settings: Settings) -> None:
    """Every lane is its own delivery; at most ``concurrency`` run at once, the rest wait for a free slot."""
    for lane in range(6):
        await _queue(db, f"case:{lane}", range(lane * 10 + 1, lane * 10 + 2))
    gate = asyncio.Event()

    class Slow(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.in_flight = self.most = 0

        async def send(self, row: OutboxRow) -> Attempt:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            await gate.wait()
            self.in_flight -= 1
            return await super().send(row)

    slow = Slow()
    worker = Worker(db, settings, [slow], concurrency=2)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    for _ in range(500):  # until two are in flight (no time asserted)
        if slow.in_flight == 2:
            break
        await asyncio.sleep(0.01)
    gate.set()
    for _ in range(500):
        if len(slow.sent) == 6:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert slow.most == 2 and sorted(slow.sent) == [1, 11, 21, 31, 41, 51]
    assert set((await _statuses(db)).values()) == {"done"}
