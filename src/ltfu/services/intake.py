"""Intake of a case whose Patient carries no CHT id: match, then link, create in CHT, or ask a human.

Runs in the CHT delivery worker, never inside the facility's request. Order:
1. a decision already taken in the review queue for this case wins (decisions are sticky: a linked case
   keeps its person even when the Patient comes back without the CHT id, a created one its place);
2. a ``certain`` match → the Patient gets the CHT id;
3. no candidate at all and one place resolved → a new CHT person under that place;
4. anything else (probable/possible candidates, no candidate from a block too large to read whole, several
   places, no place) → the review queue, Task
   ``businessStatus`` ``awaiting-match`` (the facility is told); after ``LTFU_MATCH_REVIEW_DAYS`` the case
   is rejected ``unassignable``. Never an orphan person, never a default CHW.

Place resolution (where a new person goes), first that answers:
- ``ServiceRequest.locationCode`` coding with system ``{base}/CodeSystem/cht-place`` (a CHT place id) or
  ``{base}/CodeSystem/cht-community-unit`` (a community-unit ``code``, e.g. the Kenyan MCUL code);
- the same codings in an extension ``{base}/StructureDefinition/cht-place`` on ``Patient.address``;
- ``Patient.address.city``/``district``/``text`` (the village or unit name) matched, order-free, among the
  places of the facility's catchment (rapidfuzz ``token_set_ratio`` ≥ 90; several equal hits: ambiguous).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from rapidfuzz import fuzz

from ltfu.domain.matching.normalise import name_tokens
from ltfu.domain.matching.records import MatchResult, Place
from ltfu.fhir.match_patient import person_from_patient
from ltfu.fhir.systems import POC_CHT_SYSTEM, Systems
from ltfu.services import catchment, tasks
from ltfu.services.matching import find_matches
from ltfu.store.search import unclaimed_patients
from ltfu.store.uow import UnitOfWork

PLACE_NAME_SCORE = 90.0
#: outbox kind (destination ``cht``): the linked Patient's identifiers written to the CHT person
PERSON_IDENTIFIERS = "person-identifiers"


def place_system(systems: Systems) -> str:
    return f"{systems.base}/CodeSystem/cht-place"


def unit_code_system(systems: Systems) -> str:
    return f"{systems.base}/CodeSystem/cht-community-unit"


@dataclass
class Decision:
    action: str  # link | create | review
    person_id: str | None = None
    place_id: str | None = None
    reason: str = ""  # link: identifier | score | reviewed; create: no-candidate | review; review: why
    proposal: dict[str, Any] = field(default_factory=dict)


def _codings(sr: dict[str, Any], patient: dict[str, Any], systems: Systems) -> list[tuple[str, str]]:
    wanted = {place_system(systems), unit_code_system(systems)}
    found: list[tuple[str, str]] = []
    for concept in sr.get("locationCode") or []:
        for c in (concept or {}).get("coding") or []:
            if isinstance(c, dict) and c.get("system") in wanted and isinstance(c.get("code"), str):
                found.append((c["system"], c["code"]))
    for address in patient.get("address") or []:
        for ext in (address or {}).get("extension") or []:
            coding = (ext or {}).get("valueCoding") or {}
            if ext.get("url") == f"{systems.base}/StructureDefinition/cht-place" and coding.get("system") in wanted:
                found.append((coding["system"], str(coding.get("code"))))
    return found


async def resolve_place(
    uow: UnitOfWork, sr: dict[str, Any], patient: dict[str, Any], organization_id: str | None
) -> tuple[list[Place], str]:
    """(the places a new person could go under, how they were found). One place: create; more: ambiguous."""
    systems = Systems(uow.settings.base_url)
    for system, code in _codings(sr, patient, systems):
        if system == place_system(systems):
            places = list((await uow.cht_index.places([code])).values())
        else:
            places = await uow.cht_index.places_where(code=code)
        if places:
            return places, "code"
    names = [
        a.get(k)
        for a in patient.get("address") or []
        if isinstance(a, dict)
        for k in ("city", "district", "text")
        if isinstance(a.get(k), str)
    ]
    if not names or organization_id is None:
        return [], "none"
    roots = await catchment.catchment(uow, organization_id)
    pool = await uow.cht_index.places_under([p.id for p in roots]) if roots else []
    scored: list[tuple[float, Place]] = []
    for place in pool:
        best = max(fuzz.token_set_ratio(" ".join(name_tokens(n)), place.name_norm) for n in names)
        if best >= PLACE_NAME_SCORE:
            scored.append((best, place))
    if not scored:
        return [], "none"
    top = max(s for s, _ in scored)
    return [p for s, p in scored if s == top], "name"


def _proposal(patient: dict[str, Any], result: MatchResult, places: list[Place]) -> dict[str, Any]:
    """What the reviewer sees: the incoming patient, up to 5 candidates with every field's weight, places."""
    return {
        "patient": patient,
        "candidates": [
            {
                "person": c.person_id,
                "name": c.person.name,
                "grade": c.grade,
                "score": round(c.probability, 6),
                "weight": round(c.weight, 2),
                "reasons": list(c.reasons),
                "lineage": {
                    "household": c.person.household_id,
                    "chw_area": c.person.chw_area_id,
                    "unit": c.person.unit_id,
                },
                "fields": [
                    {
                        "field": f.field,
                        "verdict": f.verdict,
                        "level": f.level,
                        "weight": round(f.weight, 2),
                        "incoming": f.incoming,
                        "candidate": f.candidate,
                    }
                    for f in c.fields
                ],
            }
            for c in result.candidates[:5]
        ],
        "places": [{"id": p.id, "name": p.name, "contact_type": p.contact_type} for p in places[:5]],
        "notes": list(result.reasons),
    }


