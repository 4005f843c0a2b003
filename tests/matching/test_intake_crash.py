"""A try of a person creation that may have reached CHT before a crash finds that person: never two."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import requests
from pydantic import SecretStr

from ltfu.delivery.cht_submitter import ChtSubmitter
from ltfu.delivery.retry import Verdict
from ltfu.services.cht_index import index_docs
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.outbox import OutboxRow
from ltfu.store.uow import unit_of_work
from tests.conftest import Api
from tests.emulators.cht.emu_support import ADMIN, make_config, seed_area, serve
from tests.matching.test_review import _org


@pytest.mark.parametrize(("version", "path", "place_key", "id_key"),
                         [("4.11.0", "/api/v1/people", "place", "id"), ("5.2.0", "/api/v1/person", "parent", "_id")])
async def test_a_retry_after_a_crash_links_the_person_the_first_try_created(
    server: Api, settings: Settings, tmp_path: Path, version: str, path: str, place_key: str, id_key: str
) -> None:
    org = _org(server, "a")
    async with serve(make_config(tmp_path, cht_version=version)) as run:
        area = (await seed_area(run))["area"]
        patient = requests.post(
            server.url + "/fhir/Patient",
            auth=server.session.auth,
            timeout=30,
            json={
                "resourceType": "Patient",
                "gender": "female",
                "birthDate": "2001-02-03",
                "name": [{"family": "Nekesa", "given": ["Zawadi"]}],
            },
        ).json()["id"]
        case = requests.post(
            server.url + "/fhir/ServiceRequest",
            auth=server.session.auth,
            timeout=30,
            json={
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "identifier": [{"system": "https://facility.example/ltfu-request", "value": "crash-1"}],
                "subject": {"reference": f"Patient/{patient}"},
                "requester": {"reference": f"Organization/{org}"},
                "code": {
                    "coding": [{"system": "https://ltfu.example.org/fhir/CodeSystem/ltfu", "code": "ltfu-tracing"}]
                },
                "locationCode": [
                    {"coding": [{"system": "https://ltfu.example.org/fhir/CodeSystem/cht-place", "code": area}]}
                ],
            },
        ).json()["id"]
        # the first try created the person in CHT, then the worker died before it recorded anything
        status, first, _ = await run.call(
            "POST",
            path,
            json_body={"type": "person", "name": "Zawadi Nekesa", place_key: area, "ltfu_source": f"ltfu-case:{case}"},
        )
        assert status == 200
        first_id = first[id_key]
        status, area_doc, _ = await run.call("GET", f"/medic/{area}")
        live = settings.model_copy(
            update={"cht_url": run.url, "cht_username": ADMIN[0], "cht_password": SecretStr(ADMIN[1])}
        )
        db = Database(live)
        async with unit_of_work(db) as uow:
            await index_docs(uow, [area_doc])
            rows = [r for r in await uow.outbox.list(destination="cht") if r.case_id == case]
        submitter = ChtSubmitter(db, live)
        try:
            raw = rows[0]
            row = OutboxRow(
                raw.id,
                raw.destination,
                raw.kind,
                raw.order_key,
                orjson.loads(raw.payload),
                1,
                raw.created_at,
                raw.case_id,
                raw.subscription_id,
                raw.organization_id,
                maybe_sent=True,
            )
            attempt = await submitter.send(row)
            assert attempt.verdict is Verdict.OK, attempt.error
        finally:
            await submitter.close()
            await db.dispose()
        status, found, _ = await run.call("POST", "/medic/_find", json_body={"selector": {"name": "Zawadi Nekesa"}})
        assert [d["_id"] for d in found["docs"]] == [first_id]
    linked = server.get(f"/fhir/Patient/{patient}").json()
    assert first_id in [i["value"] for i in linked["identifier"]]
