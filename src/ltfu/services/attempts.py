"""A CHW's follow-up attempt, as CHT pushes it: Encounter + outcome Observation, and the Task moved.

Idempotent: the Encounter and Observation ids derive from the CHT report ``_id`` (PUT semantics),
and a receipt with the content hash turns an unchanged re-send into a no-op.
"""

from __future__ import annotations

import uuid
from typing import Any

from ltfu.cht.inbound import FollowUpReport
from ltfu.domain.outcomes import METHOD_CLASS, METHODS, OUTCOMES, WHO_SYSTEM, Concept, is_final
from ltfu.fhir.outcome import FhirError
from ltfu.fhir.systems import ACT_CODE, POC_CHT_SYSTEM, Systems
from ltfu.services import patients, tasks
from ltfu.store.receipts import content_hash
from ltfu.store.resources import Stored, now_instant
from ltfu.store.uow import UnitOfWork

OPEN_FOR_ATTEMPTS = ("requested", "received", "accepted", "in-progress", "on-hold")
OLD_LINK_REPORT = "report-old-link"  # review decision: a CHW reported on the task of a person CHT deleted/merged


def _concept(system: str, c: Concept) -> dict[str, Any]:
    codings = [{"system": system, "code": c.code, "display": c.display}]
    if c.who:
        codings.append({"system": WHO_SYSTEM, "code": c.who})
    return {"coding": codings, "text": c.display}


def _chw(systems: Systems, report: FollowUpReport) -> dict[str, Any] | None:
    if not report.chw_id:
        return None
    ref: dict[str, Any] = {"identifier": {"system": systems.cht_contact, "value": report.chw_id}}
    if report.chw_name:
        ref["display"] = report.chw_name
    return ref


def _encounter(systems: Systems, report: FollowUpReport, case_id: str, patient: Stored,
               cht_patient: str | None) -> dict[str, Any]:
    cls = METHOD_CLASS[report.method]
    identifiers = [{"system": systems.cht_report, "value": report.report_id}]
    if cht_patient:  # keeps the PoC's `Encounter?identifier=<patient>` query working
        identifiers.append({"use": "secondary", "system": POC_CHT_SYSTEM, "value": cht_patient})
    enc: dict[str, Any] = {
        "resourceType": "Encounter",
        "identifier": identifiers,
        "status": "finished",
        "class": {"system": ACT_CODE, "code": cls[0], "display": cls[1]},
        "type": [_concept(systems.method, METHODS[report.method])],
        "subject": {"reference": patient.ref},
        "basedOn": [{"reference": f"ServiceRequest/{case_id}"}],
        "period": {"start": report.reported_at, "end": report.reported_at},
    }
    chw = _chw(systems, report)
    if chw:
        enc["participant"] = [{"individual": chw}]
    return enc


def _observation(systems: Systems, report: FollowUpReport, case_id: str, patient: Stored,
                 encounter_id: str) -> dict[str, Any]:
    components: list[dict[str, Any]] = []

    def component(code: str, text: str, **value: Any) -> None:
        components.append({"code": {"coding": [{"system": systems.outcome, "code": code}], "text": text}, **value})

    if report.contacted is not None:
        component("patient-contacted", "Patient contacted", valueBoolean=report.contacted)
    if report.next_appointment_date:
        component("next-appointment-date", "Next appointment", valueDateTime=report.next_appointment_date)
    if report.info_source:
        component("information-source", "Source of information",
                  valueCodeableConcept={"text": report.info_source})
    for key, value in report.details.items():
        kind = {"valueDateTime": value} if key.endswith("_date") else {"valueString": value}
        component(key.replace("_", "-"), key.replace("_", " ").capitalize(), **kind)
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": systems.cht_observation, "value": f"{report.report_id}:outcome"}],
        "basedOn": [{"reference": f"ServiceRequest/{case_id}"}],
        "status": "final",
        "code": {"coding": [{"system": WHO_SYSTEM, "code": "HIV.H.DE23", "display": "Tracing outcome"}],
                 "text": "Follow-up outcome"},
        "subject": {"reference": patient.ref},
        "encounter": {"reference": f"Encounter/{encounter_id}"},
        "effectiveDateTime": report.reported_at,
        "valueCodeableConcept": _concept(systems.outcome, OUTCOMES[report.outcome]),
    }
    chw = _chw(systems, report)
    if chw:
        obs["performer"] = [chw]
    if components:
        obs["component"] = components
    if report.notes:
        obs["note"] = [{"text": report.notes}]
    return obs


