"""FHIR write use cases: create, conditional create, update, delete — validated, then stored.

Types with workflow meaning (ServiceRequest, Task, Organization, ...) register a ``WriteHook`` in
``HOOKS``: it sees the validated resource before it is stored (may reshape it or refuse it) and
the stored result after (may write more in the same transaction, e.g. a Task and an outbox row).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from ltfu.fhir.outcome import FhirError
from ltfu.fhir.search_params import parse_search
from ltfu.fhir.validation import validate
from ltfu.services import policy
from ltfu.store.resources import Stored
from ltfu.store.uow import UnitOfWork

BeforeWrite = Callable[[UnitOfWork, dict[str, Any], Stored | None], Awaitable[dict[str, Any]]]
AfterWrite = Callable[[UnitOfWork, Stored, Stored | None], Awaitable[None]]
FindExisting = Callable[[UnitOfWork, dict[str, Any]], Awaitable[Stored | None]]
Prefetch = Callable[[UnitOfWork, list[dict[str, Any]]], Awaitable[None]]


@dataclass(frozen=True)
class WriteHook:
    before: BeforeWrite | None = None
    after: AfterWrite | None = None
    allow_delete: bool = True
    existing: FindExisting | None = None  # idempotency: the stored twin of a resource being created
    prefetch: Prefetch | None = None  # many creates coming (a Bundle): look up at once what they will need


HOOKS: dict[str, WriteHook] = {}


@dataclass(frozen=True)
class WriteResult:
    stored: Stored
    created: bool  # False: an existing resource was returned (conditional create) or updated


async def find_by_query(uow: UnitOfWork, res_type: str, query: str, *, limit: int = 2) -> list[dict[str, Any]]:
    """Resources matching a conditional query string (``identifier=sys|val``). Unknown params → 400.

    Only what the actor may see matches: for a facility, another's resource is as if absent.
    """
    params = parse_qsl(query.lstrip("?"), keep_blank_values=True)
    if not params:
        raise FhirError.of("invalid", "A conditional query needs at least one search parameter")
    q = parse_search(res_type, params, strict=True)
    q.count = limit
    q.total = False
    matches = (await uow.search(policy.scope_search(uow.actor, q))).matches
    if matches or q.facility is None or res_type != "Patient":
        return matches
    q.facility, q.count = None, 100  # none of its own: a person nobody claimed yet may be named (and is claimed)
    found = (await uow.search(q)).matches
    bound = await policy.bind_patients(uow, [m["id"] for m in found])
    return [m for m in found if m["id"] in bound]


def identity_keys(resource: dict[str, Any]) -> list[str]:
    """Lock keys for a resource's identifiers: concurrent creates of one identity must serialise."""
    return [f"{resource.get('resourceType')}|{i.get('system', '')}|{i['value']}"
            for i in resource.get("identifier") or [] if isinstance(i, dict) and i.get("value")]


async def create(
    uow: UnitOfWork, resource: Any, *, res_type: str | None = None, if_none_exist: str | None = None,
    res_id: str | None = None, validated: bool = False,
) -> WriteResult:
    """``validated``: the caller has just run ``validate`` on this very dict (one validation per request)."""
    if not validated:
        resource = validate(resource, res_type)
    res_type = resource["resourceType"]
    await policy.authorize_create(uow, resource)
    if if_none_exist:
        await uow.lock(identity_keys(resource))
        found = await find_by_query(uow, res_type, if_none_exist)
        if len(found) > 1:
            raise FhirError.of("multiple-matches",
                               f"If-None-Exist matched more than one {res_type}: {if_none_exist}", status=412)
        if found:
            stored = await uow.resources.read(res_type, found[0]["id"])
            return WriteResult(stored, created=False)
    hook = HOOKS.get(res_type)
    if hook and hook.existing:
        twin = await hook.existing(uow, resource)
        if twin is not None:
            return WriteResult(twin, created=False)
    minted = res_id is None
    res_id = res_id or str(uuid.uuid4())  # known to the hooks (secrets are stored under it)
    if hook and hook.before:
        resource = await hook.before(uow, {**resource, "id": res_id}, None)
    await policy.check_references(uow, resource, None)
    stored = await uow.resources.create(resource, res_id)
    await policy.record_created(uow, res_type, stored.resource["id"], minted=minted)
    if hook and hook.after:
        await hook.after(uow, stored, None)
    return WriteResult(stored, created=True)


async def update(
    uow: UnitOfWork, res_type: str, res_id: str, resource: Any, *, if_match: int | None = None
) -> WriteResult:
    resource = validate(resource, res_type)
    body_id = resource.get("id")
    if body_id is None:
        raise FhirError.of("required", "The resource in an update must carry its id", f"{res_type}.id")
    if body_id != res_id:
        raise FhirError.of("invalid", f"The body's id {body_id!r} does not match the URL's id {res_id!r}",
                           f"{res_type}.id")
    previous = await uow.resources.get(res_type, res_id)
    await policy.authorize_update(uow, res_type, res_id, resource, previous.resource if previous else None)
    hook = HOOKS.get(res_type)
    if hook and hook.before:
        resource = await hook.before(uow, resource, previous)
    await policy.check_references(uow, resource, previous.resource if previous else None)
    stored = await uow.resources.update(resource, res_id, if_match)
    if hook and hook.after:
        await hook.after(uow, stored, previous)
    return WriteResult(stored, created=previous is None)


async def conditional_update(uow: UnitOfWork, res_type: str, query: str, resource: Any) -> WriteResult:
    policy.authorize_conditional_update(uow.actor)
    found = await find_by_query(uow, res_type, query)
    if len(found) > 1:
        raise FhirError.of("multiple-matches", f"Conditional update matched more than one {res_type}", status=412)
    if not found:
        body = dict(resource) if isinstance(resource, dict) else resource
        if isinstance(body, dict):
            body.pop("id", None)
        return await create(uow, body, res_type=res_type)
    body = dict(resource) if isinstance(resource, dict) else resource
    if isinstance(body, dict):
        body.setdefault("id", found[0]["id"])
    return await update(uow, res_type, found[0]["id"], body)


async def delete(uow: UnitOfWork, res_type: str, res_id: str) -> bool:
    policy.authorize_delete(uow.actor)
    hook = HOOKS.get(res_type)
    if hook and not hook.allow_delete:
        raise FhirError.of("business-rule", f"{res_type} cannot be deleted; change its status instead",
                           status=405)
    return await uow.resources.delete(res_type, res_id)
