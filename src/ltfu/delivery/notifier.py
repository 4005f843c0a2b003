"""Delivers facility notifications: Backport IG history Bundles (or HAPI-style PUTs) to the callback.

The Bundle is assembled at delivery time from the snapshot stored with the event, with the
Subscription's status as it is now. Every call carries the Endpoint's ``header`` lines (kept in
``callback_secrets``) and a Standard Webhooks signature with the subscription's live keys
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64>``). Events go only to an
address that answered a handshake; every connection obeys ``delivery.callback_policy``.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver
from standardwebhooks import Webhook

from ltfu.delivery import callback_policy
from ltfu.delivery.attempt import Attempt, Effect, Handler
from ltfu.delivery.retry import Verdict, classify
from ltfu.domain.callbacks import CallbackRefused, check_address, split_header
from ltfu.fhir.systems import BACKPORT, Systems
from ltfu.services import notifications
from ltfu.settings import Settings
from ltfu.store.callbacks import SecretUnreadable
from ltfu.store.db import Database
from ltfu.store.outbox import OutboxRow
from ltfu.store.uow import UnitOfWork, unit_of_work

log = logging.getLogger("ltfu.delivery.notify")


def status_parameters(base: str, systems: Systems, sub_id: str, status: str, kind: str, total: int,
                      events: list[dict[str, Any]]) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/{sub_id}"}},
        {"name": "topic", "valueCanonical": systems.topic},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(total)},
    ]
    for e in events:
        part = [
            {"name": "event-number", "valueString": str(e["event"])},
            {"name": "timestamp", "valueInstant": e["timestamp"]},
            {"name": "focus", "valueReference": {"reference": f"{base}/{e['focus']}"}},
        ]
        part += [{"name": "additional-context",
                  "valueReference": {"reference": f"{base}/{r['resourceType']}/{r['id']}"}}
                 for r in e["resources"][1:]]
        params.append({"name": "notification-event", "part": part})
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()),
            "meta": {"profile": [BACKPORT + "backport-subscription-status-r4"]}, "parameter": params}


def notification_bundle(base: str, systems: Systems, sub_id: str, status: str, kind: str, total: int,
                        events: list[dict[str, Any]], bundle_id: str) -> dict[str, Any]:
    params = status_parameters(base, systems, sub_id, status, kind, total, events)
    entries: list[dict[str, Any]] = [{
        "fullUrl": f"urn:uuid:{params['id']}", "resource": params,
        "request": {"method": "GET", "url": f"{base}/Subscription/{sub_id}/$status"},
        "response": {"status": "200"},
    }]
    seen: set[tuple[str, str | None]] = set()
    for e in events:
        for r in e["resources"]:
            ref = f"{r['resourceType']}/{r['id']}"
            version = (ref, (r.get("meta") or {}).get("versionId"))  # a history Bundle: each version once
            if version in seen:
                continue
            seen.add(version)
            entries.append({"fullUrl": f"{base}/{ref}", "resource": r,
                            "request": {"method": "PUT", "url": ref}, "response": {"status": "200"}})
    return {"resourceType": "Bundle", "id": bundle_id, "type": "history",
            "timestamp": events[-1]["timestamp"] if events else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "meta": {"profile": [BACKPORT + "backport-subscription-notification-r4"]}, "entry": entries}


def max_count(sub: dict[str, Any]) -> int | None:
    """The backport ``max-count`` the subscriber asked for (events per notification), if any."""
    for ext in (sub.get("channel") or {}).get("extension") or []:
        if ext.get("url") == BACKPORT + "backport-max-count" and isinstance(ext.get("valuePositiveInt"), int):
            return ext["valuePositiveInt"] if ext["valuePositiveInt"] > 0 else None
    return None


def _message_id(sub_id: str, events: list[dict[str, Any]]) -> str:
    """``<subscription>-<event>`` (a range ``-<first>-<last>`` for several): the Bundle id and webhook-id."""
    first, last = events[0]["event"], events[-1]["event"]
    return f"{sub_id}-{first}" if first == last else f"{sub_id}-{first}-{last}"


def _headers(lines: list[str]) -> dict[str, str]:
    out = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    for line in lines:
        name, value = split_header(line)
        out[name] = value
    return out


def signature_headers(msg_id: str, body: bytes, secrets: list[str], when: datetime | None = None) -> dict[str, str]:
    """Standard Webhooks headers: ``v1,<base64 HMAC-SHA256 of id.timestamp.body>`` for every live key."""
    when = when or datetime.now(UTC)
    text = body.decode()
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": " ".join(Webhook(s).sign(msg_id, when, text) for s in secrets)}


FAILED = "notification not delivered"  # what a facility sees, whatever went wrong (no network oracle)


class Notifier(Handler):
    destination = "notify"

    def __init__(self, db: Database, settings: Settings, *, resolver: AbstractResolver | None = None) -> None:
        self.db = db
        self.settings = settings
        self.systems = Systems(settings.base_url)
        self.base = (settings.public_url or f"http://{settings.host}:{settings.port}") + "/fhir"
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._resolver = resolver  # tests: a resolver standing in for DNS

    async def _client(self, scheme: str) -> aiohttp.ClientSession:
        current = self._sessions.get(scheme)
        if current is None or current.closed:
            current = self._sessions[scheme] = callback_policy.session(
                scheme, self.settings.allowed_networks, timeout_s=self.settings.delivery_timeout_s,
                verify_tls=self.settings.notify_verify_tls, inner=self._resolver)
        return current

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()

    def group_limit(self, row: OutboxRow) -> int:
        """Backport mode: events of one subscription that are due together go in one Bundle (the IG's
        notification carries any number of events, each with its number), up to ``LTFU_NOTIFY_MAX_EVENTS``."""
        if row.kind != "event" or self.settings.notify_mode != "backport":
            return 1
        return self.settings.notify_max_events

    async def send(self, row: OutboxRow) -> Attempt:
        return await self.send_group([row])

    async def prepare(self, uow: UnitOfWork, rows: list[OutboxRow]) -> list[OutboxRow]:
        """The subscription's state, read in the claim's transaction."""
        return [replace(rows[0], prepared=await _read_subscription(uow, rows[0].payload["subscription"])), *rows[1:]]

    async def send_group(self, rows: list[OutboxRow]) -> Attempt:
        """One message, or consecutive events of one subscription (:meth:`group_limit`)."""
        row = rows[0]
        sub_id = row.payload["subscription"]
        state = row.prepared
        if state is None:
            async with unit_of_work(self.db) as uow:
                state = await _read_subscription(uow, sub_id)
        sub, total, verified, lines, keys = state
        if isinstance(lines, SecretUnreadable):
            log.error("notification %s to subscription %s: %s", row.id, sub_id, lines)
            return Attempt(Verdict.RETRY, error=FAILED)
        if sub is None or sub.resource.get("status") == "off":
            return Attempt(Verdict.OK, error="subscription off or gone; event kept for $events")
        channel = sub.resource.get("channel", {})
        address = channel.get("endpoint", "")
        status = sub.resource.get("status", "requested")
        if row.kind == "handshake":
            if row.payload.get("address", address) != address:
                return Attempt(Verdict.OK, error="superseded: the address changed again")
            bundle = notification_bundle(self.base, self.systems, sub_id, status, "handshake", total, [],
                                         f"handshake-{row.id}")
            attempt = await self._post(row, "POST", address, bundle, lines, keys, bundle["id"])
            attempt.on_done = notifications.verified_effect(sub_id, address)
            return attempt
        if address != verified:  # no PHI before the address answered a handshake (a few tries, then
            return Attempt(Verdict.PERMANENT, error=WAITING)  # dead until the handshake revives it)
        if row.kind == "heartbeat":
            if self.settings.notify_mode == "hapi":
                return Attempt(Verdict.OK, error="no heartbeats in HAPI mode")
            bundle = notification_bundle(self.base, self.systems, sub_id, status, "heartbeat", total, [],
                                         f"heartbeat-{row.id}")
            return await self._post(row, "POST", address, bundle, lines, keys, bundle["id"])
        if self.settings.notify_mode == "hapi":
            task = row.payload["resources"][0]
            url = f"{address.rstrip('/')}/Task/{quote(str(task['id']), safe='')}"
            attempt = await self._post(row, "PUT", url, task, lines, keys, f"{sub_id}-{row.payload['event']}")
        else:
            size = max_count(sub.resource) or len(rows)
            for i in range(0, len(rows), size):  # the subscriber's backport-max-count, if it set one
                events = [r.payload for r in rows[i:i + size]]
                msg_id = _message_id(sub_id, events)
                bundle = notification_bundle(self.base, self.systems, sub_id, "active", "event-notification",
                                             total, events, msg_id)
                attempt = await self._post(row, "POST", address, bundle, lines, keys, msg_id)
                if attempt.verdict is not Verdict.OK:
                    break  # the whole group is tried again: a receiver dedupes by event number
        if status == "error":
            attempt.on_done = _set_status(sub_id, "active")
        return attempt

    async def _post(self, row: OutboxRow, method: str, url: str, body: dict[str, Any], lines: list[str],
                    keys: list[str], msg_id: str) -> Attempt:
        """One call under the address policy. The error recorded is generic; the reason goes to the log."""
        data = orjson.dumps(body)
        start = time.perf_counter()
        try:
            check_address(url, self.settings.allowed_networks)
            headers = _headers(lines)
        except CallbackRefused as exc:
            log.warning("notification %s not sent: %s", row.id, exc)
            return Attempt(Verdict.DEAD, error=FAILED + " (refused by the callback policy)")
        if keys:
            headers.update(signature_headers(msg_id, data, keys))
        session = await self._client(callback_policy.scheme_of(url))
        try:
            async with session.request(method, url, data=data, headers=headers, allow_redirects=False) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            latency = int((time.perf_counter() - start) * 1000)
            if callback_policy.refused_by_policy(exc):
                log.warning("notification %s not sent: the callback address is refused by the policy", row.id)
                return Attempt(Verdict.DEAD, None, latency, FAILED + " (refused by the callback policy)")
            log.info("notification %s: callback unreachable (%s)", row.id, type(exc).__name__)
            return Attempt(Verdict.RETRY, None, latency, FAILED)
        latency = int((time.perf_counter() - start) * 1000)
        verdict = classify(status)
        if verdict is Verdict.OK:
            return Attempt(verdict, status, latency)
        log.info("notification %s: callback answered %s", row.id, status)
        return Attempt(verdict, None, latency, GONE if status == 410 else FAILED)

    def dead_effect(self, row: OutboxRow, error: str) -> Effect | None:
        """410 Gone → the subscription is ``off``; anything else → ``error`` (events stay for replay).
        An event that gave up waiting for a handshake leaves the status to the handshake."""
        if error == WAITING:
            return None
        gone = error == GONE
        return _set_status(row.payload["subscription"], "off" if gone else "error", None if gone else error)


async def _read_subscription(uow: UnitOfWork, sub_id: str) -> tuple[Any, int, str | None, Any, list[str]]:
    """The Subscription, its event count, verified address, header lines and live signing keys (the lines are
    the ``SecretUnreadable`` when a stored secret cannot be decrypted)."""
    sub = await uow.resources.get("Subscription", sub_id)
    total = await notifications.events_count(uow, sub_id)
    verified = await notifications.verified_address(uow, sub_id)
    try:
        lines: Any = await uow.callbacks.headers("Subscription", sub_id)
        keys = await notifications.signing_secrets(uow, sub_id)
    except SecretUnreadable as exc:
        return sub, total, verified, exc, []
    return sub, total, verified, lines, keys


GONE = FAILED + ": the facility ended the subscription (410 Gone)"
WAITING = notifications.WAITING_FOR_HANDSHAKE


def _set_status(sub_id: str, status: str, error: str | None = None) -> Effect:
    async def apply(uow: UnitOfWork) -> None:
        await notifications.set_status(uow, sub_id, status, error)
    return apply
