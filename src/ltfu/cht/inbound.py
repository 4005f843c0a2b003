"""Parsing what CHT's outbound push sends us (shapes in docs/cht-contract.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ltfu.cht.contact_shapes import is_person
from ltfu.domain.outcomes import method_from_cht, outcome_from_cht
from ltfu.fhir.outcome import FhirError, Issue

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _bad(message: str, field: str) -> FhirError:
    return FhirError([Issue("invalid", message, (field,))], 400)


def _text(doc: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = doc.get(key)
    if value in (None, ""):
        if required:
            raise _bad(f"'{key}' is required", key)
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise _bad(f"'{key}' must be a string", key)
    return value.strip()


def _date(doc: dict[str, Any], key: str) -> str | None:
    value = _text(doc, key)
    if value is None:
        return None
    if not _DATE.match(value[:10]):
        raise _bad(f"'{key}' must be a date (YYYY-MM-DD)", key)
    return value[:10]


def _instant_from_ms(value: Any, key: str) -> str:
    if value in (None, ""):
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    try:
        ms = int(value)
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (TypeError, ValueError, OverflowError, OSError):
        raise _bad(f"'{key}' must be milliseconds since the epoch", key) from None


@dataclass(frozen=True)
class FollowUpReport:
    report_id: str
    reported_at: str
    case_ref: str | None
    patient_uuid: str | None
    patient_id: str | None
    chw_id: str | None
    chw_name: str | None
    attempt_no: int
    method: str
    contacted: bool | None
    outcome: str
    info_source: str | None
    next_appointment_date: str | None
    details: dict[str, str]
    notes: str | None


DETAIL_FIELDS = ("refusal_reason", "transfer_facility", "new_area", "moved_date", "death_date", "death_place",
                 "not_located_reason")


def parse_follow_up(doc: Any) -> FollowUpReport:
    if not isinstance(doc, dict):
        raise _bad("The body must be a JSON object (a follow-up report)", "$")
    report_id = _text(doc, "report_id", required=True)
    assert report_id is not None
    case_ref, patient_uuid = _text(doc, "case_ref"), _text(doc, "patient_uuid")
    if not case_ref and not patient_uuid:
        raise _bad("'case_ref' or 'patient_uuid' is required", "case_ref")
    method = method_from_cht(_text(doc, "method", required=True))
    if method is None:
        raise _bad("'method' must be one of home_visit, phone, sms", "method")
    outcome = outcome_from_cht(_text(doc, "outcome", required=True))
    if outcome is None:
        raise _bad("'outcome' is not a known follow-up outcome", "outcome")
    attempt_raw = _text(doc, "attempt_no") or "1"
    if not attempt_raw.isdigit() or int(attempt_raw) < 1:
        raise _bad("'attempt_no' must be a positive whole number", "attempt_no")
    contacted_raw = (_text(doc, "contacted") or "").lower()
    details = {k: v for k in DETAIL_FIELDS if (v := (_date(doc, k) if k.endswith("_date") else _text(doc, k)))}
    return FollowUpReport(
        report_id=report_id, reported_at=_instant_from_ms(doc.get("reported_date"), "reported_date"),
        case_ref=case_ref, patient_uuid=patient_uuid, patient_id=_text(doc, "patient_id"),
        chw_id=_text(doc, "chw_id"), chw_name=_text(doc, "chw_name"), attempt_no=int(attempt_raw), method=method,
        contacted={"yes": True, "true": True, "no": False, "false": False}.get(contacted_raw),
        outcome=outcome, info_source=_text(doc, "info_source"),
        next_appointment_date=_date(doc, "next_appointment_date"), details=details, notes=_text(doc, "notes"),
    )


@dataclass(frozen=True)
class ChtPerson:
    id: str
    name: str | None
    sex: str | None
    date_of_birth: str | None
    phone: str | None
    patient_id: str | None
    parent_id: str | None


def parse_person(doc: Any) -> ChtPerson:
    if not isinstance(doc, dict):
        raise _bad("The body must be a JSON object (a CHT person doc)", "$")
    person_id = _text(doc, "_id", required=True)
    assert person_id is not None
    if doc.get("type") is not None and not is_person(doc):  # type person, or type contact + contact_type
        raise _bad("Only person docs are accepted here", "type")
    parent = doc.get("parent")
    return ChtPerson(
        id=person_id, name=_text(doc, "name"), sex=(_text(doc, "sex") or "").lower() or None,
        date_of_birth=_date(doc, "date_of_birth"), phone=_text(doc, "phone"), patient_id=_text(doc, "patient_id"),
        parent_id=parent.get("_id") if isinstance(parent, dict) else None,
    )
