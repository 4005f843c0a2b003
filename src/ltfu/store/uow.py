"""Unit of work: one database transaction and the repositories bound to it.

Its repositories talk to the database through ``FlushingConnection``: inserts wait in a
``WriteBuffer`` and go out in batches right before the next statement (or the commit), so reads
always see the transaction's own writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cached_property
from typing import Any, cast

from sqlalchemy import text
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.domain.access import SYSTEM, Actor
from ltfu.fhir.search_params import SearchQuery
from ltfu.settings import Settings
from ltfu.store.callbacks import CallbackStore, SecretBox
from ltfu.store.cases import CaseRepository
from ltfu.store.catchment import CatchmentAuditRepository
from ltfu.store.cht_index import ChtIndexRepository
from ltfu.store.clients import ClientRepository
from ltfu.store.db import Database
from ltfu.store.driver import Driver, compiled, driver_of
from ltfu.store.duplicates import DuplicateRepository
from ltfu.store.openhim_clients import OpenHIMClientRepository
from ltfu.store.outbox import OutboxRepository
from ltfu.store.owners import OwnerRepository
from ltfu.store.receipts import ReceiptRepository
from ltfu.store.resources import ResourceRepository
from ltfu.store.retention import RetentionRepository
from ltfu.store.reviews import ReviewRepository
from ltfu.store.search import SearchResult, run_search
from ltfu.store.write_buffer import WriteBuffer


class FlushingConnection:
    """The transaction's connection, sending the buffered inserts before any other statement."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.raw = conn
        self.buffer = WriteBuffer(conn)

    async def execute(self, statement: Any, parameters: Any = None, **kw: Any) -> Result[Any]:
        await self.buffer.flush()
        return await self.raw.execute(statement, parameters, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class UnitOfWork:
    """``actor`` is who the transaction acts for (``ltfu.services.policy.Actor``); the services ask the
    policy about it. Workers and the CLI act as the system."""

    def __init__(self, conn: AsyncConnection, db: Database, actor: Actor = SYSTEM) -> None:
        self._flushing = FlushingConnection(conn)
        self.conn = cast(AsyncConnection, self._flushing)
        self.buffer = self._flushing.buffer
        self.db = db
        self.actor = actor
        self.driver: Driver | None = None
        # Per-transaction answers to lookups the services repeat (e.g. a facility's subscriptions).
        self.memo: dict[Any, Any] = {}
        # For statements that cannot see what the buffer holds (they need not flush it first).
        self.unbuffered = conn
        self.resources = ResourceRepository(self.conn, self.buffer, unbuffered=conn)
        self.cases = CaseRepository(self.conn, self.buffer)
        self.outbox = OutboxRepository(self.conn, skip_locked=not db.is_sqlite, buffer=self.buffer)
        self.callbacks = CallbackStore(self.conn, SecretBox.of(db.settings), self.fetch)

    # The repositories a new case does not need are made when first asked for.
    @cached_property
    def owners(self) -> OwnerRepository:
        return OwnerRepository(self.conn, self.buffer)

    @cached_property
    def openhim_clients(self) -> OpenHIMClientRepository:
        return OpenHIMClientRepository(self.conn)

    @cached_property
    def clients(self) -> ClientRepository:
        return ClientRepository(self.conn)

    @cached_property
    def receipts(self) -> ReceiptRepository:
        return ReceiptRepository(self.conn, self.buffer)

    @cached_property
    def retention(self) -> RetentionRepository:
        return RetentionRepository(self.conn)

    @cached_property
    def cht_index(self) -> ChtIndexRepository:
        return ChtIndexRepository(self.conn)

    @cached_property
    def reviews(self) -> ReviewRepository:
        return ReviewRepository(self.conn)

    @cached_property
    def duplicates(self) -> DuplicateRepository:
        return DuplicateRepository(self.conn)

    @cached_property
    def catchment_audit(self) -> CatchmentAuditRepository:
        return CatchmentAuditRepository(self.conn)

    async def flush(self) -> None:
        await self.buffer.flush()

    async def alone(self) -> None:
        """This unit of work (which has written nothing yet) is long: it commits on its own, and the units of
        work of other requests that share the SQLite writer's COMMIT (``group_commit``) do not wait for it."""
        await self.db.alone(self._flushing.raw)

    def attach(self, driver: Driver | None) -> None:
        """Hot statements go to the driver directly (``store/driver.py``) when there is one."""
        self.driver = driver
        self.buffer.driver = driver
        self.resources.driver = driver
        self.cases.driver = driver

    async def fetch(self, statement: Any, params: dict[str, Any], *, see_buffer: bool = True) -> list[tuple[Any, ...]]:
        """Rows of a statement built once (module level), as tuples: at the driver when there is one.
        ``see_buffer=False``: the statement reads no table the write buffer holds rows for (no flush)."""
        if self.driver is not None:
            if see_buffer:
                await self.buffer.flush()
            return await self.driver.fetch(compiled(statement, self.driver.dialect), params)
        conn = self.conn if see_buffer else self.unbuffered
        return [tuple(r) for r in await conn.execute(statement, params)]

    @property
    def settings(self) -> Settings:
        return self.db.settings

    async def search(self, query: SearchQuery) -> SearchResult:
        return await run_search(self.conn, query)

    async def lock(self, keys: list[str]) -> None:
        """Serialise this transaction with others that lock any of ``keys`` (until commit).

        PostgreSQL: a row lock per key, on its row of ``identity_locks`` (a 64-bit hash of the key), inserted
        or updated in one statement, in sorted order (no deadlock between two lockers). Row locks are kept in
        the rows, so a 10,000-patient list holds one per identity and only a request for one of those waits
        for it (advisory locks live in the server's lock table, a few thousand slots: hashed into 512 shared
        buckets, every bucket of which a long list held). A key already held by this transaction: no wait.
        SQLite needs none: its transactions already run one at a time.
        """
        if self.db.is_sqlite or not keys:
            return
        hashes = sorted({int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "big", signed=True) for k in keys})
        await self.conn.execute(_LOCK, {"hs": hashes})

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A nested transaction: a failure inside rolls back only what it wrote (batch entries)."""
        await self.flush()
        try:
            async with self._flushing.raw.begin_nested():
                yield
                await self.flush()
        except BaseException:
            # What the savepoint wrote is gone: so must be what we remember or still hold of it.
            self.buffer.discard()
            self.memo.clear()
            self.resources.forget()
            self.callbacks.forget()
            raise


# ON CONFLICT ... DO UPDATE locks the existing row (waits for its holder); an insert waits for an uncommitted twin.
_LOCK = text("INSERT INTO identity_locks (h) SELECT unnest(CAST(:hs AS bigint[])) ORDER BY 1 "
             "ON CONFLICT (h) DO UPDATE SET h = excluded.h")


@asynccontextmanager
async def unit_of_work(db: Database, actor: Actor = SYSTEM) -> AsyncIterator[UnitOfWork]:
    async with db.transaction() as conn:
        uow = UnitOfWork(conn, db, actor)
        uow.attach(await driver_of(conn, db.raw_listeners))
        yield uow
        await uow.flush()


@asynccontextmanager
async def read_unit_of_work(db: Database, actor: Actor = SYSTEM) -> AsyncIterator[UnitOfWork]:
    """A unit of work for requests that only read: a snapshot that never waits for writers (SQLite)."""
    async with db.read_transaction() as conn:
        uow = UnitOfWork(conn, db, actor)
        uow.attach(await driver_of(conn, db.raw_listeners))
        yield uow
