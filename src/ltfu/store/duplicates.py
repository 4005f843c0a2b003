"""CHT persons flagged as duplicates of each other (``cht_duplicate_groups``, ``cht_duplicate_persons``).

Groups never overlap: a flag that shares a person with open groups joins them into the oldest (the others
close as ``merged``): A~B and B~C are one human recorded three times, one group (A, B, C).

A group is *active* while it is open and at least two of its persons are still in the CHT index: once a CHT
admin merged them in CHT (the merged-away contact is deleted, and the sync drops it from the index), the
group stops holding matching back without anyone closing it here (matching checks the index when one of
its candidates is in a group: ``services.matching``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import insert, select, update
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
        "merged_into": r.merged_into,
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

    async def open_groups_touching(self, persons: Sequence[str]) -> list[str]:
        """The open groups holding any of ``persons``, oldest first (the one an overlapping flag joins)."""
        rows = await self.conn.execute(
            select(cht_duplicate_groups.c.group_id)
            .distinct()
            .join(cht_duplicate_persons, cht_duplicate_groups.c.group_id == cht_duplicate_persons.c.group_id)
            .where(cht_duplicate_groups.c.status == "open", cht_duplicate_persons.c.person_id.in_(set(persons)))
            .order_by(cht_duplicate_groups.c.group_id)
        )
        found = [r[0] for r in rows]
        if len(found) < 2:
            return found
        when = dict(
            (await self.conn.execute(
                select(cht_duplicate_groups.c.group_id, cht_duplicate_groups.c.flagged_at)
                .where(cht_duplicate_groups.c.group_id.in_(found))
            )).all()
        )
        return sorted(found, key=lambda g: (when[g], g))

    async def merge(self, target: str, persons: Sequence[str], others: Sequence[str], actor: str) -> None:
        """``target`` gets ``persons`` and every person of ``others``, which close as ``merged`` into it (their
        own rows stay, for the audit: who flagged what, when)."""
        members = await self._members([target, *others])
        missing = sorted(set(persons).union(*(members[g] for g in others)) - set(members[target]))
        if missing:
            await self.conn.execute(
                insert(cht_duplicate_persons), [{"group_id": target, "person_id": p} for p in missing]
            )
        if others:
            await self.conn.execute(
                update(cht_duplicate_groups)
                .where(cht_duplicate_groups.c.group_id.in_(list(others)))
                .values(status="merged", merged_into=target, resolved_by=actor[:128], resolved_at=now_instant())
            )

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
