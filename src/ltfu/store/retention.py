"""SQL of the retention policy: which closed cases are due, and removing what hangs off them.

Every method runs inside the caller's transaction (the unit of work); nothing here commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.fhir.search_params import index_rows
from ltfu.store.schema import (
    cases,
    delivery_attempts,
    outbox,
    resource_history,
    resources,
    search_index,
    subscription_events,
)


@dataclass(frozen=True)
class DueCase:
    case_id: str
    task_id: str
    patient_id: str


def _due(table: Any, cutoff: str) -> ColumnElement[bool]:
    """Closed before ``cutoff``, not purged yet, and nothing still waiting to be delivered for it."""
    pending = exists().where(and_(outbox.c.case_id == table.c.case_id, outbox.c.status == "pending"))
    return and_(table.c.closed_at.is_not(None), table.c.closed_at < cutoff, table.c.purged_at.is_(None), ~pending)


class RetentionRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def due_cases(self, cutoff: str) -> list[DueCase]:
        rows = await self.conn.execute(
            select(cases.c.case_id, cases.c.task_id, cases.c.patient_id)
            .where(_due(cases, cutoff))
            .order_by(cases.c.closed_at, cases.c.case_id)
        )
        return [DueCase(r.case_id, r.task_id, r.patient_id) for r in rows]

    async def still_due(self, case_id: str, cutoff: str) -> bool:
        row = await self.conn.execute(
            select(cases.c.case_id).where(and_(cases.c.case_id == case_id, _due(cases, cutoff)))
        )
        return row.first() is not None

    async def patient_needed(self, patient_id: str, case_id: str, cutoff: str) -> bool:
        """Another case of this patient keeps its PHI: one still open, or closed too recently to purge."""
        other = cases.alias("other")
        row = await self.conn.execute(
            select(other.c.case_id)
            .where(
                and_(
                    other.c.patient_id == patient_id,
                    other.c.case_id != case_id,
                    other.c.purged_at.is_(None),
                    ~_due(other, cutoff),
                )
            )
            .limit(1)
        )
        return row.first() is not None

    async def based_on(self, res_type: str, case_id: str) -> list[str]:
        si = search_index
        rows = await self.conn.execute(
            select(si.c.res_id)
            .distinct()
            .where(and_(si.c.res_type == res_type, si.c.param == "based-on", si.c.value == f"ServiceRequest/{case_id}"))
        )
        return list(rows.scalars())

    async def remove(self, res_type: str, res_ids: list[str]) -> tuple[int, int]:
        """Remove resources with their whole history and index: (resources, history versions) removed."""
        if not res_ids:
            return 0, 0
        si = search_index
        await self.conn.execute(delete(si).where(and_(si.c.res_type == res_type, si.c.res_id.in_(res_ids))))
        removed = await self.conn.execute(
            delete(resources).where(and_(resources.c.res_type == res_type, resources.c.res_id.in_(res_ids)))
        )
        h = resource_history
        versions = await self.conn.execute(delete(h).where(and_(h.c.res_type == res_type, h.c.res_id.in_(res_ids))))
        return removed.rowcount, versions.rowcount

    async def replace(self, res_type: str, res_id: str, content: dict[str, Any], when: str) -> int:
        """Overwrite a resource in place with ``content`` (same id, next version), keeping no earlier
        version: what was there cannot be read back by vread or _history. Returns versions removed."""
        row = (
            await self.conn.execute(
                select(resources.c.version_id).where(
                    and_(resources.c.res_type == res_type, resources.c.res_id == res_id)
                )
            )
        ).first()
        if row is None:
            return 0
        version = row.version_id + 1
        meta = {**(content.get("meta") or {}), "versionId": str(version), "lastUpdated": when}
        stamped = {"resourceType": res_type, "id": res_id, **content, "meta": meta}
        text = orjson.dumps(stamped).decode()
        h = resource_history
        old = await self.conn.execute(delete(h).where(and_(h.c.res_type == res_type, h.c.res_id == res_id)))
        seq = (
            await self.conn.execute(
                h.insert()
                .values(
                    res_type=res_type,
                    res_id=res_id,
                    version_id=version,
                    last_updated=when,
                    deleted=False,
                    method="PUT",
                    content=text,
                )
                .returning(h.c.seq)
            )
        ).scalar_one()
        await self.conn.execute(
            update(resources)
            .where(and_(resources.c.res_type == res_type, resources.c.res_id == res_id))
            .values(version_id=version, seq=seq, last_updated=when, deleted=False, content=text)
        )
        si = search_index
        await self.conn.execute(delete(si).where(and_(si.c.res_type == res_type, si.c.res_id == res_id)))
        rows = index_rows(stamped)
        if rows:
            await self.conn.execute(
                si.insert(),
                [
                    {
                        "res_type": res_type,
                        "res_id": res_id,
                        "param": r.param,
                        "system": r.system,
                        "value": r.value,
                        "value_hi": r.value_hi,
                    }
                    for r in rows
                ],
            )
        return old.rowcount

    async def current(self, res_type: str, res_id: str) -> dict[str, Any] | None:
        row = (
            await self.conn.execute(
                select(resources.c.content).where(and_(resources.c.res_type == res_type, resources.c.res_id == res_id))
            )
        ).first()
        return orjson.loads(row.content) if row else None

    async def drop_deliveries(self, case_id: str) -> tuple[int, int]:
        """Delivered and dead outbox rows of the case (their payloads hold PHI) and their attempts."""
        ids = select(outbox.c.id).where(and_(outbox.c.case_id == case_id, outbox.c.status != "pending"))
        attempts = await self.conn.execute(delete(delivery_attempts).where(delivery_attempts.c.outbox_id.in_(ids)))
        rows = await self.conn.execute(
            delete(outbox).where(and_(outbox.c.case_id == case_id, outbox.c.status != "pending"))
        )
        return rows.rowcount, attempts.rowcount

    async def drop_events(self, case_id: str) -> int:
        result = await self.conn.execute(delete(subscription_events).where(subscription_events.c.case_id == case_id))
        return result.rowcount

    async def mark_purged(self, case_id: str, when: str) -> None:
        await self.conn.execute(update(cases).where(cases.c.case_id == case_id).values(purged_at=when))
