"""Notifications under the callback policy, with the real notifier and worker on SQLite and PostgreSQL:
a name that resolves to loopback is refused unless allowed, events wait for the handshake to a
changed address, and every call is signed with the subscription's own key."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver
from sqlalchemy import delete
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ltfu.delivery.notifier import Notifier
from ltfu.delivery.worker import Worker
from ltfu.fhir.systems import BACKPORT
from ltfu.services import notifications, workflow
from ltfu.services import resources as ops
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.outbox import OutboxRow
from ltfu.store.schema import signing_keys
from ltfu.store.uow import unit_of_work
from tests.conftest import ADMIN_PASSWORD, LOOPBACK, _truncate
from tests.support.server import ServerThread

CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}
NAME = "emr.facility.example"  # resolved by LoopbackDns to 127.0.0.1, as an attacker's DNS would


class LoopbackDns(AbstractResolver):
    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        assert host == NAME
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET, "proto": 0,
                 "flags": 0}]

    async def close(self) -> None:
        return None


class Receiver:
    """The facility's callback: records every call; ``status[path]`` answers it (200 when unset)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, str], bytes]] = []
        self.status: dict[str, int] = {}
        self.lock = threading.Lock()

    def app(self) -> Starlette:
        async def any_call(request: Request) -> Response:
            body = await request.body()
            with self.lock:
                self.calls.append((request.url.path, _kind(body), dict(request.headers), body))
            return JSONResponse({}, status_code=self.status.get(request.url.path, 200))

        return Starlette(routes=[Route("/{path:path}", any_call, methods=["POST", "PUT"])])

    def at(self, path: str) -> list[str]:
        return [kind for p, kind, _, _ in self.calls if p == path]


def _kind(body: bytes) -> str:
    params = json.loads(body)["entry"][0]["resource"]["parameter"]
    return next(p["valueCode"] for p in params if p["name"] == "type")


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    rcv = Receiver()
    with ServerThread(rcv.app()) as srv:
        yield rcv, int(srv.url.rsplit(":", 1)[1])


def _settings(db_url: str, tmp: Path, allowed: str | None) -> Settings:
    return Settings(database_url=db_url, data_dir=tmp, admin_password=ADMIN_PASSWORD, workers=False,
                    retry_initial_s=0.01, retry_max_s=0.05, retry_budget_s=600, retry_permanent_4xx=3,
                    callback_allowed_networks=allowed)


@pytest.fixture
async def fresh(db_url: str) -> AsyncIterator[str]:
    workflow.install_hooks()
    db = Database(Settings(database_url=db_url))
    await db.upgrade()
    await _truncate(db)
    await db.dispose()
    yield db_url


async def _register(db: Database, address: str) -> str:
    """Endpoint + Organization as an admin would: the subscription and its handshake follow."""
    async with unit_of_work(db) as uow:
        await ops.update(uow, "Endpoint", "ep-1", {
            "resourceType": "Endpoint", "id": "ep-1", "status": "active", "connectionType": CONN,
            "payloadType": [{"text": "Task"}], "address": address, "header": ["Authorization: Bearer t-1"]})
        await ops.update(uow, "Organization", "org-1", {
            "resourceType": "Organization", "id": "org-1", "name": "F", "endpoint": [{"reference": "Endpoint/ep-1"}]})
    async with unit_of_work(db) as uow:
        return (await notifications.subscriptions_of(uow, "org-1"))[0]


async def _case(db: Database, key: str) -> None:
    async with unit_of_work(db) as uow:
        pat = await ops.create(uow, {"resourceType": "Patient", "gender": "female"})
        await ops.create(uow, {
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "identifier": [{"system": "urn:req", "value": key}],
            "subject": {"reference": f"Patient/{pat.stored.resource['id']}"},
            "requester": {"reference": "Organization/org-1"}})


async def _rows(db: Database) -> list[OutboxRow]:
    async with unit_of_work(db) as uow:
        return list(await uow.outbox.list(destination="notify"))


async def _drain(worker: Worker, db: Database, until: Any, rounds: int = 200) -> None:
    for _ in range(rounds):
        await worker.run_once()
        if until(await _rows(db)):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the notifications did not settle")


