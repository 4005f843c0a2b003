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
    if "|" not in key and await policy.bind_patients(uow, [key]):
        stored = await uow.resources.get("Patient", key)
        if stored:
            return stored
    system, _, value = key.rpartition("|")
    ids = await uow.resources.find_ids_by_token("Patient", "identifier", system or None, value)
    ids = await policy.bind_patients(uow, ids)
    if len(ids) > 1:
        raise FhirError.of("multiple-matches", "More than one Patient carries that identifier", status=409)
    return await uow.resources.get("Patient", ids[0]) if ids else None


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
