"""The retention sweep: with LTFU_RETENTION_DAYS set, every process that runs workers purges due cases
once at start and then every ``retention_interval_s`` (daily by default). Several processes may
sweep at once: each case is purged under a lock, once."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ltfu.services.retention import purge
from ltfu.settings import Settings
from ltfu.store.db import Database

log = logging.getLogger("ltfu.retention")


class RetentionSweep:
    def __init__(self, db: Database, settings: Settings, days: int) -> None:
        self.db = db
        self.days = days
        self.interval_s = settings.retention_interval_s
        self.runs = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await purge(self.db, self.days)
            except Exception as exc:  # noqa: BLE001 - a failed sweep is retried at the next interval
                log.error("retention sweep failed: %s", type(exc).__name__)
            self.runs += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
