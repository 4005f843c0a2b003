"""The reference PoC's HTTP API (``/mediator/...``), unchanged for its clients.

OpenHIM's PoC channel strips the ``/mediator`` prefix, so every route is served at both paths.
Errors keep the PoC's body shape (``{"message": ...}``) and add the OperationOutcome beside it.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ltfu.api.http import JSONResponse, json_body, nudge_workers, report_write
from ltfu.fhir import poc_profiles
from ltfu.fhir.outcome import FhirError
from ltfu.fhir.validation import validate
from ltfu.services import attempts, notifications, patients, requests
from ltfu.services import resources as ops
from ltfu.store.receipts import content_hash
from ltfu.store.uow import unit_of_work

PREFIXES = ("/mediator", "/endpoint", "/organization", "/patient", "/service-request", "/encounter")
_STARTED = time.monotonic()


def error_response(err: FhirError) -> Response:
    return JSONResponse({"valid": False, "message": err.message, "outcome": err.outcome()},
                        status_code=err.status)


def _os_uptime() -> float:
    try:
        with open("/proc/uptime") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


async def status(_: Request) -> Response:
    return JSONResponse({"status": "success", "osuptime": _os_uptime(),
                         "processuptime": round(time.monotonic() - _STARTED, 3)})


async def _body(request: Request, res_type: str) -> Any:
    body = await json_body(request)
    if isinstance(body, dict):
        body = {**body, "resourceType": body.get("resourceType", res_type)}
    return body


async def endpoint(request: Request) -> Response:
    resource = poc_profiles.endpoint(validate(await _body(request, "Endpoint"), "Endpoint"))
    async with unit_of_work(request.app.state.db) as uow:
        result = await ops.create(uow, resource, res_type="Endpoint", validated=True)
    report_write(request, result.stored.resource, 201)
    return JSONResponse(result.stored.resource, status_code=201)


async def organization(request: Request) -> Response:
    body = await _body(request, "Organization")
    resource = validate(poc_profiles.organization(body), "Organization")
    async with unit_of_work(request.app.state.db) as uow:
        ref = resource["endpoint"][0]["reference"]
        if await uow.resources.get("Endpoint", ref.split("/", 1)[1]) is None:
            raise FhirError.of("invalid", f"{ref} does not exist: register the Endpoint first",
                               "Organization.endpoint[0]")
        result = await ops.create(uow, resource, res_type="Organization", validated=True)
    report_write(request, result.stored.resource, 201)
    return JSONResponse(result.stored.resource, status_code=201)


async def patient(request: Request) -> Response:
    resource = poc_profiles.patient(validate(await _body(request, "Patient"), "Patient"))
    value = poc_profiles.cht_identifier(resource)
    assert value is not None  # checked by the profile
    async with unit_of_work(request.app.state.db) as uow:
        result = await patients.create_unless_known(uow, resource, poc_profiles.CHT_SYSTEM, value, validated=True)
    report_write(request, result.stored.resource, 201 if result.created else 200)
    return JSONResponse(result.stored.resource, status_code=201 if result.created else 200)


async def encounter(request: Request) -> Response:
    raw = await _body(request, "Encounter")
    digest = content_hash(raw)
    resource = validate(poc_profiles.encounter(raw), "Encounter")
    async with unit_of_work(request.app.state.db) as uow:
        ref = resource["subject"].get("reference") if isinstance(resource["subject"], dict) else None
        if not ref:
            raise FhirError.of("required", '"subject.reference" is required', "Encounter.subject")
        cond = poc_profiles.conditional_patient_reference(ref)
        key = cond[1] if cond else ref.removeprefix("Patient/")
        found = await patients.require(uow, key, "Encounter.subject")
        resource["subject"] = {**resource["subject"], "reference": f"Patient/{found.resource['id']}"}
        receipt = await uow.receipts.get(f"poc-encounter:{digest}")
        if receipt is not None:  # CHT re-sent the same push: answer with what we stored
            stored = await uow.resources.read("Encounter", receipt[1]["encounter"].split("/", 1)[1])
            return JSONResponse(stored.resource, status_code=200)
        resource = await attempts.link_poc_encounter(uow, resource, found.resource["id"])
        result = await ops.create(uow, resource, res_type="Encounter", validated=True)
        await attempts.poc_encounter_recorded(uow, result.stored)
        await uow.receipts.put(f"poc-encounter:{digest}", digest, {"encounter": result.stored.ref}, exists=False)
    nudge_workers(request)
    report_write(request, result.stored.resource, 201)
    return JSONResponse(result.stored.resource, status_code=201)


async def service_request(request: Request) -> Response:
    """The PoC's LTFU request: answers with the facility's Subscription, ``criteria`` as the PoC gave it."""
    resource = poc_profiles.service_request(validate(await _body(request, "ServiceRequest"), "ServiceRequest"))
    patient_key = resource["subject"]["reference"].split("/", 1)[1]
    async with unit_of_work(request.app.state.db) as uow:
        org = await requests.find_organization(uow, resource["requester"]["reference"].split("/", 1)[1])
        if org is None:
            raise FhirError.of("not-found", "Organization not found", "ServiceRequest.requester", status=404)
        if await notifications.facility_endpoint(uow, org.resource) is None:
            raise FhirError.of("invalid", "Organization has no endpoint attached", "ServiceRequest.requester")
        await patients.require(uow, patient_key, "ServiceRequest.subject")
        resource["requester"] = {"reference": org.ref}
        result = await ops.create(uow, resource, res_type="ServiceRequest", validated=True)
        subscription = await notifications.ensure_facility_subscription(uow, org.resource)
    nudge_workers(request)
    report_write(request, result.stored.resource, 201 if result.created else 200)
    assert subscription is not None  # the facility has an endpoint (checked above)
    body = {**subscription.resource, "criteria": f"Encounter?identifier={patient_key}"}
    return JSONResponse(body, status_code=201 if result.created else 200)


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
