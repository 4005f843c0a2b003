"""Facility notifications (Subscriptions R5 Backport IG, R4 flavour): one Subscription per facility.

Every Task change becomes an event of each subscription of the Task's requester, queued in the outbox
in the same transaction; the database numbers it as the transaction commits (gapless, in commit order)
and records it in ``subscription_events`` (migration 0015).
The notifier builds the notification Bundle at delivery time from the stored snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from sqlalchemy import func, insert, select, update

from ltfu.domain.callbacks import MASK, CallbackRefused, check_address, split_header
from ltfu.fhir.outcome import FhirError
from ltfu.fhir.systems import BACKPORT, Systems
from ltfu.services import resources as ops
from ltfu.services.resources import WriteHook
from ltfu.store.lookups import SUBSCRIPTIONS_OF
from ltfu.store.outbox import instant_in
from ltfu.store.resources import Stored, now_instant
from ltfu.store.schema import outbox, subscription_counters, subscription_events
from ltfu.store.uow import UnitOfWork

LIVE = ("requested", "active", "error")
WAITING_FOR_HANDSHAKE = "waiting for the handshake to the new callback address"
_REQUESTER = re.compile(r"Task\?requester=Organization/([A-Za-z0-9\-.]{1,64})$")


def filter_criteria(org_id: str) -> str:
    return f"Task?requester=Organization/{org_id}"


def subscription_org(sub: dict[str, Any]) -> str | None:
    """The facility a Subscription is for: its backport filter criteria (or plain criteria)."""
    candidates = [sub.get("criteria") or ""]
    for ext in (sub.get("_criteria") or {}).get("extension", []):
        if ext.get("url") == BACKPORT + "backport-filter-criteria":
            candidates.append(ext.get("valueString") or "")
    for c in candidates:
        m = _REQUESTER.match(c.strip())
        if m:
            return m.group(1)
    return None


def _subscription_for(systems: Systems, org_id: str, endpoint: dict[str, Any], headers: list[str],
                      ) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "type": "rest-hook",
        "endpoint": endpoint["address"],
        "payload": "application/fhir+json",
        "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": "full-resource"}]},
        "extension": [{"url": BACKPORT + "backport-timeout", "valueUnsignedInt": 30}],
    }
    if headers:
        channel["header"] = list(headers)
    return {
        "resourceType": "Subscription",
        "meta": {"profile": [BACKPORT + "backport-subscription"]},
        "status": "requested",
        "reason": "LTFU follow-up task updates for the facility",
        "criteria": systems.topic,
        "_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria",
                                     "valueString": filter_criteria(org_id)}]},
        "channel": channel,
    }


async def subscriptions_of(uow: UnitOfWork, org_id: str) -> list[str]:
    key = ("subscriptions_of", org_id)  # asked for every event and request of the facility: once per transaction
    if key not in uow.memo:
        # No flush: the buffer never holds subscription_counters or callback_secrets rows, and a Subscription
        # it holds is already remembered by the repository (which keeps that newer row).
        remember_subscriptions(uow, org_id, await uow.fetch(SUBSCRIPTIONS_OF, {"o": org_id}, see_buffer=False))
    return list(uow.memo[key])


def remember_subscriptions(uow: UnitOfWork, org_id: str, rows: list[tuple[Any, ...]]) -> None:
    """The facility's subscriptions as ``SUBSCRIPTIONS_OF`` reads them (here or in ``store/lookups``), for the
    rest of the transaction."""
    for sub_id, version, deleted, last_updated, content, headers in rows:
        if version is not None:
            uow.resources.remember("Subscription", sub_id, version, deleted, last_updated, content)
        uow.callbacks.remember("Subscription", sub_id, headers)
    uow.memo[("subscriptions_of", org_id)] = [r[0] for r in rows]


async def facility_endpoint(uow: UnitOfWork, org: dict[str, Any]) -> dict[str, Any] | None:
    for ref in org.get("endpoint") or []:
        ref_s = (ref or {}).get("reference", "")
        if ref_s.startswith("Endpoint/"):
            ep = await uow.resources.get("Endpoint", ref_s.split("/", 1)[1])
            if ep and ep.resource.get("address") and ep.resource.get("status", "active") == "active" \
                    and is_callback(ep.resource):
                return ep.resource
    return None


async def ensure_facility_subscription(uow: UnitOfWork, org: dict[str, Any]) -> Stored | None:
    """Create (or follow a changed Endpoint of) the facility's Subscription; None without an Endpoint."""
    endpoint = await facility_endpoint(uow, org)
    if endpoint is None:
        return None
    systems = Systems(uow.settings.base_url)
    sub_ids = await subscriptions_of(uow, org["id"])
    await uow.callbacks.prime([("Endpoint", endpoint["id"]), *(("Subscription", s) for s in sub_ids)])
    headers = await uow.callbacks.headers("Endpoint", endpoint["id"])
    for sub_id in sub_ids:
        current = await uow.resources.get("Subscription", sub_id)
        if current is None or current.resource.get("status") == "off":
            continue
        channel = current.resource.get("channel", {})
        if channel.get("endpoint") == endpoint["address"] and await uow.callbacks.headers(
                "Subscription", sub_id) == headers:
            return current
        wanted = _subscription_for(systems, org["id"], endpoint, headers)
        body = {**current.resource, "channel": wanted["channel"], "status": "requested"}
        result = await ops.update(uow, "Subscription", sub_id, body)
        return result.stored
    result = await ops.create(uow, _subscription_for(systems, org["id"], endpoint, headers), res_type="Subscription")
    return result.stored


