"""An ordered lane (one facility's notifications) moves many messages per worker round, still in order.

Claiming only the head of each order key per round capped a facility's notifications at one per round:
the full loop ran at 30 cases/s whatever the concurrency (bench/run.py, 1,000 cases at c=1, 16 and 64).
"""

from __future__ import annotations

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
