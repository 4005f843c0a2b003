"""End to end: a facility calls OpenHIM's router (the fake), which routes to the running mediator.

Basic-auth client on the router port, ``/mediator`` prefix stripped, transaction headers added, route
credentials sent to the mediator, ``application/json+openhim`` answer parsed and stored by "core".
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import aiohttp
import pytest
from openhim_fake import ROOT_EMAIL, ROOT_PASSWORD
from openhim_servers import LoopbackServer
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ltfu.openhim import mediator
from ltfu.openhim.client import OpenHIMClient
from ltfu.openhim.envelope import OpenHIMEnvelopeMiddleware, record_orchestration, set_property
from ltfu.openhim.setup import ClientSpec, apply_setup, plan_setup
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work

FACILITY = ("facility-a", "facility-pw")
CHT = ("cht", "cht-pw")


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def _provision(fake, mediator_url: str, route_auth: tuple[str, str]) -> None:
    settings = Settings(openhim_mediator_url=mediator_url)
    specs = [
        ClientSpec(FACILITY[0], (mediator.FACILITY_ROLE,), FACILITY[1]),
        ClientSpec(CHT[0], (mediator.CHT_ROLE,), CHT[1]),
    ]
    async with OpenHIMClient(fake.api_url, ROOT_EMAIL, ROOT_PASSWORD) as client:
        await apply_setup(client, await plan_setup(client, settings, specs, route_auth))


async def test_facility_request_through_the_channel_to_a_mediator(start_fake) -> None:
    """With a small stand-in app behind the real middleware (independent of the API layer)."""
    seen: list[dict] = []

    async def service_request(request: Request) -> Response:
        body = await request.json()
        seen.append({"path": request.url.path, "query": request.url.query, "headers": dict(request.headers)})
        record_orchestration(
            "store: insert ServiceRequest",
            {"method": "POST", "url": "postgresql://db/ltfu/resources", "body": body},
            {"status": 201, "body": {"id": "sr-1"}},
        )
        set_property("case", "sr-1")
        return JSONResponse({"resourceType": "ServiceRequest", "id": "sr-1"}, status_code=201)

    settings = Settings(openhim_envelope="auto")
    app = OpenHIMEnvelopeMiddleware(
        Starlette(routes=[Route("/service-request", service_request, methods=["POST"])]), settings
    )
    fake = start_fake("8")
    with LoopbackServer(app) as mediator_server:
        await _provision(fake, mediator_server.url, ("openhim", "route-pw"))
        async with aiohttp.ClientSession() as s:
            async with s.post(
                fake.router_url + "/mediator/service-request?x=1",
                json={"resourceType": "ServiceRequest"},
                headers={**basic(*FACILITY), "X-Forwarded-For": "10.9.8.7"},
            ) as r:
                assert r.status == 201
                assert await r.json() == {"resourceType": "ServiceRequest", "id": "sr-1"}
                assert r.headers["Content-Type"].startswith("application/json")
                tx_id = r.headers["X-OpenHIM-TransactionID"]
            # wrong password, wrong role, no channel
            async with s.post(
                fake.router_url + "/mediator/service-request", json={}, headers=basic(FACILITY[0], "nope")
            ) as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"] == "Basic"
            async with s.post(fake.router_url + "/mediator/service-request", json={}, headers=basic(*CHT)) as r:
                assert r.status == 401
            async with s.get(fake.router_url + "/elsewhere", headers=basic(*FACILITY)) as r:
                assert r.status == 404
    [hit] = seen
    assert hit["path"] == "/service-request" and hit["query"] == "x=1"  # prefix stripped
    h = hit["headers"]
    assert h["x-openhim-transactionid"] == tx_id
    assert h["x-openhim-clientid"] == FACILITY[0]
    assert h["x-forwarded-for"] == "10.9.8.7, 127.0.0.1"
    assert h["authorization"] == basic("openhim", "route-pw")["Authorization"]  # the client's is stripped
    [tx] = fake.core.transactions
    assert tx["_id"] == tx_id and tx["clientID"] == FACILITY[0]
    assert tx["storeProblems"] == []
    assert tx["mediatorURN"] == mediator.URN
    assert tx["status"] == "Successful" and tx["autoRetry"] is False
    assert tx["properties"] == {"case": "sr-1"}
    names = [o["name"] for o in tx["orchestrations"]]
    assert names == ["store: insert ServiceRequest", "ltfu"]  # ours, then the one core adds
    assert json.loads(tx["orchestrations"][0]["request"]["body"]) == {"resourceType": "ServiceRequest"}


async def test_through_openhim_to_the_ltfu_server(start_fake, tmp_path: Path) -> None:
    """The real ltfu application under uvicorn behind the fake's channels."""
    app_module = pytest.importorskip("ltfu.api.app")
    admin_password = "admin-secret-openhim"
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'ltfu.db'}",
        data_dir=tmp_path,
        admin_password=SecretStr(admin_password),
        workers=False,
        openhim_envelope="auto",
    )
    # Harmless if create_app already mounts the middleware: an enveloped response passes through.
    app = app_module.create_app(settings)
    fake = start_fake("8")
    with LoopbackServer(app, lifespan="on") as ltfu_server:
        # route credentials: a gateway client, which acts for the OpenHIM client core names (never admin)
        db = Database(settings)
        async with unit_of_work(db) as uow:
            await uow.clients.upsert("openhim", "route-pw-1234", role="gateway", organization_id=None)
            await uow.openhim_clients.put(FACILITY[0], "facility", "org-a")
        await db.dispose()
        await _provision(fake, ltfu_server.url, ("openhim", "route-pw-1234"))
        auth = basic(*FACILITY)
        async with aiohttp.ClientSession() as s:
            async with s.get(fake.router_url + "/mediator/", headers=auth) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["status"] == "success"
            endpoint = {
                "connectionType": {
                    "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                    "code": "hl7-fhir-rest",
                },
                "identifier": [{"system": "official", "value": "openhim-e2e"}],
                "status": "active",
                "address": "https://callback.example/cb",
                "payloadType": [{"text": "application/json"}],
            }
            async with s.post(fake.router_url + "/mediator/endpoint", json=endpoint, headers=auth) as r:
                assert r.status == 201, await r.text()
                endpoint_id = (await r.json())["id"]
            async with s.post(
                fake.router_url + "/mediator/endpoint", json={**endpoint, "status": "x"}, headers=auth
            ) as r:
                assert r.status == 400
            async with s.get(fake.router_url + f"/fhir/Endpoint/{endpoint_id}", headers=auth) as r:
                assert r.status == 200 and (await r.json())["id"] == endpoint_id
            async with s.get(fake.router_url + "/fhir/Endpoint/no-such-id", headers=auth) as r:
                assert r.status == 404
                assert (await r.json())["resourceType"] == "OperationOutcome"
            async with s.get(fake.router_url + "/fhir/Organization", headers=auth) as r:
                assert r.status == 200 and "entry" not in await r.json()  # facility-a's view, not admin's
            # CHT's OpenHIM client is not mapped in ltfu: its routed push is refused
            async with s.post(fake.router_url + "/cht/follow-up", json={}, headers=basic(*CHT)) as r:
                assert r.status == 403
    statuses = [
        (t["request"]["method"], t["request"]["path"], t["response"]["status"], t["status"])
        for t in fake.core.transactions
    ]
    assert statuses == [
        ("GET", "/mediator/", 200, "Successful"),
        ("POST", "/mediator/endpoint", 201, "Successful"),
        ("POST", "/mediator/endpoint", 400, "Completed"),
        ("GET", f"/fhir/Endpoint/{endpoint_id}", 200, "Successful"),
        ("GET", "/fhir/Endpoint/no-such-id", 404, "Completed"),
        ("GET", "/fhir/Organization", 200, "Successful"),
        ("POST", "/cht/follow-up", 403, "Completed"),
    ]
    for tx in fake.core.transactions:
        assert tx["mediatorURN"] == mediator.URN, tx  # answered in application/json+openhim
        assert tx["storeProblems"] == []
        assert isinstance(tx["response"]["body"], str)
        assert tx["orchestrations"][-1]["name"] == "ltfu"


