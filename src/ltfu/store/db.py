"""Database engines, transactions and migrations for SQLite (embedded default) and PostgreSQL.

SQLite: one write connection (a single writer anyway: queuing on the pool is cheaper than lock
contention) — its statements on the event loop's own thread (``sqlite_inline``; ``LTFU_SQLITE_INLINE_WRITES``,
on by default), concurrent units of work sharing a COMMIT (``group_commit``) — and a small pool of
read-only connections. In WAL mode readers never wait for the writer, so reads
(FHIR reads and searches, the dashboard, authentication) go on while a large Bundle or the workers write.
PostgreSQL: one pool; every statement gets a custom plan (see ``_create_engine``).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from ltfu.settings import Settings
from ltfu.store import sqlite_inline
from ltfu.store.client_reader import ClientReader
from ltfu.store.group_commit import GroupCommit

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


class Database:
    """Owns the async engine. ``transaction()`` is the unit of work every service runs in."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.is_sqlite = settings.is_sqlite
        self.checkpointer: sqlite_inline.Checkpointer | None = None
        # Told the SQL of each statement sent to a driver without SQLAlchemy (``driver``, ``client_reader``).
        self.raw_listeners: list[Callable[[str], None]] = []
        self.engine: AsyncEngine = _create_engine(settings, self)
        self.read_engine: AsyncEngine = _create_read_engine(settings) or self.engine
        # The inline SQLite writer: units of work ready at the same moment share a COMMIT (group_commit.py).
        self.group = GroupCommit(self.engine, self.raw_listeners) if self.checkpointer is not None else None
        self.client_reader = ClientReader(self)  # authentication's per-request read (opens on first use)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        if self.group is not None:
            async with self.group.transaction() as conn:
                yield conn
            return
        async with self.engine.begin() as conn:
            yield conn

    async def alone(self, conn: AsyncConnection) -> None:
        """The transaction ``conn`` is in (which has written nothing yet) commits on its own: a long unit of
        work (a defaulter list) keeps no other request waiting for a shared COMMIT (``group_commit``)."""
        if self.group is not None:
            await self.group.alone(conn)

    @asynccontextmanager
    async def read_transaction(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction: one consistent snapshot, never waiting for a writer (SQLite WAL)."""
        async with self.read_engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads; each statement sees committed data."""
        async with self.read_engine.connect() as conn:
            yield conn

    def engines(self) -> list[AsyncEngine]:
        return [self.engine] if self.read_engine is self.engine else [self.engine, self.read_engine]

    async def ping(self) -> bool:
        try:
            async with self.read_engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - readiness probe reports any failure as "not ready"
            return False

    async def upgrade(self) -> None:
        """Apply Alembic migrations up to head (idempotent; safe from several processes on PostgreSQL)."""
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                # Serialise concurrent upgrades from several replicas.
                await conn.execute(text("SELECT pg_advisory_xact_lock(7468746675)"))
            await conn.run_sync(_run_upgrade)

    async def dispose(self) -> None:
        await self.client_reader.close()
        await self.engine.dispose()
        if self.checkpointer is not None:
            self.checkpointer.close()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()


def _run_upgrade(sync_conn: Any) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


def _private_file(db_file: Path) -> None:
    """The SQLite database (PHI) is readable by its owner only: folders we create 0700, the file and its
    WAL/shared-memory companions 0600 (SQLite gives those the database file's mode)."""
    missing = [p for p in (db_file.parent, *db_file.parent.parents) if not p.exists()]
    db_file.parent.mkdir(parents=True, exist_ok=True)
    for folder in missing:
        folder.chmod(0o700)
    os.close(os.open(db_file, os.O_RDWR | os.O_CREAT, 0o600))
    for companion in (db_file, db_file.with_name(db_file.name + "-wal"), db_file.with_name(db_file.name + "-shm")):
        if companion.exists() and companion.stat().st_mode & 0o077:
            companion.chmod(0o600)


def _create_engine(settings: Settings, owner: Database) -> AsyncEngine:
    url = settings.sqlalchemy_url
    if not settings.is_sqlite:
        # asyncpg prepares every statement; after five runs PostgreSQL may switch a prepared statement
        # to a generic plan chosen while the tables were empty (seq scans), and keep it as they grow
        # inside one long transaction (a first defaulter list on a fresh database). Custom plans cost
        # a little planning per statement and follow the data.
        engine = create_async_engine(url, pool_size=10, max_overflow=10,
                                     connect_args={"server_settings": {"plan_cache_mode": "force_custom_plan"}})
        _ping_when_idle(engine)
        return engine
    path = _sqlite_path(url)
    if path and path != ":memory:":
        _private_file(Path(path))
    # One connection: SQLite has a single writer anyway, and queuing on the pool is cheaper
    # than lock contention and busy-waiting inside the driver.
    inline: dict[str, Any] = {}
    if settings.sqlite_inline_writes and path and path != ":memory:":
        owner.checkpointer = sqlite_inline.Checkpointer(path, SQLITE_BUSY_TIMEOUT_MS)
        inline["async_creator"] = sqlite_inline.creator(path, SQLITE_BUSY_TIMEOUT_MS, owner.checkpointer)
    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=120, **inline)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # 64 MB of page cache (SQLite's default is 2 MB): loading a large CHT index inserts blocking keys all
        # over a B-tree of hundreds of MB, and each page evicted before its next insert is written again
        _sqlite_pragmas(dbapi_conn, "PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON", "PRAGMA cache_size=-65536",
                        "PRAGMA temp_store=MEMORY")

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: no deadlock when a reader later writes,
        # and other processes (a separate `ltfu worker`) wait on busy_timeout instead of failing.
        inline = getattr(conn.connection.dbapi_connection, "_connection", None)
        if isinstance(inline, sqlite_inline.InlineConnection):  # at the driver (heard as a statement)
            for listener in owner.raw_listeners:
                listener("BEGIN IMMEDIATE")
            await_only(inline.begin_immediate())
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


