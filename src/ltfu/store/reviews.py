"""The matching review queue and its audited decisions (``match_reviews``, ``match_decisions``)."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.store.resources import now_instant
from ltfu.store.schema import match_decisions, match_reviews

OPEN = ("open", "deferred")
GONE = "cht-person-gone"  # the decision that records a link taken away because CHT deleted or merged the person


def _item(r: Any) -> dict[str, Any]:
    return {
        "review_id": r.review_id,
        "case_id": r.case_id,
        "organization_id": r.organization_id,
        "patient_id": r.patient_id,
        "status": r.status,
        "reason": r.reason,
        "proposal": orjson.loads(r.proposal),
        "created_at": r.created_at,
        "due_at": r.due_at,
        "decided_at": r.decided_at,
    }


class ReviewRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def create(
        self,
        *,
        review_id: str,
        case_id: str,
        organization_id: str | None,
        patient_id: str,
        reason: str,
        proposal: str,
        due_at: str,
    ) -> None:
        await self.conn.execute(
            insert(match_reviews).values(
                review_id=review_id,
                case_id=case_id,
                organization_id=organization_id,
                patient_id=patient_id,
                status="open",
                reason=reason[:64],
                proposal=proposal,
                created_at=now_instant(),
                due_at=due_at,
            )
        )

    async def get(self, review_id: str) -> dict[str, Any] | None:
        row = (await self.conn.execute(select(match_reviews).where(match_reviews.c.review_id == review_id))).first()
        return _item(row) if row else None

    async def for_case(self, case_id: str) -> dict[str, Any] | None:
        row = (await self.conn.execute(select(match_reviews).where(match_reviews.c.case_id == case_id))).first()
        return _item(row) if row else None

    async def list(
        self, *, statuses: tuple[str, ...], organization_id: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        stmt = select(match_reviews).where(match_reviews.c.status.in_(statuses))
        if organization_id is not None:
            stmt = stmt.where(match_reviews.c.organization_id == organization_id)
        rows = await self.conn.execute(stmt.order_by(match_reviews.c.created_at).limit(limit))
        return [_item(r) for r in rows]

    async def set_status(self, review_id: str, status: str) -> None:
        await self.conn.execute(
            update(match_reviews)
            .where(match_reviews.c.review_id == review_id)
            .values(status=status, decided_at=None if status in OPEN else now_instant())
        )

    async def reopen(self, review_id: str, *, reason: str, proposal: str, due_at: str | None = None) -> None:
        """Back to open after a rejection, with the new proposal (the rejected candidates left out); with
        ``due_at`` a new deadline (an item reopened because its CHT person went away)."""
        values: dict[str, Any] = {"status": "open", "reason": reason[:64], "proposal": proposal, "decided_at": None}
        if due_at is not None:
            values["due_at"] = due_at
        await self.conn.execute(update(match_reviews).where(match_reviews.c.review_id == review_id).values(**values))

    async def due(self, now: str, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` open items longest past their deadline."""
        rows = await self.conn.execute(
            select(match_reviews).where(match_reviews.c.status.in_(OPEN), match_reviews.c.due_at <= now)
            .order_by(match_reviews.c.due_at, match_reviews.c.review_id).limit(limit)
        )
        return [_item(r) for r in rows]

    async def record(
        self,
        *,
        review_id: str,
        patient_id: str,
        action: str,
        actor: str,
        evidence: Any,
        person_id: str | None = None,
        place_id: str | None = None,
    ) -> None:
        await self.conn.execute(
            insert(match_decisions).values(
                review_id=review_id,
                patient_id=patient_id,
                action=action,
                person_id=person_id,
                place_id=place_id,
                actor=actor[:128],
                decided_at=now_instant(),
                evidence=orjson.dumps(evidence).decode(),
            )
        )

    async def decisions(self, review_id: str) -> list[dict[str, Any]]:
        rows = await self.conn.execute(
            select(match_decisions).where(match_decisions.c.review_id == review_id).order_by(match_decisions.c.id)
        )
        return [
            {"action": r.action, "person": r.person_id, "place": r.place_id, "actor": r.actor, "at": r.decided_at}
            for r in rows
        ]

    async def negative_links(self, patient_id: str) -> list[str]:
        """CHT persons a human said this patient is not: never proposed again."""
        rows = await self.conn.execute(
            select(match_decisions.c.person_id).where(
                match_decisions.c.patient_id == patient_id, match_decisions.c.action == "not-match"
            )
        )
        return [r.person_id for r in rows if r.person_id]

    async def linked_before(self, person_id: str) -> list[str]:
        """The Patients that were linked to this CHT person until CHT deleted or merged it away
        (``services/cht_gone.py`` records a ``cht-person-gone`` decision per Patient and person)."""
        rows = await self.conn.execute(
            select(match_decisions.c.patient_id).distinct().where(
                match_decisions.c.person_id == person_id, match_decisions.c.action == GONE
            )
        )
        return sorted(r.patient_id for r in rows)
