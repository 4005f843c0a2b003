"""The reference PoC's own end-to-end flow (its `ltfu-flow.spec.ts`), against the mediator and the CHT
emulator running our cht-config: PoC-shaped requests and a PoC-shaped CHW report must still work."""

from __future__ import annotations

import uuid
from pathlib import Path

import requests

from tests.e2e.harness import ADMIN, CONN, Loop, wait_until


def test_poc_ltfu_flow(tmp_path: Path) -> None:
    with Loop(tmp_path, f"sqlite:///{tmp_path / 'poc.db'}") as loop:
        loop.cht_api("POST", "/_emulator/chw/pause")  # the PoC's CHW reports by hand below
        assert loop.fhir("GET", "/mediator/").json()["status"] == "success"

        endpoint = {"connectionType": CONN, "identifier": [{"system": "official", "value": "test-endpoint"}],
                    "status": "active", "address": "https://interop.example/callback",
                    "payloadType": [{"text": "application/json"}]}
        r = loop.fhir("POST", "/mediator/endpoint", json=endpoint)
        assert r.status_code == 201
        assert loop.fhir("GET", "/fhir/Endpoint/?identifier=test-endpoint").json()["total"] == 1
        org = {"identifier": [{"system": "official", "value": "test-org"}], "name": ["athena"],
               "endpoint": [{"reference": f"Endpoint/{r.json()['id']}"}]}
        assert loop.fhir("POST", "/mediator/organization", json=org).status_code == 201
        assert loop.fhir("GET", "/fhir/Organization/?identifier=test-org").json()["total"] == 1

        place = loop.cht_api("POST", "/api/v1/places", json={"name": "CHP Branch Two", "type": "district_hospital"})
        assert place.status_code == 200 and place.json()["ok"] is True
        place_id = place.json()["id"]
        user = loop.cht_api("POST", "/api/v2/users", json={
            "password": "Dakar1234", "username": "maria", "type": "chw",
            "place": {"name": "CHP Branch One", "type": "district_hospital", "parent": place_id},
            "contact": {"name": "Maria Blob", "phone": "+2868917046"}})
        assert user.status_code == 200, user.text
        contact_id = user.json()[0]["contact"]["id"] if isinstance(user.json(), list) else user.json()["contact"]["id"]
        chw = ("maria", "Dakar1234")

        person = requests.post(loop.cht_url + "/api/v1/people", auth=chw, timeout=30, json={
            "name": "John Test", "phone": "+2548277217095", "date_of_birth": "1980-06-06", "sex": "male",
            "type": "person", "role": "patient", "contact_type": "patient", "place": place_id})
        assert person.status_code == 200 and person.json()["ok"] is True
        patient_id = person.json()["id"]
        wait_until(lambda: loop.fhir("GET", f"/fhir/Patient/?identifier={patient_id}").json().get("total") == 1,
                   20, "the CHT person as a FHIR Patient")

        sr = {"intent": "order", "status": "active", "subject": {"reference": f"Patient/{patient_id}"},
              "requester": {"reference": "Organization/test-org"}}
        r = loop.fhir("POST", "/mediator/service-request", json=sr)
        assert r.status_code == 201, r.text
        encounter_url = r.json()["criteria"]

        report = {"docs": [{
            "form": "interop_follow_up", "type": "data_record", "_id": str(uuid.uuid4()),
            "_rev": f"1-{uuid.uuid4().hex}", "from": "", "hidden_fields": ["meta"],
            "contact": {"name": "Maria Blob", "phone": "+2868917046", "_id": contact_id,
                        "parent": {"_id": place_id}},
            "fields": {"inputs": {"source": "task", "is_covid_vaccine_referral": "", "contact": {"_id": patient_id}},
                       "vaccination_details": {"interop_follow_up": "yes"},
                       "meta": {"instanceID": f"uuid:{uuid.uuid4()}"}, "contact_type": "1patient",
                       "place": place_id}}], "new_edits": False}
        submitted = requests.post(loop.cht_url + "/medic/_bulk_docs", auth=chw, json=report, timeout=30)
        assert submitted.status_code == 201, submitted.text

        found = wait_until(lambda: (loop.fhir("GET", "/fhir/" + encounter_url).json().get("total") == 1)
                           and loop.fhir("GET", "/fhir/" + encounter_url).json(), 10, "the Encounter")
        enc = found["entry"][0]["resource"]
        assert enc["class"]["code"] == "AMB"  # the PoC's bare "outpatient", stored as valid R4
        assert enc["subject"]["reference"].startswith("Patient/")
        task = loop.fhir("GET", "/fhir/Task").json()["entry"][0]["resource"]
        assert task["status"] == "in-progress"  # the visit is linked to the open case
        assert requests.get(loop.mediator_url + "/fhir/" + encounter_url, timeout=10).status_code == 401
        assert requests.get(loop.mediator_url + "/fhir/" + encounter_url, auth=ADMIN, timeout=10).ok