async def test_name_resolving_to_loopback_refused_by_default(fresh: str, tmp_path: Path,
                                                             receiver: tuple[Receiver, int]) -> None:
    rcv, port = receiver
    settings = _settings(fresh, tmp_path, None)
    db = Database(settings)
    try:
        await _register(db, f"https://{NAME}:{port}/cb")  # a name: accepted now, checked when connecting
        await _case(db, "r-1")
        worker = Worker(db, settings, [Notifier(db, settings, resolver=LoopbackDns())])
        await _drain(worker, db, lambda rows: rows and all(r.status == "dead" for r in rows))
        rows = await _rows(db)
        handshake = next(r for r in rows if r.kind == "handshake")
        assert handshake.last_error == "notification not delivered (refused by the callback policy)"
        assert rcv.calls == []  # nothing reached the loopback listener
        await worker.handlers["notify"].close()
    finally:
        await db.dispose()


async def test_allowed_network_delivers_signed_with_the_subscription_key(fresh: str, tmp_path: Path,
                                                                         receiver: tuple[Receiver, int]) -> None:
    rcv, port = receiver
    settings = _settings(fresh, tmp_path, LOOPBACK)
    db = Database(settings)
    try:
        sub_id = await _register(db, f"http://{NAME}:{port}/cb")
        await _case(db, "r-1")
        worker = Worker(db, settings, [Notifier(db, settings, resolver=LoopbackDns())])
        await _drain(worker, db, lambda rows: len(rows) == 2 and all(r.status == "done" for r in rows))
        assert rcv.at("/cb") == ["handshake", "event-notification"]
        async with unit_of_work(db) as uow:
            keys = [k.secret for k in await uow.callbacks.signing_keys(sub_id)]
        for _, _, headers, body in rcv.calls:
            assert headers["authorization"] == "Bearer t-1"
            Webhook(keys[0]).verify(body, headers, json_parse=False)
        await worker.handlers["notify"].close()
    finally:
        await db.dispose()


async def test_calls_signed_before_the_secret_was_handed_over_verify_with_it(
        fresh: str, tmp_path: Path, receiver: tuple[Receiver, int]) -> None:
    """The start-up race: the handshake is signed as the subscription is made, before the admin hands the facility
    its secret. The first secret issued is the key those calls were signed with (not a new one beside it): a
    call signed before the hand-over verifies once the facility holds it. Was a second key, so a call signed
    just before arrived with a signature the facility could not check (refused, then retried)."""
    rcv, port = receiver
    settings = _settings(fresh, tmp_path, LOOPBACK)
    db = Database(settings)
    try:
        sub_id = await _register(db, f"http://{NAME}:{port}/cb")
        worker = Worker(db, settings, [Notifier(db, settings, resolver=LoopbackDns())])
        await _drain(worker, db, lambda rows: rows and all(r.status == "done" for r in rows))
        assert rcv.at("/cb") == ["handshake"]
        async with unit_of_work(db) as uow:
            secret = (await notifications.issue_signing_secret(uow, "org-1"))[sub_id]
        _, _, headers, body = rcv.calls[0]
        Webhook(secret).verify(body, headers, json_parse=False)
        async with unit_of_work(db) as uow:  # once shown, issuing again is a rotation: a new key beside it
            rotated = (await notifications.issue_signing_secret(uow, "org-1"))[sub_id]
            live = [k.secret for k in await uow.callbacks.signing_keys(sub_id)]
        assert rotated != secret and live == [rotated, secret]
        await worker.handlers["notify"].close()
    finally:
        await db.dispose()


async def test_a_subscription_without_a_key_is_never_called_unsigned(
        fresh: str, tmp_path: Path, receiver: tuple[Receiver, int]) -> None:
    """A subscription made before signing keys existed: its first call makes the key (the one the first
    hand-over reveals) rather than going unsigned. Was sent without any webhook-signature."""
    rcv, port = receiver
    settings = _settings(fresh, tmp_path, LOOPBACK)
    db = Database(settings)
    try:
        sub_id = await _register(db, f"http://{NAME}:{port}/cb")
        async with unit_of_work(db) as uow:
            await uow.conn.execute(delete(signing_keys))
        worker = Worker(db, settings, [Notifier(db, settings, resolver=LoopbackDns())])
        await _drain(worker, db, lambda rows: rows and all(r.status == "done" for r in rows))
        async with unit_of_work(db) as uow:
            secret = (await notifications.issue_signing_secret(uow, "org-1"))[sub_id]
        [(_, _, headers, body)] = rcv.calls
        Webhook(secret).verify(body, headers, json_parse=False)
        await worker.handlers["notify"].close()
    finally:
        await db.dispose()


