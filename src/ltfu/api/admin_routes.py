"""Admin API: the outbox (list deliveries, replay dead ones), signing secrets, stats, a facility's catchment.

Only admin clients reach these routes (``ltfu.api.access`` asks the policy for the ``admin`` area; the
catchment service asks it again, for the CLI's sake).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ltfu.api.access import current_actor
from ltfu.api.http import JSONResponse, json_body, nudge_workers
from ltfu.fhir.outcome import FhirError
from ltfu.services import catchment, notifications
from ltfu.store.stats import loop_stats
from ltfu.store.uow import unit_of_work


def _row(r: object) -> dict[str, object]:
    keys = ("id", "destination", "kind", "status", "attempts", "created_at", "next_attempt_at", "last_attempt_at",
            "done_at", "last_error", "case_id", "subscription_id", "organization_id")
    return {k: getattr(r, k) for k in keys}


async def list_outbox(request: Request) -> Response:
    q = request.query_params
    limit = q.get("limit", "100")
    if not limit.isdigit():
        raise FhirError.of("invalid", "limit must be a whole number", "limit")
    async with unit_of_work(request.app.state.db) as uow:
        rows = await uow.outbox.list(status=q.get("status"), destination=q.get("destination"),
                                     organization_id=q.get("organization"), case_id=q.get("case"),
                                     limit=min(int(limit), 1000))
    return JSONResponse({"items": [_row(r) for r in rows]})


async def retry_one(request: Request) -> Response:
    row_id = request.path_params["id"]
    async with unit_of_work(request.app.state.db) as uow:
        n = await uow.outbox.replay(row_id=row_id)
    if not n:
        raise FhirError.of("not-found", f"No dead delivery {row_id}", status=404)
    nudge_workers(request)
    return JSONResponse({"requeued": n})


async def retry_many(request: Request) -> Response:
    q = request.query_params
    async with unit_of_work(request.app.state.db) as uow:
        n = await uow.outbox.replay(destination=q.get("destination"), organization_id=q.get("organization"))
    nudge_workers(request)
    return JSONResponse({"requeued": n})


async def signing_secret(request: Request) -> Response:
    """``POST /admin/organizations/{org}/signing-secret[?retire_previous=true]``: a new secret per live
    subscription of the facility, in this answer only (the previous key stays live)."""
    retire = request.query_params.get("retire_previous") == "true"
    async with unit_of_work(request.app.state.db) as uow:
        issued = await notifications.issue_signing_secret(uow, request.path_params["org"], retire_previous=retire)
    body = {"organization": request.path_params["org"],
            "subscriptions": [{"id": k, **({} if retire else {"secret": v})} for k, v in issued.items()]}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def stats(request: Request) -> Response:
    async with request.app.state.db.connect() as conn:
        return JSONResponse(await loop_stats(conn))


async def get_catchment(request: Request) -> Response:
    """``GET /admin/facilities/{org}/catchment``: the explicit places, those by ``link_facility_code``, and
    the latest changes."""
    async with unit_of_work(request.app.state.db, current_actor(request)) as uow:
        return JSONResponse(await catchment.describe(uow, request.path_params["org"]))


async def put_catchment(request: Request) -> Response:
    """``PUT /admin/facilities/{org}/catchment`` ``{"places": [ID, ...]}``: replace the explicit list."""
    body = await json_body(request)
    if not isinstance(body, dict) or "places" not in body:
        raise FhirError.of("invalid", "The body must be {\"places\": [CHT place id, ...]}", "places", status=422)
    org = request.path_params["org"]
    async with unit_of_work(request.app.state.db, current_actor(request)) as uow:
        await catchment.replace(uow, org, body["places"])
        return JSONResponse(await catchment.describe(uow, org))


async def add_place(request: Request) -> Response:
    """``POST /admin/facilities/{org}/catchment/{place}``: 201 when newly linked, 200 when it already was."""
    org, place = request.path_params["org"], request.path_params["place"]
    async with unit_of_work(request.app.state.db, current_actor(request)) as uow:
        added, _ = await catchment.link(uow, org, [place])
        return JSONResponse(await catchment.describe(uow, org), status_code=201 if added else 200)


async def remove_place(request: Request) -> Response:
    """``DELETE /admin/facilities/{org}/catchment/{place}``: 404 when it is not in the explicit list."""
    org, place = request.path_params["org"], request.path_params["place"]
    async with unit_of_work(request.app.state.db, current_actor(request)) as uow:
        if not await catchment.unlink(uow, org, [place]):
            raise FhirError.of("not-found", f"{place} is not in the explicit catchment of Organization/{org}",
                               status=404)
        return JSONResponse(await catchment.describe(uow, org))


routes = [
    Route("/admin/stats", stats, methods=["GET"]),
    Route("/admin/outbox", list_outbox, methods=["GET"]),
    Route("/admin/outbox/retry", retry_many, methods=["POST"]),
    Route("/admin/outbox/{id:int}/retry", retry_one, methods=["POST"]),
    Route("/admin/organizations/{org}/signing-secret", signing_secret, methods=["POST"]),
    Route("/admin/facilities/{org}/catchment", get_catchment, methods=["GET"]),
    Route("/admin/facilities/{org}/catchment", put_catchment, methods=["PUT"]),
    Route("/admin/facilities/{org}/catchment/{place}", add_place, methods=["POST"]),
    Route("/admin/facilities/{org}/catchment/{place}", remove_place, methods=["DELETE"]),
]
