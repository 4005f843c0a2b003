"""Unit of work: one database transaction and the repositories bound to it."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.domain.access import SYSTEM, Actor
from ltfu.fhir.search_params import SearchQuery
from ltfu.settings import Settings
from ltfu.store.callbacks import CallbackStore, SecretBox
from ltfu.store.cases import CaseRepository
from ltfu.store.clients import ClientRepository
from ltfu.store.db import Database
from ltfu.store.openhim_clients import OpenHIMClientRepository
from ltfu.store.outbox import OutboxRepository
from ltfu.store.owners import OwnerRepository
from ltfu.store.receipts import ReceiptRepository
from ltfu.store.resources import ResourceRepository
from ltfu.store.search import SearchResult, run_search


class UnitOfWork:
    """``actor`` is who the transaction acts for (``ltfu.services.policy.Actor``); the services ask the
    policy about it. Workers and the CLI act as the system."""

    def __init__(self, conn: AsyncConnection, db: Database, actor: Actor = SYSTEM) -> None:
        self.conn = conn
        self.db = db
        self.actor = actor
        self.owners = OwnerRepository(conn)
        self.openhim_clients = OpenHIMClientRepository(conn)
        self.resources = ResourceRepository(conn)
        self.clients = ClientRepository(conn)
        self.cases = CaseRepository(conn)
        self.outbox = OutboxRepository(conn, skip_locked=not db.is_sqlite)
        self.receipts = ReceiptRepository(conn)
        self.callbacks = CallbackStore(conn, SecretBox.of(db.settings))

    @property
    def settings(self) -> Settings:
        return self.db.settings

    async def search(self, query: SearchQuery) -> SearchResult:
        return await run_search(self.conn, query)

    async def lock(self, keys: list[str]) -> None:
        """Serialise this transaction with others that lock any of ``keys`` (until commit).

        PostgreSQL: transaction-scoped advisory locks, taken in sorted order (no deadlock between
        two lockers). SQLite needs none: its transactions already run one at a time.
        """
        if self.db.is_sqlite:
            return
        for key in sorted(set(keys)):
            number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
            await self.conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": number})

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A nested transaction: a failure inside rolls back only what it wrote (batch entries)."""
        async with self.conn.begin_nested():
            yield


@asynccontextmanager
async def unit_of_work(db: Database, actor: Actor = SYSTEM) -> AsyncIterator[UnitOfWork]:
    async with db.transaction() as conn:
        yield UnitOfWork(conn, db, actor)
