"""Facility clients see and send only their own facility's cases (ServiceRequest and Task).

Admin clients see everything. The scope is applied where requests are parsed: searches get a
``requester`` criterion, reads of another facility's case answer 404 (its existence is not
disclosed), and a request may only be placed in the client's own name.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from ltfu.api.auth import current_client
from ltfu.fhir.outcome import FhirError

SCOPED = ("ServiceRequest", "Task")


def facility_of(request: Request) -> str | None:
    client = current_client(request)
    return None if client.is_admin else client.organization_id or "-"


def scope_search(request: Request, res_type: str, params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    org = facility_of(request)
    if org is None or res_type not in SCOPED:
        return params
    return [*params, ("requester", f"Organization/{org}")]


def check_visible(request: Request, resource: dict[str, Any]) -> None:
    org = facility_of(request)
    if org is None or resource.get("resourceType") not in SCOPED:
        return
    if (resource.get("requester") or {}).get("reference") != f"Organization/{org}":
        raise FhirError.of("not-found", f"{resource['resourceType']}/{resource.get('id')} is not known", status=404)


def check_placer(request: Request, resource: Any) -> None:
    """A facility client places requests for its own Organization only."""
    org = facility_of(request)
    if org is None or not isinstance(resource, dict) or resource.get("resourceType") not in SCOPED:
        return
    if (resource.get("requester") or {}).get("reference") != f"Organization/{org}":
        raise FhirError.of("forbidden", f"This client acts for Organization/{org} only", f"{resource['resourceType']}"
                           ".requester", status=403)
