"""Facility clients see only their own facility's cases and what hangs off them.

Admin clients see everything. For a facility client, searches of ServiceRequest, Task, Patient,
Encounter and Observation are limited to its cases (``ltfu.store.search.facility_clause``), reads of
anything else of those types answer 404 (their existence is not disclosed), and requests may only
be placed in its own name.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from ltfu.api.auth import current_client
from ltfu.fhir.outcome import FhirError
from ltfu.services import notifications
from ltfu.store.search import visible_to
from ltfu.store.uow import UnitOfWork


def facility_of(request: Request) -> str | None:
    """None for an admin client; else the client's Organization id (``-``: a client with none sees nothing)."""
    client = current_client(request)
    return None if client.is_admin else client.organization_id or "-"


async def check_visible(request: Request, uow: UnitOfWork, res_type: str, res_id: str) -> None:
    org = facility_of(request)
    if org is not None and not await visible_to(uow.conn, org, res_type, res_id):
        raise FhirError.of("not-found", f"{res_type}/{res_id} is not known", status=404)


def check_placer(request: Request, resource: Any) -> None:
    """A facility client places requests (and Tasks) for its own Organization only."""
    org = facility_of(request)
    if org is None or not isinstance(resource, dict) or resource.get("resourceType") not in ("ServiceRequest", "Task"):
        return
    if (resource.get("requester") or {}).get("reference") != f"Organization/{org}":
        raise FhirError.of("forbidden", f"This client acts for Organization/{org} only",
                           f"{resource['resourceType']}.requester", status=403)


def require_admin(request: Request, what: str) -> None:
    if facility_of(request) is not None:
        raise FhirError.of("forbidden", f"Only admin clients may {what}", status=403)


async def check_update(request: Request, uow: UnitOfWork, res_type: str, res_id: str, body: Any = None) -> None:
    """A facility client changes its own cases, its own Organization and the address of the Endpoint
    its Organization owns (``services.notifications.endpoint_change_allowed``)."""
    org = facility_of(request)
    if org is None or await uow.resources.get(res_type, res_id) is None:
        return
    if res_type == "Organization":
        allowed = res_id == org
    elif res_type == "Endpoint":
        why = await notifications.endpoint_change_allowed(uow, org, res_id, body)
        if why:
            raise FhirError.of("forbidden", why, status=403)
        return
    elif res_type == "Subscription":
        allowed = False
    else:
        await check_visible(request, uow, res_type, res_id)
        return
    if not allowed:
        raise FhirError.of("forbidden", f"This client acts for Organization/{org} only", status=403)
