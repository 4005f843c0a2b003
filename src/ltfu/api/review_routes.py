"""The matching review queue as JSON: ``GET /admin/review``, ``GET/POST /admin/review/{id}``.

Admin and matcher clients decide and see the flagged CHT duplicates; a facility client reads its own
requests' items only (area ``review``; the service asks the policy).
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


async def list_duplicates(request: Request) -> Response:
    """``GET /admin/review/duplicates?status=open|resolved|all``: for a CHT admin (admin, matcher)."""
    async with unit_of_work(request.app.state.db, current_actor(request)) as uow:
        groups = await review.duplicates(uow, request.query_params.get("status", "open"))
    return JSONResponse({"groups": groups})


async def resolve_duplicates(request: Request) -> Response:
    """``POST /admin/review/duplicates/{group}/resolve``: dealt with in CHT; matching is held back no more."""
    async with unit_of_work(request.app.state.db, current_actor(request)) as uow:
        group = await review.resolve_duplicates(uow, request.path_params["group"])
    return JSONResponse(group)


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
    Route("/admin/review/duplicates", list_duplicates, methods=["GET"]),
    Route("/admin/review/duplicates/{group}/resolve", resolve_duplicates, methods=["POST"]),
    Route("/admin/review/{id}", get_item, methods=["GET"]),
    Route("/admin/review/{id}", decide, methods=["POST"]),
]
