"""CHT persons flagged as duplicates of each other (``cht_duplicate_groups``, ``cht_duplicate_persons``).

A group is *active* while it is open and at least two of its persons are still in the CHT index: once a CHT
admin merged them in CHT (the merged-away contact is deleted, and the sync drops it from the index), the
group stops holding matching back without anyone closing it here (matching checks the index when one of
its candidates is in a group: ``services.matching``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.store.resources import now_instant
from ltfu.store.schema import cht_duplicate_groups, cht_duplicate_persons


def _group(r: Any, persons: list[str]) -> dict[str, Any]:
    return {
        "group": r.group_id,
        "status": r.status,
        "persons": persons,
        "review_id": r.review_id,
        "flagged_by": r.flagged_by,
        "flagged_at": r.flagged_at,
        "note": r.note,
        "resolved_by": r.resolved_by,
        "resolved_at": r.resolved_at,
    }


class DuplicateRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def create(
        self, *, group_id: str, persons: Sequence[str], actor: str, review_id: str | None, note: str, evidence: Any
    ) -> None:
        await self.conn.execute(
            insert(cht_duplicate_groups).values(
                group_id=group_id,
                status="open",
                review_id=review_id,
                flagged_by=actor[:128],
                flagged_at=now_instant(),
                note=note[:500],
                evidence=orjson.dumps(evidence).decode(),
            )
        )
        await self.conn.execute(
            insert(cht_duplicate_persons), [{"group_id": group_id, "person_id": p} for p in dict.fromkeys(persons)]
        )

    async def open_group_with(self, persons: Sequence[str]) -> str | None:
        """An open group that already holds all of ``persons`` (flagging them again changes nothing)."""
        wanted = set(persons)
        rows = await self.conn.execute(
            select(cht_duplicate_persons.c.group_id, func.count())
            .join(cht_duplicate_groups, cht_duplicate_groups.c.group_id == cht_duplicate_persons.c.group_id)
            .where(cht_duplicate_groups.c.status == "open", cht_duplicate_persons.c.person_id.in_(wanted))
            .group_by(cht_duplicate_persons.c.group_id)
        )
        return next((r[0] for r in rows if r[1] == len(wanted)), None)

    async def open_members(self) -> dict[str, frozenset[str]]:
        """Every person of an open group → the other persons of its open groups (indexed or not)."""
        me, other = cht_duplicate_persons.alias("me"), cht_duplicate_persons.alias("other")
        rows = await self.conn.execute(
            select(me.c.person_id, other.c.person_id.label("partner"))
            .join(cht_duplicate_groups, cht_duplicate_groups.c.group_id == me.c.group_id)
            .join(other, (other.c.group_id == me.c.group_id) & (other.c.person_id != me.c.person_id))
            .where(cht_duplicate_groups.c.status == "open")
        )
        out: dict[str, set[str]] = {}
        for r in rows:
            out.setdefault(r.person_id, set()).add(r.partner)
        return {k: frozenset(v) for k, v in out.items()}

    async def get(self, group_id: str) -> dict[str, Any] | None:
        row = (
            await self.conn.execute(select(cht_duplicate_groups).where(cht_duplicate_groups.c.group_id == group_id))
        ).first()
        if row is None:
            return None
        return _group(row, (await self._members([group_id]))[group_id])

    async def _members(self, group_ids: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {g: [] for g in group_ids}
        if group_ids:
            rows = await self.conn.execute(
                select(cht_duplicate_persons)
                .where(cht_duplicate_persons.c.group_id.in_(list(group_ids)))
                .order_by(cht_duplicate_persons.c.person_id)
            )
            for r in rows:
                out[r.group_id].append(r.person_id)
        return out

    async def list(self, *, status: str | None = "open", limit: int = 500) -> list[dict[str, Any]]:
        stmt = select(cht_duplicate_groups)
        if status is not None:
            stmt = stmt.where(cht_duplicate_groups.c.status == status)
        rows = list(await self.conn.execute(stmt.order_by(cht_duplicate_groups.c.flagged_at).limit(limit)))
        members = await self._members([r.group_id for r in rows])
        return [_group(r, members[r.group_id]) for r in rows]

    async def resolve(self, group_id: str, actor: str) -> None:
        await self.conn.execute(
            update(cht_duplicate_groups)
            .where(cht_duplicate_groups.c.group_id == group_id)
            .values(status="resolved", resolved_by=actor[:128], resolved_at=now_instant())
        )
