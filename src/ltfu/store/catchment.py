"""The audit of a facility's explicit catchment (``catchment_changes``); the list is ``facility_places``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.store.resources import now_instant
from ltfu.store.schema import catchment_changes


class CatchmentAuditRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def record(self, organization_id: str, *, added: Sequence[str], removed: Sequence[str], actor: str) -> None:
        at = now_instant()
        rows = [
            {"organization_id": organization_id, "place_id": p, "action": action, "actor": actor[:128],
             "changed_at": at}
            for action, places in (("add", added), ("remove", removed))
            for p in places
        ]
        if rows:
            await self.conn.execute(insert(catchment_changes), rows)

    async def history(self, organization_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The newest changes first."""
        rows = await self.conn.execute(
            select(catchment_changes)
            .where(catchment_changes.c.organization_id == organization_id)
            .order_by(catchment_changes.c.id.desc())
            .limit(limit)
        )
        return [{"place": r.place_id, "action": r.action, "actor": r.actor, "at": r.changed_at} for r in rows]
