"""The matching review queue: list, decide (audited, sticky), and expire unresolved items.

Actions on an item (``POST /admin/review/{id}``):
- ``link`` ``{"person": ID}``: the Patient gets that CHT id; the follow-up goes to CHT;
- ``create`` ``{"place": ID}``: a new CHT person under that place, then the follow-up;
- ``reject``: none of the proposed candidates is this patient: permanent negative links (never proposed
  again), and intake runs again without them (it may then create, or come back for review);
- ``defer``: not now; the item stays and still ages into ``unassignable`` at its due time;
- ``flag-duplicate`` ``{"persons": [ID, ID, ...], "note": "..."}``: those CHT persons are one human recorded
  twice; the item stays open (the case still needs a link or create decision), matching no longer
  auto-links any of them, and they are listed for a CHT admin (``GET /admin/review/duplicates``), who
  merges them in CHT.
Every decision is stored with who, when and the evidence shown (the proposal).
"""

from __future__ import annotations

import uuid
from typing import Any

from ltfu.fhir.outcome import FhirError
from ltfu.services import policy, tasks
from ltfu.services.intake import link_patient
from ltfu.services.matching import forget_flagged_duplicates
from ltfu.store.resources import now_instant
from ltfu.store.reviews import OPEN
from ltfu.store.uow import UnitOfWork

ACTIONS = ("link", "create", "reject", "defer", "flag-duplicate")
STATUSES = {
    "open": OPEN,
    "decided": ("linked", "created", "rejected", "expired", "closed"),  # closed: the case ended first
    "all": (*OPEN, "linked", "created", "rejected", "expired", "closed"),
}
MAX_DUPLICATES = 20
DUPLICATES_LOCK = "cht-duplicate-groups"


async def list_items(uow: UnitOfWork, status: str = "open") -> list[dict[str, Any]]:
    if status not in STATUSES:
        raise FhirError.of("invalid", f"status must be one of {', '.join(STATUSES)}", "status")
    return await uow.reviews.list(statuses=STATUSES[status], organization_id=policy.review_scope(uow.actor))


async def get_item(uow: UnitOfWork, review_id: str) -> dict[str, Any]:
    """One item with its decisions; another facility's item is answered as one that does not exist."""
    item = await uow.reviews.get(review_id)
    scope = policy.review_scope(uow.actor)
    if item is None or (scope is not None and item["organization_id"] != scope):
        raise FhirError.of("not-found", f"Review item {review_id} is not known", status=404)
    item["decisions"] = await uow.reviews.decisions(review_id)
    return item


async def _requeue(uow: UnitOfWork, item: dict[str, Any]) -> None:
    """The case's follow-up goes to the CHT worker again, which now finds the decision (sticky)."""
    case_id = item["case_id"]
    await uow.outbox.enqueue(
        "cht",
        "follow-up",
        f"case:{case_id}",
        {"case_id": case_id},
        dedupe_key=f"cht-follow-up:{case_id}:review:{item['review_id']}:{len(item['decisions'])}",
        case_id=case_id,
        organization_id=item["organization_id"],
    )


async def _record(uow: UnitOfWork, item: dict[str, Any], action: str, evidence: Any = None, **target: str) -> None:
    await uow.reviews.record(
        review_id=item["review_id"],
        patient_id=item["patient_id"],
        action=action,
        actor=uow.actor.name or uow.actor.role,
        evidence=item["proposal"] if evidence is None else evidence,
        **target,
    )


async def _decide(uow: UnitOfWork, item: dict[str, Any], action: str, status: str, **target: str) -> None:
    """Record the decision, close the item with ``status`` and send the case on (all but ``defer``)."""
    await _record(uow, item, action, **target)
    await uow.reviews.set_status(item["review_id"], status)
    if status not in OPEN:
        await _requeue(uow, item)


async def _known_person(uow: UnitOfWork, person: Any, candidates: list[str]) -> bool:
    return isinstance(person, str) and (person in candidates or await uow.cht_index.person(person) is not None)


async def act(uow: UnitOfWork, review_id: str, body: Any) -> dict[str, Any]:
    """Apply a reviewer's decision; a decided item does not change again (sticky)."""
    if not isinstance(body, dict) or body.get("action") not in ACTIONS:
        raise FhirError.of("invalid", f"'action' must be one of {', '.join(ACTIONS)}", "action")
    item = await get_item(uow, review_id)  # 404 first: another facility's item is not there at all
    policy.require_review_decider(uow.actor)
    if item["status"] not in OPEN:
        raise FhirError.of("conflict", f"Review item {review_id} was already decided ({item['status']})", status=409)
    action = body["action"]
    candidates = [c["person"] for c in item["proposal"].get("candidates", [])]
    if action == "link":
        person = body.get("person")
        if not await _known_person(uow, person, candidates):
            raise FhirError.of(
                "invalid", "'person' must be a CHT person id (a candidate or an indexed person)", "person", status=422
            )
        await link_patient(uow, item["patient_id"], person)
        await uow.cases.set(item["case_id"], matched_by="reviewed")
        await _decide(uow, item, "link", "linked", person_id=person)
    elif action == "create":
        place = body.get("place")
        if not isinstance(place, str) or not await uow.cht_index.places([place]):
            raise FhirError.of("invalid", "'place' must be a CHT place id known to the index", "place", status=422)
        await _decide(uow, item, "create", "created", place_id=place)
    elif action == "reject":
        for person in candidates:
            await _record(uow, item, "not-match", person_id=person)
        await _decide(uow, item, "reject", "rejected")
    elif action == "defer":
        await _decide(uow, item, "defer", "deferred")
    else:
        await flag_duplicates(uow, item, body.get("persons"), body.get("note"), candidates)
    return await get_item(uow, review_id)


