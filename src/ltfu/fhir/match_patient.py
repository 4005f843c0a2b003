"""FHIR Patient ⇄ the matcher's person, and the ``Patient/$match`` searchset (IHE PDQm ITI-119 shape).

Identifier systems map to CHT fields through ``LTFU_MATCH_IDENTIFIERS``; ltfu's own CHT systems always
do (``cht-contact-id`` → ``_id``, ``cht-patient-id`` → ``patient_id``); any other system is a facility MRN
(``mrn:<system>``), which agrees strongly but never vetoes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ltfu.domain.matching.normalise import birth_date, identifier_value, name_tokens, phone_e164, sex_code
from ltfu.domain.matching.records import Candidate, Person, Place
from ltfu.fhir.outcome import FhirError, Issue
from ltfu.fhir.systems import POC_CHT_SYSTEM, Systems

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
_GENDER = {"M": "male", "F": "female"}


def _kinds(systems: Systems, mapping: Mapping[str, str]) -> dict[str, str]:
    out = {system: ("cht_id" if field == "_id" else field) for system, field in mapping.items()}
    out.update({systems.cht_contact: "cht_id", POC_CHT_SYSTEM: "cht_id", systems.cht_patient_id: "patient_id"})
    return out


def _best_name(patient: dict[str, Any]) -> dict[str, Any]:
    names = [n for n in patient.get("name") or [] if isinstance(n, dict)]
    for use in ("official", "usual", None):
        for name in names:
            if use is None or name.get("use") == use:
                return name
    return {}


def person_from_patient(
    patient: Any,
    systems: Systems,
    mapping: Mapping[str, str],
    region: str = "KE",
    *,
    unit_code: str | None = None,
    facility_code: str | None = None,
) -> Person:
    """The incoming patient, normalised. Junk identifiers and phones are dropped, not errors; a patient with
    neither a usable name nor a usable identifier is a 422 naming both."""
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        raise FhirError([Issue("invalid", "The resource to match must be a Patient", ("Patient",))], 400)
    kinds = _kinds(systems, mapping)
    identifiers: list[tuple[str, str]] = []
    for ident in patient.get("identifier") or []:
        if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
            continue
        system = ident.get("system") if isinstance(ident.get("system"), str) else ""
        kind = kinds.get(system) or (f"mrn:{system}" if system else None)
        if kind is None:
            continue
        value = ident["value"].strip() if kind == "cht_id" else identifier_value(ident["value"])
        if value:
            identifiers.append((kind, value))
    name = _best_name(patient)
    given = tuple(t for g in name.get("given") or [] if isinstance(g, str) for t in name_tokens(g))
    family = name_tokens(name.get("family")) if isinstance(name.get("family"), str) else ()
    if not given and not family and isinstance(name.get("text"), str):
        tokens = name_tokens(name["text"])
        given, family = (tokens[:-1], tokens[-1:]) if len(tokens) > 1 else (tokens, ())
    if not given and not family and not identifiers:
        raise FhirError(
            [
                Issue(
                    "required",
                    "The Patient has neither a usable name (name.given, name.family or "
                    "name.text) nor a usable identifier (identifier.system and identifier.value)",
                    ("Patient.name", "Patient.identifier"),
                )
            ],
            422,
        )
    phones = tuple(
        dict.fromkeys(
            p
            for t in patient.get("telecom") or []
            if isinstance(t, dict)
            and t.get("system") in ("phone", "sms", None)
            and (p := phone_e164(t.get("value") if isinstance(t.get("value"), str) else None, region))
        )
    )
    return Person(
        given=given,
        family=family,
        sex=sex_code(patient.get("gender") if isinstance(patient.get("gender"), str) else None),
        birth=birth_date(patient.get("birthDate") if isinstance(patient.get("birthDate"), str) else None),
        phones=phones,
        identifiers=tuple(dict.fromkeys(identifiers)),
        unit_code=unit_code,
        facility_code=facility_code,
    )


def patient_from_person(
    person: Person, places: Mapping[str, Place], systems: Systems, mapping: Mapping[str, str]
) -> dict[str, Any]:
    """A CHT person projected as a Patient: its CHT id, identifiers, name, sex, birth date, lineage as address."""
    system_of: dict[str, str] = {}
    for system, field in mapping.items():
        system_of.setdefault("cht_id" if field == "_id" else field, system)
    system_of.update({"cht_id": systems.cht_contact, "patient_id": systems.cht_patient_id})
    identifiers = []
    for kind, value in person.identifiers:
        if kind.startswith("mrn:"):
            identifiers.append({"system": kind[4:], "value": value})
        else:
            identifiers.append(
                {"system": system_of.get(kind, f"{systems.base}/NamingSystem/cht-{kind}"), "value": value}
            )
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": person.id,
        "identifier": identifiers,
        "gender": _GENDER.get(person.sex or "", "unknown"),
    }
    name: dict[str, Any] = {"text": person.name or " ".join(person.tokens)}
    if person.family:
        name["family"] = " ".join(t.title() for t in person.family)
    if person.given:
        name["given"] = [t.title() for t in person.given]
    patient["name"] = [name]
    if person.birth:
        patient["birthDate"] = person.birth.iso
    if person.phones:
        patient["telecom"] = [{"system": "phone", "value": p} for p in person.phones]
    line = [places[i].name for i in (person.household_id, person.chw_area_id) if i and i in places]
    unit = places.get(person.unit_id or "")
    if line or unit:
        address: dict[str, Any] = {"use": "home", "text": " / ".join([*line, *([unit.name] if unit else [])])}
        if line:
            address["line"] = line
        if unit:
            address["district"] = unit.name
        patient["address"] = [address]
    return patient


def match_bundle(
    candidates: list[tuple[Candidate, dict[str, Any]]], base_url: str, warnings: list[str] = ()
) -> dict[str, Any]:
    """A ``searchset`` ordered by score, each entry with ``search.score`` and the match-grade extension."""
    ordered = sorted(candidates, key=lambda c: (-c[0].probability, c[0].grade != "certain", c[0].person_id))
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"{base_url}/Patient/{candidate.person_id}",
            "resource": patient,
            "search": {
                "mode": "match",
                "score": round(candidate.probability, 6),
                "extension": [{"url": MATCH_GRADE, "valueCode": candidate.grade}],
            },
        }
        for candidate, patient in ordered
    ]
    if warnings:
        entries.append(
            {
                "resource": {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "warning", "code": "incomplete", "diagnostics": w} for w in warnings],
                },
                "search": {"mode": "outcome"},
            }
        )
    return {"resourceType": "Bundle", "type": "searchset", "total": len(ordered), "entry": entries}