async def _manual_decision(uow: UnitOfWork, case_id: str) -> Decision | None:
    """A reviewer's link or create for this case wins over any new matching (sticky): the Patient may have
    lost the CHT id (the EMR sent it again) or the index changed since."""
    item = await uow.reviews.for_case(case_id)
    if item is None or item["status"] not in ("linked", "created"):
        return None
    chosen = next(
        (d for d in reversed(await uow.reviews.decisions(item["review_id"])) if d["action"] in ("link", "create")),
        None,
    )
    if chosen is None:
        return None
    if chosen["action"] == "link":
        return Decision("link", person_id=chosen["person"], reason="reviewed", proposal=item["proposal"])
    return Decision("create", place_id=chosen["place"], reason="review", proposal=item["proposal"])


async def decide(
    uow: UnitOfWork, case_id: str, sr: dict[str, Any], patient: dict[str, Any], organization_id: str | None
) -> Decision:
    manual = await _manual_decision(uow, case_id)
    if manual is not None:
        return manual
    settings = uow.settings
    systems = Systems(settings.base_url)
    codes = await catchment.facility_codes(uow, organization_id) if organization_id else []
    incoming = person_from_patient(patient, systems, settings.match_identifiers, settings.match_default_region,
                                   facility_code=codes[0] if codes else None)
    excluded = await uow.reviews.negative_links(patient["id"])
    result = await find_matches(uow, incoming, excluded=excluded)
    places, _how = await resolve_place(uow, sr, patient, organization_id)
    proposal = _proposal(patient, result, places)
    if result.decision == "link" and result.best is not None:
        how = "identifier" if "identifier" in result.best.reasons else "score"
        return Decision("link", person_id=result.best.person_id, reason=how, proposal=proposal)
    if result.decision == "none":
        if len(places) == 1:
            return Decision("create", place_id=places[0].id, reason="no-candidate", proposal=proposal)
        return Decision("review", reason="ambiguous-place" if places else "no-place", proposal=proposal)
    return Decision("review", reason=_review_reason(result), proposal=proposal)