async def emit_task_event(uow: UnitOfWork, task: Stored, context: list[dict[str, Any]] | None = None,
                          case_id: str | None = None) -> None:
    """Queue a notification of this Task version for every live subscription of its requester (numbered
    at commit: ``OutboxRepository.enqueue_event``)."""
    org_ref = (task.resource.get("requester") or {}).get("reference", "")
    if not org_ref.startswith("Organization/"):
        return
    org_id = org_ref.split("/", 1)[1]
    for sub_id in await subscriptions_of(uow, org_id):
        sub = await uow.resources.get("Subscription", sub_id)
        if sub is None or sub.resource.get("status") not in LIVE:
            continue
        payload = {"subscription": sub_id, "timestamp": now_instant(),
                   "focus": f"Task/{task.resource['id']}/_history/{task.version_id}",
                   "resources": [task.resource, *(context or [])]}
        uow.outbox.enqueue_event(sub_id, payload, case_id=case_id, organization_id=org_id)


def heartbeat_period(sub: dict[str, Any]) -> int | None:
    """Seconds of the backport ``heartbeat-period`` the subscriber asked for, if any."""
    for ext in (sub.get("channel") or {}).get("extension") or []:
        if ext.get("url") == BACKPORT + "backport-heartbeat-period" and isinstance(ext.get("valueUnsignedInt"), int):
            return ext["valueUnsignedInt"] or None
    return None


async def queue_heartbeats(uow: UnitOfWork) -> int:
    """A heartbeat for each active subscription that asked for one and has heard nothing for its period."""
    rows = await uow.conn.execute(select(subscription_counters.c.subscription_id))
    queued = 0
    for sub_id in rows.scalars().all():
        sub = await uow.resources.get("Subscription", sub_id)
        period = heartbeat_period(sub.resource) if sub else None
        if sub is None or period is None or sub.resource.get("status") != "active":
            continue
        latest = await uow.outbox.last_enqueued_at([f"sub:{sub_id}", f"handshake:{sub_id}"])
        if latest is None or latest < instant_in(-period):
            await uow.outbox.enqueue("notify", "heartbeat", f"sub:{sub_id}", {"subscription": sub_id},
                                     subscription_id=sub_id, organization_id=subscription_org(sub.resource))
            queued += 1
    return queued


async def events(uow: UnitOfWork, sub_id: str, since: int | None, until: int | None) -> list[dict[str, Any]]:
    """Stored event payloads of a subscription in [since, until] (for ``$events``)."""
    se = subscription_events
    q = (select(se.c.event_number, outbox.c.payload).join(outbox, outbox.c.id == se.c.outbox_id)
         .where(se.c.subscription_id == sub_id).order_by(se.c.event_number))
    if since is not None:
        q = q.where(se.c.event_number >= since)
    if until is not None:
        q = q.where(se.c.event_number <= until)
    return [orjson.loads(p) for _, p in (await uow.conn.execute(q.limit(1000))).all()]


async def events_count(uow: UnitOfWork, sub_id: str) -> int:
    row = await uow.conn.execute(
        select(subscription_counters.c.events_since_start).where(subscription_counters.c.subscription_id == sub_id))
    return int(row.scalar_one_or_none() or 0)


