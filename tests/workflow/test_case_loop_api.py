"""The case loop through the API (workers off, so each step is observed): intake, idempotency,
errors, CHW reports and Task transitions, cancel, expiry, notifications' event log."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from ltfu.services import requests as request_service
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.conftest import Api

CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}
MRN = "https://facility.example/mrn"
REQ = "https://facility.example/ltfu-request"


def facility(server: Api, code: str = "F1") -> str:
    ep = server.post("/fhir/Endpoint", json={"resourceType": "Endpoint", "status": "active", "connectionType": CONN,
                                             "payloadType": [{"text": "Task"}], "address": "http://127.0.0.1:9/cb"})
    org = server.post("/fhir/Organization", json={
        "resourceType": "Organization", "identifier": [{"system": "https://mfl.example", "value": code}],
        "name": "Facility", "endpoint": [{"reference": f"Endpoint/{ep.json()['id']}"}]})
    return org.json()["id"]


def patient(server: Api, mrn: str) -> dict:
    return server.post("/fhir/Patient", json={
        "resourceType": "Patient", "identifier": [{"system": MRN, "value": mrn}], "gender": "female",
        "name": [{"family": "Akinyi", "given": ["Rose"]}]}).json()


def sr(org: str, subject: dict, key: str | None = "K1", **extra: object) -> dict:
    body = {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": subject,
            "requester": {"reference": f"Organization/{org}"}, **extra}
    if key:
        body["identifier"] = [{"system": REQ, "value": key}]
    return body


def task_of(server: Api, case_id: str) -> dict:
    bundle = server.get("/fhir/Task", params={"focus": f"ServiceRequest/{case_id}"}).json()
    assert bundle["total"] == 1
    return bundle["entry"][0]["resource"]


def outbox(server: Api, **params: str) -> list[dict]:
    return server.get("/admin/outbox", params={"status": "pending", **params}).json()["items"]


def report(case_id: str, outcome: str, attempt: int = 1, **extra: object) -> dict:
    return {"report_id": f"rep-{uuid.uuid4()}", "case_ref": case_id, "method": "phone", "contacted": "yes",
            "outcome": outcome, "attempt_no": attempt, "reported_date": 1732440000000, "chw_id": "chw-1",
            "chw_name": "Mary", **extra}


def test_request_creates_task_case_and_cht_submission(server: Api) -> None:
    org, pat = facility(server), patient(server, "M1")
    r = server.post("/fhir/ServiceRequest", json=sr(org, {"reference": f"Patient/{pat['id']}"}))
    assert r.status_code == 201, r.text
    case_id = r.json()["id"]
    task = task_of(server, case_id)
    assert task["status"] == "requested" and task["intent"] == "order"
    assert task["for"]["reference"] == f"Patient/{pat['id']}"
    assert task["requester"]["reference"] == f"Organization/{org}"
    assert task["code"]["coding"][0]["code"] == "fulfill" and task["basedOn"][0]["reference"].endswith(case_id)
    cht = outbox(server, destination="cht")
    assert [(m["kind"], m["case_id"]) for m in cht] == [("follow-up", case_id)]
    notes = sorted(outbox(server, destination="notify"), key=lambda m: m["id"])
    assert [m["kind"] for m in notes] == ["handshake", "event"]  # subscription handshake, then Task created
    # the same identifier again is the same case
    again = server.post("/fhir/ServiceRequest", json=sr(org, {"reference": f"Patient/{pat['id']}"}))
    assert again.status_code == 200 and again.json()["id"] == case_id
    assert len(outbox(server, destination="cht")) == 1
    # a request without an identifier gets a deterministic one: replays stay one case
    a = server.post("/fhir/ServiceRequest", json=sr(org, {"reference": f"Patient/{pat['id']}"}, key=None))
    b = server.post("/fhir/ServiceRequest", json=sr(org, {"reference": f"Patient/{pat['id']}"}, key=None))
    assert a.status_code == 201 and b.status_code == 200 and a.json()["id"] == b.json()["id"]
    assert a.json()["identifier"][0]["value"].startswith("auto-")


@pytest.mark.parametrize(
    ("subject", "requester", "status"),
    [
        ({"reference": "Patient/nobody"}, None, 404),
        ({"identifier": {"system": MRN, "value": "nope"}}, None, 404),
        (None, None, 400),  # subject is required by R4 itself
        ("PAT", {"reference": "Organization/none"}, 404),
    ],
)
def test_unknown_patient_or_facility_stores_nothing(server: Api, subject: object, requester: object,
                                                    status: int) -> None:
    org, pat = facility(server), patient(server, "M2")
    body = sr(org, {"reference": f"Patient/{pat['id']}"} if subject == "PAT" else subject)
    if subject is None:
        del body["subject"]
    if requester:
        body["requester"] = requester
    r = server.post("/fhir/ServiceRequest", json=body)
    assert r.status_code == status, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert server.get("/fhir/ServiceRequest").json()["total"] == 0
    assert server.get("/fhir/Task").json()["total"] == 0
    assert outbox(server, destination="cht") == []


def test_batch_defaulter_list_partial_success(server: Api) -> None:
    org = facility(server)
    p1, p2 = patient(server, "B1"), patient(server, "B2")
    entries = [
        {"resource": sr(org, {"identifier": {"system": MRN, "value": "B1"}}, key="L1"),
         "request": {"method": "POST", "url": "ServiceRequest"}},
        {"resource": sr(org, {"identifier": {"system": MRN, "value": "UNKNOWN"}}, key="L2"),
         "request": {"method": "POST", "url": "ServiceRequest"}},
        {"resource": sr(org, {"reference": f"Patient/{p2['id']}"}, key="L3"),
         "request": {"method": "POST", "url": "ServiceRequest"}},
    ]
    r = server.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": entries})
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses == ["201 Created", "404", "201 Created"]
    assert server.get("/fhir/Task").json()["total"] == 2
    assert {t["resource"]["for"]["reference"] for t in server.get("/fhir/Task").json()["entry"]} == {
        f"Patient/{p1['id']}", f"Patient/{p2['id']}"}


def test_transaction_with_patient_after_its_request(server: Api) -> None:
    org = facility(server)
    urn = "urn:uuid:5d0f2a4e-1111-4c3b-9a6e-2b2a5f0e9d11"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": sr(org, {"reference": urn}, key="T1"), "request": {"method": "POST", "url": "ServiceRequest"}},
        {"fullUrl": urn, "resource": {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "T1"}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={MRN}|T1"}},
    ]}
    r = server.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    case = r.json()["entry"][0]["resource"]
    pat = r.json()["entry"][1]["resource"]
    assert case["subject"]["reference"] == f"Patient/{pat['id']}"
    assert task_of(server, case["id"])["status"] == "requested"


def test_chw_reports_move_the_task(server: Api) -> None:
    org, pat = facility(server), patient(server, "C1")
    case_id = server.post("/fhir/ServiceRequest", json=sr(org, {"reference": f"Patient/{pat['id']}"})).json()["id"]
    first = report(case_id, "not_located", 1, method="phone")
    r = server.post("/cht/follow-up", json=first)
    assert r.status_code == 201, r.text
    task = task_of(server, case_id)
    assert task["status"] == "in-progress"
    assert task["businessStatus"]["coding"][0]["code"] == "attempt-unsuccessful"
    assert server.post("/cht/follow-up", json=first).status_code == 200  # CHT re-sends: nothing new
    final = report(case_id, "returning_to_care", 2, method="home_visit", next_appointment_date="2030-01-02")
    assert server.post("/cht/follow-up", json=final).status_code == 201
    task = task_of(server, case_id)
    assert task["status"] == "completed"
    assert task["output"][0]["valueCodeableConcept"]["coding"][0]["code"] == "returning-to-care"
    assert {c["code"] for c in task["output"][0]["valueCodeableConcept"]["coding"]} == {"returning-to-care",
                                                                                        "HIV.H.DE24"}
    encounters = server.get("/fhir/Encounter", params={"based-on": f"ServiceRequest/{case_id}"}).json()
    assert encounters["total"] == 2
    assert sorted(e["resource"]["class"]["code"] for e in encounters["entry"]) == ["HH", "VR"]
    obs = server.get("/fhir/Observation", params={"based-on": f"ServiceRequest/{case_id}"}).json()
    assert obs["total"] == 2
    assert server.get(f"/fhir/ServiceRequest/{case_id}").json()["status"] == "completed"
    # the facility's event log has every change, numbered from 1
    sub = server.get("/fhir/Subscription").json()["entry"][0]["resource"]
    events = server.get(f"/fhir/Subscription/{sub['id']}/$events").json()
    numbers = [int(p["part"][0]["valueString"]) for p in events["entry"][0]["resource"]["parameter"]
               if p["name"] == "notification-event"]
    assert numbers == [1, 2, 3]
    status = server.get(f"/fhir/Subscription/{sub['id']}/$status").json()["entry"][0]["resource"]
    assert next(p["valueString"] for p in status["parameter"] if p["name"] == "events-since-subscription-start") == "3"
    stats = server.get("/admin/stats").json()
    assert stats["by_status"] == {"completed": 1} and stats["by_outcome"] == {"returning-to-care": 1}
    assert stats["median_seconds"]["request_to_close"] is not None
    # a late report after the end is stored but changes nothing
    late = server.post("/cht/follow-up", json=report(case_id, "refused", 3))
    assert late.status_code == 201 and task_of(server, case_id)["status"] == "completed"


def test_follow_up_errors_are_4xx(server: Api) -> None:
    assert server.post("/cht/follow-up", json={"report_id": "x", "case_ref": "nope", "method": "phone",
                                               "outcome": "refused"}).status_code == 404
    bad = [{"case_ref": "c", "method": "phone", "outcome": "refused"},
           {"report_id": "x", "case_ref": "c", "method": "carrier-pigeon", "outcome": "refused"},
           {"report_id": "x", "case_ref": "c", "method": "phone", "outcome": "abducted"},
           {"report_id": "x", "method": "phone", "outcome": "refused"}, [1]]
    for body in bad:
        r = server.post("/cht/follow-up", json=body)
        assert r.status_code == 400, (body, r.text)


def test_cancel_by_revoking_and_task_rules(server: Api) -> None:
    org, pat = facility(server), patient(server, "X1")
    sr_body = server.post("/fhir/ServiceRequest", json=sr(org, {"reference": f"Patient/{pat['id']}"})).json()
    task = task_of(server, sr_body["id"])
    r = server.put(f"/fhir/Task/{task['id']}", json={**task, "status": "completed"})
    assert r.status_code == 409  # the mediator owns the Task's progress
    r = server.put(f"/fhir/ServiceRequest/{sr_body['id']}", json={**sr_body, "status": "revoked"})
    assert r.status_code == 200
    assert task_of(server, sr_body["id"])["status"] == "cancelled"
    # the follow-up never left: it is dropped rather than followed by a cancel record
    assert outbox(server, destination="cht") == []
    r = server.put(f"/fhir/ServiceRequest/{sr_body['id']}", json={**sr_body, "status": "active"})
    assert r.status_code == 409
    assert server.delete(f"/fhir/ServiceRequest/{sr_body['id']}").status_code == 405


def test_expiry_fails_cases_past_their_window(server: Api, settings: Settings) -> None:
    org, pat = facility(server), patient(server, "E1")
    old = sr(org, {"reference": f"Patient/{pat['id']}"}, key="OLD", occurrencePeriod={"start": "2020-01-01",
                                                                                     "end": "2020-01-14"})
    new = sr(org, {"reference": f"Patient/{pat['id']}"}, key="NEW")
    old_id = server.post("/fhir/ServiceRequest", json=old).json()["id"]
    new_id = server.post("/fhir/ServiceRequest", json=new).json()["id"]

    async def sweep() -> int:
        db = Database(settings)
        from ltfu.services.workflow import install_hooks

        install_hooks()
        async with unit_of_work(db) as uow:
            n = await request_service.expire_due(uow)
        await db.dispose()
        return n

    assert asyncio.run(sweep()) == 1
    expired = task_of(server, old_id)
    assert expired["status"] == "failed" and expired["businessStatus"]["coding"][0]["code"] == "expired"
    assert task_of(server, new_id)["status"] == "requested"
    assert asyncio.run(sweep()) == 0


def test_poc_service_request_flow(server: Api) -> None:
    ep = server.post("/mediator/endpoint", json={"connectionType": CONN, "status": "active",
                                                 "identifier": [{"system": "official", "value": "ep"}],
                                                 "address": "https://cb.example/x", "payloadType": [{"text": "x"}]})
    org_body = {"identifier": [{"system": "official", "value": "test-org"}], "name": ["athena"],
                "endpoint": [{"reference": f"Endpoint/{ep.json()['id']}"}]}
    assert server.post("/mediator/organization", json=org_body).status_code == 201
    cht_id = str(uuid.uuid4())
    server.post("/mediator/patient", json={"identifier": [{"system": "cht", "value": cht_id}], "gender": "male",
                                           "name": [{"family": "Doe", "given": ["J"]}], "birthDate": "2000-01-01"})
    body = {"intent": "order", "status": "active", "subject": {"reference": f"Patient/{cht_id}"},
            "requester": {"reference": "Organization/test-org"}}
    r = server.post("/mediator/service-request", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["resourceType"] == "Subscription" and r.json()["criteria"] == f"Encounter?identifier={cht_id}"
    assert server.get("/fhir/Task").json()["total"] == 1
    missing_org = server.post("/mediator/service-request", json={**body, "requester": {"reference": "Organization/x"}})
    assert missing_org.status_code == 404 and missing_org.json()["message"] == "Organization not found"
    missing_pat = server.post("/mediator/service-request", json={**body, "subject": {"reference": "Patient/nope"}})
    assert missing_pat.status_code == 404
    # the PoC's CHT outbound Encounter is linked to the open case and moves it
    enc = {"identifier": [{"system": "cht", "use": "official", "value": cht_id}], "status": "finished",
           "class": "outpatient", "type": [{"text": "visit"}],
           "subject": {"reference": f"Patient/?identifier={cht_id}"},
           "participant": [{"type": [{"text": "CHW"}]}]}
    stored = server.post("/mediator/encounter", json=enc)
    assert stored.status_code == 201 and stored.json()["basedOn"][0]["reference"].startswith("ServiceRequest/")
    assert server.post("/mediator/encounter", json=enc).status_code == 200  # CHT re-send
    assert server.get(f"/fhir/{r.json()['criteria']}").json()["total"] == 1
    task = server.get("/fhir/Task").json()["entry"][0]["resource"]
    assert task["status"] == "in-progress"


def test_subscriptions_other_than_ours_are_stored_not_served(server: Api) -> None:
    other = {"resourceType": "Subscription", "status": "requested", "reason": "x", "criteria": "Observation?code=x",
             "channel": {"type": "rest-hook", "endpoint": "https://elsewhere.example/cb"}}
    assert server.post("/fhir/Subscription", json=other).status_code == 201
    assert outbox(server, destination="notify") == []  # no handshake: not ours to deliver
    ours_broken = {**other, "criteria": "https://ltfu.example.org/fhir/SubscriptionTopic/ltfu-task-updated"}
    r = server.post("/fhir/Subscription", json=ours_broken)
    assert r.status_code == 422 and "Task?requester=Organization" in r.text
    org = facility(server, "S1")
    ours = {**other, "criteria": f"Task?requester=Organization/{org}"}
    sub = server.post("/fhir/Subscription", json=ours)
    assert sub.status_code == 201
    handshakes = [m for m in outbox(server, destination="notify") if m["kind"] == "handshake"]
    assert sub.json()["id"] in {m["subscription_id"] for m in handshakes}
