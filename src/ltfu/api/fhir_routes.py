"""FHIR R4 REST API at ``/fhir``: parse, authorise, call a service, render."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ltfu.api.access import current_actor
from ltfu.api.capability import capability_json
from ltfu.api.http import (
    FHIR_JSON,
    FhirResponse,
    fhir_base,
    json_body,
    nudge_workers,
    prefer_return,
    query_string,
    read_body,
    report_write,
)
from ltfu.fhir.bundle_shape import check_bundle_shape
from ltfu.fhir.outcome import FhirError, information
from ltfu.fhir.rest import parse_etag
from ltfu.fhir.search_params import date_range, parse_search
from ltfu.fhir.validation import SUPPORTED_TYPES, validate
from ltfu.services import bundles, matching, policy
from ltfu.services import resources as ops
from ltfu.store.resources import Stored
from ltfu.store.uow import UnitOfWork, read_unit_of_work, unit_of_work


def _type(request: Request) -> str:
    res_type = request.path_params["type"]
    if res_type not in SUPPORTED_TYPES:
        raise FhirError.of("not-supported", f"Resource type {res_type!r} is not supported by this server",
                           status=404)
    return res_type


def _uow(request: Request) -> Any:
    """The request's unit of work, acting for its client (the services ask the policy about it)."""
    return unit_of_work(request.app.state.db, current_actor(request))


def _read_uow(request: Request) -> Any:
    """A read-only unit of work for the request (on SQLite it never waits for a writer)."""
    return read_unit_of_work(request.app.state.db, current_actor(request))


def _version_headers(stored: Stored, base: str) -> dict[str, str]:
    r = stored.resource
    return {
        "ETag": stored.etag,
        "Last-Modified": stored.last_updated,
        "Location": f"{base}/{r['resourceType']}/{r['id']}/_history/{stored.version_id}",
    }


def _write_response(request: Request, stored: Stored, status: int) -> Response:
    nudge_workers(request)
    report_write(request, stored.resource, status)
    headers = _version_headers(stored, fhir_base(request))
    mode = prefer_return(request)
    if mode == "minimal":
        return Response(status_code=status, headers=headers)
    if mode == "OperationOutcome":
        return FhirResponse(information("OK"), status_code=status, headers=headers)
    return FhirResponse(stored.resource, status_code=status, headers=headers)


def _strict(request: Request) -> bool:
    return "handling=strict" in request.headers.get("prefer", "")


# --------------------------------------------------------------------------- search

async def search_bundle(request: Request, uow: UnitOfWork, res_type: str, params: list[tuple[str, str]],
                        ) -> dict[str, Any]:
    q = policy.scope_search(uow.actor, parse_search(res_type, params, strict=_strict(request)))
    result = await uow.search(q)
    base = fhir_base(request)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    links = [{"relation": "self", "url": f"{base}/{res_type}?{urlencode(q.echo)}"}]
    if result.next_cursor is not None:
        nxt = [(k, v) for k, v in q.echo if k != "_cursor"] + [("_cursor", str(result.next_cursor))]
        if not any(k == "_count" for k, _ in nxt):
            nxt.append(("_count", str(q.count)))
        links.append({"relation": "next", "url": f"{base}/{res_type}?{urlencode(nxt)}"})
    bundle["link"] = links
    entries = [
        {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
        for r in result.matches
    ]
    entries += [
        {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "include"}}
        for r in result.included
    ]
    if entries:
        bundle["entry"] = entries
    return bundle


async def search(request: Request) -> Response:
    res_type = _type(request)
    params = list(request.query_params.multi_items())
    if request.method == "POST":  # POST /Type/_search with a form body
        body = await read_body(request)
        params += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    async with _read_uow(request) as uow:
        return FhirResponse(await search_bundle(request, uow, res_type, params))


# --------------------------------------------------------------------------- instance