async def set_status(uow: UnitOfWork, sub_id: str, status: str, error: str | None = None) -> None:
    """Move a Subscription to ``active``/``error``/``off`` (no-op when already there)."""
    sub = await uow.resources.get("Subscription", sub_id)
    if sub is None or sub.resource.get("status") == status:
        return
    body = {**sub.resource, "status": status}
    if error:
        body["error"] = error[:500]
    elif "error" in body and status == "active":
        del body["error"]
    await uow.resources.update(body, sub_id)


async def handshake(uow: UnitOfWork, sub: Stored) -> None:
    """Queue a handshake to the subscription's address. It has its own order key: the events queued
    before it wait (``verified_address``) until it succeeds, so it must not wait behind them."""
    sub_id = sub.resource["id"]
    address = (sub.resource.get("channel") or {}).get("endpoint")
    await uow.outbox.enqueue("notify", "handshake", f"handshake:{sub_id}", {"subscription": sub_id, "address": address},
                             subscription_id=sub_id,
                             organization_id=subscription_org(sub.resource))


async def verified_address(uow: UnitOfWork, sub_id: str) -> str | None:
    """The callback address that last answered a handshake (events go only there)."""
    row = await uow.conn.execute(
        select(subscription_counters.c.verified_address).where(subscription_counters.c.subscription_id == sub_id))
    return row.scalar_one_or_none()


def verified_effect(sub_id: str, address: str) -> Callable[[UnitOfWork], Awaitable[None]]:
    """A handshake to ``address`` succeeded: the subscription is active there and its waiting
    deliveries are due now."""
    async def apply(uow: UnitOfWork) -> None:
        await uow.conn.execute(update(subscription_counters).where(subscription_counters.c.subscription_id == sub_id)
                               .values(verified_address=address))
        mine = (outbox.c.subscription_id == sub_id) & (outbox.c.kind != "handshake")
        await uow.conn.execute(update(outbox).where(mine & (outbox.c.status == "pending"))
                               .values(next_attempt_at=now_instant()))
        # events that gave up waiting for this handshake go again, with a fresh budget
        await uow.conn.execute(update(outbox).where(mine & (outbox.c.status == "dead")
                                                    & (outbox.c.last_error == WAITING_FOR_HANDSHAKE))
                               .values(status="pending", attempts=0, next_attempt_at=now_instant()))
        await set_status(uow, sub_id, "active")
    return apply


async def signing_secrets(uow: UnitOfWork, sub_id: str) -> list[str]:
    """The live keys a call to this subscription is signed with, newest first. Never none: a subscription
    without a key (made before keys existed) gets one now, unshown, that the first hand-over reveals — a
    notification is never sent unsigned to a facility that will hold a secret."""
    keys = await uow.callbacks.signing_keys(sub_id)
    if not keys:
        await uow.lock([f"signing-key:{sub_id}"])  # two deliveries at once make one key
        keys = await uow.callbacks.signing_keys(sub_id)
        if not keys:
            return [await uow.callbacks.add_signing_key(sub_id, shown=False)]
    return [k.secret for k in keys]


async def issue_signing_secret(uow: UnitOfWork, org_id: str, *, retire_previous: bool = False) -> dict[str, str]:
    """The signing secret of each live subscription of the facility (shown once, to the caller).

    The first issue hands over the key the subscription was made with, which signed every call so far (the
    handshake went before anybody held a secret): no call signed before the hand-over carries a key the
    facility never gets. Later issues rotate: a new key, the previous one stays live so a facility can switch
    without losing a notification; with ``retire_previous`` only the previous key is dropped (the end of a
    rotation) and nothing new is made."""
    out: dict[str, str] = {}
    for sub_id in await subscriptions_of(uow, org_id):
        sub = await uow.resources.get("Subscription", sub_id)
        if sub is None or sub.resource.get("status") not in LIVE:
            continue
        if retire_previous:
            await uow.callbacks.retire_previous_keys(sub_id)
            out[sub_id] = ""
        else:
            out[sub_id] = await uow.callbacks.reveal_unshown_key(sub_id) or await uow.callbacks.add_signing_key(sub_id)
    if not out:
        raise FhirError.of("not-found", f"Organization/{org_id} has no live notification subscription", status=404)
    return out


