"""The client row every authenticated request reads, at the driver and outside any transaction.

Authentication reads its client's row on every request, so a removed client, a changed role or a
changed password stops working at once, in every process (the CLI, another replica). That row *is* the
version check: the cached argon2 success only counts while the stored hash is the one it matched.
What it no longer costs is the machinery around one primary-key SELECT: a pooled connection, a
transaction (BEGIN, then COMMIT), SQLAlchemy's statement building and result objects, and on SQLite a
thread hop each way — about a tenth of a small request's CPU.

- SQLite (a file): one read-only connection in autocommit, its statement run where it is awaited. In WAL
  mode a reader never waits for the writer and holds no snapshot between statements (checkpoints go on).
- PostgreSQL: a small asyncpg pool of its own (``PG_CONNECTIONS``; the statement prepared once per
  connection): concurrent requests do not queue behind one round trip. The pool replaces a broken
  connection by itself; a failed read is the caller's error (a 500, as any database failure). Its
  connections only ever run that one SELECT outside a transaction, so there is no session state to reset
  at release: asyncpg's default reset (one more round trip per request, ~90 us CPU) is skipped, and
  asyncpg still rolls back a transaction left open.
- Anything else (an in-memory SQLite database, which no second connection can open): the read
  transaction of the unit of work, as before.

``Database.raw_listeners`` hear each statement (the statement-count guard in the tests counts these too).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

from ltfu.store.clients import Client, StoredClient

PG_CONNECTIONS = 4
SQL = "SELECT name, password_hash, is_admin, organization_id, role FROM clients WHERE name = {p}"


async def _nothing_to_reset(connection: Any) -> None:
    """The pool's reset hook: the lookup sets no session state (no LISTEN, SET, advisory lock, cursor)."""


class ClientReader:
    def __init__(self, db: Any) -> None:
        self.db = db
        self.listeners: list[Callable[[str], None]] = db.raw_listeners
        url: str = db.settings.sqlalchemy_url
        path = url.split(":///", 1)[1] if url.startswith("sqlite") and ":///" in url else ""
        self._sqlite_path = path if path and path != ":memory:" else None
        self._pg_dsn = "postgresql://" + url.split("://", 1)[1] if url.startswith("postgresql+asyncpg://") else None
        self._sqlite: sqlite3.Connection | None = None
        self._pg: Any = None
        self._pg_opening = asyncio.Lock()

    async def lookup(self, name: str) -> StoredClient | None:
        if self._sqlite_path is not None:
            row = self._lookup_sqlite(name)
        elif self._pg_dsn is not None:
            row = await self._lookup_pg(name)
        else:
            from ltfu.store.uow import read_unit_of_work

            async with read_unit_of_work(self.db) as uow:
                return await uow.clients.lookup(name)
        if row is None:
            return None
        return StoredClient(Client(row[0], bool(row[2]), row[3], row[4]), row[1])

    def _heard(self, sql: str) -> None:
        for listener in self.listeners:
            listener(sql)

    def _lookup_sqlite(self, name: str) -> tuple[Any, ...] | None:
        if self._sqlite is None:
            conn = sqlite3.connect(self._sqlite_path or "", check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA query_only=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            self._sqlite = conn
        sql = SQL.format(p="?")
        self._heard(sql)
        return self._sqlite.execute(sql, (name,)).fetchone()

    async def _lookup_pg(self, name: str) -> tuple[Any, ...] | None:
        import asyncpg

        if self._pg is None:
            async with self._pg_opening:
                if self._pg is None:
                    self._pg = await asyncpg.create_pool(
                        self._pg_dsn, min_size=1, max_size=PG_CONNECTIONS, reset=_nothing_to_reset
                    )
        sql = SQL.format(p="$1")
        self._heard(sql)
        row = await self._pg.fetchrow(sql, name)
        return tuple(row) if row is not None else None

    async def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        pool, self._pg = self._pg, None
        if pool is not None:
            await pool.close()