async def flag_duplicates(
    uow: UnitOfWork, item: dict[str, Any], persons: Any, note: Any, candidates: list[str]
) -> str:
    """Record that ``persons`` are one human in CHT (a CHT admin merges them in CHT). The item stays as it
    is: the case still needs a link or create decision. From now on matching never auto-links any of them
    while another of the group is indexed (``cht-duplicate``). Groups never overlap: persons of open groups
    join the oldest of them with the others (A~B then B~C: one group A, B, C). Returns the group id."""
    if (
        not isinstance(persons, list)
        or not all(isinstance(p, str) and p for p in persons)
        or not 2 <= len(set(persons)) <= MAX_DUPLICATES
    ):
        raise FhirError.of(
            "invalid", f"'persons' must list 2 to {MAX_DUPLICATES} different CHT person ids", "persons", status=422
        )
    if note is not None and not isinstance(note, str):
        raise FhirError.of("invalid", "'note' must be a string", "note", status=422)
    persons = list(dict.fromkeys(persons))
    unknown = [p for p in persons if not await _known_person(uow, p, candidates)]
    if unknown:
        raise FhirError.of(
            "invalid", f"Not a CHT person known here: {', '.join(unknown)}", "persons", status=422
        )
    await uow.lock([DUPLICATES_LOCK])  # two flags sharing a person or a group must not make two groups
    touching = await uow.duplicates.open_groups_touching(persons)
    shown = [c for c in item["proposal"].get("candidates", []) if c["person"] in persons]
    actor = uow.actor.name or uow.actor.role
    if not touching:
        group = uuid.uuid4().hex
        await uow.duplicates.create(
            group_id=group,
            persons=persons,
            actor=actor,
            review_id=item["review_id"],
            note=note or "",
            evidence={"patient": item["proposal"].get("patient"), "candidates": shown},
        )
    else:  # overlapping flags are one human: the oldest group takes the new persons and the other groups
        group, merged = touching[0], touching[1:]
        await uow.duplicates.merge(group, persons, merged, actor)
    forget_flagged_duplicates(uow.db)
    evidence: dict[str, Any] = {"group": group, "persons": persons, "candidates": shown}
    if touching[1:]:
        evidence["merged"] = touching[1:]
    if note and touching:
        evidence["note"] = note
    await _record(uow, item, "flag-duplicate", evidence=evidence)
    return group


async def duplicates(uow: UnitOfWork, status: str = "open") -> list[dict[str, Any]]:
    """The flagged groups for a CHT admin: each person's name and lineage as the index has them now (a
    person the index no longer holds was merged away or deleted in CHT), ``active`` while two are left."""
    policy.require_community_reader(uow.actor, "list the CHT persons flagged as duplicates")
    if status not in ("open", "resolved", "all"):
        raise FhirError.of("invalid", "status must be one of open, resolved, all", "status")
    groups = await uow.duplicates.list(status=None if status == "all" else status)
    found = {p.id: p for p in await uow.cht_index.persons(sorted({i for g in groups for i in g["persons"]}))}
    places = await uow.cht_index.places(
        {i for p in found.values() for i in (p.household_id, p.chw_area_id, p.unit_id) if i}
    )
    for g in groups:
        g["persons"] = [_person_view(pid, found.get(pid), places) for pid in g["persons"]]
        g["active"] = g["status"] == "open" and sum(p["indexed"] for p in g["persons"]) >= 2
    return groups


def _person_view(pid: str, person: Any, places: dict[str, Any]) -> dict[str, Any]:
    if person is None:
        return {"id": pid, "indexed": False}
    lineage = {
        level: {"id": i, "name": places[i].name if i in places else None}
        for level, i in (("household", person.household_id), ("chw_area", person.chw_area_id),
                         ("unit", person.unit_id))
        if i
    }
    return {"id": pid, "indexed": True, "name": person.name, "sex": person.sex,
            "birth_date": person.birth.iso if person.birth else None,
            "lineage": lineage}


async def resolve_duplicates(uow: UnitOfWork, group_id: str) -> dict[str, Any]:
    """A CHT admin dealt with the group (merged in CHT, or they are different people): it holds matching
    back no more. Audited (who, when)."""
    policy.require_community_reader(uow.actor, "resolve flagged CHT duplicates")
    group = await uow.duplicates.get(group_id)
    if group is None:
        raise FhirError.of("not-found", f"Duplicate group {group_id} is not known", status=404)
    if group["status"] == "open":
        await uow.duplicates.resolve(group_id, uow.actor.name or uow.actor.role)
        forget_flagged_duplicates(uow.db)
    return await uow.duplicates.get(group_id) or group


async def decided_place(uow: UnitOfWork, case_id: str) -> tuple[str, str | None] | None:
    """The sticky decision for a case: (``open``|``linked``|``created``|``rejected``…, the place to create
    under); None when no item exists. A rejected item lets intake run again (its negatives excluded)."""
    item = await uow.reviews.for_case(case_id)
    if item is None:
        return None
    decisions = await uow.reviews.decisions(item["review_id"])
    place = next((d["place"] for d in reversed(decisions) if d["action"] == "create"), None)
    return item["status"], place


async def expire_due(uow: UnitOfWork, limit: int = 200) -> int:
    """Items unresolved after ``LTFU_MATCH_REVIEW_DAYS``: the case is rejected ``unassignable``. At most ``limit``
    per call (one sweep's transaction): after a long stop, or a shorter setting, thousands may be due at once."""
    n = 0
    for item in await uow.reviews.due(now_instant(), limit):
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
