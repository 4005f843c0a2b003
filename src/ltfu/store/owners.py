"""Which facility created a resource through the API (server-set, never from the resource body)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.store.schema import resource_owners
from ltfu.store.write_buffer import WriteBuffer

_KEY = [resource_owners.c.res_type, resource_owners.c.res_id]
_RECORD = {
    "sqlite": sqlite.insert(resource_owners).on_conflict_do_nothing(index_elements=_KEY),
    "postgresql": postgresql.insert(resource_owners).on_conflict_do_nothing(index_elements=_KEY),
}


class OwnerRepository:
    def __init__(self, conn: AsyncConnection, buffer: WriteBuffer | None = None) -> None:
        self.conn = conn
        self.buffer = buffer

    async def get(self, res_type: str, res_id: str) -> str | None:
        row = await self.conn.execute(
            select(resource_owners.c.organization_id).where(
                resource_owners.c.res_type == res_type, resource_owners.c.res_id == res_id
            )
        )
        return row.scalar_one_or_none()

    async def record(self, res_type: str, res_id: str, organization_id: str) -> str | None:
        """The first owner stays the owner, also when two transactions claim the same resource at once
        (PostgreSQL: the second one's insert waits for the first and does nothing, instead of failing on
        the key). Returns the owner after it."""
        result = await self.conn.execute(
            _RECORD[self.conn.dialect.name],
            {"res_type": res_type, "res_id": res_id, "organization_id": organization_id},
        )
        return organization_id if result.rowcount else await self.get(res_type, res_id)

    async def record_new(self, res_type: str, res_id: str, organization_id: str) -> None:
        """The owner of a resource whose id was just minted in this transaction (nobody can own it yet):
        the insert waits in the write buffer, no look-up first."""
        if self.buffer is None:
            await self.record(res_type, res_id, organization_id)
        else:
            self.buffer.add(resource_owners, {"res_type": res_type, "res_id": res_id,
                                              "organization_id": organization_id})
