"""The matching review queue as JSON: ``GET /admin/review``, ``GET/POST /admin/review/{id}``.

Admin and matcher clients decide; a facility client reads its own requests' items only (area ``review``;
the scoping is the service's).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ltfu.api.access import current_actor
from ltfu.api.http import JSONResponse, json_body, nudge_workers
from ltfu.services import review
from ltfu.store.uow import unit_of_work


async def list_items(request: Request) -> Response:
    async with unit_of_work(request.app.state.db, current_actor(request)) as uow:
        items = await review.list_items(uow, request.query_params.get("status", "open"))
    return JSONResponse({"items": items})


async def get_item(request: Request) -> Response:
    async with unit_of_work(request.app.state.db, current_actor(request)) as uow:
        item = await review.get_item(uow, request.path_params["id"])
    return JSONResponse(item)


async def decide(request: Request) -> Response:
    body = await json_body(request)
    async with unit_of_work(request.app.state.db, current_actor(request)) as uow:
        item = await review.act(uow, request.path_params["id"], body)
    nudge_workers(request)
    return JSONResponse(item)


routes = [
    Route("/admin/review", list_items, methods=["GET"]),
    Route("/admin/review/{id}", get_item, methods=["GET"]),
    Route("/admin/review/{id}", decide, methods=["POST"]),
]