PING_IDLE_S = 1.0
_IDLE_SINCE = "ltfu.idle_since"


def _ping_when_idle(engine: AsyncEngine) -> None:
    """A pooled PostgreSQL connection that sat idle for ``PING_IDLE_S`` is pinged before use, and replaced if
    the server dropped it (a restart, a timeout); one back from a unit of work a moment ago is used as it is.
    SQLAlchemy's ``pool_pre_ping`` pings at every checkout: with asyncpg a ping is BEGIN, a statement and
    ROLLBACK — three round trips, a third of a new case's."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connected(_dbapi_conn: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get(_IDLE_SINCE, 0.0) < PING_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # the pool connects anew (up to three times)
            raise DisconnectionError() from exc


def _sqlite_path(url: str) -> str:
    return url.split(":///", 1)[1] if ":///" in url else ""


def _sqlite_pragmas(dbapi_conn: Any, *extra: str) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite's own handling is broken)
    cur = dbapi_conn.cursor()
    for pragma in (*extra, "PRAGMA synchronous=NORMAL", f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}"):
        cur.execute(pragma)
    cur.close()


def _create_read_engine(settings: Settings) -> AsyncEngine | None:
    """SQLite's read-only pool (None elsewhere, and for an in-memory database nobody else can open)."""
    if not settings.is_sqlite or _sqlite_path(settings.sqlalchemy_url) in ("", ":memory:"):
        return None
    # Through aiosqlite's threads: the long reads (dashboard aggregates, searches of a large store) run
    # beside the event loop instead of stopping it.
    engine = create_async_engine(settings.sqlalchemy_url, pool_size=4, max_overflow=4, pool_timeout=120)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        _sqlite_pragmas(dbapi_conn, "PRAGMA query_only=ON", "PRAGMA cache_size=-16384")  # 16 MB: index pages

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")  # deferred: a snapshot from the first read, no write lock

    return engine