async def endpoint_change_allowed(uow: UnitOfWork, org_id: str, endpoint_id: str, body: Any) -> str | None:
    """Why a facility may not write ``body`` to ``Endpoint/endpoint_id`` (None: it may).

    A facility changes only the address of an Endpoint its Organization owns; header lines must
    come back unchanged (``Name: ***`` or the stored value)."""
    current = await uow.resources.get("Endpoint", endpoint_id)
    if current is None:
        return None  # a new Endpoint: its owner is the Organization that first references it
    if await uow.callbacks.owner(endpoint_id) != org_id:
        return f"Endpoint/{endpoint_id} does not belong to Organization/{org_id}"
    if not isinstance(body, dict):
        return None  # validation answers
    ignore = ("meta", "id", "address", "header", "text")
    if {k: v for k, v in body.items() if k not in ignore} != {
            k: v for k, v in current.resource.items() if k not in ignore}:
        return "A facility may change its Endpoint's address only"
    try:
        if merge_headers(body.get("header") or [], await uow.callbacks.headers("Endpoint", endpoint_id)) != \
                await uow.callbacks.headers("Endpoint", endpoint_id):
            return "A facility may change its Endpoint's address only (header lines are set by an admin)"
    except CallbackRefused:
        return "A facility may change its Endpoint's address only (header lines are set by an admin)"
    return None


# --------------------------------------------------------------------------- hooks

def _is_ours(sub: dict[str, Any], systems: Systems) -> bool:
    """A facility notification subscription (ours to deliver), rather than another system's."""
    return subscription_org(sub) is not None or sub.get("criteria") == systems.topic


def masked_line(line: str) -> str:
    name, sep, _ = line.partition(":")
    return f"{name.strip()}: {MASK}" if sep else MASK


def masked(lines: list[str]) -> list[str]:
    return [masked_line(line) for line in lines]


def merge_headers(lines: Any, stored: list[str], *, strict: bool = True) -> list[str]:
    """Checked header lines; a masked line (``Name: ***``) keeps the stored line it masks.

    ``strict`` (callback Endpoints, Subscriptions): every line is an HTTP header ltfu may send
    (``domain.callbacks.split_header``). Otherwise lines are kept as given, without control characters."""
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise CallbackRefused("header must be a list of 'Name: value' strings")
    previous = {masked_line(line).lower(): line for line in stored}
    out = []
    for line in lines:
        kept = previous.get(line.strip().lower())
        if kept is not None:
            out.append(kept)
        elif strict:
            name, value = split_header(line)
            if value == MASK:
                raise CallbackRefused(f"header {name} is masked but no value is stored for it")
            out.append(f"{name}: {value}")
        elif any(ord(c) < 32 or ord(c) == 127 for c in line):
            raise CallbackRefused("a header line contains control characters")
        else:
            out.append(line)
    return out


async def _keep_secret_headers(uow: UnitOfWork, res_type: str, res_id: str, lines: Any, where: str,
                               *, strict: bool = True) -> list[str]:
    """Store the real header lines apart; the resource keeps ``Name: ***``."""
    try:
        real = merge_headers(lines or [], await uow.callbacks.headers(res_type, res_id), strict=strict)
    except CallbackRefused as exc:
        raise FhirError.of("value", str(exc), where, status=422) from None
    await uow.callbacks.set_headers(res_type, res_id, real)
    return masked(real)


def is_callback(ep: dict[str, Any]) -> bool:
    """An Endpoint ltfu may call (FHIR REST): the others (DICOM, Direct...) are plain records."""
    return (ep.get("connectionType") or {}).get("code") == "hl7-fhir-rest"


def _check_address(uow: UnitOfWork, address: Any, where: str) -> None:
    if not isinstance(address, str):
        return  # validation answers for a missing or malformed address
    try:
        check_address(address, uow.settings.allowed_networks)
    except CallbackRefused as exc:
        raise FhirError.of("value", str(exc), where, status=422) from None


async def _endpoint_before(uow: UnitOfWork, ep: dict[str, Any], previous: Stored | None) -> dict[str, Any]:
    """Header lines are secrets, stored apart. A FHIR REST Endpoint is a callback: its address and
    header lines must pass the callback policy."""
    strict = is_callback(ep)
    if strict:
        _check_address(uow, ep.get("address"), "Endpoint.address")
    header = await _keep_secret_headers(uow, "Endpoint", ep["id"], ep.get("header"), "Endpoint.header",
                                        strict=strict)
    out = {k: v for k, v in ep.items() if k != "header"}
    if header:
        out["header"] = header
    return out


