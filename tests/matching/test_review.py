"""The review queue: facility scoping, reject (permanent negative links), defer, expiry → unassignable."""

from __future__ import annotations

import asyncio

import requests
from sqlalchemy import update

from ltfu.domain.access import Actor
from ltfu.services import intake, review
from ltfu.services.cht_index import index_docs
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.schema import match_reviews
from ltfu.store.uow import unit_of_work
from tests.conftest import Api
from tests.matching.test_match_api import PEOPLE, PLACES

CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}


def _case(server: Api, org: str, key: str) -> tuple[str, str]:
    patient = server.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "gender": "female", "name": [{"family": "Otieno", "given": ["Grace"]}]},
    ).json()["id"]
    sr = server.post(
        "/fhir/ServiceRequest",
        json={
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "identifier": [{"system": "https://facility.example/ltfu-request", "value": key}],
            "subject": {"reference": f"Patient/{patient}"},
            "requester": {"reference": f"Organization/{org}"},
            "code": {"coding": [{"system": "https://ltfu.example.org/fhir/CodeSystem/ltfu", "code": "ltfu-tracing"}]},
        },
    )
    assert sr.status_code == 201, sr.text
    return sr.json()["id"], patient


def _org(server: Api, x: str) -> str:
    server.put(
        f"/fhir/Endpoint/ep-{x}",
        json={
            "resourceType": "Endpoint",
            "id": f"ep-{x}",
            "status": "active",
            "connectionType": CONN,
            "payloadType": [{"text": "Task"}],
            "address": f"https://{x}.example/notify",
        },
    )
    r = server.put(
        f"/fhir/Organization/org-{x}",
        json={
            "resourceType": "Organization",
            "id": f"org-{x}",
            "name": x,
            "endpoint": [{"reference": f"Endpoint/ep-{x}"}],
        },
    )
    assert r.status_code in (200, 201), r.text
    return f"org-{x}"


def test_review_scoping_reject_defer_and_expiry(server: Api, settings: Settings) -> None:
    org_a, org_b = _org(server, "a"), _org(server, "b")
    case_a, patient_a = _case(server, org_a, "ra")
    case_b, _ = _case(server, org_b, "rb")

    async def setup() -> dict[str, str]:
        db = Database(settings)
        ids = {}
        async with unit_of_work(db) as uow:
            await index_docs(uow, PLACES + PEOPLE)
            await uow.clients.upsert("m", "matcher-pw-123", role="matcher", organization_id=None)
            await uow.clients.upsert("fa", "facility-a-pw-1", role="facility", organization_id=org_a)
            for case, org in ((case_a, org_a), (case_b, org_b)):
                c = await uow.cases.get(case)
                sr = (await uow.resources.read("ServiceRequest", case)).resource
                patient = (await uow.resources.read("Patient", c.patient_id)).resource
                decision = await intake.decide(uow, case, sr, patient, org)
                assert decision.action == "review"  # Grace Otieno, no birth date: two Graces
                ids[case] = await intake.open_review(uow, case, org, c.patient_id, decision)
        await db.dispose()
        return ids

    ids = asyncio.run(setup())
    assert (
        server.get(f"/fhir/Task?based-on=ServiceRequest/{case_a}").json()["entry"][0]["resource"]["businessStatus"][
            "coding"
        ][0]["code"]
        == "awaiting-match"
    )
    as_a = requests.get(server.url + "/admin/review", auth=("fa", "facility-a-pw-1"), timeout=30)
    assert [i["case_id"] for i in as_a.json()["items"]] == [case_a]
    hidden = requests.get(server.url + f"/admin/review/{ids[case_b]}", auth=("fa", "facility-a-pw-1"), timeout=30)
    assert hidden.status_code == 404
    refused = requests.post(
        server.url + f"/admin/review/{ids[case_a]}",
        json={"action": "defer"},
        auth=("fa", "facility-a-pw-1"),
        timeout=30,
    )
    assert refused.status_code == 403
    matcher = ("m", "matcher-pw-123")
    proposed = [c["person"] for c in server.get(f"/admin/review/{ids[case_a]}").json()["proposal"]["candidates"]]
    assert "grace" in proposed
    rejected = requests.post(
        server.url + f"/admin/review/{ids[case_a]}", json={"action": "reject"}, auth=matcher, timeout=30
    )
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    deferred = requests.post(
        server.url + f"/admin/review/{ids[case_b]}", json={"action": "defer"}, auth=matcher, timeout=30
    )
    assert deferred.json()["status"] == "deferred"
    assert server.post(f"/admin/review/{ids[case_b]}", json={"action": "jump"}).status_code == 400

    async def after() -> None:
        db = Database(settings)
        async with unit_of_work(db) as uow:
            assert set(await uow.reviews.negative_links(patient_a)) == set(proposed)  # never proposed again
            c = await uow.cases.get(case_a)
            sr = (await uow.resources.read("ServiceRequest", case_a)).resource
            patient = (await uow.resources.read("Patient", c.patient_id)).resource
            again = await intake.decide(uow, case_a, sr, patient, org_a)
            assert not {c["person"] for c in again.proposal["candidates"]} & set(proposed)
            await uow.conn.execute(
                update(match_reviews)
                .where(match_reviews.c.review_id == ids[case_b])
                .values(due_at="2000-01-01T00:00:00.000000Z")
            )
            assert await review.expire_due(uow) == 1
        async with unit_of_work(db, Actor("admin", name="t")) as uow:
            assert (await review.get_item(uow, ids[case_b]))["status"] == "expired"
        await db.dispose()

    asyncio.run(after())
    task_b = server.get(f"/fhir/Task?based-on=ServiceRequest/{case_b}").json()["entry"][0]["resource"]
    assert task_b["status"] == "rejected"
    assert task_b["businessStatus"]["coding"][0]["code"] == "unassignable"


async def test_expiry_takes_a_bounded_batch_oldest_first(db: Database) -> None:
    """After a long stop thousands of items may be due at once: one sweep expires a batch (its transaction stays
    short), the longest overdue first; the next sweeps take the rest."""
    from sqlalchemy import insert, select

    async with unit_of_work(db) as uow:
        await uow.conn.execute(insert(match_reviews), [
            {"review_id": f"r-{i}", "case_id": f"c-{i}", "organization_id": None, "patient_id": f"p-{i}",
             "status": "open", "reason": "no-place", "proposal": "{}", "created_at": "2000-01-01T00:00:00.000000Z",
             "due_at": f"200{i}-01-01T00:00:00.000000Z"} for i in (3, 1, 2)])
    async with unit_of_work(db) as uow:
        assert await review.expire_due(uow, limit=2) == 2
        expired = (await uow.conn.execute(select(match_reviews.c.review_id)
                                          .where(match_reviews.c.status == "expired"))).scalars().all()
        assert sorted(expired) == ["r-1", "r-2"]
    async with unit_of_work(db) as uow:
        assert await review.expire_due(uow, limit=2) == 1
        assert await review.expire_due(uow, limit=2) == 0
