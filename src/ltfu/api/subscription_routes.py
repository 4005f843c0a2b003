"""Backport IG operations on a Subscription: ``$status`` and ``$events``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ltfu.api.access import current_actor
from ltfu.api.http import FhirResponse, fhir_base
from ltfu.delivery.notifier import notification_bundle, status_parameters
from ltfu.fhir.outcome import FhirError
from ltfu.fhir.systems import Systems
from ltfu.services import notifications, policy
from ltfu.store.uow import unit_of_work


async def status(request: Request) -> Response:
    sub_id = request.path_params["id"]
    async with unit_of_work(request.app.state.db, current_actor(request)) as uow:
        await policy.require_visible(uow, "Subscription", sub_id)
        sub = await uow.resources.read("Subscription", sub_id)
        total = await notifications.events_count(uow, sub_id)
    params = status_parameters(fhir_base(request), Systems(request.app.state.settings.base_url), sub_id,
                               sub.resource.get("status", "requested"), "query-status", total, [])
    return FhirResponse({"resourceType": "Bundle", "type": "searchset", "total": 1,
                         "entry": [{"resource": params, "search": {"mode": "match"}}]})


def _int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise FhirError.of("invalid", f"{name} must be a whole number", name)
    return int(raw)


async def events(request: Request) -> Response:
    sub_id = request.path_params["id"]
    since, until = _int(request, "eventsSinceNumber"), _int(request, "eventsUntilNumber")
    async with unit_of_work(request.app.state.db, current_actor(request)) as uow:
        await policy.require_visible(uow, "Subscription", sub_id)
        sub = await uow.resources.read("Subscription", sub_id)
        total = await notifications.events_count(uow, sub_id)
        stored = await notifications.events(uow, sub_id, since, until)
    bundle = notification_bundle(fhir_base(request), Systems(request.app.state.settings.base_url), sub_id,
                                 sub.resource.get("status", "requested"), "query-event", total, stored,
                                 f"{sub_id}-events")
    return FhirResponse(bundle)


routes = [
    Route("/Subscription/{id}/$status", status, methods=["GET", "POST"]),
    Route("/Subscription/{id}/$events", events, methods=["GET", "POST"]),
]