async def test_ltfu_serve_registers_and_heartbeats_with_openhim(start_fake, tmp_path: Path) -> None:
    """With LTFU_OPENHIM_URL set, the server's own start-up registers the mediator and keeps beating;
    a write routed through the channel carries our store write as an orchestration."""
    from ltfu.api.app import create_app

    fake = start_fake("8")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'ltfu.db'}", data_dir=tmp_path,
                        admin_password=SecretStr("admin-secret-openhim"), workers=False,
                        openhim_url=fake.api_url, openhim_username=ROOT_EMAIL,
                        openhim_password=SecretStr(ROOT_PASSWORD), openhim_heartbeat_s=0.05)
    with LoopbackServer(create_app(settings), lifespan="on") as ltfu_server:
        import asyncio

        for _ in range(100):
            beats = [e for e in fake.core.api_log if e["path"].endswith("/heartbeat")]
            if mediator.URN in fake.core.mediators and len(beats) >= 2:
                break
            await asyncio.sleep(0.05)
        assert mediator.URN in fake.core.mediators, "registered at start-up"
        assert len(beats) >= 2, "heartbeats follow"
        await _provision(fake, ltfu_server.url, ("admin", "admin-secret-openhim"))
        endpoint = {"connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                                       "code": "hl7-fhir-rest"}, "identifier": [{"value": "reg"}],
                    "status": "active", "address": "https://cb.example/x", "payloadType": [{"text": "x"}]}
        async with aiohttp.ClientSession() as s, s.post(fake.router_url + "/mediator/endpoint", json=endpoint,
                                                        headers=basic(*FACILITY)) as r:
            assert r.status == 201, await r.text()
    tx = fake.core.transactions[-1]
    names = [o["name"] for o in tx["orchestrations"]]
    assert names[0] == "ltfu store: POST Endpoint"
    assert tx["properties"]["Endpoint"].startswith("Endpoint/")
