"""A facility client sees and places only its own facility's cases."""

from __future__ import annotations

import asyncio
import uuid

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
    # B's patient is not A's to use; A registers its own.
    assert fa.post(server.url + "/fhir/ServiceRequest", json=_sr(a, pat, "A0")).status_code == 404
    own = fa.post(server.url + "/fhir/Patient", json={"resourceType": "Patient", "gender": "female"}).json()["id"]
    mine = fa.post(server.url + "/fhir/ServiceRequest", json=_sr(a, own, "A1"))
    assert mine.status_code == 201
    assert fa.post(server.url + "/fhir/ServiceRequest", json=_sr(b, own, "A2")).status_code == 403
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": _sr(b, own, "A3"), "request": {"method": "POST", "url": "ServiceRequest"}}]}
    answer = fa.post(server.url + "/fhir/", json=bundle)
    assert answer.status_code == 200 and answer.json()["entry"][0]["response"]["status"] == "403"
    assert fa.get(server.url + f"/fhir/ServiceRequest/{sr_b['id']}").status_code == 404
    assert server.get(f"/fhir/ServiceRequest/{sr_b['id']}").status_code == 200  # admin sees all
    tasks = fa.get(server.url + "/fhir/Task").json()
    assert tasks["total"] == 1 and tasks["entry"][0]["resource"]["requester"]["reference"] == f"Organization/{a}"
    assert server.get("/fhir/Task").json()["total"] == 2
    srs = fa.get(server.url + "/fhir/ServiceRequest", params={"requester": f"Organization/{b}"}).json()
    assert srs["total"] == 0


