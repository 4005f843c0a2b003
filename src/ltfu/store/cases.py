"""Case rows: the query-friendly projection of a ServiceRequest + Task pair."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.domain.task_states import TERMINAL
from ltfu.store.schema import cases


class CaseRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, **values: Any) -> None:
        await self.conn.execute(insert(cases).values(**values))

    async def get(self, case_id: str) -> Any:
        return (await self.conn.execute(select(cases).where(cases.c.case_id == case_id))).first()

    async def by_request_key(self, request_key: str) -> Any:
        return (await self.conn.execute(select(cases).where(cases.c.request_key == request_key))).first()

    async def by_task(self, task_id: str) -> Any:
        return (await self.conn.execute(select(cases).where(cases.c.task_id == task_id))).first()

    async def open_for_patient(self, patient_id: str) -> Any:
        """The most recent open case of a patient, if any."""
        q = (select(cases).where(and_(cases.c.patient_id == patient_id, cases.c.status.not_in(TERMINAL)))
             .order_by(cases.c.created_at.desc()).limit(1))
        return (await self.conn.execute(q)).first()

    async def set(self, case_id: str, **values: Any) -> None:
        await self.conn.execute(update(cases).where(cases.c.case_id == case_id).values(**values))

    async def expired(self, now: str, limit: int) -> list[str]:
        q = (select(cases.c.case_id)
             .where(and_(cases.c.status.not_in(TERMINAL), cases.c.window_end.is_not(None), cases.c.window_end < now))
             .order_by(cases.c.window_end).limit(limit))
        return list((await self.conn.execute(q)).scalars())
