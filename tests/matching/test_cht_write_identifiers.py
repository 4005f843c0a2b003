"""``LTFU_CHT_WRITE_IDENTIFIERS``: a linked facility Patient's MRN/UPI go to the CHT person, once, through the
outbox, with a full-document update (GET, add, PUT with ``_rev``; a 409 re-reads), so the next match finds
the person by identifier. Against the CHT emulator, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import requests
from pydantic import SecretStr

from ltfu.delivery.attempt import Attempt
from ltfu.delivery.cht_submitter import ChtSubmitter
from ltfu.delivery.retry import Verdict
from ltfu.services import intake
from ltfu.services.cht_index import index_docs
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.outbox import OutboxRow
from ltfu.store.uow import unit_of_work
from tests.conftest import Api
from tests.emulators.cht.emu_support import ADMIN, Running, make_config, seed_area, serve

MRN = "https://facility.example/mrn"


def _match(server: Api, patient: dict[str, Any]) -> list[dict[str, Any]]:
    body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient}]}
    r = server.post("/fhir/Patient/$match", json=body)
    assert r.status_code == 200, r.text
    return [e for e in r.json().get("entry", []) if e.get("resource", {}).get("resourceType") == "Patient"]


async def _rows(db: Database, kind: str) -> list[OutboxRow]:
    async with unit_of_work(db) as uow:
        raws = [r for r in await uow.outbox.list(destination="cht") if r.kind == kind]
    return [OutboxRow(r.id, r.destination, r.kind, r.order_key, orjson.loads(r.payload), 1, r.created_at, r.case_id,
                      r.subscription_id, r.organization_id, maybe_sent=False) for r in raws]


async def _send(db: Database, submitter: ChtSubmitter, row: OutboxRow) -> Attempt:
    attempt = await submitter.send(row)
    if attempt.on_done is not None:
        async with unit_of_work(db) as uow:
            await attempt.on_done(uow)
    return attempt


async def _index_community(db: Database, run: Running, ids: dict[str, str]) -> None:
    docs = [(await run.call("GET", f"/medic/{ids[k]}"))[1] for k in ("district", "area", "household", "patient")]
    async with unit_of_work(db) as uow:
        await index_docs(uow, docs)


def _live(settings: Settings, run: Running, **extra: Any) -> Settings:
    return settings.model_copy(update={"cht_url": run.url, "cht_username": ADMIN[0],
                                       "cht_password": SecretStr(ADMIN[1]), **extra})


def _facility_patient(server: Api) -> str:
    r = requests.post(server.url + "/fhir/Patient", auth=server.session.auth, timeout=30, json={
        "resourceType": "Patient", "gender": "female", "birthDate": "1990-01-01",
        "name": [{"family": "Doe", "given": ["Jane"]}],
        "identifier": [{"system": MRN, "value": "MRN-77"}, {"system": "urn:upi", "value": "MOHR13K16YL12"},
                       {"system": "urn:nid", "value": "N/A"}]})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def test_identifiers_are_written_once_and_then_found_by_the_matcher(
    server: Api, settings: Settings, tmp_path: Path
) -> None:
    patient = _facility_patient(server)
    async with serve(make_config(tmp_path)) as run:
        ids = await seed_area(run)
        person = ids["patient"]
        db = Database(_live(settings, run, cht_write_identifiers=True))
        submitter = ChtSubmitter(db, db.settings)
        try:
            await _index_community(db, run, ids)
            by_mrn = {"resourceType": "Patient", "name": [{"family": "Kamau", "given": ["Achieng"]}],
                      "identifier": [{"system": MRN, "value": "MRN-77"}]}
            assert _match(server, by_mrn) == []  # CHT does not know the facility's MRN yet

            for _ in range(2):  # a second link (a retried intake) queues nothing more
                async with unit_of_work(db) as uow:
                    await intake.link_patient(uow, patient, person)
            rows = await _rows(db, intake.PERSON_IDENTIFIERS)
            assert len(rows) == 1 and rows[0].order_key == f"cht-person:{person}"
            before = (await run.call("GET", f"/medic/{person}"))[1]

            attempt = await _send(db, submitter, rows[0])
            assert attempt.verdict is Verdict.OK, attempt.error
            after = (await run.call("GET", f"/medic/{person}"))[1]
            assert after["upi"] == "MOHR13K16YL12"
            assert after["facility_mrn"] == [f"{MRN}|MRN-77"]
            assert "identification_number" not in after  # a junk national id is not written
            assert {k: v for k, v in after.items() if k not in ("upi", "facility_mrn", "_rev")} == {
                k: v for k, v in before.items() if k != "_rev"}  # the rest of the doc is kept as it was
            assert int(after["_rev"].split("-")[0]) == int(before["_rev"].split("-")[0]) + 1

            # the same row again (a crash after the PUT, a lost answer): nothing is written twice
            again = await _send(db, submitter, replace(rows[0], maybe_sent=True))
            assert again.verdict is Verdict.OK and "already" in (again.error or "")
            assert (await run.call("GET", f"/medic/{person}"))[1]["_rev"] == after["_rev"]

            found = _match(server, by_mrn)
            assert found and found[0]["resource"]["id"] == person
            grade = next(x["valueCode"] for x in found[0]["search"]["extension"] if x["url"].endswith("match-grade"))
            assert grade == "certain"
        finally:
            await submitter.close()
            await db.dispose()


async def test_a_conflicting_save_is_read_again_and_nothing_of_it_is_lost(
    server: Api, settings: Settings, tmp_path: Path
) -> None:
    patient = _facility_patient(server)
    async with serve(make_config(tmp_path)) as run:
        ids = await seed_area(run)
        person = ids["patient"]
        db = Database(_live(settings, run, cht_write_identifiers=True))
        submitter = ChtSubmitter(db, db.settings)
        real = submitter.client.request
        puts: list[int] = []

        async def racing(method: str, path: str, body: Any = None) -> Any:
            if method == "PUT" and not puts:  # a CHW saves the person between our GET and our PUT
                status, doc, _ = await run.call("GET", f"/medic/{person}")
                status, _, _ = await run.call("PUT", f"/medic/{person}", json_body={**doc, "phone": "+254700000099"})
                assert status == 201
            response = await real(method, path, body)
            if method == "PUT":
                puts.append(response.status)
            return response

        submitter.client.request = racing  # type: ignore[method-assign]
        try:
            async with unit_of_work(db) as uow:
                await intake.link_patient(uow, patient, person)
            attempt = await _send(db, submitter, (await _rows(db, intake.PERSON_IDENTIFIERS))[0])
            assert attempt.verdict is Verdict.OK, attempt.error
            assert puts == [409, 201]
            doc = (await run.call("GET", f"/medic/{person}"))[1]
            assert doc["phone"] == "+254700000099" and doc["upi"] == "MOHR13K16YL12"
        finally:
            await submitter.close()
            await db.dispose()


async def test_off_by_default_and_a_different_upi_in_cht_is_not_overwritten(
    server: Api, settings: Settings, tmp_path: Path
) -> None:
    patient = _facility_patient(server)
    async with serve(make_config(tmp_path)) as run:
        ids = await seed_area(run)
        person = ids["patient"]
        db = Database(_live(settings, run))
        try:
            async with unit_of_work(db) as uow:
                await intake.link_patient(uow, patient, person)
            assert await _rows(db, intake.PERSON_IDENTIFIERS) == []
        finally:
            await db.dispose()
        status, doc, _ = await run.call("GET", f"/medic/{person}")
        await run.call("PUT", f"/medic/{person}", json_body={**doc, "upi": "OTHER-UPI-1"})
        db = Database(_live(settings, run, cht_write_identifiers=True))
        submitter = ChtSubmitter(db, db.settings)
        try:
            async with unit_of_work(db) as uow:
                await intake.link_patient(uow, patient, person)
            attempt = await _send(db, submitter, (await _rows(db, intake.PERSON_IDENTIFIERS))[0])
            assert attempt.verdict is Verdict.OK, attempt.error
            doc = (await run.call("GET", f"/medic/{person}"))[1]
            assert doc["upi"] == "OTHER-UPI-1" and doc["facility_mrn"] == [f"{MRN}|MRN-77"]
        finally:
            await submitter.close()
            await db.dispose()
