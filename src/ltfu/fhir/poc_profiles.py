"""The request rules of the reference PoC's ``/mediator/*`` API, and the reshaping it needs.

The PoC accepted a few shapes that are not valid R4 (``Organization.name`` as a one-item list,
``Encounter.class`` as a bare string, a conditional ``subject`` reference outside a transaction).
We keep accepting them and store valid R4 instead.
"""

from __future__ import annotations

import re
from typing import Any

from ltfu.fhir.outcome import FhirError, Issue

CHT_SYSTEM = "cht"
ENDPOINT_CONNECTION_SYSTEM = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# A GUID, hyphens optional: CouchDB (so CHT) ids are 32 hex digits; the PoC's joi guid() took both.
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")

# Bare ``Encounter.class`` strings seen from CHT mappings → v3-ActCode.
ENCOUNTER_CLASSES = {
    "outpatient": ("AMB", "ambulatory"),
    "ambulatory": ("AMB", "ambulatory"),
    "amb": ("AMB", "ambulatory"),
    "inpatient": ("IMP", "inpatient encounter"),
    "imp": ("IMP", "inpatient encounter"),
    "emergency": ("EMER", "emergency"),
    "emer": ("EMER", "emergency"),
    "home": ("HH", "home health"),
    "home_visit": ("HH", "home health"),
    "hh": ("HH", "home health"),
    "virtual": ("VR", "virtual"),
    "phone": ("VR", "virtual"),
    "vr": ("VR", "virtual"),
    "field": ("FLD", "field"),
    "fld": ("FLD", "field"),
}


def _fail(message: str, expression: str) -> FhirError:
    return FhirError([Issue("invalid", message, (expression,))], 400)


