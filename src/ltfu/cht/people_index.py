"""CHT contact docs → the rows of ltfu's person and place index (normalised once, here).

Person docs are ``type: person``, or ``type: contact`` with a person ``contact_type``; identifiers live as
top-level fields (``upi``, ``patient_id``, ``external_id``, ``identification_type`` +
``identification_number``, and ``facility_mrn`` that ltfu writes when it links a facility's patient).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from ltfu.domain.matching.normalise import birth_date, identifier_value, name_tokens, phone_e164, sex_code
from ltfu.domain.matching.records import Person, Place

LEGACY_PLACE_TYPES = frozenset({"district_hospital", "health_center", "clinic"})
IDENTIFICATION_TYPES = frozenset({"national_id", "birth_certificate", "passport", "alien_card"})
TOP_LEVEL_ID_FIELDS = ("upi", "patient_id", "external_id")


def lineage_of(doc: dict[str, Any]) -> tuple[str, ...]:
    ids: list[str] = []
    parent = doc.get("parent")
    while type(parent) is dict and len(ids) < 20:
        pid = parent.get("_id")
        if type(pid) is not str:
            break
        ids.append(pid)
        parent = parent.get("parent")
    return tuple(ids)


def contact_kind(doc: Any, person_types: Iterable[str] = ("person",)) -> str | None:
    """``person``, ``place`` or None (a report, a setting, a deleted doc …)."""
    if not isinstance(doc, dict) or doc.get("_deleted") or not isinstance(doc.get("_id"), str):
        return None
    kind = doc.get("type")
    if kind == "person":
        return "person"
    if kind in LEGACY_PLACE_TYPES:
        return "place"
    if kind == "contact" and isinstance(doc.get("contact_type"), str):
        return "person" if doc["contact_type"] in set(person_types) else "place"
    return None


# A full sync normalises every person of CHT: the same names, household phones and birth dates recur across
# a community, so each distinct value is normalised once (bounded caches, a few MB).
_name_tokens = lru_cache(maxsize=1 << 16)(name_tokens)
_phone_e164 = lru_cache(maxsize=1 << 16)(phone_e164)
_birth_date = lru_cache(maxsize=1 << 16)(birth_date)


def _str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if type(value) is str:  # the common case, first
        return value.strip() or None
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip() if isinstance(value, (str, int, float)) else ""
    return text or None


def place_of(doc: dict[str, Any]) -> Place:
    name = _str(doc, "name") or ""
    return Place(
        id=doc["_id"],
        contact_type=doc.get("contact_type") if doc.get("type") == "contact" else doc["type"],
        name=name[:255],
        name_norm=" ".join(name_tokens(name))[:255],
        code=_str(doc, "code"),
        external_id=_str(doc, "external_id"),
        link_facility_code=_str(doc, "link_facility_code"),
        lineage=lineage_of(doc),
    )


def _names(doc: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    first, last = _name_tokens(_str(doc, "first_name")), _name_tokens(_str(doc, "last_name"))
    if first or last:
        return first + _name_tokens(_str(doc, "middle_name")), last
    tokens = _name_tokens(_str(doc, "name"))
    return (tokens[:-1], tokens[-1:]) if len(tokens) > 1 else (tokens, ())


def person_identifiers(doc: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = [("cht_id", doc["_id"])]  # as CHT spells it: the primary key of the index
    for key in TOP_LEVEL_ID_FIELDS:
        if key in doc and (value := identifier_value(_str(doc, key))) is not None:
            out.append((key, value))
    if "identification_number" in doc and (number := identifier_value(_str(doc, "identification_number"))):
        kind = _str(doc, "identification_type")
        out.append((kind if kind in IDENTIFICATION_TYPES else "identification_number", number))
    mrns = doc.get("facility_mrn")
    if mrns is None:
        return tuple(dict.fromkeys(out))
    for entry in mrns if isinstance(mrns, list) else [mrns]:
        if isinstance(entry, str) and "|" in entry:
            system, _, raw = entry.partition("|")
            if (value := identifier_value(raw)) is not None:
                out.append((f"mrn:{system}", value))
    return tuple(dict.fromkeys(out))


def person_of(
    doc: dict[str, Any], default_region: str = "KE", lineage: tuple[str, ...] | None = None, **placement: str | None
) -> Person:
    """The person as the matcher sees it. Its household/CHW area/unit come with ``placement`` (the
    ``Person`` fields, resolved from the places by the caller) or are resolved later; ``lineage`` when the
    caller has already read it from the doc."""
    given, family = _names(doc)
    phone = _phone_e164(_str(doc, "phone"), default_region)
    other = _phone_e164(_str(doc, "alternate_phone"), default_region) if "alternate_phone" in doc else None
    phones = (phone, other) if phone and other and other != phone else (phone,) if phone else (other,) if other else ()
    method = doc.get("date_of_birth_method") or doc.get("dob_method")
    estimated = bool(method) and str(method).lower() in ("approx", "estimated")
    dead, muted = doc.get("date_of_death"), doc.get("muted")
    flags = (("dead",) if dead else ()) + (("muted",) if muted else ()) if dead or muted else ()
    name = _str(doc, "name") or " ".join(given + family)
    return Person(
        **placement,
        id=doc["_id"],
        name=name[:255],
        given=given,
        family=family,
        sex=sex_code(_str(doc, "sex") or _str(doc, "gender")),
        birth=_birth_date(_str(doc, "date_of_birth"), estimated=estimated),
        phones=phones,
        identifiers=person_identifiers(doc),
        lineage=lineage_of(doc) if lineage is None else lineage,
        flags=flags,
    )


def minified_parent(place: Place) -> dict[str, Any]:
    """``{_id, parent: {_id, …}}`` of a place, as CHT stores a contact's lineage."""
    out: dict[str, Any] = {"_id": place.id}
    node = out
    for ancestor in place.lineage:
        node["parent"] = {"_id": ancestor}
        node = node["parent"]
    return out


