"""Accepting, cancelling and expiring LTFU requests (a ServiceRequest and the Task that tracks it).

Hooked into every ServiceRequest write, so the FHIR API, Bundles and the PoC route share one path:
the same facility identifier is the same case; a new case stores the request, its Task and the
CHT submission in one transaction.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ltfu.fhir.outcome import FhirError
from ltfu.fhir.search_params import date_range
from ltfu.fhir.systems import TASK_CODE_SYSTEM, Systems
from ltfu.services import notifications, patients, policy, tasks
from ltfu.services.resources import WriteHook
from ltfu.store.lookups import Ref, prime_new_case
from ltfu.store.resources import Stored, now_instant
from ltfu.store.uow import UnitOfWork

CANCELLING = ("revoked", "entered-in-error")
MEDIATOR_OWNED = ("businessStatus", "output", "executionPeriod", "owner", "statusReason")
TERMINAL_CASE = ("completed", "failed", "cancelled", "rejected", "entered-in-error")


def is_ltfu_request(sr: dict[str, Any], systems: Systems) -> bool:
    """A facility's follow-up request: requested by an Organization, or coded ltfu-tracing.

    Other ServiceRequests (a Practitioner's lab order, say) are stored as plain FHIR.
    """
    requester = sr.get("requester") or {}
    if str(requester.get("reference", "")).startswith("Organization") or (
            requester.get("type") == "Organization" and requester.get("identifier")):
        return True
    codings = (sr.get("code") or {}).get("coding") or []
    return any(c.get("system") == systems.ltfu_code and c.get("code") == "ltfu-tracing" for c in codings)


def request_key(resource: dict[str, Any]) -> str:
    ident = (resource.get("identifier") or [{}])[0]
    return f"{ident.get('system', '')}|{ident.get('value', '')}"


def _ensure_identifier(uow: UnitOfWork, resource: dict[str, Any]) -> dict[str, Any]:
    """A request without an identifier gets one derived from its content (replays stay idempotent)."""
    if any(i.get("value") for i in resource.get("identifier") or []):
        return resource
    content = {k: v for k, v in resource.items() if k not in ("id", "meta", "identifier", "text")}
    digest = hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    system = Systems(uow.settings.base_url).ltfu_request
    return {**resource, "identifier": [{"system": system, "value": f"auto-{digest}"}]}


def _reference_key(ref: dict[str, Any] | None, res_type: str, expression: str) -> str:
    """The key a reference names: an id or an identifier value (no ``|``), or ``system|value``."""
    if not isinstance(ref, dict):
        raise FhirError.of("required", f"{expression} is required", expression, status=422)
    text = ref.get("reference")
    key: str | None = None
    if text:
        if text.startswith(f"{res_type}?identifier=") or text.startswith(f"{res_type}/?identifier="):
            key = text.split("=", 1)[1]
        elif text.startswith(f"{res_type}/"):
            key = text.split("/", 1)[1]
        else:
            raise FhirError.of("invalid", f"{expression} must reference a {res_type}", expression, status=422)
    elif isinstance(ref.get("identifier"), dict) and ref["identifier"].get("value"):
        ident = ref["identifier"]
        key = f"{ident.get('system', '')}|{ident['value']}" if ident.get("system") else ident["value"]
    if not key:
        raise FhirError.of("required", f"{expression} needs a reference or an identifier", expression, status=422)
    return key


def _lookup(ref: dict[str, Any] | None, res_type: str) -> Ref | None:
    """What ``_resolve_reference`` (and ``patients.find``) will look up for this reference."""
    try:
        key = _reference_key(ref, res_type, "")
    except FhirError:
        return None  # its own look-up reports it
    if "|" not in key:
        return Ref(res_type, key, None, key)
    system, _, value = key.rpartition("|")
    return Ref(res_type, None, system or None, value)


async def prime(uow: UnitOfWork, sr: dict[str, Any]) -> None:
    """A new case's look-ups (is it known, its requester and its subject, the requester's subscriptions) in
    one statement before the steps that ask for each (``store/lookups``)."""
    if not is_ltfu_request(sr, Systems(uow.settings.base_url)):
        return
    key = request_key(_ensure_identifier(uow, sr))
    if uow.cases.is_known_absent(key):  # looked up already (a defaulter list's prefetch, or here)
        return
    refs = [r for r in (_lookup(sr.get("requester"), "Organization"), _lookup(sr.get("subject"), "Patient")) if r]
    orgs = 0 if refs and refs[0].res_type == "Organization" else None
    subscriptions = await prime_new_case(uow, key, refs, orgs)
    for org_id, rows in (subscriptions or {}).items():
        notifications.remember_subscriptions(uow, org_id, rows)


async def _resolve_reference(uow: UnitOfWork, ref: dict[str, Any] | None, res_type: str,
                             expression: str) -> Stored:
    """``Type/id``, ``Type/<identifier value>`` (the PoC's form), ``Type?identifier=…`` or ``Reference.identifier``."""
    key = _reference_key(ref, res_type, expression)
    if res_type == "Patient":
        found = await patients.find(uow, key)
    else:
        found = None
        if "|" not in key:
            await uow.resources.prime_id_or_token(res_type, key)
        if "|" not in key and await policy.can_see(uow, res_type, key):
            found = await uow.resources.get(res_type, key)
        if found is None:
            system, _, value = key.rpartition("|")
            ids = await uow.resources.find_ids_by_token(res_type, "identifier", system or None, value)
            ids = await policy.visible_ids(uow, res_type, ids)
            if len(ids) > 1:
                raise FhirError.of("multiple-matches", f"More than one {res_type} matches {expression}", expression,
                                   status=409)
            found = await uow.resources.get(res_type, ids[0]) if ids else None
    if found is None:
        raise FhirError.of("not-found", f"{res_type} in {expression} is not known here", expression, status=404)
    return found


async def _existing(uow: UnitOfWork, resource: dict[str, Any]) -> Stored | None:
    if not is_ltfu_request(resource, Systems(uow.settings.base_url)):
        return None
    await prime(uow, resource)
    resource = _ensure_identifier(uow, resource)
    case = await uow.cases.by_request_key(request_key(resource))
    if case is not None and not policy.case_in_scope(uow.actor, case):
        raise FhirError.of("conflict", "A request with this identifier is already known", "ServiceRequest.identifier",
                           status=409, kind="duplicate-request")
    return await uow.resources.get("ServiceRequest", case.case_id) if case else None


async def _prefetch(uow: UnitOfWork, requests: list[dict[str, Any]]) -> None:
    """A defaulter list: whether each request is a known case, in one look-up for all."""
    systems = Systems(uow.settings.base_url)
    keys = [request_key(_ensure_identifier(uow, sr)) for sr in requests if is_ltfu_request(sr, systems)]
    await uow.cases.prefetch_request_keys(keys)


async def _before(uow: UnitOfWork, sr: dict[str, Any], previous: Stored | None) -> dict[str, Any]:
    if previous is not None:
        if previous.resource.get("status") in CANCELLING and sr.get("status") not in CANCELLING:
            raise FhirError.of("business-rule", "A withdrawn request cannot be re-activated; send a new one",
                               "ServiceRequest.status", status=409)
        return sr
    if not is_ltfu_request(sr, Systems(uow.settings.base_url)):
        return sr
    sr = _ensure_identifier(uow, sr)
    try:
        org = await _resolve_reference(uow, sr.get("requester"), "Organization", "ServiceRequest.requester")
    except FhirError as err:  # another facility's Organization is not known to this one: same answer
        if err.status == 404 and uow.actor.facility is not None:
            policy.require_own_organization(uow.actor, None, "ServiceRequest.requester")
        raise
    policy.require_own_organization(uow.actor, org.resource["id"], "ServiceRequest.requester")
    patient = await _resolve_reference(uow, sr.get("subject"), "Patient", "ServiceRequest.subject")
    sr = {**sr, "subject": {**sr["subject"], "reference": patient.ref},
          "requester": {**sr["requester"], "reference": org.ref}}
    sr["subject"].pop("identifier", None)
    sr["requester"].pop("identifier", None)
    return sr


def _window_end(uow: UnitOfWork, sr: dict[str, Any]) -> str:
    end = (sr.get("occurrencePeriod") or {}).get("end")
    if end:
        try:
            return date_range(end)[1]
        except ValueError:
            pass
    days = uow.settings.follow_up_window_days
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _after(uow: UnitOfWork, stored: Stored, previous: Stored | None) -> None:
    sr = stored.resource
    if previous is not None:
        if sr.get("status") in CANCELLING and previous.resource.get("status") not in CANCELLING:
            await cancel(uow, sr["id"], "Withdrawn by the facility")
        return
    if sr.get("status") != "active" or not is_ltfu_request(sr, Systems(uow.settings.base_url)):
        return  # drafts and on-hold requests are stored; a case starts when one is sent active
    systems = Systems(uow.settings.base_url)
    key = request_key(sr)
    case_id = sr["id"]
    task_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ltfu-task:{key}"))
    now = now_instant()
    window_end = _window_end(uow, sr)
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [{"system": systems.task_id, "value": task_id}],
        "basedOn": [{"reference": f"ServiceRequest/{case_id}"}],
        "status": "requested",
        "businessStatus": tasks.business_status(systems, "awaiting-cht"),
        "intent": "order",
        "priority": sr.get("priority", "routine"),
        "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": "fulfill"}]},
        "focus": {"reference": f"ServiceRequest/{case_id}"},
        "for": sr["subject"],
        "authoredOn": now,
        "lastModified": now,
        "requester": sr["requester"],
        "restriction": {"period": {"start": now, "end": window_end}},
    }
    if sr.get("requisition"):
        task["groupIdentifier"] = sr["requisition"]
    task_stored = await uow.resources.create(task, task_id)
    await uow.cases.add(
        case_id=case_id, task_id=task_id, request_key=key,
        patient_id=sr["subject"]["reference"].split("/", 1)[1],
        organization_id=sr["requester"]["reference"].split("/", 1)[1],
        status="requested", business_status="awaiting-cht", attempts=0,
        group_id=(sr.get("requisition") or {}).get("value"), created_at=now, updated_at=now, window_end=window_end,
    )
    uow.outbox.enqueue_new("cht", "follow-up", f"case:{case_id}", {"case_id": case_id},
                           dedupe_key=f"cht-follow-up:{case_id}", case_id=case_id,
                           organization_id=sr["requester"]["reference"].split("/", 1)[1])
    await notifications.emit_task_event(uow, task_stored, case_id=case_id)


