"""The fold of the kept counts (``store/tallies.py``): every ``tally_fold_interval_s`` the deltas the triggers
appended are moved into the totals, so that a count reads a few hundred rows, not every change since start.
Several processes may fold: one at a time folds, the others skip that turn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ltfu.settings import Settings
from ltfu.store import tallies
from ltfu.store.db import Database

log = logging.getLogger("ltfu.tallies")


class TallyFold:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.interval_s = settings.tally_fold_interval_s
        self.last_beat = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.last_beat = time.monotonic()
            try:
                async with self.db.transaction() as conn:
                    await tallies.fold(conn)
            except Exception as exc:  # noqa: BLE001 - the deltas stay (counts stay exact): folded next turn
                log.error("tally fold failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