async def _find_case(uow: UnitOfWork, report: FollowUpReport) -> tuple[Any, bool]:
    """(the case, whether the report names a CHT person its Patient was linked to until CHT deleted or merged
    it: the CHW worked on the old task)."""
    if report.case_ref:
        case = await uow.cases.get(report.case_ref)
        if case is not None:
            return case, await _check_same_patient(uow, report, case)
    if report.patient_uuid:
        patient = await patients.find(uow, report.patient_uuid)
        if patient is not None:
            case = await uow.cases.open_for_patient(patient.resource["id"])
            if case is not None:
                return case, False
        case = await _case_of_gone_person(uow, report.patient_uuid)
        if case is not None:
            return case, True
    raise FhirError.of("not-found", "No follow-up case matches this report's case_ref or patient", "case_ref",
                       status=404)


def _person_id(patient_uuid: str) -> str:
    return patient_uuid.rpartition("|")[2]


async def _case_of_gone_person(uow: UnitOfWork, patient_uuid: str) -> Any:
    """The open case whose Patient was linked to this CHT person until CHT deleted or merged it away (the
    CHW's task was made for it); None when there is none; 409 when several Patients were."""
    found = [c for pid in await uow.reviews.linked_before(_person_id(patient_uuid))
             if (c := await uow.cases.open_for_patient(pid)) is not None]
    if len(found) > 1:
        raise FhirError.of("multiple-matches", "More than one open case was linked to that CHT person",
                           "patient_uuid", status=409)
    return found[0] if found else None


async def _check_same_patient(uow: UnitOfWork, report: FollowUpReport, case: Any) -> bool:
    """``case_ref`` and ``patient_uuid`` must name the same person: a report cannot land on another case.

    The person may be one the case's Patient was linked to until CHT deleted or merged it (the CHW worked on
    the old task): that report belongs to this case (True); a person another Patient was linked to does not."""
    if not report.patient_uuid:
        return False
    system, _, value = report.patient_uuid.rpartition("|")
    carriers = await uow.resources.find_ids_by_token("Patient", "identifier", system or None, value)
    if case.patient_id in carriers or report.patient_uuid == case.patient_id:
        return False  # the case's Patient carries the id (CHT's push may have made another Patient for the person)
    linked_before = await uow.reviews.linked_before(value)
    if case.patient_id in linked_before:
        return True
    patient = await patients.find(uow, report.patient_uuid)
    other = patient is not None and case.patient_id not in (
        patient.resource["id"], patients.replaced_by(patient.resource))
    if other or linked_before:
        raise FhirError.of("conflict", "case_ref and patient_uuid name different patients", "patient_uuid",
                           status=409)
    return False


