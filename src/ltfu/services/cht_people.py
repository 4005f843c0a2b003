"""CHT person docs → FHIR Patients, keyed by the CHT ``_id`` (never duplicated). A CHT user's contact
(a CHW) is staff and never becomes a Patient."""

from __future__ import annotations

from typing import Any, Protocol

from ltfu.cht.inbound import ChtPerson
from ltfu.domain.access import Actor
from ltfu.fhir.systems import POC_CHT_SYSTEM, Systems
from ltfu.services import patients
from ltfu.services.cht_index import index_docs, index_person_doc
from ltfu.services.resources import identity_keys
from ltfu.store.db import Database
from ltfu.store.receipts import content_hash
from ltfu.store.resources import Stored
from ltfu.store.uow import UnitOfWork, unit_of_work

_GENDER = {"male": "male", "female": "female", "m": "male", "f": "female", "other": "other"}


def patient_from_person(person: ChtPerson, systems: Systems) -> dict[str, Any]:
    identifiers = [
        {"use": "official", "system": systems.cht_contact, "value": person.id},
        {"use": "secondary", "system": POC_CHT_SYSTEM, "value": person.id},  # the PoC's Patient?identifier=<_id>
    ]
    if person.patient_id:
        identifiers.append({"use": "usual", "system": systems.cht_patient_id, "value": person.patient_id})
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers, "active": True,
                               "gender": _GENDER.get(person.sex or "", "unknown")}
    if person.name:
        parts = person.name.split()
        name: dict[str, Any] = {"text": person.name}
        if len(parts) > 1:
            name["family"] = parts[-1]
            name["given"] = parts[:-1]
        patient["name"] = [name]
    if person.date_of_birth:
        patient["birthDate"] = person.date_of_birth
    if person.phone:
        patient["telecom"] = [{"system": "phone", "value": person.phone, "use": "mobile"}]
    return patient


class UserContacts(Protocol):
    async def is_user_contact(self, person_id: str) -> bool: ...


async def receive(db: Database, actor: Actor, person: ChtPerson, raw: dict[str, Any],
                  users: UserContacts | None) -> tuple[Stored | None, bool]:
    """A pushed CHT person: (the Patient, whether it was created), or (None, False) for a CHT user's contact.

    ``users`` is asked before the transaction (it may call CHT); without it (no CHT configured) only the
    outbound rule of cht-config/ keeps staff out.
    """
    if users is not None and await users.is_user_contact(person.id):
        return None, False
    async with unit_of_work(db, actor) as uow:
        return await upsert(uow, person, raw)


async def deleted(db: Database, actor: Actor, person_id: str) -> int:
    """A pushed tombstone ``{_id, _deleted: true}``: the person leaves the index and the open cases linked to
    it go back to review (services/cht_gone.py); how many. Its Patient stays (history and closed cases)."""
    async with unit_of_work(db, actor) as uow:
        stats = await index_docs(uow, [{"_id": person_id, "_deleted": True}])
    return stats.reopened


async def upsert(uow: UnitOfWork, person: ChtPerson, raw: dict[str, Any]) -> tuple[Stored, bool]:
    """(the Patient, whether it was created). An unchanged re-send writes nothing."""
    systems = Systems(uow.settings.base_url)
    wanted = patient_from_person(person, systems)
    await uow.lock(identity_keys(wanted))  # a facility's list may be creating this person right now
    key = f"cht-person:{person.id}"
    digest = content_hash(raw)
    seen = await uow.receipts.get(key)
    ids = await uow.resources.find_ids_by_token("Patient", "identifier", systems.cht_contact, person.id)
    if not ids:  # a Patient the facility or the PoC API registered with the CHT id
        ids = await uow.resources.find_ids_by_token("Patient", "identifier", POC_CHT_SYSTEM, person.id)
    ids = await patients.current(uow, ids)  # not the pushed twin retired when a facility's Patient was linked
    current = await uow.resources.get("Patient", ids[0]) if ids else None
    if current is not None and seen and seen[0] == digest:
        return current, False
    if current is None:
        stored = await uow.resources.create(wanted)
        created = True
    else:
        merged = _merge(current.resource, wanted)
        stored = current if merged == current.resource else await uow.resources.update(merged, current.resource["id"])
        created = False
    await uow.receipts.put(key, digest, {"patient": stored.ref}, exists=seen is not None)
    await index_person_doc(uow, raw)  # the matcher finds this person from now on
    return stored, created


def _merge(existing: dict[str, Any], from_cht: dict[str, Any]) -> dict[str, Any]:
    """CHT owns demographics it sends; identifiers from elsewhere (facility MRN) are kept."""
    keep = [i for i in existing.get("identifier") or []
            if (i.get("system"), i.get("value")) not in {(j["system"], j["value"]) for j in from_cht["identifier"]}
            and i.get("system") not in {j["system"] for j in from_cht["identifier"]}]
    out = {**existing, **{k: v for k, v in from_cht.items() if k != "identifier"}}
    out["identifier"] = [*keep, *from_cht["identifier"]]
    return out