async def cancel(uow: UnitOfWork, case_id: str, reason: str) -> None:
    """Task → cancelled; CHT gets a cancel record, unless no worker ever took the follow-up to send
    (then it is dropped: CHT cannot have it)."""
    case = await uow.cases.get(case_id)
    if case is None or case.status in TERMINAL_CASE:
        return
    await tasks.transition(uow, case_id, "cancelled", "cancelled-by-facility", reason=reason)
    await _tell_cht_cancelled(uow, case, reason)


async def _tell_cht_cancelled(uow: UnitOfWork, case: Any, reason: str) -> None:
    case_id = case.case_id
    if await uow.outbox.cancel_pending(f"case:{case_id}", "follow-up") == 0:
        await uow.outbox.enqueue("cht", "cancel", f"case:{case_id}", {"case_id": case_id, "reason": reason},
                                 dedupe_key=f"cht-cancel:{case_id}", case_id=case_id,
                                 organization_id=case.organization_id)


async def expire_due(uow: UnitOfWork, limit: int = 200) -> int:
    """Fail the cases whose window ended without an outcome; the facility is notified."""
    ids = await uow.cases.expired(now_instant(), limit)
    for case_id in ids:
        await tasks.transition(uow, case_id, "failed", "expired", reason="expired")
    return len(ids)


