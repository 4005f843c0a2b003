"""The matching review queue: list, decide (audited, sticky), and expire unresolved items.

Actions on an item (``POST /admin/review/{id}``):
- ``link`` ``{"person": ID}``: the Patient gets that CHT id; the follow-up goes to CHT;
- ``create`` ``{"place": ID}``: a new CHT person under that place, then the follow-up;
- ``reject``: none of the proposed candidates is this patient: permanent negative links (never proposed
  again), and intake runs again without them (it may then create, or come back for review);
- ``defer``: not now; the item stays and still ages into ``unassignable`` at its due time.
Every decision is stored with who, when and the evidence shown (the proposal).
"""

from __future__ import annotations

from typing import Any

from ltfu.domain.access import Actor
from ltfu.fhir.outcome import FhirError
from ltfu.services import tasks
from ltfu.services.intake import link_patient
from ltfu.store.resources import now_instant
from ltfu.store.reviews import OPEN
from ltfu.store.uow import UnitOfWork

ACTIONS = ("link", "create", "reject", "defer")
STATUSES = {
    "open": OPEN,
    "decided": ("linked", "created", "rejected", "expired"),
    "all": (*OPEN, "linked", "created", "rejected", "expired"),
}


def _scope(actor: Actor) -> str | None:
    return actor.facility if actor.role == "facility" else None


async def list_items(uow: UnitOfWork, status: str = "open") -> list[dict[str, Any]]:
    if status not in STATUSES:
        raise FhirError.of("invalid", f"status must be one of {', '.join(STATUSES)}", "status")
    return await uow.reviews.list(statuses=STATUSES[status], organization_id=_scope(uow.actor))


async def get_item(uow: UnitOfWork, review_id: str) -> dict[str, Any]:
    item = await uow.reviews.get(review_id)
    scope = _scope(uow.actor)
    if item is None or (scope is not None and item["organization_id"] != scope):
        raise FhirError.of("not-found", f"Review item {review_id} is not known", status=404)
    item["decisions"] = await uow.reviews.decisions(review_id)
    return item


async def _requeue(uow: UnitOfWork, item: dict[str, Any], n: int) -> None:
    case_id = item["case_id"]
    await uow.outbox.enqueue(
        "cht",
        "follow-up",
        f"case:{case_id}",
        {"case_id": case_id},
        dedupe_key=f"cht-follow-up:{case_id}:review:{item['review_id']}:{n}",
        case_id=case_id,
        organization_id=item["organization_id"],
    )


async def act(uow: UnitOfWork, review_id: str, body: Any) -> dict[str, Any]:
    """Apply a reviewer's decision; a decided item does not change again (sticky)."""
    if uow.actor.role == "facility":
        raise FhirError.of("forbidden", "Only admin and matcher clients decide review items", status=403)
    if not isinstance(body, dict) or body.get("action") not in ACTIONS:
        raise FhirError.of("invalid", f"'action' must be one of {', '.join(ACTIONS)}", "action")
    item = await get_item(uow, review_id)
    if item["status"] not in OPEN:
        raise FhirError.of("conflict", f"Review item {review_id} was already decided ({item['status']})", status=409)
    action = body["action"]
    who = uow.actor.name or uow.actor.role
    candidates = [c["person"] for c in item["proposal"].get("candidates", [])]
    n = len(item["decisions"])
    if action == "link":
        person = body.get("person")
        if not isinstance(person, str) or (person not in candidates and await uow.cht_index.person(person) is None):
            raise FhirError.of(
                "invalid", "'person' must be a CHT person id (a candidate or an indexed person)", "person", status=422
            )
        await link_patient(uow, item["patient_id"], person)
        await uow.reviews.record(
            review_id=review_id,
            patient_id=item["patient_id"],
            action="link",
            actor=who,
            evidence=item["proposal"],
            person_id=person,
        )
        await uow.reviews.set_status(review_id, "linked")
        await _requeue(uow, item, n)
    elif action == "create":
        place = body.get("place")
        if not isinstance(place, str) or not await uow.cht_index.places([place]):
            raise FhirError.of("invalid", "'place' must be a CHT place id known to the index", "place", status=422)
        await uow.reviews.record(
            review_id=review_id,
            patient_id=item["patient_id"],
            action="create",
            actor=who,
            evidence=item["proposal"],
            place_id=place,
        )
        await uow.reviews.set_status(review_id, "created")
        await _requeue(uow, item, n)
    elif action == "reject":
        for person in candidates:
            await uow.reviews.record(
                review_id=review_id,
                patient_id=item["patient_id"],
                action="not-match",
                actor=who,
                evidence=item["proposal"],
                person_id=person,
            )
        await uow.reviews.record(
            review_id=review_id, patient_id=item["patient_id"], action="reject", actor=who, evidence=item["proposal"]
        )
        await uow.reviews.set_status(review_id, "rejected")
        await _requeue(uow, item, n)
    else:
        await uow.reviews.record(
            review_id=review_id, patient_id=item["patient_id"], action="defer", actor=who, evidence=item["proposal"]
        )
        await uow.reviews.set_status(review_id, "deferred")
    return await get_item(uow, review_id)


async def decided_place(uow: UnitOfWork, case_id: str) -> tuple[str, str | None] | None:
    """The sticky decision for a case: (``open``|``linked``|``created``|``rejected``…, the place to create
    under); None when no item exists. A rejected item lets intake run again (its negatives excluded)."""
    item = await uow.reviews.for_case(case_id)
    if item is None:
        return None
    decisions = await uow.reviews.decisions(item["review_id"])
    place = next((d["place"] for d in reversed(decisions) if d["action"] == "create"), None)
    return item["status"], place


async def expire_due(uow: UnitOfWork) -> int:
    """Items unresolved after ``LTFU_MATCH_REVIEW_DAYS``: the case is rejected ``unassignable``."""
    n = 0
    for item in await uow.reviews.due(now_instant()):
        case = await uow.cases.get(item["case_id"])
        await uow.reviews.set_status(item["review_id"], "expired")
        await uow.reviews.record(
            review_id=item["review_id"],
            patient_id=item["patient_id"],
            action="expire",
            actor="ltfu",
            evidence={"reason": item["reason"]},
        )
        if case is not None and case.status in ("requested", "received"):
            await tasks.transition(
                uow,
                item["case_id"],
                "rejected",
                "unassignable",
                reason=f"no CHT person could be matched or created in time ({item['reason']})",
            )
        n += 1
    return n
