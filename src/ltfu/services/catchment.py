"""A facility's catchment: the CHT places whose people it may follow up and where new persons may go.

The community units whose ``link_facility_code`` equals one of the Organization's identifier values (the
MFL code in Kenya), plus the places an operator linked explicitly (``ltfu facilities link``).
"""

from __future__ import annotations

from ltfu.domain.matching.records import Place
from ltfu.fhir.outcome import FhirError
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


async def catchment(uow: UnitOfWork, organization_id: str) -> list[Place]:
    """The roots of the facility's catchment (units by ``link_facility_code``, and linked places)."""
    roots: dict[str, Place] = {}
    for code in await facility_codes(uow, organization_id):
        roots.update({p.id: p for p in await uow.cht_index.places_where(link_facility_code=code)})
    roots.update(await uow.cht_index.places(await uow.cht_index.facility_place_ids(organization_id)))
    return sorted(roots.values(), key=lambda p: p.id)


async def link(uow: UnitOfWork, organization_id: str, place_ids: list[str]) -> tuple[int, list[str]]:
    """(how many links are new, the place ids the index does not know yet: linked all the same)."""
    if await uow.resources.get("Organization", organization_id) is None:
        raise FhirError.of("not-found", f"Organization/{organization_id} is not known", status=404)
    known = await uow.cht_index.places(place_ids)
    return await uow.cht_index.link_facility(organization_id, place_ids), [p for p in place_ids if p not in known]
