"""Contract: the outbound pushes a real CHT 5.2 sent (``outbound.json`` of the recordings), posted to a running
mediator, give the Patients, the Encounter, its Observations and the Task change they should, and no CHW
(a contact the users API created: no ``role``) becomes a Patient.

The mediator asks the CHT emulator (5.2, ltfu's cht-config) who is a CHT user's contact; the CHWs of the
recording are created there through the users API, as the recording created them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ltfu.api.app import create_app
from ltfu.settings import Settings
from tests.contract.recordings import Bindings, load
from tests.emulators.cht.emu_support import Running, basic, make_config, serve
from tests.support.server import ServerThread

ADMIN = ("admin", "pushes-admin-pass-1")
MEDIATOR_IN_CHT = ("ltfu_mediator", "Mediator-Passw0rd-2026")


async def _cht(run: Running, method: str, path: str, body: Any) -> Any:
    status, answer, _ = await run.call(method, path, json_body=body)
    assert status == 200, (path, answer)
    return answer


async def _seed_cht(run: Running) -> dict[str, str]:
    """The recording's hierarchy and its two CHWs (users API, inline contacts): the CHWs' real ids."""
    dh = await _cht(run, "POST", "/api/v1/places", {"name": "Kisumu County Referral", "type": "district_hospital"})
    hc = await _cht(
        run, "POST", "/api/v1/places", {"name": "Kondele Health Centre", "type": "health_center", "parent": dh["id"]}
    )
    clinic = await _cht(
        run, "POST", "/api/v1/places", {"name": "Nyalenda Clinic", "type": "clinic", "parent": hc["id"]}
    )
    mary = await _cht(
        run,
        "POST",
        "/api/v2/users",
        {
            "username": "chw_nyalenda",
            "password": "Chw-Passw0rd-2026",
            "roles": ["chw"],
            "place": clinic["id"],
            "contact": {"name": "Mary Atieno", "phone": "0712345678"},
        },
    )
    john = await _cht(
        run,
        "POST",
        "/api/v2/users",
        [
            {
                "username": "chw_kondele",
                "password": "Chw-Passw0rd-2026",
                "roles": ["chw"],
                "place": hc["id"],
                "contact": {"name": "John Okoth"},
            }
        ],
    )
    return {"<id:8>": mary["contact"]["id"], "<id:9>": john[0]["contact"]["id"]}


def _recorded_pushes(chws: dict[str, str]) -> list[tuple[int, str, dict]]:
    b = Bindings("outbound.json", values=dict(chws))
    entries = load("outbound.json")["exchanges"]
    return [
        (i, e["request"]["path"], b.fill(e["request"]["body"]))
        for i, e in enumerate(entries)
        if e.get("kind") == "outbound_push_received"
    ]


@pytest.mark.usefixtures("db")  # an empty schema: earlier PostgreSQL tests leave Patients behind
async def test_recorded_pushes_against_the_mediator(db_url: str, tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        cht_config=True,
        cht_version="5.2.0",
        users=[{"username": MEDIATOR_IN_CHT[0], "password": MEDIATOR_IN_CHT[1], "roles": ["ltfu_mediator"]}],
    )
    config.chw.enabled = False
    async with serve(config) as cht:
        chws = await _seed_cht(cht)
        pushes = _recorded_pushes(chws)
        assert [p for _, p, _ in pushes].count("/cht/patient") == 10 and len(pushes) == 11
        settings = Settings(
            database_url=db_url,
            admin_password=ADMIN[1],
            workers=False,
            cht_url=cht.url,
            cht_username=MEDIATOR_IN_CHT[0],
            cht_password=MEDIATOR_IN_CHT[1],
        )
        with ServerThread(create_app(settings)) as srv:
            auth = {"Authorization": basic(*ADMIN)}

            async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
                async with cht.http.request(method, srv.url + path, json=body, headers=auth) as resp:
                    return resp.status, await resp.json(content_type=None)

            answers = {}
            for index, path, body in pushes:
                if path == "/cht/patient":
                    answers[index] = await call("POST", path, body)
            chw_ids = set(chws.values())
            for index, path, body in pushes:
                if path != "/cht/patient":
                    continue
                status, answer = answers[index]
                if body["_id"] in chw_ids:
                    assert (status, answer["status"]) == (200, "ignored"), (index, answer)
                else:
                    # the failing push and its retries arrive three times: one Patient
                    assert (status, answer["status"]) in ((201, "created"), (200, "ok")), (index, answer)
            status, bundle = await call("GET", "/fhir/Patient?_count=100")
            assert status == 200
            by_cht_id = {
                i["value"]: e["resource"]
                for e in bundle.get("entry", [])
                for i in e["resource"]["identifier"]
                if i.get("use") == "official"
            }
            patients = {body["_id"] for _, path, body in pushes if path == "/cht/patient"} - chw_ids
            assert set(by_cht_id) == patients, "every recorded patient once, and no CHW"
            assert len(bundle["entry"]) == 6

            # the case the CHW followed up: ServiceRequest id = case_ref of the recorded report
            report = next(body for _, path, body in pushes if path == "/cht/follow-up")
            patient = by_cht_id[report["patient_uuid"]]
            assert patient["name"][0]["text"] == "Achieng Otieno"
            status, org = await call(
                "POST", "/fhir/Organization", {"resourceType": "Organization", "name": "Kisumu County Referral"}
            )
            assert status == 201
            case = report["case_ref"]
            sr = {
                "resourceType": "ServiceRequest",
                "id": case,
                "status": "active",
                "intent": "order",
                "identifier": [{"system": "urn:test", "value": "SR-REQ-0001"}],
                "subject": {"reference": f"Patient/{patient['id']}"},
                "requester": {"reference": f"Organization/{org['id']}"},
            }
            assert (await call("PUT", f"/fhir/ServiceRequest/{case}", sr))[0] == 201
            status, answer = await call("POST", "/cht/follow-up", report)
            assert (status, answer["status"]) == (201, "recorded"), answer
            status, again = await call("POST", "/cht/follow-up", report)  # CHT may resend
            assert (status, again["status"]) == (200, "duplicate"), again

            _, encounters = await call("GET", f"/fhir/Encounter?based-on=ServiceRequest/{case}")
            assert encounters["total"] == 1
            encounter = encounters["entry"][0]["resource"]
            assert encounter["subject"]["reference"] == f"Patient/{patient['id']}"
            _, observations = await call("GET", f"/fhir/Observation?encounter=Encounter/{encounter['id']}")
            codes = {
                c.get("code")
                for e in observations.get("entry", [])
                for c in (e["resource"].get("valueCodeableConcept") or {}).get("coding", [])
            }
            assert "returning-to-care" in codes, codes
            _, tasks = await call("GET", f"/fhir/Task?based-on=ServiceRequest/{case}")
            task = tasks["entry"][0]["resource"]
            assert task["status"] == "completed" and task["for"]["reference"] == f"Patient/{patient['id']}"