def _require_object(body: Any, res_type: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _fail(f"The body must be a JSON object holding a {res_type}", res_type)
    if body.get("resourceType", res_type) != res_type:
        raise _fail(f"Expected resourceType {res_type}, got {body.get('resourceType')!r}",
                    f"{res_type}.resourceType")
    return {**body, "resourceType": res_type}


def endpoint(body: Any) -> dict[str, Any]:
    r = _require_object(body, "Endpoint")
    ct = r.get("connectionType")
    if not isinstance(ct, dict) or ct.get("system") != ENDPOINT_CONNECTION_SYSTEM or ct.get("code") != "hl7-fhir-rest":
        raise _fail(f'"connectionType" must be {ENDPOINT_CONNECTION_SYSTEM}#hl7-fhir-rest', "Endpoint.connectionType")
    ident = r.get("identifier")
    if not isinstance(ident, list) or len(ident) != 1:
        raise _fail('"identifier" must contain exactly 1 item', "Endpoint.identifier")
    return r


def organization(body: Any) -> dict[str, Any]:
    r = _require_object(body, "Organization")
    name = r.get("name")
    if isinstance(name, list):
        if len(name) != 1 or not isinstance(name[0], str):
            raise _fail('"name" must contain exactly 1 item', "Organization.name")
        r["name"] = name[0]
    elif not isinstance(name, str) or not name.strip():
        raise _fail('"name" is required', "Organization.name")
    eps = r.get("endpoint")
    if not isinstance(eps, list) or len(eps) != 1:
        raise _fail('"endpoint" must contain exactly 1 item', "Organization.endpoint")
    ref = eps[0].get("reference") if isinstance(eps[0], dict) else None
    if not isinstance(ref, str) or not re.fullmatch(r"Endpoint/\S+", ref):
        raise _fail('"endpoint[0].reference" must look like Endpoint/<id>', "Organization.endpoint[0].reference")
    return r


def cht_identifier(resource: dict[str, Any]) -> str | None:
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") == CHT_SYSTEM and ident.get("value"):
            return str(ident["value"])
    return None


def patient(body: Any) -> dict[str, Any]:
    r = _require_object(body, "Patient")
    idents = r.get("identifier")
    if not isinstance(idents, list) or not idents:
        raise _fail('"identifier" must contain at least 1 item', "Patient.identifier")
    value = cht_identifier(r)
    if value is None:
        raise _fail('"identifier" needs an item with system "cht"', "Patient.identifier")
    if not _UUID.match(value):
        raise _fail('"identifier" value of system "cht" must be a valid GUID', "Patient.identifier")
    names = r.get("name")
    if not isinstance(names, list) or not names:
        raise _fail('"name" must contain at least 1 item', "Patient.name")
    for i, n in enumerate(names):
        if not isinstance(n, dict) or not isinstance(n.get("family"), str) or not n["family"]:
            raise _fail('"family" is required', f"Patient.name[{i}].family")
        if not isinstance(n.get("given"), list) or len(n["given"]) != 1:
            raise _fail('"given" must contain exactly 1 item', f"Patient.name[{i}].given")
    if not r.get("gender"):
        raise _fail('"gender" is required', "Patient.gender")
    if not r.get("birthDate"):
        raise _fail('"birthDate" is required', "Patient.birthDate")
    return r


def encounter(body: Any) -> dict[str, Any]:
    """PoC Encounter rules; ``class`` given as a bare string becomes a v3-ActCode Coding."""
    r = _require_object(body, "Encounter")
    idents = r.get("identifier")
    if not isinstance(idents, list) or len(idents) != 1 or not isinstance(idents[0], dict):
        raise _fail('"identifier" must contain exactly 1 item', "Encounter.identifier")
    if idents[0].get("system") != CHT_SYSTEM or not idents[0].get("value"):
        raise _fail('"identifier[0]" must have system "cht" and a value', "Encounter.identifier[0]")
    if not isinstance(idents[0]["value"], str) or not _UUID.match(idents[0]["value"]):
        raise _fail('"identifier[0].value" must be a valid GUID', "Encounter.identifier[0].value")
    for field in ("status", "class", "subject"):
        if r.get(field) in (None, "", {}, []):
            raise _fail(f'"{field}" is required', f"Encounter.{field}")
    for field in ("type", "participant"):
        if not isinstance(r.get(field), list) or len(r[field]) != 1:
            raise _fail(f'"{field}" must contain exactly 1 item', f"Encounter.{field}")
    cls = r["class"]
    if isinstance(cls, str):
        known = ENCOUNTER_CLASSES.get(cls.strip().lower())
        if known is None:
            raise _fail(f'"class" {cls!r} is not a known encounter class; use a v3-ActCode Coding or one of '
                        + ", ".join(sorted(ENCOUNTER_CLASSES)), "Encounter.class")
        r["class"] = {"system": ACT_CODE, "code": known[0], "display": known[1]}
    return r


def conditional_patient_reference(ref: str) -> tuple[str, str] | None:
    """``Patient/?identifier=x`` / ``Patient?identifier=sys|x`` → ('identifier', 'x' or 'sys|x')."""
    m = re.fullmatch(r"Patient/?\?identifier=(.+)", ref)
    return ("identifier", m.group(1)) if m else None


def service_request(body: Any) -> dict[str, Any]:
    """The PoC's rules: intent, ``subject`` = ``Patient/<id>``, ``requester`` = ``Organization/<identifier>``."""
    r = _require_object(body, "ServiceRequest")
    if not r.get("intent"):
        raise _fail('"intent" is required', "ServiceRequest.intent")
    for field, target in (("subject", "Patient"), ("requester", "Organization")):
        ref = r.get(field)
        if not isinstance(ref, dict):
            raise _fail(f'"{field}" is required', f"ServiceRequest.{field}")
        if not isinstance(ref.get("reference"), str) or not re.fullmatch(rf"{target}/\S+", ref["reference"]):
            raise _fail(f'"{field}.reference" must look like {target}/<id>', f"ServiceRequest.{field}.reference")
    return r