async def _subscription_before(uow: UnitOfWork, sub: dict[str, Any], previous: Stored | None) -> dict[str, Any]:
    """Ours must be well-formed; other Subscriptions are stored as plain FHIR and not served.
    Channel header lines of every Subscription are secrets, stored apart."""
    channel = dict(sub.get("channel") or {})
    header = await _keep_secret_headers(uow, "Subscription", sub["id"], channel.pop("header", None),
                                        "Subscription.channel.header")
    if header:
        channel["header"] = header
    sub = {**sub, "channel": channel}
    if not _is_ours(sub, Systems(uow.settings.base_url)):
        return sub
    if sub.get("channel", {}).get("type") != "rest-hook":
        raise FhirError.of("not-supported", "Only rest-hook subscriptions are supported", "Subscription.channel.type",
                           status=422)
    if subscription_org(sub) is None:
        raise FhirError.of(
            "business-rule",
            "An LTFU subscription needs the backport filter criteria Task?requester=Organization/<id>",
            "Subscription.criteria", status=422)
    if not sub.get("channel", {}).get("endpoint"):
        raise FhirError.of("required", "Subscription.channel.endpoint is required", "Subscription.channel.endpoint",
                           status=422)
    _check_address(uow, sub["channel"]["endpoint"], "Subscription.channel.endpoint")
    return sub


async def _subscription_after(uow: UnitOfWork, stored: Stored, previous: Stored | None) -> None:
    org_id = subscription_org(stored.resource)
    if org_id is None:
        return
    sub_id = stored.resource["id"]
    if previous is None:
        exists = await uow.conn.execute(select(func.count()).select_from(subscription_counters)
                                        .where(subscription_counters.c.subscription_id == sub_id))
        if not exists.scalar_one():
            await uow.conn.execute(insert(subscription_counters).values(
                subscription_id=sub_id, organization_id=org_id, events_since_start=0))
            await uow.callbacks.add_signing_key(sub_id, shown=False)  # signs from the first call; the first
            # issue_signing_secret hands this key over
            uow.memo.pop(("subscriptions_of", org_id), None)
    if stored.resource.get("status") == "requested" and (
            previous is None or previous.resource.get("status") != "requested"
            or previous.resource.get("channel") != stored.resource.get("channel")):
        await handshake(uow, stored)


def _endpoint_ids(org: dict[str, Any]) -> list[str]:
    refs = [str((ref or {}).get("reference", "")) for ref in org.get("endpoint") or [] if isinstance(ref, dict)]
    return [r.split("/", 1)[1] for r in refs if r.startswith("Endpoint/")]


async def _organization_before(uow: UnitOfWork, org: dict[str, Any], previous: Stored | None) -> dict[str, Any]:
    """One owner per Endpoint: an Organization may not reference another Organization's Endpoint."""
    for ep_id in _endpoint_ids(org):
        owner = await uow.callbacks.owner(ep_id)
        if owner is not None and owner != org["id"]:
            raise FhirError.of("business-rule", f"Endpoint/{ep_id} belongs to another Organization",
                               "Organization.endpoint", status=422)
    return org


async def _organization_after(uow: UnitOfWork, stored: Stored, previous: Stored | None) -> None:
    for ep_id in _endpoint_ids(stored.resource):
        if await uow.resources.get("Endpoint", ep_id) is not None:
            await uow.callbacks.set_owner(ep_id, stored.resource["id"])
    await ensure_facility_subscription(uow, stored.resource)


async def _endpoint_after(uow: UnitOfWork, stored: Stored, previous: Stored | None) -> None:
    """An Endpoint's address or header changed: its owner's Subscription follows (and shakes hands again)."""
    if previous is None:
        return
    owner = await uow.callbacks.owner(stored.resource["id"])
    org = await uow.resources.get("Organization", owner) if owner else None
    if org is not None:
        await ensure_facility_subscription(uow, org.resource)


SUBSCRIPTION_HOOK = WriteHook(before=_subscription_before, after=_subscription_after)
ORGANIZATION_HOOK = WriteHook(before=_organization_before, after=_organization_after)
ENDPOINT_HOOK = WriteHook(before=_endpoint_before, after=_endpoint_after)
