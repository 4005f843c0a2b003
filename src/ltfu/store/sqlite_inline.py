"""SQLite statements run on the event loop's own thread, behind aiosqlite's interface.

aiosqlite sends every statement to a thread of its own and waits for the answer: a queue hand-off
and two switches of the interpreter lock per statement, most of a small request's time in the
profile. SQLite's statements take microseconds (the database is a local file in WAL mode, and a
commit does not sync it), so here they run where they are awaited — with one exception: ``BEGIN
IMMEDIATE`` may wait up to ``busy_timeout`` for another process's writer (``ltfu worker``, the CLI),
so it is first tried without waiting and goes to a worker thread only when the lock is taken. No
thread hop while this process is the only writer.

The price: while SQLite waits for the disk (a commit's WAL write, now and then a checkpoint) the event
loop waits too. On a fast local disk that is microseconds and this halves the CPU of a small write
request; on a slow or shared disk the stalls cost more than the hops (measured on the shared bench
machine: half the CPU per request, a third of the rate). Hence opt-in: ``LTFU_SQLITE_INLINE_WRITES``.
(Handing only the commit to a thread was tried: the two threads then fight over the interpreter lock.)

SQLAlchemy's aiosqlite dialect drives these objects through ``create_async_engine(async_creator=...)``;
they implement exactly the part of aiosqlite's API it uses.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

_WAITS_FOR_LOCK = ("BEGIN IMMEDIATE", "BEGIN EXCLUSIVE")


class InlineCursor:
    def __init__(self, cursor: sqlite3.Cursor, owner: InlineConnection) -> None:
        self._cursor = cursor
        self._owner = owner
        self._busy_timeout_ms = owner.busy_timeout_ms

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        if not sql.lstrip().upper().startswith(_WAITS_FOR_LOCK):
            self._cursor.execute(sql, parameters)
            return self
        conn = self._cursor.connection
        conn.execute("PRAGMA busy_timeout=0")
        try:
            self._cursor.execute(sql, parameters)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            await asyncio.to_thread(self._cursor.execute, sql, parameters)  # another process writes: wait there
        finally:
            conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        return self

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> InlineCursor:
        self._cursor.executemany(sql, seq_of_parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size) if size is not None else self._cursor.fetchmany()

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class _Immediate:
    """Stands in for aiosqlite's request queue: the dialect sets isolation_level through it."""

    @staticmethod
    def put_nowait(item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting caller, as aiosqlite does
            future.set_exception(exc)


class InlineConnection:
    def __init__(self, conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
        self._conn = conn
        self.busy_timeout_ms = busy_timeout_ms
        self._tx = _Immediate()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._conn.isolation_level = value

    async def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor(), self)

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        return await InlineCursor(self._conn.cursor(), self).execute(sql, parameters)

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self._conn.create_function(*args, **kw)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    def stop(self) -> None:
        self._conn.close()


def creator(path: str, busy_timeout_ms: int) -> Callable[[], Any]:
    """``async_creator`` for ``create_async_engine``: a fresh inline connection to ``path``."""

    async def connect() -> InlineConnection:
        # Used from the loop's thread and, for a contended BEGIN IMMEDIATE, from a worker thread: never
        # both at once (the pool hands a connection to one unit of work at a time).
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        return InlineConnection(conn, busy_timeout_ms)

    return connect