async def read(request: Request) -> Response:
    res_type = _type(request)
    async with _read_uow(request) as uow:
        await policy.require_visible(uow, res_type, request.path_params["id"])
        stored = await uow.resources.read(res_type, request.path_params["id"])
    inm = request.headers.get("if-none-match")
    if inm and parse_etag(inm) == stored.version_id:
        return Response(status_code=304, headers={"ETag": stored.etag})
    headers = _version_headers(stored, fhir_base(request))
    headers.pop("Location")
    return FhirResponse(stored.resource, headers=headers)


async def vread(request: Request) -> Response:
    res_type = _type(request)
    vid = request.path_params["vid"]
    if not vid.isdigit():
        raise FhirError.of("not-found", f"Version {vid!r} is not a version of this server", status=404)
    async with _read_uow(request) as uow:
        await policy.require_visible(uow, res_type, request.path_params["id"])
        stored = await uow.resources.vread(res_type, request.path_params["id"], int(vid))
    return FhirResponse(stored.resource, headers={"ETag": stored.etag, "Last-Modified": stored.last_updated})


async def history(request: Request) -> Response:
    res_type = request.path_params.get("type")
    if res_type:
        res_type = _type(request)
    res_id = request.path_params.get("id")
    policy.authorize_history(current_actor(request), res_type, res_id)
    qp = request.query_params
    try:
        count = max(1, min(int(qp.get("_count", "50")), 1000))
        before = int(qp["_cursor"]) if "_cursor" in qp else None
    except ValueError:
        raise FhirError.of("invalid", "_count and _cursor must be whole numbers") from None
    since = None
    if "_since" in qp:
        try:
            since = date_range(qp["_since"])[0]
        except ValueError:
            raise FhirError.of("invalid", f"Invalid _since {qp['_since']!r}", "_since") from None
    async with _read_uow(request) as uow:
        if res_type and res_id:
            await policy.require_visible(uow, res_type, res_id)
        rows = await uow.resources.history(res_type, res_id, since, count + 1, before)
    if res_id and not rows:
        raise FhirError.of("not-found", f"{res_type}/{res_id} is not known", status=404)
    base = fhir_base(request)
    more = len(rows) > count
    rows = rows[:count]
    entries = []
    for _seq, method, resource, deleted, version in rows:
        entry: dict[str, Any] = {
            "fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
            "request": {"method": method, "url": f"{resource['resourceType']}/{resource['id']}"},
            "response": {"status": "204" if deleted else ("201" if version == 1 else "200"),
                         "etag": f'W/"{version}"'},
        }
        if not deleted:
            entry["resource"] = resource
        entries.append(entry)
    path = request.url.path.split("/fhir", 1)[-1]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "total": len(entries),
                              "link": [{"relation": "self", "url": f"{base}{path}"}], "entry": entries}
    if more and rows:
        bundle["link"].append({"relation": "next", "url": f"{base}{path}?_count={count}&_cursor={rows[-1][0]}"})
    if not entries:
        del bundle["entry"]
    return FhirResponse(bundle)


# --------------------------------------------------------------------------- writes

async def create(request: Request) -> Response:
    res_type = _type(request)
    body = await json_body(request)
    # fhirpy's get_or_create sends the condition as the query string instead of If-None-Exist.
    condition = request.headers.get("if-none-exist") or query_string(request) or None
    async with _uow(request) as uow:
        result = await ops.create(uow, body, res_type=res_type, if_none_exist=condition)
    return _write_response(request, result.stored, 201 if result.created else 200)


async def update(request: Request) -> Response:
    res_type = _type(request)
    body = await json_body(request)
    if_match = parse_etag(request.headers.get("if-match"))
    async with _uow(request) as uow:
        result = await ops.update(uow, res_type, request.path_params["id"], body, if_match=if_match)
    return _write_response(request, result.stored, 201 if result.created else 200)


async def conditional_update(request: Request) -> Response:
    res_type = _type(request)
    body = await json_body(request)
    query = query_string(request)
    if not query:
        raise FhirError.of("invalid", "PUT on a type needs search parameters (conditional update) or an id")
    async with _uow(request) as uow:
        result = await ops.conditional_update(uow, res_type, query, body)
    return _write_response(request, result.stored, 201 if result.created else 200)


