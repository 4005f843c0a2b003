"""Task changes of a case: the state machine enforced, the case row kept in step, an event queued."""

from __future__ import annotations

from typing import Any

from ltfu.domain import task_states
from ltfu.fhir.outcome import FhirError
from ltfu.fhir.systems import Systems
from ltfu.services import notifications
from ltfu.store.resources import Stored, now_instant
from ltfu.store.reviews import OPEN
from ltfu.store.uow import UnitOfWork

BUSINESS_STATUS = {
    "awaiting-cht": "Waiting to be sent to CHT",
    "awaiting-match": "Waiting for a person to match the patient to a CHT person",
    "received-by-cht": "Received by CHT",
    "assigned-to-chw": "Assigned to a community health worker",
    "attempt-in-progress": "Follow-up attempt in progress",
    "attempt-unsuccessful": "Attempt unsuccessful; another attempt is due",
    "outcome-recorded": "Outcome recorded",
    "expired": "Follow-up window ended without an outcome",
    "unassignable": "CHT could not place the patient",
    "cancelled-by-facility": "Cancelled by the facility",
}


def business_status(systems: Systems, code: str) -> dict[str, Any]:
    return {"coding": [{"system": systems.business_status, "code": code, "display": BUSINESS_STATUS[code]}],
            "text": BUSINESS_STATUS[code]}


async def transition(
    uow: UnitOfWork,
    case_id: str,
    status: str,
    business: str,
    *,
    reason: str | None = None,
    outputs: list[dict[str, Any]] | None = None,
    owner: dict[str, Any] | None = None,
    context: list[dict[str, Any]] | None = None,
    case_values: dict[str, Any] | None = None,
    case: Any = None,
) -> Stored | None:
    """Move the case's Task; None when it is already there (replays are no-ops). ``case``: its row, when the
    caller has just read it in this unit of work (else it is read here).

    Raises FhirError 409 for a transition the state machine forbids.
    """
    if case is None:
        case = await uow.cases.get(case_id)
    if case is None:
        raise FhirError.of("not-found", f"No case {case_id}", status=404)
    task = await uow.resources.read("Task", case.task_id)
    current = task.resource["status"]
    current_business = ((task.resource.get("businessStatus") or {}).get("coding") or [{}])[0].get("code")
    if current == status and current_business == business and not outputs:
        return None
    try:
        task_states.path_to(current, status)
    except task_states.IllegalTransition as exc:
        raise FhirError.of("business-rule", str(exc), "Task.status", status=409, kind="illegal-transition") from None
    systems = Systems(uow.settings.base_url)
    now = now_instant()
    body = dict(task.resource)
    body["status"] = status
    body["businessStatus"] = business_status(systems, business)
    body["lastModified"] = now
    if reason:
        body["statusReason"] = {"text": reason}
    if owner:
        body["owner"] = owner
    if outputs:
        body["output"] = [*(body.get("output") or []), *outputs]
    period = dict(body.get("executionPeriod") or {})
    if status == "in-progress" and "start" not in period:
        period["start"] = now
    if status in task_states.TERMINAL:
        period.setdefault("start", now)
        period["end"] = now
    if period:
        body["executionPeriod"] = period
    stored = await uow.resources.update(body, case.task_id)
    values: dict[str, Any] = {"status": status, "business_status": business, "updated_at": now}
    if status in task_states.TERMINAL:
        values["closed_at"] = now
    values.update(case_values or {})
    await uow.cases.set(case_id, **values)
    if status in ("completed", "failed"):
        await _close_request(uow, case_id)
    if status in task_states.TERMINAL and current_business == "awaiting-match":
        await _close_review(uow, case_id, status, business)
    await notifications.emit_task_event(uow, stored, context, case_id=case_id)
    return stored


async def _close_review(uow: UnitOfWork, case_id: str, status: str, business: str) -> None:
    """The case ended while it waited for a match (a CHW's report on the old task, a revoked request): its
    review item has nothing left to decide. Closed, audited (who: ``ltfu``)."""
    item = await uow.reviews.for_case(case_id)
    if item is None or item["status"] not in OPEN:
        return
    await uow.reviews.set_status(item["review_id"], "closed")
    await uow.reviews.record(review_id=item["review_id"], patient_id=item["patient_id"], action="case-closed",
                             actor="ltfu", evidence={"task": status, "business": business})


async def _close_request(uow: UnitOfWork, case_id: str) -> None:
    sr = await uow.resources.get("ServiceRequest", case_id)
    if sr and sr.resource.get("status") == "active":
        await uow.resources.update({**sr.resource, "status": "completed"}, case_id)
