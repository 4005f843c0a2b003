"""Notification delivery with the workers running: Backport bundles signed per subscription (Standard
Webhooks), HAPI mode, 410 → off, budget exhausted → error with the events kept and replayable."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ltfu.api.app import create_app
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.conftest import ADMIN_PASSWORD
from tests.support.server import ServerThread

CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}
LOOPBACK = "127.0.0.0/8"  # the callback servers of these tests listen on loopback


@dataclass
class Callback:
    status: int = 200
    seen: list[tuple[str, str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def any_call(request: Request) -> Response:
            body = await request.body()
            with self.lock:
                self.seen.append((request.method, request.url.path, json.loads(body),
                                  {**dict(request.headers), "_raw": body.decode()}))
            return JSONResponse({}, status_code=self.status)

        return Starlette(routes=[Route("/{path:path}", any_call, methods=["POST", "PUT"])])


@pytest.fixture
def callback() -> Iterator[tuple[Callback, str]]:
    cb = Callback()
    with ServerThread(cb.app()) as srv:
        yield cb, srv.url


def _settings(tmp: Path, db_url: str, **over: Any) -> Settings:
    return Settings(database_url=db_url, data_dir=tmp, admin_password=ADMIN_PASSWORD, poll_interval_s=0.1,
                    retry_initial_s=0.1, retry_max_s=0.2, retry_budget_s=1.0,
                    callback_allowed_networks=over.pop("callback_allowed_networks", LOOPBACK), **over)


def _mediator(tmp: Path, db_url: str, **over: Any) -> ServerThread:
    return ServerThread(create_app(_settings(tmp, db_url, **over)))


def signing_secrets(settings: Settings, sub_id: str) -> list[str]:
    """The live signing keys of a subscription, read from the database (the facility got them once)."""
    async def read() -> list[str]:
        db = Database(settings)
        try:
            async with unit_of_work(db) as uow:
                return [k.secret for k in await uow.callbacks.signing_keys(sub_id)]
        finally:
            await db.dispose()
    return asyncio.run(read())


def _setup_case(base: str, callback_url: str) -> tuple[str, str]:
    auth = ("admin", ADMIN_PASSWORD)
    ep = requests.post(base + "/fhir/Endpoint", auth=auth, json={
        "resourceType": "Endpoint", "status": "active", "connectionType": CONN, "payloadType": [{"text": "Task"}],
        "address": callback_url + "/cb", "header": ["Authorization: Bearer fac-token"]}).json()
    org = requests.post(base + "/fhir/Organization", auth=auth, json={
        "resourceType": "Organization", "name": "F", "endpoint": [{"reference": f"Endpoint/{ep['id']}"}]}).json()
    pat = requests.post(base + "/fhir/Patient", auth=auth, json={"resourceType": "Patient", "gender": "male"}).json()
    sr = requests.post(base + "/fhir/ServiceRequest", auth=auth, json={
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "identifier": [{"system": "urn:x", "value": "n1"}],
        "subject": {"reference": f"Patient/{pat['id']}"}, "requester": {"reference": f"Organization/{org['id']}"}})
    assert sr.status_code == 201
    sub = requests.get(base + "/fhir/Subscription", auth=auth).json()["entry"][0]["resource"]
    return sr.json()["id"], sub["id"]


def _wait(pred: Any, what: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if v := pred():
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_backport_bundles_signed_and_authorised(tmp_path: Path, callback: tuple[Callback, str]) -> None:
    cb, url = callback
    with _mediator(tmp_path, f"sqlite:///{tmp_path / 'n.db'}") as med:
        _setup_case(med.url, url)
        _wait(lambda: len(cb.seen) >= 2, "handshake and first event")
        auth = ("admin", ADMIN_PASSWORD)
        sub = requests.get(med.url + "/fhir/Subscription", auth=auth).json()["entry"][0]["resource"]
        _wait(lambda: requests.get(med.url + f"/fhir/Subscription/{sub['id']}", auth=auth).json()["status"]
              == "active", "the subscription active after the handshake")
    (m1, p1, handshake, h1), (m2, _, event, h2) = cb.seen[:2]
    assert (m1, p1, m2) == ("POST", "/cb", "POST")
    kinds = [next(p["valueCode"] for p in b["entry"][0]["resource"]["parameter"] if p["name"] == "type")
             for b in (handshake, event)]
    assert kinds == ["handshake", "event-notification"]
    assert event["type"] == "history" and event["entry"][1]["resource"]["resourceType"] == "Task"
    secrets = signing_secrets(_settings(tmp_path, f"sqlite:///{tmp_path / 'n.db'}"), sub["id"])
    assert len(secrets) == 1
    for headers in (h1, h2):
        assert headers["authorization"] == "Bearer fac-token"
        assert headers["webhook-signature"].startswith("v1,") and "x-ltfu-signature" not in headers
        Webhook(secrets[0]).verify(headers["_raw"], headers, json_parse=False)  # raises when wrong
    assert h1["webhook-id"] != h2["webhook-id"]
    assert h2["webhook-id"] == event["id"]


def test_hapi_mode_puts_the_task(tmp_path: Path, callback: tuple[Callback, str]) -> None:
    cb, url = callback
    with _mediator(tmp_path, f"sqlite:///{tmp_path / 'h.db'}", notify_mode="hapi") as med:
        case_id, _ = _setup_case(med.url, url)
        _wait(lambda: any(m == "PUT" for m, *_ in cb.seen), "a PUT of the Task")
    put = next(s for s in cb.seen if s[0] == "PUT")
    assert put[1].startswith("/cb/Task/") and put[2]["resourceType"] == "Task"
    assert put[2]["focus"]["reference"] == f"ServiceRequest/{case_id}"


def test_gone_turns_the_subscription_off(tmp_path: Path, callback: tuple[Callback, str]) -> None:
    cb, url = callback
    cb.status = 410
    with _mediator(tmp_path, f"sqlite:///{tmp_path / 'g.db'}") as med:
        _, sub_id = _setup_case(med.url, url)
        auth = ("admin", ADMIN_PASSWORD)
        _wait(lambda: requests.get(med.url + f"/fhir/Subscription/{sub_id}", auth=auth).json()["status"] == "off",
              "the subscription off")
        calls = len(cb.seen)
        time.sleep(0.5)
        assert len(cb.seen) == calls, "no more calls to a callback that is gone"


def test_budget_exhausted_means_error_then_replay_delivers(tmp_path: Path, callback: tuple[Callback, str]) -> None:
    cb, url = callback
    cb.status = 503
    with _mediator(tmp_path, f"sqlite:///{tmp_path / 'b.db'}") as med:
        _, sub_id = _setup_case(med.url, url)
        auth = ("admin", ADMIN_PASSWORD)
        sub = _wait(lambda: (s := requests.get(med.url + f"/fhir/Subscription/{sub_id}", auth=auth).json())
                    ["status"] == "error" and s, "the subscription in error")
        assert sub["error"] == "notification not delivered"  # the same for 503, 404, refused or closed: no oracle
        dead = requests.get(med.url + "/admin/outbox", params={"status": "dead"}, auth=auth).json()["items"]
        assert dead and {d["destination"] for d in dead} == {"notify"}
        events = requests.get(med.url + f"/fhir/Subscription/{sub_id}/$events", auth=auth).json()
        assert any(p["name"] == "notification-event" for p in events["entry"][0]["resource"]["parameter"])
        cb.status = 200
        before = len(cb.seen)
        r = requests.post(med.url + "/admin/outbox/retry", params={"destination": "notify"}, auth=auth)
        assert r.json()["requeued"] == len(dead)
        _wait(lambda: requests.get(med.url + f"/fhir/Subscription/{sub_id}", auth=auth).json()["status"]
              == "active", "the subscription active again")
        assert len(cb.seen) > before
        assert requests.get(med.url + "/admin/outbox", params={"status": "dead"}, auth=auth).json()["items"] == []


def test_heartbeat_when_asked_for_and_quiet(tmp_path: Path, callback: tuple[Callback, str]) -> None:
    cb, url = callback
    with _mediator(tmp_path, f"sqlite:///{tmp_path / 'hb.db'}", sweep_interval_s=0.2) as med:
        auth = ("admin", ADMIN_PASSWORD)
        org = requests.post(med.url + "/fhir/Organization", auth=auth,
                            json={"resourceType": "Organization", "name": "F"}).json()
        sub = {"resourceType": "Subscription", "status": "requested", "reason": "r",
               "criteria": f"Task?requester=Organization/{org['id']}",
               "channel": {"type": "rest-hook", "endpoint": url + "/hb", "payload": "application/fhir+json",
                           "extension": [{"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                                          "backport-heartbeat-period", "valueUnsignedInt": 1}]}}
        assert requests.post(med.url + "/fhir/Subscription", json=sub, auth=auth).status_code == 201

        def kinds() -> list[str]:
            return [next(p["valueCode"] for p in b["entry"][0]["resource"]["parameter"] if p["name"] == "type")
                    for _, _, b, _ in list(cb.seen)]

        _wait(lambda: kinds().count("heartbeat") >= 2, "two heartbeats", timeout=20)
    assert kinds()[0] == "handshake"