async def test_events_wait_for_the_handshake_to_a_new_address(fresh: str, tmp_path: Path,
                                                              receiver: tuple[Receiver, int]) -> None:
    rcv, port = receiver
    settings = _settings(fresh, tmp_path, LOOPBACK)
    db = Database(settings)
    try:
        await _register(db, f"http://127.0.0.1:{port}/old")
        worker = Worker(db, settings, [Notifier(db, settings)])
        await _drain(worker, db, lambda rows: rows and all(r.status == "done" for r in rows))
        rcv.status["/old"] = 503
        await _case(db, "r-1")  # its event cannot reach /old: still pending when the address changes
        await _drain(worker, db, lambda rows: any(r.kind == "event" and r.attempts for r in rows))
        async with unit_of_work(db) as uow:
            ep = (await uow.resources.get("Endpoint", "ep-1")).resource
            await ops.update(uow, "Endpoint", "ep-1", {**ep, "address": f"http://127.0.0.1:{port}/new"})
        rcv.status["/new"] = 503  # the new address does not answer the handshake yet
        await _drain(worker, db, lambda rows: len(rcv.at("/new")) >= 3)
        assert rcv.at("/new") and set(rcv.at("/new")) == {"handshake"}  # no PHI to an unverified address
        del rcv.status["/new"]
        await _drain(worker, db, lambda rows: all(r.status == "done" for r in rows))
        assert rcv.at("/new")[-2:] == ["handshake", "event-notification"]
        assert "event-notification" not in rcv.at("/new")[:-1]
        await worker.handlers["notify"].close()
    finally:
        await db.dispose()


def _event_numbers(body: bytes) -> list[int]:
    params = json.loads(body)["entry"][0]["resource"]["parameter"]
    return [int(next(x["valueString"] for x in p["part"] if x["name"] == "event-number"))
            for p in params if p["name"] == "notification-event"]


@pytest.mark.parametrize(("max_events", "max_count", "calls"), [
    (20, None, [[1, 2, 3]]),  # the due events of a subscription: one Bundle, in order
    (2, None, [[1, 2], [3]]),  # LTFU_NOTIFY_MAX_EVENTS
    (20, 1, [[1], [2], [3]]),  # the subscriber's backport-max-count
])
async def test_due_events_of_a_subscription_go_in_one_bundle(fresh: str, tmp_path: Path,
                                                             receiver: tuple[Receiver, int], max_events: int,
                                                             max_count: int | None, calls: list[list[int]]) -> None:
    rcv, port = receiver
    settings = _settings(fresh, tmp_path, LOOPBACK).model_copy(update={"notify_max_events": max_events})
    db = Database(settings)
    try:
        sub_id = await _register(db, f"http://127.0.0.1:{port}/cb")
        if max_count is not None:
            async with unit_of_work(db) as uow:
                sub = (await uow.resources.get("Subscription", sub_id)).resource
                ext = {"url": BACKPORT + "backport-max-count", "valuePositiveInt": max_count}
                channel = {**sub["channel"], "extension": [*sub["channel"].get("extension", []), ext]}
                await uow.resources.update({**sub, "channel": channel}, sub_id)
        worker = Worker(db, settings, [Notifier(db, settings)])
        await _drain(worker, db, lambda rows: rows and all(r.status == "done" for r in rows))  # the handshake
        for key in ("r-1", "r-2", "r-3"):
            await _case(db, key)
        await _drain(worker, db, lambda rows: len(rows) == 4 and all(r.status == "done" for r in rows))
        events = [(kind, body) for path, kind, _, body in rcv.calls if kind == "event-notification"]
        assert [_event_numbers(body) for _, body in events] == calls
        for _, body in events:  # one Task entry per event here (three cases)
            tasks = [e for e in json.loads(body)["entry"][1:] if e["resource"]["resourceType"] == "Task"]
            assert len(tasks) == len(_event_numbers(body))
        await worker.handlers["notify"].close()
    finally:
        await db.dispose()
