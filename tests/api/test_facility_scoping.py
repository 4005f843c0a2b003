"""A facility client sees and places only its own facility's cases."""

from __future__ import annotations

import asyncio

import requests

from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.conftest import Api

CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}


def _org(server: Api, name: str) -> str:
    ep = server.post("/fhir/Endpoint", json={"resourceType": "Endpoint", "status": "active", "connectionType": CONN,
                                             "payloadType": [{"text": "Task"}], "address": "http://127.0.0.1:9/x"})
    org = {"resourceType": "Organization", "name": name, "endpoint": [{"reference": f"Endpoint/{ep.json()['id']}"}]}
    return server.post("/fhir/Organization", json=org).json()["id"]


def _sr(org: str, pat: str, key: str) -> dict:
    return {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "identifier": [{"system": "urn:req", "value": key}], "subject": {"reference": f"Patient/{pat}"},
            "requester": {"reference": f"Organization/{org}"}}


def test_facility_client_is_scoped(server: Api, settings: Settings) -> None:
    a, b = _org(server, "A"), _org(server, "B")
    pat = server.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female"}).json()["id"]
    sr_b = server.post("/fhir/ServiceRequest", json=_sr(b, pat, "B1")).json()

    async def add_client() -> None:
        db = Database(settings)
        async with unit_of_work(db) as uow:
            await uow.clients.upsert("facility-a", "facility-a-pw", is_admin=False, organization_id=a)
        await db.dispose()

    asyncio.run(add_client())
    fa = requests.Session()
    fa.auth = ("facility-a", "facility-a-pw")
    mine = fa.post(server.url + "/fhir/ServiceRequest", json=_sr(a, pat, "A1"))
    assert mine.status_code == 201
    assert fa.post(server.url + "/fhir/ServiceRequest", json=_sr(b, pat, "A2")).status_code == 403
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": _sr(b, pat, "A3"), "request": {"method": "POST", "url": "ServiceRequest"}}]}
    assert fa.post(server.url + "/fhir", json=bundle).status_code == 403
    assert fa.get(server.url + f"/fhir/ServiceRequest/{sr_b['id']}").status_code == 404
    assert server.get(f"/fhir/ServiceRequest/{sr_b['id']}").status_code == 200  # admin sees all
    tasks = fa.get(server.url + "/fhir/Task").json()
    assert tasks["total"] == 1 and tasks["entry"][0]["resource"]["requester"]["reference"] == f"Organization/{a}"
    assert server.get("/fhir/Task").json()["total"] == 2
    srs = fa.get(server.url + "/fhir/ServiceRequest", params={"requester": f"Organization/{b}"}).json()
    assert srs["total"] == 0