async def record_follow_up(uow: UnitOfWork, report: FollowUpReport, raw: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Store the attempt; returns (result, changed). Replays of the same content change nothing."""
    key = f"cht-report:{report.report_id}"
    digest = content_hash(raw)
    seen = await uow.receipts.get(key)
    if seen and seen[0] == digest:
        return seen[1], False
    case, old_link = await _find_case(uow, report)
    systems = Systems(uow.settings.base_url)
    enc_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"cht-report:{report.report_id}"))
    obs_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"cht-report:{report.report_id}:outcome"))
    # what the attempt reads and writes, in one statement: the patient, the attempt's own resources (from an
    # earlier version of the report), the Task it moves and the ServiceRequest a final outcome closes
    await uow.resources.prefetch([("Patient", case.patient_id), ("Encounter", enc_id), ("Observation", obs_id),
                                  ("Task", case.task_id), ("ServiceRequest", case.case_id)])
    patient = await uow.resources.read("Patient", case.patient_id)
    encounter = await uow.resources.update(
        {**_encounter(systems, report, case.case_id, patient, report.patient_uuid), "id": enc_id}, enc_id)
    observation = await uow.resources.update(
        {**_observation(systems, report, case.case_id, patient, enc_id), "id": obs_id}, obs_id)
    result = {"case": case.case_id, "encounter": f"Encounter/{enc_id}", "observation": f"Observation/{obs_id}"}
    if old_link:
        await _audit_old_link(uow, case, report, result)
    if case.status in OPEN_FOR_ATTEMPTS:
        await _advance(uow, case, report, encounter, observation, systems)
    await uow.receipts.put(key, digest, result, exists=seen is not None)
    return result, True


async def _audit_old_link(uow: UnitOfWork, case: Any, report: FollowUpReport, result: dict[str, Any]) -> None:
    """A report on the task of a person CHT deleted or merged away: recorded on the case (above) and noted on
    its review item, where the reviewer sees it beside the decision still to take."""
    item = await uow.reviews.for_case(case.case_id)
    if item is not None:
        await uow.reviews.record(review_id=item["review_id"], patient_id=case.patient_id, action=OLD_LINK_REPORT,
                                 actor=uow.actor.name or uow.actor.role,
                                 person_id=_person_id(report.patient_uuid or ""),
                                 evidence={"report": report.report_id, "outcome": report.outcome, **result})


async def _advance(uow: UnitOfWork, case: Any, report: FollowUpReport, encounter: Stored, observation: Stored,
                   systems: Systems) -> None:
    final = is_final(report.outcome, report.attempt_no, uow.settings.max_attempts)
    values: dict[str, Any] = {"attempts": max(case.attempts or 0, report.attempt_no)}
    if case.first_attempt_at is None:
        values["first_attempt_at"] = report.reported_at
    if case.sent_to_cht_at is None:  # a CHW acted on it, so it reached CHT even if CHT's answer was lost
        values["sent_to_cht_at"] = report.reported_at
    if report.chw_id:
        values["chw_id"] = report.chw_id
    owner = _chw(systems, report)
    context = [encounter.resource, observation.resource]
    if final:
        values["outcome"] = report.outcome
        outputs = [
            {"type": {"text": "outcome"}, "valueCodeableConcept": _concept(systems.outcome, OUTCOMES[report.outcome])},
            {"type": {"text": "encounter"}, "valueReference": {"reference": encounter.ref}},
        ]
        await tasks.transition(uow, case.case_id, "completed", "outcome-recorded", outputs=outputs, owner=owner,
                               context=context, case_values=values, case=case)
    else:
        # a case waiting for its new CHT person (the old one deleted or merged in CHT) keeps waiting: the
        # reviewer's decision still sends it to the new person (delivery/cht_submitter.py)
        business = "awaiting-match" if case.business_status == "awaiting-match" else "attempt-unsuccessful"
        await tasks.transition(uow, case.case_id, "in-progress", business, owner=owner,
                               context=context, case_values=values, case=case)


async def link_poc_encounter(uow: UnitOfWork, encounter: dict[str, Any], patient_id: str) -> dict[str, Any]:
    """The PoC's Encounter: tie it to the patient's open case (basedOn) before it is stored."""
    case = await uow.cases.open_for_patient(patient_id)
    if case is None:
        return encounter
    based = [b for b in encounter.get("basedOn") or [] if b.get("reference") != f"ServiceRequest/{case.case_id}"]
    return {**encounter, "basedOn": [*based, {"reference": f"ServiceRequest/{case.case_id}"}]}


async def poc_encounter_recorded(uow: UnitOfWork, encounter: Stored) -> None:
    """A PoC visit report moves the open case to in-progress (an attempt without a coded outcome)."""
    for ref in encounter.resource.get("basedOn") or []:
        case_id = ref.get("reference", "").removeprefix("ServiceRequest/")
        case = await uow.cases.get(case_id)
        if case is not None and case.status in ("requested", "received", "accepted"):
            values = {"attempts": (case.attempts or 0) + 1}
            if case.first_attempt_at is None:
                values["first_attempt_at"] = now_instant()
            await tasks.transition(uow, case_id, "in-progress", "attempt-in-progress", context=[encounter.resource],
                                   case_values=values)
