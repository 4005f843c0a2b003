"""Group commit for the inline SQLite writer: concurrent units of work share one transaction and one COMMIT.

SQLite has one writer, so units of work run one after the other anyway; what each pays on its own is
the transaction around it: taking the writer connection, ``BEGIN IMMEDIATE``, and the ``COMMIT`` that writes
every page the transaction touched to the WAL (a few hundred microseconds: most of a new case's database
time). Here the units of work that are ready at the same moment run back to back in one transaction, each
inside a SAVEPOINT of its own, and one COMMIT ends them all:

- all or nothing per unit of work: one that fails is rolled back to its savepoint; the others stay (a
  member's savepoint is never released: savepoints nest, ``ROLLBACK TO`` undoes the latest of the name,
  which is the running member's, and COMMIT ends them all);
- nobody is answered before the shared COMMIT has returned: a unit of work's ``async with`` ends only
  then, and re-raises the COMMIT's failure if it failed (then every member failed: none was answered);
- order: members run one at a time in the order they took the writer, and commit together; what one
  wrote is what the next one reads (same transaction), as it would be after a commit of its own;
- the commit is not held back: it is queued as soon as the first member is done, behind the requests that
  are ready to run at that moment (the loop's ready queue), and never waits for a timer.

A long unit of work (a defaulter list) would keep the members before it waiting until it ends: it asks for
a transaction of its own first (``alone``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

_SAVEPOINT = "ltfu_member"
MAX_MEMBERS = 64  # a group commits once this many units of work are in it, whoever is still waiting


class _Group:
    """One shared transaction on the writer connection."""

    def __init__(self, conn: AsyncConnection, sqlite: sqlite3.Connection) -> None:
        self.conn = conn
        self.sqlite = sqlite
        self.members = 0  # units of work done and waiting for the COMMIT
        self.solo = False  # a unit of work that asked to be alone: committed when it ends
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queued = False  # its commit is queued


class GroupCommit:
    """The writer's units of work, several to a transaction (``transaction`` stands in for ``engine.begin``).

    The first member of a group needs no savepoint (its failure rolls back a transaction that holds nothing
    else); the next ones each run inside one. ``listeners`` hear the savepoint statements (the
    statement-count guard), as they hear ``BEGIN IMMEDIATE``."""

    def __init__(self, engine: AsyncEngine, listeners: list[Callable[[str], None]]) -> None:
        self._engine = engine
        self._listeners = listeners
        self._lock = asyncio.Lock()  # one unit of work (or the commit) on the writer connection at a time
        self._loop: asyncio.AbstractEventLoop | None = None
        self._group: _Group | None = None
        self._nested = False  # the running unit of work is inside a savepoint
        self.commits = 0  # COMMITs sent (tests, benches)
        self._tasks: set[asyncio.Task[None]] = set()  # queued commits (held: the loop keeps weak references)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a Database used from a new event loop (tests, the CLI): a fresh lock
            self._loop, self._lock, self._group = loop, asyncio.Lock(), None
        async with self._lock:
            group = self._group or await self._open()
            self._nested = group.members > 0
            if self._nested:
                self._run(group, f"SAVEPOINT {_SAVEPOINT}")
            try:
                yield group.conn
            except BaseException:
                await self._undo(self._group or group)  # ``alone`` may have given it a group of its own
                raise
            group = self._group or group
            group.members += 1  # its savepoint stays (savepoints nest; COMMIT ends them all): no RELEASE sent
            if group.solo or group.members >= MAX_MEMBERS:
                await self._commit(group)
            elif not group.queued:
                group.queued = True
                task = loop.create_task(self._commit_when_free(group))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        await asyncio.shield(group.done)

    async def alone(self, conn: AsyncConnection) -> None:
        """Commit the group before the calling unit of work (which has written nothing yet) and run it in a
        transaction of its own, committed when it ends: a long one keeps nobody before it waiting."""
        group = self._group
        if group is None or group.conn is not conn or group.solo:
            return
        if group.members == 0:  # it is the first: the group is its own
            group.solo = True
            return
        changes = group.sqlite.total_changes
        await self._commit(group)
        own = await self._open()
        own.solo = True
        self._nested = False
        if own.sqlite.total_changes != changes:
            raise RuntimeError("alone() is for a unit of work that has written nothing yet")

    def _run(self, group: _Group, sql: str) -> None:
        for listener in self._listeners:
            listener(sql)
        group.sqlite.execute(sql)

    async def _open(self) -> _Group:
        conn = await self._engine.connect()
        try:
            await conn.begin()  # BEGIN IMMEDIATE (the engine's begin event)
            raw = (await conn.get_raw_connection()).driver_connection
            group = _Group(conn, raw.sqlite)
        except BaseException:
            await conn.close()
            raise
        self._group = group
        return group

    async def _undo(self, group: _Group) -> None:
        """The running unit of work failed: only its own work goes."""
        if not self._nested:  # the first: nothing else in the transaction
            self._group = None
            try:
                await group.conn.rollback()
            finally:
                await self._close(group, None)
            return
        try:
            self._run(group, f"ROLLBACK TO {_SAVEPOINT}")
            self._run(group, f"RELEASE {_SAVEPOINT}")
        except sqlite3.Error:
            # No savepoint any more: SQLite rolled the whole transaction back (a full disk, say), every
            # member's work with it. None was answered yet: they all fail.
            await self._fail(group)

    async def _commit_when_free(self, group: _Group) -> None:
        # Queued behind what is ready to run now: those requests join the group before it commits.
        async with self._lock:
            if self._group is group:
                with contextlib.suppress(Exception):  # the members are told (``done``)
                    await self._commit(group)

    async def _commit(self, group: _Group) -> None:
        """COMMIT (the lock is held); every member learns how it went."""
        self._group = None
        try:
            await group.conn.commit()
            self.commits += 1
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await group.conn.rollback()
            await self._close(group, exc)
            raise
        await self._close(group, None)

    async def _fail(self, group: _Group) -> None:
        self._group = None
        try:
            with contextlib.suppress(Exception):
                await group.conn.rollback()
        finally:
            await self._close(group, RuntimeError("the shared transaction was rolled back"))

    async def _close(self, group: _Group, exc: BaseException | None) -> None:
        try:
            await group.conn.close()
        finally:
            if not group.done.done():
                if exc is None:
                    group.done.set_result(None)
                else:
                    group.done.set_exception(_copy(exc))
                    group.done.exception()  # retrieved: a member that left does not leave it "never retrieved"


def _copy(exc: BaseException) -> BaseException:
    """The COMMIT's failure as each member sees it (an ``Exception``; a cancelled commit is a failure)."""
    if isinstance(exc, Exception):
        return exc
    return RuntimeError(f"the shared commit was interrupted: {type(exc).__name__}")