async def delete(request: Request) -> Response:
    res_type = _type(request)
    async with _uow(request) as uow:
        await ops.delete(uow, res_type, request.path_params["id"])
    nudge_workers(request)
    return FhirResponse(information(f"{res_type}/{request.path_params['id']} deleted"), status_code=200)


async def validate_op(request: Request) -> Response:
    res_type = _type(request)
    body = await json_body(request)
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        body = next((p.get("resource") for p in body.get("parameter", []) if p.get("name") == "resource"), None)
    validate(body, res_type)
    return FhirResponse(information("The resource is valid"))


def _match_parameters(body: Any) -> tuple[Any, bool, int | None]:
    """(resource, onlyCertainMatches, count) of a ``Patient/$match`` Parameters body."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError.of("invalid", "Patient/$match expects a Parameters resource", "Parameters")
    params = {p.get("name"): p for p in body.get("parameter") or [] if isinstance(p, dict)}
    if "resource" not in params:
        raise FhirError.of("required", "The 'resource' parameter (a Patient) is required", "Parameters.parameter")
    only = params.get("onlyCertainMatches", {}).get("valueBoolean", False)
    count = params.get("count", {}).get("valueInteger")
    if not isinstance(only, bool):
        raise FhirError.of("invalid", "'onlyCertainMatches' must be a valueBoolean", "Parameters.parameter")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise FhirError.of("invalid", "'count' must be a positive valueInteger", "Parameters.parameter")
    return params["resource"].get("resource"), only, count


async def match_op(request: Request) -> Response:
    """``POST /fhir/Patient/$match`` (read-only; admin and matcher clients: the area policy refuses others)."""
    resource, only_certain, count = _match_parameters(await json_body(request))
    async with _uow(request) as uow:
        bundle = await matching.match_patient(uow, resource, only_certain=only_certain, count=count,
                                              base_url=fhir_base(request))
    return FhirResponse(bundle)


async def transaction_or_batch(request: Request) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise FhirError.of("invalid", "POST to the base expects a Bundle of type transaction or batch",
                           "Bundle.resourceType")
    kind = body.get("type")
    if kind not in ("transaction", "batch"):
        raise FhirError.of("invalid", f"Bundle.type must be transaction or batch, got {kind!r}", "Bundle.type")
    check_bundle_shape(body)
    include = prefer_return(request) != "minimal"

    async def run_search(uow: UnitOfWork, res_type: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        return await search_bundle(request, uow, res_type, params)

    async with _uow(request) as uow:
        if kind == "transaction":
            results = await bundles.transaction(uow, body, run_search)
        else:
            results = await bundles.batch(uow, body, run_search)
    nudge_workers(request)
    return Response(await bundles.response_json(kind, results, include), media_type=FHIR_JSON)


async def metadata(request: Request) -> Response:
    return Response(capability_json(fhir_base(request)), media_type=FHIR_JSON)


routes = [
    Route("/metadata", metadata, methods=["GET"]),
    Route("/", transaction_or_batch, methods=["POST"]),
    Route("/_history", history, methods=["GET"]),
    Route("/{type}", search, methods=["GET"]),
    Route("/{type}", create, methods=["POST"]),
    Route("/{type}", conditional_update, methods=["PUT"]),
    Route("/{type}/_search", search, methods=["POST"]),
    Route("/{type}/_history", history, methods=["GET"]),
    Route("/Patient/$match", match_op, methods=["POST"]),
    Route("/{type}/$validate", validate_op, methods=["POST"]),
    Route("/{type}/{id}", read, methods=["GET"]),
    Route("/{type}/{id}", update, methods=["PUT"]),
    Route("/{type}/{id}", delete, methods=["DELETE"]),
    Route("/{type}/{id}/_history", history, methods=["GET"]),
    Route("/{type}/{id}/_history/{vid}", vread, methods=["GET"]),
]
