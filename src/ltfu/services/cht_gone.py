"""A CHT person that a case is linked to was deleted, or merged into another one, in CHT: back to review.

CHT has no merge record: cht-conf's ``merge-contacts`` moves the source's reports to the destination
(their ``patient_uuid``/``patient_id``) and saves the source as a bare tombstone ``{_id, _rev, _deleted}``;
a deletion from the webapp or ``delete-contacts`` ends the same way. Both reach ltfu as a deletion in
``_changes`` (``deleted: true``) or a pushed ``{_id, _deleted: true}``, and nothing on the tombstone names the
surviving person, so a human decides: every **open** case whose Patient carries that person's id
- loses the link on its Patient (the CHT contact ids and the CHT shortcode: the next delivery must not use
  them), so intake matches it again after the decision;
- gets a review item (reopened if the case had one, with a new deadline) with reason ``cht-person-gone``
  and a fresh proposal (the merge survivor is usually the first candidate);
- its Task keeps its status and gets ``businessStatus`` ``awaiting-match``; the facility is notified
  through the outbox like every Task change;
- the item records a ``cht-person-gone`` decision naming the person (who: ``ltfu``): the audit trail, and how
  a CHW's report on the old task, naming the old person, still finds its case (``services/attempts.py``).
Closed cases are left as they are. Replays (the page read again after a crash) find no Patient linked.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ltfu.fhir.systems import POC_CHT_SYSTEM, Systems
from ltfu.services import intake, tasks
from ltfu.store.reviews import GONE
from ltfu.store.uow import UnitOfWork

REASON = GONE


async def persons_gone(uow: UnitOfWork, person_ids: Sequence[str]) -> int:
    """Send the open cases linked to these (deleted or merged-away) CHT persons back to review; how many."""
    if not person_ids:
        return 0
    systems = Systems(uow.settings.base_url)
    tokens = [(system, pid, True) for pid in person_ids for system in (systems.cht_contact, POC_CHT_SYSTEM)]
    found = await uow.resources.find_ids_by_tokens("Patient", "identifier", tokens)
    gone_by_patient: dict[str, set[str]] = {}
    for (_system, pid, _), patient_ids in found.items():
        for patient_id in patient_ids:
            gone_by_patient.setdefault(patient_id, set()).add(pid)
    if not gone_by_patient:
        return 0
    open_cases = await uow.cases.open_for_patients(sorted(gone_by_patient))
    if not open_cases:
        return 0
    for patient_id in sorted({c.patient_id for c in open_cases}):
        await _unlink(uow, systems, patient_id, gone_by_patient[patient_id])
    for case in open_cases:
        await _back_to_review(uow, case, sorted(gone_by_patient[case.patient_id]))
    return len(open_cases)


async def _unlink(uow: UnitOfWork, systems: Systems, patient_id: str, gone: set[str]) -> None:
    stored = await uow.resources.read("Patient", patient_id)
    body = dict(stored.resource)
    body["identifier"] = [
        i
        for i in body.get("identifier") or []
        if not (i.get("system") in (systems.cht_contact, POC_CHT_SYSTEM) and i.get("value") in gone)
        and i.get("system") != systems.cht_patient_id
    ]
    if not body["identifier"]:
        del body["identifier"]
    if body != stored.resource:
        await uow.resources.update(body, patient_id)


async def _back_to_review(uow: UnitOfWork, case: Any, gone: list[str]) -> None:
    case_id, organization_id = case.case_id, case.organization_id
    sr = (await uow.resources.read("ServiceRequest", case_id)).resource
    patient = (await uow.resources.read("Patient", case.patient_id)).resource
    fresh = await intake.decide(uow, case_id, sr, patient, organization_id)
    proposal = orjson.dumps(fresh.proposal).decode()
    due = (datetime.now(UTC) + timedelta(days=uow.settings.match_review_days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    existing = await uow.reviews.for_case(case_id)
    if existing is not None:
        review_id = existing["review_id"]
        await uow.reviews.reopen(review_id, reason=REASON, proposal=proposal, due_at=due)
    else:
        review_id = uuid.uuid4().hex
        await uow.reviews.create(review_id=review_id, case_id=case_id, organization_id=organization_id,
                                 patient_id=patient["id"], reason=REASON, proposal=proposal, due_at=due)
    for person_id in gone:  # audited, and how a CHW's late report on the old task still finds this case
        await uow.reviews.record(review_id=review_id, patient_id=patient["id"], action=GONE, actor="ltfu",
                                 evidence={"reason": REASON, "case": case_id}, person_id=person_id)
    await tasks.transition(uow, case_id, case.status, "awaiting-match",
                           reason="the CHT person of this patient was deleted or merged in CHT: matching again")
    await uow.cases.set(case_id, matched_by="review")
