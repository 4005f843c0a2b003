"""A linked CHT person deleted or merged away in CHT: the open cases linked to it go back to review (Task
``awaiting-match``, a review item, the facility notified), closed cases stay as they are. Seen through the
``_changes`` sync and through a pushed tombstone; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests
from pydantic import SecretStr

from ltfu.delivery.cht_submitter import ChtSubmitter
from ltfu.delivery.cht_sync import ChtSync
from ltfu.delivery.retry import Verdict
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.api.test_roles import _clients
from tests.conftest import Api
from tests.emulators.cht.emu_support import ADMIN, Running, make_config, seed_area, serve
from tests.matching.test_cht_write_identifiers import _rows, _send
from tests.matching.test_review import _org

CONTACT = "https://ltfu.example.org/fhir/NamingSystem/cht-contact-id"


def _task(server: Api, case: str) -> dict[str, Any]:
    bundle = server.get("/fhir/Task", params={"based-on": f"ServiceRequest/{case}"}).json()
    return bundle["entry"][0]["resource"]


def _business(task: dict[str, Any]) -> str:
    return task["businessStatus"]["coding"][0]["code"]


def _request(server: Api, org: str, patient: str, key: str) -> str:
    r = server.post("/fhir/ServiceRequest", json={
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "identifier": [{"system": "https://facility.example/ltfu-request", "value": key}],
        "subject": {"reference": f"Patient/{patient}"}, "requester": {"reference": f"Organization/{org}"}})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _revoke(server: Api, case: str) -> None:
    sr = server.get(f"/fhir/ServiceRequest/{case}").json()
    r = server.put(f"/fhir/ServiceRequest/{case}", json={**sr, "status": "revoked"})
    assert r.status_code == 200, r.text
    assert _task(server, case)["status"] == "cancelled"


def _linked(server: Api, cht_id: str) -> str:
    r = server.post("/fhir/Patient", json={
        "resourceType": "Patient", "gender": "female", "birthDate": "1990-01-01",
        "name": [{"family": "Doe", "given": ["Jane"]}], "telecom": [{"system": "phone", "value": "+254700000002"}],
        "identifier": [{"system": CONTACT, "value": cht_id},
                       {"system": "https://facility.example/mrn", "value": "M-1"}]})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _notifications(db: Database) -> int:
    async with unit_of_work(db) as uow:
        return len(await uow.outbox.list(destination="notify", limit=1000))


async def _records(run: Running, case: str) -> list[dict[str, Any]]:
    _, found, _ = await run.call("POST", "/medic/_find", json_body={
        "selector": {"form": "INTEROP_FOLLOW_UP", "fields.case_ref": case}, "limit": 10})
    return list(found["docs"])


async def test_a_person_merged_away_in_cht_sends_its_open_case_back_to_review(
    server: Api, settings: Settings, tmp_path: Path
) -> None:
    org = _org(server, "a")
    async with serve(make_config(tmp_path)) as run:
        ids = await seed_area(run)
        gone = ids["patient"]
        status, survivor, _ = await run.call("POST", "/api/v1/people", json_body={
            "name": "Jane Doe", "sex": "female", "date_of_birth": "1990-01-01", "phone": "+254700000002",
            "place": ids["household"]})
        assert status == 200
        survivor_id = survivor["id"]
        patient = _linked(server, gone)
        closed = _request(server, org, patient, "old")
        _revoke(server, closed)
        case = _request(server, org, patient, "new")
        closed_before = _task(server, closed)

        live = settings.model_copy(update={"cht_url": run.url, "cht_username": ADMIN[0],
                                           "cht_password": SecretStr(ADMIN[1])})
        db = Database(live)
        submitter = ChtSubmitter(db, live)
        sync = ChtSync(db, live)
        try:
            await sync.sync_once()
            first = [r for r in await _rows(db, "follow-up") if r.case_id == case]
            assert (await _send(db, submitter, first[0])).verdict is Verdict.OK
            assert _task(server, case)["status"] == "received"
            [record] = await _records(run, case)
            assert record["fields"]["patient_uuid"] == gone

            # cht-conf merge-contacts: the source's reports move to the destination, the source is a tombstone
            await run.call("PUT", f"/medic/{record['_id']}", json_body={
                **record, "fields": {**record["fields"], "patient_uuid": survivor_id}})
            _, doc, _ = await run.call("GET", f"/medic/{gone}")
            status, _, _ = await run.call("PUT", f"/medic/{gone}", json_body={
                "_id": gone, "_rev": doc["_rev"], "_deleted": True})
            assert status == 201
            notified = await _notifications(db)

            result = await sync.sync_once()
            assert result.removed >= 1
            task = _task(server, case)
            assert (task["status"], _business(task)) == ("received", "awaiting-match")
            assert await _notifications(db) == notified + 1  # the facility is told, through the outbox
            assert _task(server, closed) == closed_before  # a closed case is not touched
            carried = [i["value"] for i in server.get(f"/fhir/Patient/{patient}").json()["identifier"]]
            assert gone not in carried and "M-1" in carried
            [item] = [i for i in server.get("/admin/review", params={"status": "open"}).json()["items"]
                      if i["case_id"] == case]
            assert item["reason"] == "cht-person-gone"
            assert item["proposal"]["candidates"][0]["person"] == survivor_id

            # the page read again (a crash before the seq was stored): nothing changes twice
            await sync.sync_once(full=True)
            assert _task(server, case)["meta"]["versionId"] == task["meta"]["versionId"]

            done = server.post(f"/admin/review/{item['review_id']}", json={"action": "link", "person": survivor_id})
            assert done.status_code == 200, done.text
            again = [r for r in await _rows(db, "follow-up") if r.case_id == case and r.id != first[0].id]
            assert len(again) == 1
            attempt = await _send(db, submitter, replace(again[0], maybe_sent=True))
            assert attempt.verdict is Verdict.OK, attempt.error
            task = _task(server, case)
            assert (task["status"], _business(task)) == ("received", "received-by-cht")
            # the merged record already follows the survivor: the CHW does not get a second task
            assert [r["fields"]["patient_uuid"] for r in await _records(run, case)] == [survivor_id]
        finally:
            await submitter.close()
            await sync.client.close()
            await db.dispose()


async def test_a_deleted_person_gets_a_new_record_after_the_review(
    server: Api, settings: Settings, tmp_path: Path
) -> None:
    org = _org(server, "a")
    async with serve(make_config(tmp_path)) as run:
        ids = await seed_area(run)
        gone = ids["patient"]
        _, other, _ = await run.call("POST", "/api/v1/people", json_body={
            "name": "Jane Doe", "sex": "female", "date_of_birth": "1990-01-01", "place": ids["household"]})
        patient = _linked(server, gone)
        case = _request(server, org, patient, "new")
        live = settings.model_copy(update={"cht_url": run.url, "cht_username": ADMIN[0],
                                           "cht_password": SecretStr(ADMIN[1])})
        db = Database(live)
        submitter = ChtSubmitter(db, live)
        sync = ChtSync(db, live)
        try:
            await sync.sync_once()
            first = [r for r in await _rows(db, "follow-up") if r.case_id == case]
            assert (await _send(db, submitter, first[0])).verdict is Verdict.OK
            _, doc, _ = await run.call("GET", f"/medic/{gone}")
            await run.call("DELETE", f"/medic/{gone}?rev={doc['_rev']}")
            await sync.sync_once()
            [item] = [i for i in server.get("/admin/review", params={"status": "open"}).json()["items"]
                      if i["case_id"] == case]
            assert server.post(f"/admin/review/{item['review_id']}",
                               json={"action": "link", "person": other["id"]}).status_code == 200
            again = [r for r in await _rows(db, "follow-up") if r.case_id == case and r.id != first[0].id]
            assert (await _send(db, submitter, again[0])).verdict is Verdict.OK
            assert sorted(r["fields"]["patient_uuid"] for r in await _records(run, case)) == sorted([gone, other["id"]])
            assert _business(_task(server, case)) == "received-by-cht"
        finally:
            await submitter.close()
            await sync.client.close()
            await db.dispose()


def test_a_pushed_tombstone_sends_the_open_case_back_to_review(server: Api, settings: Settings) -> None:
    org = _org(server, "a")
    gone = "0000000a-0000-4000-8000-000000000000"
    patient = _linked(server, gone)
    case = _request(server, org, patient, "new")
    _clients(settings)
    push = requests.Session()
    push.auth = ("push", "cht-push-pw-1")
    r = push.post(f"{server.url}/cht/patient", json={"_id": gone, "_rev": "3-abc", "_deleted": True})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "deleted", "cases_to_review": 1}
    task = _task(server, case)
    assert (task["status"], _business(task)) == ("requested", "awaiting-match")
    again = push.post(f"{server.url}/cht/patient", json={"_id": gone, "_deleted": True})
    assert again.json() == {"status": "deleted", "cases_to_review": 0}
    assert _task(server, case)["meta"]["versionId"] == task["meta"]["versionId"]
    items = server.get("/admin/review", params={"status": "open"}).json()["items"]
    assert [i["reason"] for i in items if i["case_id"] == case] == ["cht-person-gone"]
    assert asyncio.run(_patients_without(settings, patient, gone))


async def _patients_without(settings: Settings, patient: str, gone: str) -> bool:
    db = Database(settings)
    try:
        async with unit_of_work(db) as uow:
            stored = await uow.resources.read("Patient", patient)
        return gone not in [i.get("value") for i in stored.resource.get("identifier") or []]
    finally:
        await db.dispose()
