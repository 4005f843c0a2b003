"""CHT records-API payloads for a case (field names fixed in docs/cht-contract.md)."""

from __future__ import annotations

from datetime import date
from typing import Any

from ltfu.cht.doc_ids import is_doc_id
from ltfu.fhir.systems import POC_CHT_SYSTEM, Systems


def cht_contact_id(patient: dict[str, Any], systems: Systems) -> str | None:
    """The patient's CHT person ``_id``: our CHT identifier, or the PoC's ``cht`` one. A value that is
    not a CHT document id (a facility wrote it) is ignored: it never becomes a CHT URL path."""
    for wanted in (systems.cht_contact, POC_CHT_SYSTEM):
        for ident in patient.get("identifier") or []:
            if ident.get("system") == wanted and ident.get("value") and is_doc_id(str(ident["value"])):
                return str(ident["value"])
    return None


def cht_shortcode(patient: dict[str, Any], systems: Systems) -> str | None:
    for ident in patient.get("identifier") or []:
        if ident.get("system") == systems.cht_patient_id and ident.get("value"):
            return str(ident["value"])
    return None


def _date(value: str | None) -> str | None:
    """The calendar date (YYYY-MM-DD) of a FHIR date/dateTime, or nothing: a JSON-form ``date`` field
    stores anything but an ISO date as null, silently (recorded on cht-core 5.2), so a partial date
    (``2026-11``) is left out rather than sent."""
    if not value or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10]).isoformat()
    except ValueError:
        return None


def follow_up_record(
    form: str, *, case_id: str, patient_uuid: str | None, patient_shortcode: str | None,
    request: dict[str, Any], organization: dict[str, Any] | None, window_end: str | None,
) -> dict[str, Any]:
    reason = next(iter(request.get("reasonCode") or []), {})
    coding = next(iter(reason.get("coding") or []), {})
    ident = next(iter(request.get("identifier") or []), {})
    org_ident = next(iter((organization or {}).get("identifier") or []), {})
    period = request.get("occurrencePeriod") or {}
    fields: dict[str, Any] = {
        "patient_uuid": patient_uuid,
        "patient_id": patient_shortcode,
        "case_ref": case_id,
        "request_id": ident.get("value"),
        "facility_id": org_ident.get("value"),
        "facility_name": (organization or {}).get("name"),
        "reason": coding.get("code"),
        "reason_text": reason.get("text") or coding.get("display"),
        "missed_appointment_date": _date(period.get("start") or request.get("occurrenceDateTime")),
        "due_date": _date(window_end),
        "priority": request.get("priority"),
    }
    return {"_meta": {"form": form}, **{k: v for k, v in fields.items() if v is not None}}


def cancel_record(form: str, *, case_id: str, patient_uuid: str | None, reason: str | None) -> dict[str, Any]:
    fields = {"patient_uuid": patient_uuid, "case_ref": case_id, "reason": reason}
    return {"_meta": {"form": form}, **{k: v for k, v in fields.items() if v is not None}}
