"""The reference PoC's use cases (``/mediator/...``): register an Endpoint, an Organization (admin), a
Patient, a visit report, an LTFU request. Each runs in the caller's unit of work and asks the policy
through the write services, so a facility acts only for itself. The routes hand them resources they have
just validated: they are not validated a second time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ltfu.fhir import poc_profiles
from ltfu.fhir.outcome import FhirError
from ltfu.services import attempts, notifications, patients, policy, requests
from ltfu.services import resources as ops
from ltfu.services.resources import WriteResult
from ltfu.store.resources import Stored
from ltfu.store.uow import UnitOfWork


async def register_endpoint(uow: UnitOfWork, resource: dict[str, Any]) -> WriteResult:
    return await ops.create(uow, resource, res_type="Endpoint", validated=True)


async def register_organization(uow: UnitOfWork, resource: dict[str, Any]) -> WriteResult:
    policy.require_admin(uow.actor, "register an Organization")
    ref = resource["endpoint"][0]["reference"]
    if await uow.resources.get("Endpoint", ref.split("/", 1)[1]) is None:
        raise FhirError.of("invalid", f"{ref} does not exist: register the Endpoint first", "Organization.endpoint[0]")
    return await ops.create(uow, resource, res_type="Organization", validated=True)


async def register_patient(uow: UnitOfWork, resource: dict[str, Any]) -> WriteResult:
    value = poc_profiles.cht_identifier(resource)
    assert value is not None  # checked by the profile
    return await patients.create_unless_known(uow, resource, poc_profiles.CHT_SYSTEM, value, validated=True)


@dataclass(frozen=True)
class EncounterResult:
    stored: Stored
    created: bool


async def record_encounter(uow: UnitOfWork, digest: str, resource: dict[str, Any]) -> EncounterResult:
    """A CHT visit report in the PoC's shape: tied to the patient's open case, idempotent per content
    (``digest``: ``content_hash`` of the body as received)."""
    ref = resource["subject"].get("reference") if isinstance(resource["subject"], dict) else None
    if not ref:
        raise FhirError.of("required", '"subject.reference" is required', "Encounter.subject")
    cond = poc_profiles.conditional_patient_reference(ref)
    key = cond[1] if cond else ref.removeprefix("Patient/")
    found = await patients.require(uow, key, "Encounter.subject")
    resource["subject"] = {**resource["subject"], "reference": f"Patient/{found.resource['id']}"}
    receipt = await uow.receipts.get(f"poc-encounter:{digest}")
    if receipt is not None:  # CHT re-sent the same push: answer with what we stored
        enc_id = receipt[1]["encounter"].split("/", 1)[1]
        await policy.require_visible(uow, "Encounter", enc_id)
        return EncounterResult(await uow.resources.read("Encounter", enc_id), created=False)
    resource = await attempts.link_poc_encounter(uow, resource, found.resource["id"])
    result = await ops.create(uow, resource, res_type="Encounter", validated=True)
    await attempts.poc_encounter_recorded(uow, result.stored)
    await uow.receipts.put(f"poc-encounter:{digest}", digest, {"encounter": result.stored.ref}, exists=False)
    return EncounterResult(result.stored, created=True)


@dataclass(frozen=True)
class FollowUpRequest:
    request: WriteResult
    subscription: Stored


async def request_follow_up(uow: UnitOfWork, resource: dict[str, Any]) -> FollowUpRequest:
    """The PoC's LTFU request: the case, and the facility's Subscription (a facility: its own only)."""
    await requests.prime(uow, resource)
    org = await requests.find_organization(uow, resource["requester"]["reference"].split("/", 1)[1])
    policy.require_own_organization(uow.actor, org.resource["id"] if org else None, "ServiceRequest.requester")
    if org is None:
        raise FhirError.of("not-found", "Organization not found", "ServiceRequest.requester", status=404)
    if await notifications.facility_endpoint(uow, org.resource) is None:
        raise FhirError.of("invalid", "Organization has no endpoint attached", "ServiceRequest.requester")
    await patients.require(uow, resource["subject"]["reference"].split("/", 1)[1], "ServiceRequest.subject")
    resource["requester"] = {"reference": org.ref}
    result = await ops.create(uow, resource, res_type="ServiceRequest", validated=True)
    subscription = await notifications.ensure_facility_subscription(uow, org.resource)
    assert subscription is not None  # the facility has an endpoint (checked above)
    return FollowUpRequest(result, subscription)
