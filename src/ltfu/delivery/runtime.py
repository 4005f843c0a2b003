"""Background work of a process: delivery workers and the expiry sweeper, started and stopped together."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ltfu.delivery.attempt import Handler
from ltfu.delivery.cht_submitter import ChtSubmitter
from ltfu.delivery.cht_sync import ChtSync
from ltfu.delivery.notifier import Notifier
from ltfu.delivery.retention_sweep import RetentionSweep
from ltfu.delivery.tally_fold import TallyFold
from ltfu.delivery.worker import Sweeper, Worker
from ltfu.settings import Settings
from ltfu.store.db import Database


class Runtime:
    def __init__(self, db: Database, settings: Settings) -> None:
        handlers: list[Handler] = [Notifier(db, settings)]
        if settings.cht_url:
            handlers.append(ChtSubmitter(db, settings))
        self.worker = Worker(db, settings, handlers)
        self.sweeper = Sweeper(db, settings)
        self.tally_fold = TallyFold(db, settings)
        self.cht_sync = ChtSync(db, settings) if settings.cht_url and settings.cht_sync_enabled else None
        days = settings.retention_days
        self.retention = RetentionSweep(db, settings, days) if days else None
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []
        self.settings = settings

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self.worker.run(self.stop), name="ltfu-worker"),
                      asyncio.create_task(self.sweeper.run(self.stop), name="ltfu-sweeper"),
                      asyncio.create_task(self.tally_fold.run(self.stop), name="ltfu-tally-fold")]
        if self.cht_sync is not None:
            self.tasks.append(asyncio.create_task(self.cht_sync.run(self.stop), name="ltfu-cht-sync"))
        if self.retention is not None:
            self.tasks.append(asyncio.create_task(self.retention.run(self.stop), name="ltfu-retention"))

    def nudge(self) -> None:
        """New work was committed: let the worker look now rather than at its next poll."""
        self.worker.wake.set()

    async def close(self) -> None:
        self.stop.set()
        self.worker.wake.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def readiness(self) -> dict[str, str]:
        now = time.monotonic()
        stale = max(30.0, self.settings.poll_interval_s * 10)
        alive = bool(self.tasks) and all(not t.done() for t in self.tasks)
        fresh = now - self.worker.last_beat < stale + self.settings.delivery_timeout_s * 2
        return {"workers": "running" if alive and fresh else "down"}
