"""SQLite statements run on the event loop's own thread, behind aiosqlite's interface.

aiosqlite sends every statement to a thread of its own and waits for the answer: a queue hand-off
and two switches of the interpreter lock per statement, most of a small request's time in the
profile. SQLite's statements take microseconds (the database is a local file in WAL mode, and a
commit does not sync it), so here they run where they are awaited — with one exception: ``BEGIN
IMMEDIATE`` may wait up to ``busy_timeout`` for another process's writer (``ltfu worker``, the CLI),
so it is first tried without waiting and goes to a worker thread only when the lock is taken. No
thread hop while this process is the only writer.

The price: while SQLite waits for the disk the event loop waits too. A commit in WAL mode with
``synchronous=NORMAL`` does not sync: it appends to the WAL file (the page cache, microseconds). What does
sync is a checkpoint (the WAL copied back into the database file, fsync'd), which SQLite by default runs
inside the commit that crosses 1,000 pages — on the loop, stalling every request for as long as the disk
takes (on a shared disk, tens of milliseconds). So the inline writer never checkpoints itself
(``wal_autocheckpoint=0``): a ``Checkpointer`` thread with its own connection runs a PASSIVE checkpoint
(it never blocks the writer nor the readers) once the WAL has grown past ``CHECKPOINT_BYTES``. A checkpoint
does not shrink the WAL file (the next writer starts over at its beginning), so the writer keeps a
``journal_size_limit`` below that threshold: SQLite truncates the file when it starts over, and the size
that wakes the thread is again the size of what was written since (without it, every commit after the first
4 MiB woke a checkpoint: a checkpoint thread busy all the time, each commit paying for the wake-up). The
default writer since issue 14 (``LTFU_SQLITE_INLINE_WRITES``, on by default).
(Handing only the commit to a thread was tried: the two threads then fight over the interpreter lock.)

SQLAlchemy's aiosqlite dialect drives these objects through ``create_async_engine(async_creator=...)``;
they implement exactly the part of aiosqlite's API it uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ltfu.turns import in_long_work, turn

_WAITS_FOR_LOCK = ("BEGIN IMMEDIATE", "BEGIN EXCLUSIVE")
CHECKPOINT_BYTES = 4 * 1024 * 1024  # about SQLite's own threshold (1,000 pages of 4 KiB)


class Checkpointer:
    """Copies the WAL back into the database file on a thread of its own (PASSIVE: waits for nobody).

    ``maybe()`` is called after each commit of the inline writer: a ``stat`` of the WAL file, and a wake-up
    of the thread when it has grown past ``CHECKPOINT_BYTES``.
    """

    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self.path = path
        self.wal = path + "-wal"
        self.busy_timeout_ms = busy_timeout_ms
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.runs = 0

    def maybe(self) -> None:
        try:
            size = os.stat(self.wal).st_size
        except OSError:
            return
        if size >= CHECKPOINT_BYTES and not self._wake.is_set():
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ltfu-sqlite-checkpoint", daemon=True)
                self._thread.start()
            self._wake.set()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            while not self._stop:
                self._wake.wait()
                if self._stop:
                    break
                with contextlib.suppress(sqlite3.Error):  # a busy checkpoint is retried after the next commit
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.runs += 1
                self._wake.clear()
        finally:
            conn.close()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


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
            await self._owner.turn()
            return self
        await _begin(self._cursor.connection, self._cursor.execute, sql, parameters, self._busy_timeout_ms)
        return self

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Any]) -> InlineCursor:
        self._cursor.executemany(sql, seq_of_parameters)
        await self._owner.turn()
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size) if size is not None else self._cursor.fetchmany()

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


async def _begin(conn: sqlite3.Connection, execute: Callable[..., Any], sql: str, parameters: Any,
                 busy_timeout_ms: int) -> None:
    """A statement that may wait for another process's writer: tried at once, else on a worker thread."""
    conn.execute("PRAGMA busy_timeout=0")
    try:
        execute(sql, parameters)
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        await asyncio.to_thread(execute, sql, parameters)  # another process writes: wait there
    finally:
        conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")


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
    def __init__(self, conn: sqlite3.Connection, busy_timeout_ms: int,
                 checkpointer: Checkpointer | None = None) -> None:
        self._conn = conn
        self.busy_timeout_ms = busy_timeout_ms
        self._tx = _Immediate()
        self._checkpointer = checkpointer
        if checkpointer is not None:
            conn.execute("PRAGMA wal_autocheckpoint=0")  # never inside a commit on the loop: see Checkpointer
            conn.execute(f"PRAGMA journal_size_limit={CHECKPOINT_BYTES // 4}")  # a reset WAL is small again

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

    async def begin_immediate(self) -> None:
        """``BEGIN IMMEDIATE`` straight on the connection (the engine's begin event, without a statement
        through SQLAlchemy's execution machinery)."""
        await _begin(self._conn, self._conn.execute, "BEGIN IMMEDIATE", (), self.busy_timeout_ms)

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self._conn.create_function(*args, **kw)

    async def turn(self) -> None:
        """Statements run here never wait, so a long unit of work (a 10,000-patient list) would keep the
        event loop to itself: let it turn now and then (``ltfu.turns``)."""
        await turn()

    @property
    def sqlite(self) -> sqlite3.Connection:
        """The driver's connection, for statements run directly on it (same thread, same transaction)."""
        return self._conn

    async def commit(self) -> None:
        if in_long_work():  # tenths of a second of pages written to the WAL (a large Bundle): the loop goes on
            await asyncio.to_thread(self._conn.commit)
        else:
            self._conn.commit()
        if self._checkpointer is not None:
            self._checkpointer.maybe()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    def stop(self) -> None:
        self._conn.close()


def creator(path: str, busy_timeout_ms: int, checkpointer: Checkpointer | None = None) -> Callable[[], Any]:
    """``async_creator`` for ``create_async_engine``: a fresh inline connection to ``path``."""

    async def connect() -> InlineConnection:
        # Used from the loop's thread and, for a contended BEGIN IMMEDIATE, from a worker thread: never
        # both at once (the pool hands a connection to one unit of work at a time).
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        return InlineConnection(conn, busy_timeout_ms, checkpointer)

    return connect
