"""The one authorisation policy: who may read and write what (DESIGN.md §6a).

Every service asks this module, with the unit of work's ``actor`` (``ltfu.domain.access.Actor``),
before it reads or writes for a client: single resources, Bundle entries, conditional matches,
reference resolution, includes, history, Subscription operations, PoC and CHT routes, dashboard.
Routes only say which part of the API a request is in (``area``) and pass the actor on.

A facility sees what ``ltfu.store.search.facility_clause`` describes: its cases and what hangs off
them, what it created, its Organization, its Endpoints and its Subscriptions. What it may not see is
answered exactly as what does not exist (404), so ids and identifiers of other facilities leak nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ltfu.domain.access import Actor, Area
from ltfu.fhir.outcome import FhirError
from ltfu.fhir.search_params import SearchQuery
from ltfu.fhir.validation import SUPPORTED_TYPES
from ltfu.store.clients import Client
from ltfu.store.search import UNCLAIMED_PATIENT, unclaimed_patients, visible_statement
from ltfu.store.uow import UnitOfWork

GATEWAY_HEADER = "x-openhim-clientid"


# --------------------------------------------------------------------------- who is acting


def actor_of(client: Client) -> Actor:
    role = client.role if client.role else ("admin" if client.is_admin else "facility")
    return Actor(role, client.organization_id if role == "facility" else None, client.name)


async def actor_for(uow: UnitOfWork, client: Client, openhim_client_id: str | None) -> Actor:
    """The actor of a request. A ``gateway`` client (OpenHIM's route credentials) acts for the OpenHIM
    client it names in ``X-OpenHIM-ClientID``, as mapped by ``ltfu clients map-openhim``; never by itself."""
    actor = actor_of(client)
    if actor.role != "gateway":
        return actor
    mapped = await uow.openhim_clients.get(openhim_client_id) if openhim_client_id else None
    if mapped is None:
        raise FhirError.of(
            "forbidden",
            "This OpenHIM client is not mapped to an ltfu facility (ltfu clients map-openhim CLIENT_ID ORG)",
            status=403,
        )
    return Actor(
        mapped.role, mapped.organization_id if mapped.role == "facility" else None, f"{client.name}:{mapped.client_id}"
    )


def require_area(actor: Actor, area: Area) -> None:
    if not actor.may_enter(area):
        raise FhirError.of("forbidden", f"A {actor.role} client may not use this part of the API", status=403)


def _forbidden(actor: Actor, what: str) -> FhirError:
    return FhirError.of("forbidden", f"This client acts for Organization/{actor.facility} only: {what}", status=403)


def require_admin(actor: Actor, what: str) -> None:
    if not actor.is_admin:
        raise FhirError.of("forbidden", f"Only admin clients may {what}", status=403)


# --------------------------------------------------------------------------- reads


def scope_search(actor: Actor, q: SearchQuery) -> SearchQuery:
    """Limit a search (and its includes) to what the actor may see."""
    q.facility = actor.facility
    return q


async def can_see(uow: UnitOfWork, res_type: str, res_id: str) -> bool:
    """A yes is remembered for the transaction: nothing in one takes away what a facility sees (its cases
    and what it created stay; a deleted resource stays visible as deleted). A no is asked again (the
    transaction may since have created the resource, its case or its owner)."""
    org = uow.actor.facility
    if org is None:
        return True
    key = ("visible", res_type, res_id)
    if key in uow.memo:
        return True
    if await uow.fetch(visible_statement(res_type), {"org": org, "i": res_id}):
        uow.memo[key] = True
        return True
    return False


async def _unclaimed(uow: UnitOfWork, ids: list[str]) -> list[str]:
    if len(ids) == 1:
        return list(ids) if await uow.fetch(UNCLAIMED_PATIENT, {"i": ids[0]}) else []
    return await unclaimed_patients(uow.conn, ids)


def not_known(res_type: str, res_id: str) -> FhirError:
    return FhirError.of("not-found", f"{res_type}/{res_id} is not known", status=404)


async def require_visible(uow: UnitOfWork, res_type: str, res_id: str) -> None:
    """404 for what the actor may not see, before the store is asked (no 404/410 oracle)."""
    if not await can_see(uow, res_type, res_id):
        raise not_known(res_type, res_id)


async def visible_ids(uow: UnitOfWork, res_type: str, ids: list[str]) -> list[str]:
    return [i for i in ids if await can_see(uow, res_type, i)]


async def bind_patients(uow: UnitOfWork, ids: list[str]) -> list[str]:
    """The Patients among ``ids`` a facility may name in a case, a visit or a conditional create: those it
    sees; only when it sees none of them, those nobody has claimed yet (a person CHT pushed, in no case).
    Naming exactly one unclaimed Patient claims it for the facility (then it is the facility's to see)."""
    seen = await visible_ids(uow, "Patient", ids)
    if seen or uow.actor.facility is None:
        return seen
    free = await _unclaimed(uow, ids)
    org = uow.actor.facility
    if len(free) == 1 and org != "-" and await uow.owners.record("Patient", free[0], org) != org:
        return []  # another facility claimed it in the meantime (its transaction committed first)
    return free


async def conditional_matches(uow: UnitOfWork, res_type: str, ids: list[str]) -> list[str]:
    """What a conditional create (``If-None-Exist``) may match among ``ids``: nothing the actor may not see."""
    if res_type == "Patient":
        return await bind_patients(uow, ids)
    return await visible_ids(uow, res_type, ids)


async def _may_reference(uow: UnitOfWork, res_type: str, res_id: str) -> bool:
    if await can_see(uow, res_type, res_id):
        return True
    return res_type == "Patient" and bool(await _unclaimed(uow, [res_id]))


def authorize_history(actor: Actor, res_type: str | None, res_id: str | None) -> None:
    if not (res_type and res_id):
        require_admin(actor, "read type or system history")


# --------------------------------------------------------------------------- writes


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and isinstance(v, str):
                yield v
            else:
                yield from _references(v)
    elif isinstance(node, list):
        for v in node:
            yield from _references(v)


def _local(ref: str) -> tuple[str, str] | None:
    """``Type/id`` (or ``Type/id/_history/n``) of this server; None for other forms."""
    parts = ref.split("/")
    if len(parts) in (2, 4) and parts[0] in SUPPORTED_TYPES and parts[1] and "?" not in ref:
        return parts[0], parts[1]
    return None


async def check_references(uow: UnitOfWork, resource: dict[str, Any], previous: dict[str, Any] | None) -> None:
    """Every reference a facility adds must point at something it may see (unknown counts as unseen).

    Checked on the resource as it will be stored (after the write hooks resolved identifiers in scope).
    """
    if uow.actor.facility is None:
        return
    before = set(_references(previous)) if previous else set()
    for ref in dict.fromkeys(_references(resource)):
        target = _local(ref)
        if ref in before or target is None:
            continue
        if not await _may_reference(uow, *target):
            raise FhirError.of("invalid", f"Reference {target[0]}/{target[1]} is not known here", status=422,
                               kind="unknown-reference")


def check_placer(actor: Actor, resource: dict[str, Any]) -> None:
    """A facility places Tasks for its own Organization (ServiceRequests: after resolution, see requests)."""
    if actor.facility is None or resource.get("resourceType") != "Task":
        return
    if (resource.get("requester") or {}).get("reference") != f"Organization/{actor.facility}":
        raise _forbidden(actor, "Task.requester")


def require_own_organization(actor: Actor, org_id: str | None, expression: str) -> None:
    if actor.facility is not None and org_id != actor.facility:
        raise _forbidden(actor, expression)


def _subscription_org(resource: dict[str, Any]) -> str | None:
    from ltfu.services.notifications import subscription_org  # notifications imports the write services

    return subscription_org(resource)


async def authorize_create(uow: UnitOfWork, resource: dict[str, Any]) -> None:
    actor = uow.actor
    if actor.facility is None:
        return
    res_type = resource["resourceType"]
    if res_type == "Organization":
        require_admin(actor, "register an Organization")
    if res_type == "Subscription" and _subscription_org(resource) != actor.facility:
        raise _forbidden(actor, f"Subscription criteria must be Task?requester=Organization/{actor.facility}")
    check_placer(actor, resource)
    await _check_organization_endpoints(uow, resource, None)


async def authorize_update(
    uow: UnitOfWork, res_type: str, res_id: str, resource: dict[str, Any], previous: dict[str, Any] | None
) -> None:
    """A facility changes only what it may see; it cannot create by PUT (that would say an id is free)."""
    actor = uow.actor
    if actor.facility is None:
        return
    if previous is None or not await can_see(uow, res_type, res_id):
        raise not_known(res_type, res_id)
    if res_type == "Organization" and resource.get("identifier") != previous.get("identifier"):
        raise FhirError.of(
            "forbidden",
            "Organization.identifier routes requests: only an admin changes it",
            "Organization.identifier",
            status=403,
        )
    if res_type == "Subscription" and _subscription_org(resource) != actor.facility:
        raise _forbidden(actor, f"Subscription criteria must be Task?requester=Organization/{actor.facility}")
    if res_type == "Endpoint":
        from ltfu.services.notifications import endpoint_change_allowed

        why = await endpoint_change_allowed(uow, actor.facility, res_id, resource)
        if why:
            raise FhirError.of("forbidden", why, status=403)
    check_placer(actor, resource)
    await _check_organization_endpoints(uow, resource, previous)


async def _check_organization_endpoints(
    uow: UnitOfWork, resource: dict[str, Any], previous: dict[str, Any] | None
) -> None:
    """An Organization may list only Endpoints its facility owns (created, or given by an admin).

    Ownership is read through ``can_see`` (``facility_clause``: the recorded creator, or the stored
    owner of ``store.callbacks.endpoint_owner``); one owner per Endpoint, for admins too, is the
    Organization write hook's rule (``services.notifications``).
    """
    if resource.get("resourceType") != "Organization":
        return
    for ref in _references(resource.get("endpoint")):
        target = _local(ref)
        if target is None or target[0] != "Endpoint" or not await can_see(uow, *target):
            raise FhirError.of(
                "forbidden", f"{ref} is not an Endpoint of this facility", "Organization.endpoint", status=403
            )


def authorize_delete(actor: Actor) -> None:
    require_admin(actor, "delete resources")


def authorize_conditional_update(actor: Actor) -> None:
    require_admin(actor, "update by search")


async def record_created(uow: UnitOfWork, res_type: str, res_id: str, *, minted: bool = False) -> None:
    """What a facility creates is its own (server-set; the body cannot claim it). ``minted``: the id was
    made in this transaction, so no owner can be recorded for it yet."""
    org = uow.actor.facility
    if org is not None and org != "-":
        if minted:
            await uow.owners.record_new(res_type, res_id, org)
        else:
            await uow.owners.record(res_type, res_id, org)


def case_in_scope(actor: Actor, case: Any) -> bool:
    return actor.facility is None or (case is not None and case.organization_id == actor.facility)


# --------------------------------------------------------------------------- matching review queue


def review_scope(actor: Actor) -> str | None:
    """The Organization whose review items the actor sees; None: all of them (admin, matcher, ltfu itself).
    Any other role sees none (``-`` matches no Organization)."""
    if actor.role in ("admin", "matcher", "system"):
        return None
    return actor.facility or "-"


def may_decide_review(actor: Actor) -> bool:
    """Deciding links a facility's patient to any CHT person or creates one in CHT: admin and matcher only."""
    return actor.role in ("admin", "matcher", "system")


def require_review_decider(actor: Actor) -> None:
    if not may_decide_review(actor):
        raise FhirError.of("forbidden", "Only admin and matcher clients decide review items", status=403)


def require_community_reader(actor: Actor, what: str) -> None:
    """What spans the whole CHT community (the flagged duplicates): admin and matcher, like ``$match``."""
    if not may_decide_review(actor):
        raise FhirError.of("forbidden", f"Only admin and matcher clients may {what}", status=403)
