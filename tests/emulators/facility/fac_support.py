"""Facility emulator tests: the emulator under real uvicorn on loopback, notification Bundles built by
hand as the Backport IG (R4) and reference/fhir.md §2.4 describe them."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from standardwebhooks import Webhook

from ltfu.emulators.facility import FacilityClient, FacilityEmulatorConfig, create_app
from tests.support.server import ServerThread, free_port

BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "https://ltfu.example.org/fhir/SubscriptionTopic/ltfu-task-updated"
TOKEN = "tok-facility-1"


@contextlib.contextmanager
def facility(**overrides: Any) -> Iterator[tuple[FacilityClient, str, FacilityEmulatorConfig]]:
    """A running facility emulator: (client driver, callback URL, config)."""
    port = free_port()
    kwargs: dict[str, Any] = {"public_url": f"http://127.0.0.1:{port}", "callback_token": TOKEN}
    kwargs.update(overrides)
    config = FacilityEmulatorConfig(**kwargs)
    with ServerThread(create_app(config), port=port) as srv:
        yield FacilityClient(srv.url, timeout_s=60), srv.url + config.notify_path, config


def task(task_id: str, version: int, status: str, business: str, outcome: str | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {
        "resourceType": "Task",
        "id": task_id,
        "meta": {"versionId": str(version), "lastUpdated": "2026-11-26T10:00:00Z"},
        "status": status,
        "intent": "order",
        "businessStatus": {"coding": [{"system": "https://ltfu.example.org/fhir/CodeSystem/ltfu-task-business-status",
                                       "code": business}]},
        "focus": {"reference": f"ServiceRequest/sr-{task_id}"},
        "basedOn": [{"reference": f"ServiceRequest/sr-{task_id}"}],
        "for": {"reference": "Patient/p-1"},
        "requester": {"reference": "Organization/org-1"},
    }
    if outcome:
        t["output"] = [
            {"type": {"text": "outcome"},
             "valueCodeableConcept": {"coding": [
                 {"system": "https://ltfu.example.org/fhir/CodeSystem/ltfu-outcome", "code": outcome},
                 {"system": "http://smart.who.int/hiv/CodeSystem/HIVConcepts", "code": "HIV.H.DE24"}]}},
        ]
    return t


def notification(
    kind: str,
    sub: str,
    total: int,
    events: list[tuple[int, dict[str, Any] | None]] = (),  # type: ignore[assignment]
    base: str = "https://mediator.example.org/fhir",
    bundle_id: str | None = None,
) -> dict[str, Any]:
    """A Backport IG R4 notification: Parameters (subscription status) first, then the focus resources."""
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/{sub}"}},
        {"name": "topic", "valueCanonical": TOPIC},
        {"name": "status", "valueCode": "active" if kind != "handshake" else "requested"},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(total)},
    ]
    entries: list[dict[str, Any]] = []
    for number, res in events:
        part = [
            {"name": "event-number", "valueString": str(number)},
            {"name": "timestamp", "valueInstant": "2026-11-26T10:00:00+03:00"},
        ]
        if res is not None:
            part.append({"name": "focus", "valueReference": {
                "reference": f"{base}/Task/{res['id']}/_history/{res['meta']['versionId']}"}})
            entries.append({"fullUrl": f"{base}/Task/{res['id']}", "resource": res,
                            "request": {"method": "PUT", "url": f"Task/{res['id']}"}, "response": {"status": "200"}})
        params.append({"name": "notification-event", "part": part})
    pid = str(uuid.uuid4())
    status_entry = {
        "fullUrl": f"urn:uuid:{pid}",
        "resource": {
            "resourceType": "Parameters",
            "id": pid,
            "meta": {"profile": [BP + "backport-subscription-status-r4"]},
            "parameter": params,
        },
        "request": {"method": "GET", "url": f"{base}/Subscription/{sub}/$status"},
        "response": {"status": "200"},
    }
    return {
        "resourceType": "Bundle",
        "id": bundle_id or (f"{sub}-{events[-1][0]}" if events else f"{kind}-{pid}"),
        "type": "history",
        "timestamp": "2026-11-26T10:00:01+03:00",
        "meta": {"profile": [BP + "backport-subscription-notification-r4"]},
        "entry": [status_entry, *entries],
    }


def post(url: str, body: Any, *, token: str | None = TOKEN, secret: str | None = None,
         method: str = "POST", signature: str | None = None, msg_id: str | None = None,
         age_s: float = 0.0) -> requests.Response:
    """What the mediator's notifier sends: FHIR JSON, the Endpoint header and, with a ``whsec_`` secret,
    the Standard Webhooks headers (``age_s``: how old the timestamp claims to be)."""
    data = json.dumps(body)
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    when = datetime.now(UTC) - timedelta(seconds=age_s)
    if secret is not None or signature is not None:
        headers["webhook-id"] = msg_id or str(uuid.uuid4())
        headers["webhook-timestamp"] = str(int(when.timestamp()))
    if secret is not None:
        headers["webhook-signature"] = Webhook(secret).sign(headers["webhook-id"], when, data)
    if signature is not None:
        headers["webhook-signature"] = signature
    return requests.request(method, url, data=data.encode(), headers=headers, timeout=10)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