async def _task_before(uow: UnitOfWork, task: dict[str, Any], previous: Stored | None) -> dict[str, Any]:
    """A case's Task is the mediator's: the placer may only cancel it (or withdraw the request)."""
    if previous is None or await uow.cases.by_task(previous.resource["id"]) is None:
        return task
    old, new = previous.resource["status"], task.get("status")
    if new == old:  # other edits are the client's; the workflow fields stay the mediator's
        owned = {k: previous.resource[k] for k in MEDIATOR_OWNED if k in previous.resource}
        return {**{k: v for k, v in task.items() if k not in MEDIATOR_OWNED}, **owned}
    if new != "cancelled":
        raise FhirError.of("business-rule", f"The mediator manages this Task's status; a client may only cancel it "
                           f"(asked {old!r} → {new!r})", "Task.status", status=409)
    if old in TERMINAL_CASE:
        raise FhirError.of("business-rule", f"The Task is already {old}", "Task.status", status=409)
    systems = Systems(uow.settings.base_url)
    return {**task, "businessStatus": tasks.business_status(systems, "cancelled-by-facility"),
            "lastModified": now_instant()}


async def _task_after(uow: UnitOfWork, stored: Stored, previous: Stored | None) -> None:
    if previous is None or stored.resource["status"] == previous.resource["status"]:
        return
    case = await uow.cases.by_task(stored.resource["id"])
    if case is None:
        return
    now = now_instant()
    await uow.cases.set(case.case_id, status="cancelled", business_status="cancelled-by-facility", updated_at=now,
                        closed_at=now)
    await notifications.emit_task_event(uow, stored, case_id=case.case_id)
    reason = (stored.resource.get("statusReason") or {}).get("text") or "Cancelled by the facility"
    await _tell_cht_cancelled(uow, case, reason)


TASK_HOOK = WriteHook(before=_task_before, after=_task_after)
SERVICE_REQUEST_HOOK = WriteHook(before=_before, after=_after, existing=_existing, allow_delete=False,
                                 prefetch=_prefetch)


async def find_organization(uow: UnitOfWork, key: str) -> Stored | None:
    """An Organization by id, else by identifier value (the PoC sends the identifier)."""
    try:
        return await _resolve_reference(uow, {"reference": f"Organization/{key}"}, "Organization", "requester")
    except FhirError as err:
        if err.status == 404:
            return None
        raise