def _review_reason(result: MatchResult) -> str:
    for reason in ("cht-duplicate", "conflict"):
        if reason in result.reasons:
            return reason
    if result.best is not None:
        return result.best.grade
    return "block-overflow" if "block-overflow" in result.reasons else "review"


async def link_patient(uow: UnitOfWork, patient_id: str, person_id: str) -> None:
    """The Patient gets the CHT contact id (both ltfu's system and the PoC's), once. With
    ``LTFU_CHT_WRITE_IDENTIFIERS`` the Patient's MRN/UPI go to the CHT person too, through the outbox (in this
    transaction; once per Patient and person), so the next match finds the person by identifier."""
    systems = Systems(uow.settings.base_url)
    stored = await uow.resources.read("Patient", patient_id)
    body = dict(stored.resource)
    identifiers = [
        i for i in body.get("identifier") or [] if i.get("system") not in (systems.cht_contact, POC_CHT_SYSTEM)
    ]
    identifiers += [
        {"use": "official", "system": systems.cht_contact, "value": person_id},
        {"use": "secondary", "system": POC_CHT_SYSTEM, "value": person_id},
    ]
    body["identifier"] = identifiers
    if body != stored.resource:
        await uow.resources.update(body, patient_id)
    await retire_pushed_twins(uow, patient_id, person_id)
    if uow.settings.cht_write_identifiers:
        await uow.outbox.enqueue(
            "cht",
            PERSON_IDENTIFIERS,
            f"cht-person:{person_id}",
            {"person_id": person_id, "patient_id": patient_id},
            dedupe_key=f"cht-identifiers:{patient_id}:{person_id}",
        )


async def retire_pushed_twins(uow: UnitOfWork, patient_id: str, person_id: str) -> None:
    """One Patient per CHT person in the loop: a Patient ltfu made from CHT's push for this person (nobody's,
    in no case) is retired once a facility's Patient is linked to the person: ``active: false`` and
    ``link`` ``replaced-by`` the facility's Patient. It keeps its identifiers (history, and a FHIR search
    still finds it, marked); look-ups by CHT id (services/patients.py) and later pushes go to the survivor.
    Another facility's own Patient for the same person is not touched."""
    systems = Systems(uow.settings.base_url)
    carriers: list[str] = []
    for system in (systems.cht_contact, POC_CHT_SYSTEM):
        carriers += await uow.resources.find_ids_by_token("Patient", "identifier", system, person_id)
    others = [i for i in dict.fromkeys(carriers) if i != patient_id]
    for twin in await unclaimed_patients(uow.conn, others):
        stored = await uow.resources.read("Patient", twin)
        body = dict(stored.resource)
        link = {"other": {"reference": f"Patient/{patient_id}"}, "type": "replaced-by"}
        if body.get("active") is False and link in (body.get("link") or []):
            continue
        body["active"] = False
        body["link"] = [*(x for x in body.get("link") or [] if x.get("type") != "replaced-by"), link]
        await uow.resources.update(body, twin)


async def open_review(
    uow: UnitOfWork, case_id: str, organization_id: str | None, patient_id: str, decision: Decision
) -> str:
    """A review item for the case (one per case), the Task ``awaiting-match``, the facility notified."""
    existing = await uow.reviews.for_case(case_id)
    if existing is not None:
        if existing["status"] == "rejected":
            await uow.reviews.reopen(
                existing["review_id"], reason=decision.reason, proposal=orjson.dumps(decision.proposal).decode()
            )
        return existing["review_id"]
    review_id = uuid.uuid4().hex
    due = (datetime.now(UTC) + timedelta(days=uow.settings.match_review_days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    await uow.reviews.create(
        review_id=review_id,
        case_id=case_id,
        organization_id=organization_id,
        patient_id=patient_id,
        reason=decision.reason,
        proposal=orjson.dumps(decision.proposal).decode(),
        due_at=due,
    )
    await tasks.transition(
        uow,
        case_id,
        "requested",
        "awaiting-match",
        reason=f"patient matching needs a person to decide ({decision.reason})",
    )
    return review_id
