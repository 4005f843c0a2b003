"""Import a facility's defaulter line list (CSV, as EMRs export them) as LTFU requests.

Each row becomes one FHIR transaction (Patient with ``ifNoneExist`` on the MRN + ServiceRequest),
through the same services as the FHIR API: the request identifier keeps re-imports idempotent, and
a bad row is reported and skipped without stopping the others.

Columns (header names, case-insensitive; extra columns ignored):
``mrn`` (required), ``request_id`` (default: ``<list>-<mrn>``), ``given``, ``family``, ``sex``,
``birth_date``, ``phone``, ``cht_id`` (the CHT person ``_id``, when known), ``missed_appointment``
(YYYY-MM-DD), ``reason`` (WHO HIV.H.DE1 code, default ``HIV.H.DE2``), ``window_end`` (YYYY-MM-DD).
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ltfu.domain.outcomes import WHO_SYSTEM
from ltfu.fhir.outcome import FhirError
from ltfu.fhir.systems import Systems
from ltfu.services import bundles
from ltfu.store.uow import UnitOfWork

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SEX = {"m": "male", "male": "male", "f": "female", "female": "female", "o": "other", "other": "other"}


@dataclass(frozen=True)
class RowResult:
    line: int
    request_id: str | None
    status: str  # created | existing | error
    detail: str = ""


@dataclass(frozen=True)
class ListContext:
    organization_id: str
    list_id: str
    mrn_system: str
    request_system: str
    systems: Systems


def read_rows(text: str) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    if not reader.fieldnames or "mrn" not in {f.strip().lower() for f in reader.fieldnames}:
        raise ValueError("the CSV needs a header row with at least an 'mrn' column")
    for row in reader:
        yield reader.line_num, {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}


def row_bundle(row: dict[str, str], ctx: ListContext) -> dict[str, Any]:
    """The transaction for one row; ValueError with a reason for a row that cannot be sent."""
    mrn = row.get("mrn")
    if not mrn:
        raise ValueError("no mrn")
    for key in ("birth_date", "missed_appointment", "window_end"):
        if row.get(key) and not _DATE.match(row[key]):
            raise ValueError(f"{key} must be YYYY-MM-DD")
    identifiers = [{"system": ctx.mrn_system, "value": mrn}]
    if row.get("cht_id"):
        identifiers.append({"system": ctx.systems.cht_contact, "value": row["cht_id"]})
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers}
    if row.get("given") or row.get("family"):
        name: dict[str, Any] = {}
        if row.get("family"):
            name["family"] = row["family"]
        if row.get("given"):
            name["given"] = row["given"].split()
        patient["name"] = [name]
    if row.get("sex"):
        patient["gender"] = _SEX.get(row["sex"].lower(), "unknown")
    if row.get("birth_date"):
        patient["birthDate"] = row["birth_date"]
    if row.get("phone"):
        patient["telecom"] = [{"system": "phone", "value": row["phone"], "use": "mobile"}]
    request_id = row.get("request_id") or f"{ctx.list_id}-{mrn}"
    patient_ref = f"urn:uuid:{uuid.uuid4()}"
    request: dict[str, Any] = {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "identifier": [{"system": ctx.request_system, "value": request_id}],
        "requisition": {"system": ctx.request_system.rsplit("/", 1)[0] + "/defaulter-list", "value": ctx.list_id},
        "code": {"coding": [{"system": ctx.systems.ltfu_code, "code": "ltfu-tracing"}]},
        "subject": {"reference": patient_ref},
        "requester": {"reference": f"Organization/{ctx.organization_id}"},
        "reasonCode": [{"coding": [{"system": WHO_SYSTEM, "code": row.get("reason") or "HIV.H.DE2"}]}],
    }
    period = {k: v for k, v in (("start", row.get("missed_appointment")), ("end", row.get("window_end"))) if v}
    if period:
        request["occurrencePeriod"] = period
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": patient_ref, "resource": patient,
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={ctx.mrn_system}|{mrn}"}},
        {"resource": request, "request": {"method": "POST", "url": "ServiceRequest",
                                          "ifNoneExist": f"identifier={ctx.request_system}|{request_id}"}},
    ]}


async def _no_search(uow: UnitOfWork, res_type: str, params: list[tuple[str, str]]) -> dict[str, Any]:
    raise FhirError.of("not-supported", "A line list has no searches")


async def import_row(uow: UnitOfWork, line: int, row: dict[str, str], ctx: ListContext) -> RowResult:
    request_id = row.get("request_id") or (f"{ctx.list_id}-{row['mrn']}" if row.get("mrn") else None)
    try:
        bundle = row_bundle(row, ctx)
    except ValueError as exc:
        return RowResult(line, request_id, "error", str(exc))
    results = await bundles.transaction(uow, bundle, _no_search)
    return RowResult(line, request_id, "created" if results[1].status.startswith("201") else "existing")
