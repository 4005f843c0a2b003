"""Which facility created a resource through the API (server-set, never from the resource body)."""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.store.schema import resource_owners


class OwnerRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, res_type: str, res_id: str) -> str | None:
        row = await self.conn.execute(
            select(resource_owners.c.organization_id).where(
                resource_owners.c.res_type == res_type, resource_owners.c.res_id == res_id
            )
        )
        return row.scalar_one_or_none()

    async def record(self, res_type: str, res_id: str, organization_id: str) -> None:
        """The first owner stays the owner."""
        if await self.get(res_type, res_id) is None:
            await self.conn.execute(
                insert(resource_owners).values(res_type=res_type, res_id=res_id, organization_id=organization_id)
            )
