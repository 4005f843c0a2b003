"""CHT's push made a Patient for a person before intake linked a facility's Patient to that person: the loop
keeps one Patient per person. The pushed twin is retired (``active: false``, ``link`` ``replaced-by`` the
facility's Patient); a report naming only the person lands on the case; later pushes update the survivor."""

from __future__ import annotations

import asyncio
import uuid

import requests

from ltfu.services import intake
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.api.test_roles import _clients
from tests.conftest import Api
from tests.matching.test_cht_person_gone import _request
from tests.matching.test_review import _org


def _link(settings: Settings, patient: str, person: str) -> None:
    async def run() -> None:
        db = Database(settings)
        try:
            async with unit_of_work(db) as uow:
                await intake.link_patient(uow, patient, person)
        finally:
            await db.dispose()

    asyncio.run(run())


def test_a_pushed_twin_is_retired_when_the_facility_patient_is_linked(server: Api, settings: Settings) -> None:
    org = _org(server, "a")
    _clients(settings)
    push = requests.Session()
    push.auth = ("push", "cht-push-pw-1")
    person = str(uuid.uuid4())
    doc = {"_id": person, "type": "person", "name": "Achieng Otieno", "sex": "female", "date_of_birth": "1990-02-03",
           "phone": "+254711000111", "parent": {"_id": "hh-1"}}
    pushed = push.post(f"{server.url}/cht/patient", json=doc)
    assert pushed.status_code == 201, pushed.text
    twin = pushed.json()["patient"].split("/")[1]
    facility = server.post("/fhir/Patient", json={
        "resourceType": "Patient", "gender": "female", "birthDate": "1990-02-03",
        "name": [{"family": "Otieno", "given": ["Achieng"]}],
        "identifier": [{"system": "https://facility.example/mrn", "value": "MRN-5"}]}).json()["id"]
    case = _request(server, org, facility, "twin-1")

    _link(settings, facility, person)  # a certain match (or a review decision) in the CHT worker
    retired = server.get(f"/fhir/Patient/{twin}").json()
    assert retired["active"] is False
    assert retired["link"] == [{"other": {"reference": f"Patient/{facility}"}, "type": "replaced-by"}]
    version = retired["meta"]["versionId"]
    _link(settings, facility, person)  # again (a retried intake): nothing more
    assert server.get(f"/fhir/Patient/{twin}").json()["meta"]["versionId"] == version

    # a report that names only the person (no case_ref, as the PoC's) finds the one case: was 409 (two Patients)
    report = {"report_id": "rep-1", "patient_uuid": person, "method": "phone", "outcome": "refused", "attempt_no": 1}
    landed = push.post(f"{server.url}/cht/follow-up", json=report)
    assert landed.status_code == 201, landed.text
    assert landed.json()["case"] == case

    # CHT pushes the person again (a new phone): the survivor gets it, the retired twin stays as it was
    again = push.post(f"{server.url}/cht/patient", json={**doc, "phone": "+254711000222"})
    assert again.status_code == 200, again.text
    assert again.json()["patient"] == f"Patient/{facility}"
    survivor = server.get(f"/fhir/Patient/{facility}").json()
    assert [t["value"] for t in survivor["telecom"]] == ["+254711000222"]
    assert "MRN-5" in [i["value"] for i in survivor["identifier"]]
    assert server.get(f"/fhir/Patient/{twin}").json()["meta"]["versionId"] == version


def test_another_facilitys_own_patient_for_the_person_is_not_retired(server: Api, settings: Settings) -> None:
    org_a, org_b = _org(server, "a"), _org(server, "b")
    person = str(uuid.uuid4())
    cht = "https://ltfu.example.org/fhir/NamingSystem/cht-contact-id"
    b_patient = server.post("/fhir/Patient", json={
        "resourceType": "Patient", "gender": "male", "identifier": [{"system": cht, "value": person}]}).json()["id"]
    _request(server, org_b, b_patient, "b-1")  # B's case: B's Patient is in the loop
    a_patient = server.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "male"}).json()["id"]
    _request(server, org_a, a_patient, "a-1")
    _link(settings, a_patient, person)
    assert server.get(f"/fhir/Patient/{b_patient}").json().get("active") is not False
