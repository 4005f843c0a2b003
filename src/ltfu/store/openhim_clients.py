"""OpenHIM client ids a ``gateway`` client may name in ``X-OpenHIM-ClientID``, and who each one is."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.store.schema import openhim_clients


@dataclass(frozen=True)
class OpenHIMClient:
    client_id: str
    role: str  # facility or cht
    organization_id: str | None


class OpenHIMClientRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, client_id: str) -> OpenHIMClient | None:
        row = (await self.conn.execute(select(openhim_clients).where(openhim_clients.c.client_id == client_id))).first()
        return OpenHIMClient(row.client_id, row.role, row.organization_id) if row else None

    async def put(self, client_id: str, role: str, organization_id: str | None) -> None:
        values = dict(role=role, organization_id=organization_id)
        result = await self.conn.execute(
            update(openhim_clients).where(openhim_clients.c.client_id == client_id).values(**values)
        )
        if result.rowcount == 0:
            await self.conn.execute(insert(openhim_clients).values(client_id=client_id, **values))

    async def remove(self, client_id: str) -> bool:
        result = await self.conn.execute(delete(openhim_clients).where(openhim_clients.c.client_id == client_id))
        return result.rowcount > 0

    async def list(self) -> list[OpenHIMClient]:
        rows = await self.conn.execute(select(openhim_clients).order_by(openhim_clients.c.client_id))
        return [OpenHIMClient(r.client_id, r.role, r.organization_id) for r in rows]