def person_doc(patient: dict[str, Any], case_id: str, systems: Any, settings: Any) -> dict[str, Any]:
    """A new CHT person for a facility's Patient: demographics, phones, identifiers as the top-level fields
    ``LTFU_MATCH_IDENTIFIERS`` names, the facility MRNs as ``facility_mrn`` and ``ltfu_source``, the
    deterministic key a retry finds it by (never two persons for one case)."""
    name = next((n for n in patient.get("name") or [] if isinstance(n, dict)), {})
    text = name.get("text") or " ".join([*(name.get("given") or []), name.get("family") or ""]).strip()
    doc: dict[str, Any] = {"type": "person", "name": text or "Unknown", "ltfu_source": f"ltfu-case:{case_id}"}
    if patient.get("gender") in ("male", "female"):
        doc["sex"] = patient["gender"]
    birth = patient.get("birthDate")
    if isinstance(birth, str) and len(birth) >= 4:
        doc["date_of_birth"] = birth if len(birth) == 10 else f"{birth[:4]}-01-01"
        if len(birth) != 10:
            doc["date_of_birth_method"] = "approx"
    phones = [t.get("value") for t in patient.get("telecom") or [] if isinstance(t, dict) and t.get("system") in (
        "phone", "sms") and t.get("value")]
    if phones and (phone := phone_e164(phones[0], settings.match_default_region)):
        doc["phone"] = phone
    fields, mrns = identifier_fields(patient, systems, settings.match_identifiers)
    for key, value in fields.items():
        doc.setdefault(key, value)
    if mrns:
        doc["facility_mrn"] = mrns
    return doc


def identifier_fields(
    patient: dict[str, Any], systems: Any, mapping: dict[str, str]
) -> tuple[dict[str, str], list[str]]:
    """A facility Patient's identifiers as CHT person fields: (top-level fields, ``facility_mrn`` entries).

    ``LTFU_MATCH_IDENTIFIERS`` maps a system to a field (``upi``), or to an identification type
    (``national_id`` → ``identification_type`` + ``identification_number``); CHT's own ids (``_id``,
    ``patient_id``, ltfu's CHT systems) are never written; any other system is a facility MRN
    ``system|value``. Junk values (``N/A``, ``0000``) are left out. The first value of a field wins."""
    fields: dict[str, str] = {}
    mrns: list[str] = []
    own = {systems.cht_contact, systems.cht_patient_id, "cht"}
    for ident in patient.get("identifier") or []:
        system, value = (ident or {}).get("system"), (ident or {}).get("value")
        if not isinstance(system, str) or not isinstance(value, str) or system in own or not identifier_value(value):
            continue
        field = mapping.get(system)
        if field in IDENTIFICATION_TYPES:
            if "identification_number" not in fields:
                fields["identification_type"], fields["identification_number"] = field, value
        elif field in ("_id", "patient_id"):
            continue
        elif field:
            fields.setdefault(field, value)
        elif f"{system}|{value}" not in mrns:
            mrns.append(f"{system}|{value}")
    return fields, mrns


def with_identifiers(doc: dict[str, Any], fields: dict[str, str], mrns: list[str]) -> dict[str, Any]:
    """``doc`` with the facility's identifiers added; the same doc (equal) when they are all there already.

    A field CHT already holds with another value is left alone (CHT's data is not overwritten; the matcher
    will see the conflict as a veto); an MRN already listed (same system, same normalised value) is not
    added twice. ``facility_mrn`` stays a list."""
    out = dict(doc)
    if "identification_number" in fields and doc.get("identification_number") in (None, ""):
        out["identification_type"] = fields["identification_type"]
        out["identification_number"] = fields["identification_number"]
    for key, value in fields.items():
        if key in ("identification_type", "identification_number"):
            continue
        if out.get(key) in (None, ""):
            out[key] = value
    current = doc.get("facility_mrn")
    listed = [m for m in (current if isinstance(current, list) else [current]) if isinstance(m, str)]
    keys = {(m.partition("|")[0], identifier_value(m.partition("|")[2])) for m in listed}
    added = [m for m in mrns if (m.partition("|")[0], identifier_value(m.partition("|")[2])) not in keys]
    if added:
        out["facility_mrn"] = [*listed, *added]
    return out
