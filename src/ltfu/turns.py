"""Turns of the event loop for long CPU work (a 10,000-patient list) so that small requests are served
meanwhile: ``await turn()`` lets the loop run once ``TURN_S`` has passed since the last turn it gave.

The SQLite writer runs its statements on the loop's thread (``store/sqlite_inline.py``): nothing in a long
unit of work waits, so without these turns the loop would be its alone until it commits. A read served
meanwhile needs several turns (its statements go to a reader thread and come back), hence a short period.
"""

from __future__ import annotations

import asyncio
import time

TURN_S = 0.005
_last = time.perf_counter()


async def turn() -> None:
    global _last
    now = time.perf_counter()
    if now - _last >= TURN_S:
        await asyncio.sleep(0)
        _last = time.perf_counter()
