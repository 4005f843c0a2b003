"""Patients: find by id or identifier, and create without duplicates."""

from __future__ import annotations

from typing import Any

from ltfu.fhir.outcome import FhirError
from ltfu.services import policy
from ltfu.services import resources as ops
from ltfu.services.resources import WriteResult
from ltfu.store.resources import Stored
from ltfu.store.uow import UnitOfWork


async def find(uow: UnitOfWork, key: str) -> Stored | None:
    """A Patient by logical id, else by identifier value (``value`` or ``system|value``), among those the
    actor may name (``policy.bind_patients``)."""
    if "|" not in key:
        await uow.resources.prime_id_or_token("Patient", key)
    if "|" not in key and await policy.bind_patients(uow, [key]):
        stored = await uow.resources.get("Patient", key)
        if stored:
            return stored
    system, _, value = key.rpartition("|")
    ids = await uow.resources.find_ids_by_token("Patient", "identifier", system or None, value)
    ids = await policy.bind_patients(uow, ids)
    if len(ids) > 1:
        ids = await current(uow, ids)
    if len(ids) > 1:
        raise FhirError.of("multiple-matches", "More than one Patient carries that identifier", status=409)
    return await uow.resources.get("Patient", ids[0]) if ids else None


def replaced_by(resource: dict[str, Any]) -> str | None:
    """The Patient id a retired Patient points to (``link`` ``replaced-by``), else None."""
    for link in resource.get("link") or []:
        ref = ((link or {}).get("other") or {}).get("reference") or ""
        if link.get("type") == "replaced-by" and ref.startswith("Patient/"):
            return ref.split("/", 1)[1]
    return None


async def current(uow: UnitOfWork, ids: list[str]) -> list[str]:
    """``ids`` without the Patients replaced by another (a CHT-pushed twin retired when a facility's Patient
    was linked to the person, services/intake.py); all of them when every one is replaced."""
    if len(ids) < 2:
        return ids
    kept = []
    for i in ids:
        stored = await uow.resources.get("Patient", i)
        if stored is not None and replaced_by(stored.resource) is None:
            kept.append(i)
    return kept or ids


async def require(uow: UnitOfWork, key: str, expression: str) -> Stored:
    stored = await find(uow, key)
    if stored is None:
        raise FhirError.of("not-found", "Patient not found", expression, status=404)
    return stored


async def create_unless_known(uow: UnitOfWork, resource: dict[str, Any], system: str, value: str, *,
                              validated: bool = False) -> WriteResult:
    """Create the Patient unless one already carries ``system|value``: then return that one (200)."""
    return await ops.create(uow, resource, res_type="Patient", if_none_exist=f"identifier={system}|{value}",
                            validated=validated)
