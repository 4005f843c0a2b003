"""Delivers facility notifications: Backport IG history Bundles (or HAPI-style PUTs) to the callback.

The Bundle is assembled at delivery time from the snapshot stored with the event, with the
Subscription's status as it is now; the Endpoint's ``header`` values are sent as HTTP headers and,
with a secret configured, ``X-LTFU-Signature: sha256=<hex HMAC of the body>``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from typing import Any

import aiohttp
import orjson

from ltfu.delivery.attempt import Attempt, Effect, Handler
from ltfu.delivery.retry import Verdict, classify
from ltfu.fhir.systems import BACKPORT, Systems
from ltfu.services import notifications
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.outbox import OutboxRow
from ltfu.store.uow import UnitOfWork, unit_of_work


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
    seen: set[str] = set()
    for e in events:
        for r in e["resources"]:
            ref = f"{r['resourceType']}/{r['id']}"
            if ref in seen:
                continue
            seen.add(ref)
            entries.append({"fullUrl": f"{base}/{ref}", "resource": r,
                            "request": {"method": "PUT", "url": ref}, "response": {"status": "200"}})
    return {"resourceType": "Bundle", "id": bundle_id, "type": "history",
            "timestamp": events[-1]["timestamp"] if events else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "meta": {"profile": [BACKPORT + "backport-subscription-notification-r4"]}, "entry": entries}


def _headers(channel: dict[str, Any]) -> dict[str, str]:
    out = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    for line in channel.get("header") or []:
        name, sep, value = str(line).partition(":")
        if sep and name.strip():
            out[name.strip()] = value.strip()
    return out


class Notifier(Handler):
    destination = "notify"

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.systems = Systems(settings.base_url)
        self.base = (settings.public_url or f"http://{settings.host}:{settings.port}") + "/fhir"
        self._session: aiohttp.ClientSession | None = None
        secret = settings.notify_hmac_secret
        self._secret = secret.get_secret_value().encode() if secret else None

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.delivery_timeout_s),
                connector=aiohttp.TCPConnector(ssl=None if self.settings.notify_verify_tls else False, limit=64))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, row: OutboxRow) -> Attempt:
        sub_id = row.payload["subscription"]
        async with unit_of_work(self.db) as uow:
            sub = await uow.resources.get("Subscription", sub_id)
            total = await notifications.events_count(uow, sub_id)
        if sub is None or sub.resource.get("status") == "off":
            return Attempt(Verdict.OK, error="subscription off or gone; event kept for $events")
        channel = sub.resource.get("channel", {})
        status = sub.resource.get("status", "requested")
        if row.kind == "handshake":
            bundle = notification_bundle(self.base, self.systems, sub_id, status, "handshake", total, [],
                                         f"handshake-{row.id}")
            attempt = await self._post("POST", channel["endpoint"], bundle, channel)
            attempt.on_done = _set_status(sub_id, "active")
            return attempt
        if row.kind == "heartbeat":
            if self.settings.notify_mode == "hapi":
                return Attempt(Verdict.OK, error="no heartbeats in HAPI mode")
            bundle = notification_bundle(self.base, self.systems, sub_id, status, "heartbeat", total, [],
                                         f"heartbeat-{row.id}")
            return await self._post("POST", channel["endpoint"], bundle, channel)
        if self.settings.notify_mode == "hapi":
            task = row.payload["resources"][0]
            url = f"{channel['endpoint'].rstrip('/')}/Task/{task['id']}"
            attempt = await self._post("PUT", url, task, channel)
        else:
            bundle = notification_bundle(self.base, self.systems, sub_id, "active", "event-notification", total,
                                         [row.payload], f"{sub_id}-{row.payload['event']}")
            attempt = await self._post("POST", channel["endpoint"], bundle, channel)
        if status == "error":
            attempt.on_done = _set_status(sub_id, "active")
        return attempt

    async def _post(self, method: str, url: str, body: dict[str, Any], channel: dict[str, Any]) -> Attempt:
        data = orjson.dumps(body)
        headers = _headers(channel)
        if self._secret:
            headers["X-LTFU-Signature"] = "sha256=" + hmac.new(self._secret, data, hashlib.sha256).hexdigest()
        session = await self._client()
        start = time.perf_counter()
        try:
            async with session.request(method, url, data=data, headers=headers, allow_redirects=False) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Attempt(Verdict.RETRY, None, int((time.perf_counter() - start) * 1000),
                           f"callback unreachable: {type(exc).__name__}")
        latency = int((time.perf_counter() - start) * 1000)
        verdict = classify(status)
        return Attempt(verdict, status, latency, None if verdict is Verdict.OK else f"callback answered {status}")

    def dead_effect(self, row: OutboxRow, error: str) -> Effect | None:
        """410 Gone → the subscription is ``off``; anything else → ``error`` (events stay for replay)."""
        gone = error.endswith("answered 410")
        return _set_status(row.payload["subscription"], "off" if gone else "error", None if gone else error)


def _set_status(sub_id: str, status: str, error: str | None = None) -> Effect:
    async def apply(uow: UnitOfWork) -> None:
        await notifications.set_status(uow, sub_id, status, error)
    return apply
