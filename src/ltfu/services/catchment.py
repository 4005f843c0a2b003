"""A facility's catchment: the CHT places whose people it may follow up and where new persons may go.

The community units whose ``link_facility_code`` equals one of the Organization's identifier values (the
MFL code in Kenya), plus the places an operator linked explicitly (``ltfu facilities link``, or
``/admin/facilities/{org}/catchment``). Changing the explicit list is for admins (and ltfu itself, the CLI)
and is audited (who, when, which place, added or removed).
"""

from __future__ import annotations

from typing import Any

from ltfu.domain.matching.records import Place
from ltfu.fhir.outcome import FhirError
from ltfu.services import policy
from ltfu.store.uow import UnitOfWork


async def facility_codes(uow: UnitOfWork, organization_id: str) -> list[str]:
    org = await uow.resources.get("Organization", organization_id)
    if org is None:
        return []
    return [
        i["value"]
        for i in org.resource.get("identifier") or []
        if isinstance(i, dict) and isinstance(i.get("value"), str)
    ]


async def _by_code(uow: UnitOfWork, organization_id: str) -> dict[str, Place]:
    found: dict[str, Place] = {}
    for code in await facility_codes(uow, organization_id):
        found.update({p.id: p for p in await uow.cht_index.places_where(link_facility_code=code)})
    return found


async def catchment(uow: UnitOfWork, organization_id: str) -> list[Place]:
    """The roots of the facility's catchment (units by ``link_facility_code``, and linked places)."""
    roots = await _by_code(uow, organization_id)
    roots.update(await uow.cht_index.places(await uow.cht_index.facility_place_ids(organization_id)))
    return sorted(roots.values(), key=lambda p: p.id)


async def _require_org(uow: UnitOfWork, organization_id: str) -> None:
    if await uow.resources.get("Organization", organization_id) is None:
        raise FhirError.of("not-found", f"Organization/{organization_id} is not known", status=404)


def _place_ids(place_ids: Any) -> list[str]:
    if not isinstance(place_ids, list) or not all(isinstance(p, str) and p.strip() for p in place_ids):
        raise FhirError.of("invalid", "'places' must be a list of CHT place ids", "places", status=422)
    return list(dict.fromkeys(p.strip() for p in place_ids))


async def _check_known(uow: UnitOfWork, place_ids: list[str], allow_unknown: bool) -> list[str]:
    known = await uow.cht_index.places(place_ids)
    unknown = [p for p in place_ids if p not in known]
    if unknown and not allow_unknown:
        raise FhirError.of(
            "invalid", f"CHT place not in ltfu's index: {', '.join(unknown)}", "places", status=422,
        )
    return unknown


def _who(uow: UnitOfWork) -> str:
    return uow.actor.name or uow.actor.role


async def link(
    uow: UnitOfWork, organization_id: str, place_ids: list[str], *, allow_unknown: bool = False
) -> tuple[list[str], list[str]]:
    """Add places to the explicit list: (the places newly linked, those the index does not know yet).

    Unknown places are refused (422 naming them) unless ``allow_unknown`` (the CLI: an operator may link
    before the first ``ltfu cht sync``)."""
    policy.require_admin(uow.actor, "change a facility's catchment")
    await _require_org(uow, organization_id)
    place_ids = _place_ids(place_ids)
    unknown = await _check_known(uow, place_ids, allow_unknown)
    have = set(await uow.cht_index.facility_place_ids(organization_id))
    new = [p for p in place_ids if p not in have]
    await uow.cht_index.link_facility(organization_id, new)
    await uow.catchment_audit.record(organization_id, added=new, removed=[], actor=_who(uow))
    return new, unknown


async def unlink(uow: UnitOfWork, organization_id: str, place_ids: list[str]) -> list[str]:
    """Remove places from the explicit list (those by ``link_facility_code`` stay: CHT decides those)."""
    policy.require_admin(uow.actor, "change a facility's catchment")
    await _require_org(uow, organization_id)
    have = set(await uow.cht_index.facility_place_ids(organization_id))
    gone = [p for p in _place_ids(place_ids) if p in have]
    if gone:
        await uow.cht_index.unlink_facility(organization_id, gone)
        await uow.catchment_audit.record(organization_id, added=[], removed=gone, actor=_who(uow))
    return gone


async def replace(uow: UnitOfWork, organization_id: str, place_ids: Any) -> tuple[list[str], list[str]]:
    """The explicit list becomes exactly ``place_ids`` (all known to the index): (added, removed)."""
    policy.require_admin(uow.actor, "change a facility's catchment")
    await _require_org(uow, organization_id)
    wanted = _place_ids(place_ids)
    await _check_known(uow, wanted, allow_unknown=False)
    have = await uow.cht_index.facility_place_ids(organization_id)
    added = [p for p in wanted if p not in have]
    removed = [p for p in have if p not in wanted]
    if removed:
        await uow.cht_index.unlink_facility(organization_id, removed)
    await uow.cht_index.link_facility(organization_id, added)
    await uow.catchment_audit.record(organization_id, added=added, removed=removed, actor=_who(uow))
    return added, removed


def _place(p: Place) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "contact_type": p.contact_type, "code": p.code,
            "link_facility_code": p.link_facility_code}


async def describe(uow: UnitOfWork, organization_id: str) -> dict[str, Any]:
    """The explicit list (each with whether the index knows it), the places found by
    ``link_facility_code``, and the latest changes of the explicit list."""
    policy.require_admin(uow.actor, "read a facility's catchment")
    await _require_org(uow, organization_id)
    explicit_ids = await uow.cht_index.facility_place_ids(organization_id)
    known = await uow.cht_index.places(explicit_ids)
    by_code = await _by_code(uow, organization_id)
    return {
        "organization": organization_id,
        "facility_codes": await facility_codes(uow, organization_id),
        "explicit": [
            {**_place(known[p]), "indexed": True} if p in known else {"id": p, "indexed": False}
            for p in explicit_ids
        ],
        "by_link_facility_code": [_place(p) for p in sorted(by_code.values(), key=lambda p: p.id)],
        "changes": await uow.catchment_audit.history(organization_id),
    }
