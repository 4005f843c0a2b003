"""The hot statements of a unit of work sent straight to the database driver, inside its transaction.

SQLAlchemy Core costs about a tenth of a millisecond of CPU per statement around the driver (cache key,
compiled-statement lookup, parameter processing, execution context, result object) — most of a small
write request's SQL time, for statements that never change. Here each is compiled once per dialect
(``Compiled``: SQL text and parameter order) and run on the driver's own connection, the one the unit
of work holds, so it is in the same transaction and sees the same rows:

- SQLite with the inline writer (``sqlite_inline``): the ``sqlite3`` connection, called where awaited;
- PostgreSQL (asyncpg): the asyncpg connection, after the adapter has opened its transaction;
- anything else (aiosqlite's threads, an in-memory database): ``None``, and the callers use SQLAlchemy.

Only statements whose parameters and columns are plain (str, int, bool, None) come here: nothing needs
SQLAlchemy's type processing. ``Database.raw_listeners`` hear every statement (the statement-count guard).
"""

from __future__ import annotations

import asyncio
import operator
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ClauseElement

from ltfu.store.sqlite_inline import InlineConnection
from ltfu.turns import in_long_work


@dataclass(frozen=True)
class Compiled:
    sql: str
    names: tuple[str, ...]  # parameter names in positional order
    defaults: dict[str, Any]  # values bound at build time (a LIMIT)
    _get: Callable[[dict[str, Any]], tuple[Any, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_get", _getter(self.names))

    def args(self, params: dict[str, Any]) -> tuple[Any, ...]:
        return self._get(self.defaults | params if self.defaults else params)

    def args_of(self, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """The parameter tuples of an ``executemany``."""
        if not self.defaults:
            return list(map(self._get, rows))
        get, defaults = self._get, self.defaults
        return [get(defaults | r) for r in rows]


def _getter(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """The values of ``names`` out of a dict, as a tuple (``itemgetter``: C, once per statement)."""
    if len(names) == 1:
        (name,) = names
        return lambda params: (params[name],)
    if not names:
        return lambda _params: ()
    return operator.itemgetter(*names)


_COMPILED: dict[tuple[str, int, tuple[str, ...] | None], Compiled] = {}


def compiled(statement: ClauseElement, dialect: Dialect, column_keys: Sequence[str] | None = None) -> Compiled:
    """``statement`` as SQL text for ``dialect``, compiled once (``column_keys``: an INSERT's columns)."""
    key = (dialect.name, id(statement), tuple(column_keys) if column_keys is not None else None)
    found = _COMPILED.get(key)
    if found is None:
        kw: dict[str, Any] = {"column_keys": list(column_keys)} if column_keys is not None else {}
        c = statement.compile(dialect=dialect, **kw)
        names = tuple(c.positiontup or ())
        if not names and c.params:
            raise ValueError("a statement for the driver needs a positional paramstyle")
        # Values bound at build time; an INSERT's columns are REQUIRED (always given): not defaults.
        defaults = {k: v for k, v in c.params.items()
                    if v is not None and k in names and not (k in c.binds and c.binds[k].required)}
        found = Compiled(c.string, names, defaults)
        _COMPILED[key] = found
    return found


class Driver(ABC):
    """Runs compiled statements on the unit of work's driver connection."""

    copies = False  # ``copy`` is there: many rows into one table in one bulk load

    def __init__(self, dialect: Dialect, listeners: list[Callable[[str], None]]) -> None:
        self.dialect = dialect
        self._listeners = listeners

    def _heard(self, sql: str) -> None:
        for listener in self._listeners:
            listener(sql)

    @abstractmethod
    async def fetch(self, c: Compiled, params: dict[str, Any]) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    async def execute_many(self, c: Compiled, rows: list[dict[str, Any]]) -> None: ...

    async def copy(self, table: str, columns: tuple[str, ...], records: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    async def execute(self, sql: str, args: list[Any]) -> None:
        """A statement built for this driver (positional ``$n`` parameters): PostgreSQL only."""
        raise NotImplementedError


THREAD_ROWS = 200  # a long unit of work's inserts this long run on a thread (SQLite)


class SqliteDriver(Driver):
    def __init__(self, conn: InlineConnection, dialect: Dialect, listeners: list[Callable[[str], None]]) -> None:
        super().__init__(dialect, listeners)
        self._owner = conn
        self._conn = conn.sqlite

    async def fetch(self, c: Compiled, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        self._heard(c.sql)
        rows = self._conn.execute(c.sql, c.args(params)).fetchall()
        await self._owner.turn()
        return rows

    async def execute_many(self, c: Compiled, rows: list[dict[str, Any]]) -> None:
        self._heard(c.sql)
        if len(rows) >= THREAD_ROWS and in_long_work():
            # Milliseconds of B-tree work, most of it with the interpreter lock released (sqlite3_step): on a
            # thread the loop serves other requests meanwhile. Nobody else uses this connection: it is the
            # unit of work's, which waits here.
            await asyncio.to_thread(_executemany, self._conn, c.sql, c.args_of(rows))
            return
        self._conn.executemany(c.sql, c.args_of(rows))
        await self._owner.turn()


def _executemany(conn: sqlite3.Connection, sql: str, args: list[tuple[Any, ...]]) -> None:
    """On the thread, and its cursor closed there: a cursor kept alive past its statement (a result handed back
    to the loop) holds the cached statement, and the next ``executemany`` of the same SQL fails (misuse)."""
    conn.executemany(sql, args).close()


class AsyncpgDriver(Driver):
    def __init__(self, adapted: Any, conn: Any, dialect: Dialect, listeners: list[Callable[[str], None]]) -> None:
        super().__init__(dialect, listeners)
        self._adapted = adapted  # SQLAlchemy's adapter: it opens the transaction on first use
        self._conn = conn

    async def _begun(self) -> None:
        if not self._adapted._started:
            await self._adapted._start_transaction()

    async def fetch(self, c: Compiled, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        await self._begun()
        self._heard(c.sql)
        return [tuple(r) for r in await self._conn.fetch(c.sql, *c.args(params))]

    async def execute_many(self, c: Compiled, rows: list[dict[str, Any]]) -> None:
        await self._begun()
        self._heard(c.sql)
        await self._conn.executemany(c.sql, c.args_of(rows))

    copies = True

    async def execute(self, sql: str, args: list[Any]) -> None:
        await self._begun()
        self._heard(sql)
        await self._conn.execute(sql, *args)

    async def copy(self, table: str, columns: tuple[str, ...], records: list[tuple[Any, ...]]) -> None:
        """``COPY table (columns) FROM STDIN`` (binary): a defaulter list's 260,000 index rows cost the
        server a fraction of as many INSERTs. Same transaction, same constraints and triggers."""
        await self._begun()
        self._heard(f"COPY {table} ({', '.join(columns)}) FROM STDIN")
        await self._conn.copy_records_to_table(table, records=records, columns=list(columns))


async def driver_of(conn: AsyncConnection, listeners: list[Callable[[str], None]]) -> Driver | None:
    """The driver behind the unit of work's connection, when its statements can go there directly.

    Kept in the connection's ``info`` (it lives as long as the DBAPI connection; SQLAlchemy clears it when
    that one is closed or invalidated): every unit of work asks, and finding it costs a greenlet switch."""
    info = conn.info
    known = info.get(_DRIVER)
    if known is not None and known[1] is listeners:
        return known[0]
    found = await _find_driver(conn, listeners)
    info[_DRIVER] = (found, listeners)
    return found


_DRIVER = "ltfu.driver"


async def _find_driver(conn: AsyncConnection, listeners: list[Callable[[str], None]]) -> Driver | None:
    raw = await conn.get_raw_connection()
    driver_conn = raw.driver_connection
    if isinstance(driver_conn, InlineConnection):
        return SqliteDriver(driver_conn, conn.dialect, listeners)
    if conn.dialect.driver == "asyncpg" and hasattr(raw.dbapi_connection, "_start_transaction"):
        return AsyncpgDriver(raw.dbapi_connection, driver_conn, conn.dialect, listeners)
    return None