def test_facility_client_sees_only_its_patients_attempts_and_subscription(server: Api, settings: Settings) -> None:
    a, b = _org(server, "A"), _org(server, "B")
    pa = server.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female"}).json()["id"]
    pb = server.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "male"}).json()["id"]
    case_a = server.post("/fhir/ServiceRequest", json=_sr(a, pa, "A1")).json()["id"]
    case_b = server.post("/fhir/ServiceRequest", json=_sr(b, pb, "B1")).json()["id"]
    for case in (case_a, case_b):
        r = server.post("/cht/follow-up", json={"report_id": f"r-{case}", "case_ref": case, "method": "phone",
                                                "outcome": "refused", "attempt_no": 1})
        assert r.status_code == 201

    async def add_client() -> None:
        db = Database(settings)
        async with unit_of_work(db) as uow:
            await uow.clients.upsert("facility-a", "facility-a-pw", is_admin=False, organization_id=a)
        await db.dispose()

    asyncio.run(add_client())
    fa = requests.Session()
    fa.auth = ("facility-a", "facility-a-pw")
    url = server.url + "/fhir"
    assert fa.get(f"{url}/Patient/{pa}").status_code == 200
    assert fa.get(f"{url}/Patient/{pb}").status_code == 404
    assert {e["resource"]["id"] for e in fa.get(f"{url}/Patient").json()["entry"]} == {pa}
    encounters = fa.get(f"{url}/Encounter").json()
    assert encounters["total"] == 1 and encounters["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pa}"
    assert fa.get(f"{url}/Observation", params={"based-on": f"ServiceRequest/{case_b}"}).json()["total"] == 0
    included = fa.get(f"{url}/Task", params={"_include": "Task:patient"}).json()
    assert {e["resource"]["id"] for e in included["entry"] if e["search"]["mode"] == "include"} == {pa}
    assert fa.get(f"{url}/ServiceRequest/{case_b}/_history").status_code == 404
    assert fa.get(f"{url}/ServiceRequest/{case_a}/_history").status_code == 200
    assert fa.get(f"{url}/_history").status_code == 403
    assert fa.delete(f"{url}/Patient/{pa}").status_code == 403
    org_b = server.get(f"/fhir/Organization/{b}").json()
    ep_b = server.get(f"/fhir/{org_b['endpoint'][0]['reference']}").json()
    hijack = {**ep_b, "address": "https://attacker.example/x"}
    assert fa.put(f"{url}/Endpoint/{ep_b['id']}", json=hijack).status_code == 404  # as if unknown
    org_a = server.get(f"/fhir/Organization/{a}").json()
    ep_a = server.get(f"/fhir/{org_a['endpoint'][0]['reference']}").json()
    assert fa.put(f"{url}/Endpoint/{ep_a['id']}", json={**ep_a, "address": "https://a.example/new"}).status_code == 200
    subs = {s["resource"]["_criteria"]["extension"][0]["valueString"].rsplit("/", 1)[1]: s["resource"]["id"]
            for s in server.get("/fhir/Subscription").json()["entry"]}
    assert fa.get(f"{url}/Subscription/{subs[b]}/$events").status_code == 404
    assert fa.get(f"{url}/Subscription/{subs[a]}/$events").status_code == 200


def test_no_existence_oracle_for_deleted_or_unknown_resources(server: Api, settings: Settings) -> None:
    a, b = _org(server, "A"), _org(server, "B")

    async def add_clients() -> None:
        db = Database(settings)
        async with unit_of_work(db) as uow:
            await uow.clients.upsert("facility-a", "facility-a-pw", role="facility", organization_id=a)
            await uow.clients.upsert("facility-b", "facility-b-pw", role="facility", organization_id=b)
        await db.dispose()

    asyncio.run(add_clients())
    fa, fb = requests.Session(), requests.Session()
    fa.auth, fb.auth = ("facility-a", "facility-a-pw"), ("facility-b", "facility-b-pw")
    url = server.url + "/fhir"
    gone = fb.post(f"{url}/Patient", json={"resourceType": "Patient", "gender": "male"}).json()["id"]
    assert server.delete(f"/fhir/Patient/{gone}").status_code == 200
    assert fb.get(f"{url}/Patient/{gone}").status_code == 410  # B's own: it knows it was deleted
    answers = {(r.status_code, r.json()["issue"][0]["code"])
               for r in (fa.get(f"{url}/Patient/{gone}"), fa.get(f"{url}/Patient/{uuid.uuid4()}"),
                         fa.get(f"{url}/Patient/{gone}/_history/1"), fa.get(f"{url}/Patient/{uuid.uuid4()}/_history/1"),
                         fa.put(f"{url}/Patient/{gone}", json={"resourceType": "Patient", "id": gone}))}
    assert answers == {(404, "not-found")}  # deleted, unknown or B's: the same answer
    # PUT cannot create either (201 would say an id is free)
    fresh = str(uuid.uuid4())
    assert fa.put(f"{url}/Patient/{fresh}", json={"resourceType": "Patient", "id": fresh}).status_code == 404


def test_a_person_cht_pushed_is_claimed_by_the_first_facility_that_names_it(server: Api, settings: Settings) -> None:
    a, b = _org(server, "A"), _org(server, "B")

    async def add_clients() -> None:
        db = Database(settings)
        async with unit_of_work(db) as uow:
            await uow.clients.upsert("facility-a", "facility-a-pw", role="facility", organization_id=a)
            await uow.clients.upsert("facility-b", "facility-b-pw", role="facility", organization_id=b)
            await uow.clients.upsert("push", "cht-push-pw-1", role="cht", organization_id=None)
        await db.dispose()

    asyncio.run(add_clients())
    fa, fb, push = requests.Session(), requests.Session(), requests.Session()
    fa.auth, fb.auth, push.auth = (
        ("facility-a", "facility-a-pw"),
        ("facility-b", "facility-b-pw"),
        ("push", "cht-push-pw-1"),
    )
    cht_id = str(uuid.uuid4())
    pushed = push.post(
        f"{server.url}/cht/patient",
        json={
            "_id": cht_id,
            "type": "person",
            "name": "Achieng Otieno",
            "sex": "female",
            "date_of_birth": "1990-02-03",
        },
    )
    assert pushed.status_code == 201
    pid = pushed.json()["patient"].split("/")[1]
    assert fa.get(f"{server.url}/fhir/Patient/{pid}").status_code == 404  # nobody's yet: not readable
    poc = {
        "identifier": [{"system": "cht", "value": cht_id}],
        "name": [{"family": "Otieno", "given": ["Achieng"]}],
        "gender": "female",
        "birthDate": "1990-02-03",
    }
    mine = fa.post(f"{server.url}/mediator/patient", json=poc)
    assert mine.status_code == 200 and mine.json()["id"] == pid  # the same person, not a twin
    assert fa.get(f"{server.url}/fhir/Patient/{pid}").status_code == 200
    theirs = fb.post(f"{server.url}/mediator/patient", json=poc)
    assert theirs.status_code == 201 and theirs.json()["id"] != pid  # A's now: B gets its own record
    assert fb.get(f"{server.url}/fhir/Patient/{pid}").status_code == 404
    sr = {
        "intent": "order",
        "status": "active",
        "subject": {"reference": f"Patient/{pid}"},
        "requester": {"reference": f"Organization/{b}"},
    }
    assert fb.post(f"{server.url}/mediator/service-request", json=sr).status_code == 404
