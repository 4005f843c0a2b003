"""The reference PoC's HTTP API (``/mediator/...``), unchanged for its clients.

OpenHIM's PoC channel strips the ``/mediator`` prefix, so every route is served at both paths.
Errors keep the PoC's body shape (``{"message": ...}``) and add the OperationOutcome beside it.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ltfu.api.access import current_actor
from ltfu.api.http import JSONResponse, json_body, nudge_workers, report_write
from ltfu.fhir import poc_profiles
from ltfu.fhir.outcome import FhirError
from ltfu.fhir.validation import validate
from ltfu.services import poc
from ltfu.store.receipts import content_hash
from ltfu.store.uow import unit_of_work

PREFIXES = ("/mediator", "/endpoint", "/organization", "/patient", "/service-request", "/encounter")
_STARTED = time.monotonic()


def error_body(err: FhirError) -> bytes:
    return orjson.dumps({"valid": False, "message": err.message, "outcome": err.outcome()})


def error_response(err: FhirError) -> Response:
    return Response(error_body(err), status_code=err.status, media_type=JSONResponse.media_type)


def _os_uptime() -> float:
    try:
        with open("/proc/uptime") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


async def status(_: Request) -> Response:
    return JSONResponse(
        {"status": "success", "osuptime": _os_uptime(), "processuptime": round(time.monotonic() - _STARTED, 3)}
    )


async def _body(request: Request, res_type: str) -> Any:
    body = await json_body(request)
    if isinstance(body, dict):
        body = {**body, "resourceType": body.get("resourceType", res_type)}
    return body


def _uow(request: Request) -> Any:
    return unit_of_work(request.app.state.db, current_actor(request))


async def endpoint(request: Request) -> Response:
    resource = poc_profiles.endpoint(validate(await _body(request, "Endpoint"), "Endpoint"))
    async with _uow(request) as uow:
        result = await poc.register_endpoint(uow, resource)
    report_write(request, result.stored.resource, 201)
    return JSONResponse(result.stored.resource, status_code=201)


async def organization(request: Request) -> Response:
    body = await _body(request, "Organization")
    resource = validate(poc_profiles.organization(body), "Organization")
    async with _uow(request) as uow:
        result = await poc.register_organization(uow, resource)
    report_write(request, result.stored.resource, 201)
    return JSONResponse(result.stored.resource, status_code=201)


async def patient(request: Request) -> Response:
    resource = poc_profiles.patient(validate(await _body(request, "Patient"), "Patient"))
    async with _uow(request) as uow:
        result = await poc.register_patient(uow, resource)
    report_write(request, result.stored.resource, 201 if result.created else 200)
    return JSONResponse(result.stored.resource, status_code=201 if result.created else 200)


async def encounter(request: Request) -> Response:
    raw = await _body(request, "Encounter")
    digest = content_hash(raw)
    resource = validate(poc_profiles.encounter(raw), "Encounter")
    async with _uow(request) as uow:
        result = await poc.record_encounter(uow, digest, resource)
    if not result.created:
        return JSONResponse(result.stored.resource, status_code=200)
    nudge_workers(request)
    report_write(request, result.stored.resource, 201)
    return JSONResponse(result.stored.resource, status_code=201)


async def service_request(request: Request) -> Response:
    """The PoC's LTFU request: answers with the facility's Subscription, ``criteria`` as the PoC gave it."""
    resource = poc_profiles.service_request(validate(await _body(request, "ServiceRequest"), "ServiceRequest"))
    patient_key = resource["subject"]["reference"].split("/", 1)[1]
    async with _uow(request) as uow:
        result = await poc.request_follow_up(uow, resource)
    nudge_workers(request)
    created = result.request.created
    report_write(request, result.request.stored.resource, 201 if created else 200)
    body = {**result.subscription.resource, "criteria": f"Encounter?identifier={patient_key}"}
    return JSONResponse(body, status_code=201 if created else 200)


def _both(path: str, endpoint_fn: Any, methods: list[str]) -> list[Route]:
    return [Route(f"/mediator{path}", endpoint_fn, methods=methods), Route(path, endpoint_fn, methods=methods)]


routes = [
    Route("/mediator", status, methods=["GET"]),
    Route("/mediator/", status, methods=["GET"]),
    Route("/", status, methods=["GET"]),
    *_both("/endpoint", endpoint, ["POST"]),
    *_both("/organization", organization, ["POST"]),
    *_both("/patient", patient, ["POST"]),
    *_both("/encounter", encounter, ["POST"]),
    *_both("/service-request", service_request, ["POST"]),
]
