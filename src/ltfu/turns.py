"""Turns of the event loop for long CPU work (a 10,000-patient list) so that small requests are served
meanwhile: ``await turn()`` lets the loop run once ``TURN_S`` has passed since the last turn it gave.

The SQLite writer runs its statements on the loop's thread (``store/sqlite_inline.py``): nothing in a long
unit of work waits, so without these turns the loop would be its alone until it commits. A request served
meanwhile needs many turns: a SQLite read sends each of its statements to a reader thread, which first needs
the interpreter lock the long work holds, and comes back. So in a task that runs ``long_work()``, while other
requests are seen running (for ``POLITE_S`` after a turn found the loop busy with them), a turn also waits
``WAIT_S``: the loop runs what is ready, the reader threads get the interpreter lock and their answers are
handled as they come, instead of one step of each request per turn. With nobody else about a turn costs one
loop iteration; in other tasks (a small request's statements) turns never wait.
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar

TURN_S = 0.003  # long work between two turns
WAIT_S = 0.001  # a turn of long work while others run: the loop and its threads are theirs this long (uvloop: ms)
POLITE_S = 0.1  # after a turn that found others running, long work's turns wait, for this long
_BUSY_S = 0.00005  # a loop iteration longer than this ran something else
_last = time.perf_counter()
_polite_until = 0.0
_long: ContextVar[bool] = ContextVar("ltfu_long_work", default=False)


def long_work() -> None:
    """The current task runs long work from here on (a large Bundle, to its response): its turns give way to
    the other requests. Each request runs in a task of its own, so this ends with the request."""
    _long.set(True)


def in_long_work() -> bool:
    """Whether the current task runs long work (its big statements may go to a thread: ``store/driver.py``)."""
    return _long.get()


async def turn() -> None:
    global _last, _polite_until
    now = time.perf_counter()
    if now - _last < TURN_S:
        return
    await asyncio.sleep(0)
    _last = time.perf_counter()
    if _last - now > _BUSY_S:
        _polite_until = _last + POLITE_S
    if _last < _polite_until and _long.get():
        await asyncio.sleep(WAIT_S)
        _last = time.perf_counter()
