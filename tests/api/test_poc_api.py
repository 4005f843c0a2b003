"""The reference PoC's /mediator API: same paths, bodies and status codes (and without the prefix)."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import Api

CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}


def endpoint(**over: object) -> dict:
    return {"connectionType": CONN, "identifier": [{"system": "official", "value": "test-endpoint"}],
            "status": "active", "address": "https://callback.example/cb",
            "payloadType": [{"text": "application/json"}], **over}


def poc_patient(cht_id: str, **over: object) -> dict:
    return {"identifier": [{"system": "cht", "value": cht_id}], "name": [{"family": "Doe", "given": ["John"]}],
            "gender": "male", "birthDate": "2000-01-01", **over}


@pytest.mark.parametrize("prefix", ["/mediator", ""])
def test_status(server: Api, prefix: str) -> None:
    r = server.get(prefix + "/")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "success" and body["osuptime"] > 0 and body["processuptime"] >= 0


@pytest.mark.parametrize("prefix", ["/mediator", ""])
def test_endpoint_organization_patient(server: Api, prefix: str) -> None:
    r = server.post(prefix + "/endpoint", json=endpoint())
    assert r.status_code == 201 and r.json()["resourceType"] == "Endpoint"
    ep_id = r.json()["id"]
    assert server.get("/fhir/Endpoint/?identifier=test-endpoint").json()["total"] == 1

    org = {"identifier": [{"system": "official", "value": "test-org"}], "name": ["athena"],
           "endpoint": [{"reference": f"Endpoint/{ep_id}"}]}
    r = server.post(prefix + "/organization", json=org)
    assert r.status_code == 201 and r.json()["name"] == "athena"  # stored as valid R4 (a string)
    assert server.get("/fhir/Organization/?identifier=test-org").json()["total"] == 1

    cht_id = str(uuid.uuid4())
    first = server.post(prefix + "/patient", json=poc_patient(cht_id))
    assert first.status_code == 201
    again = server.post(prefix + "/patient", json=poc_patient(cht_id))
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert server.get(f"/fhir/Patient/?identifier={cht_id}").json()["total"] == 1


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/endpoint", endpoint(status="wrong_status"), "Endpoint.status"),
        ("/endpoint", endpoint(connectionType={**CONN, "code": "INVALID_CODE"}), "connectionType"),
        ("/endpoint", endpoint(identifier=[]), "identifier"),
        ("/organization", {"endpoint": [{"reference": "Endpoint/x"}]}, "name"),
        ("/organization", {"name": "a", "endpoint": []}, "endpoint"),
        ("/organization", {"name": "a", "endpoint": [{"reference": "Location/1"}]}, "Endpoint/"),
        ("/organization", {"name": "a", "endpoint": [{"reference": "Endpoint/missing"}]}, "does not exist"),
        ("/patient", poc_patient(str(uuid.uuid4()), birthDate="INVALID_BIRTH_DATE"), "birthDate"),
        ("/patient", poc_patient("not-a-uuid"), "GUID"),
        ("/patient", poc_patient(str(uuid.uuid4()), gender=None), "gender"),
        ("/patient", poc_patient(str(uuid.uuid4()), name=[{"family": "Doe", "given": ["A", "B"]}]), "given"),
        ("/patient", poc_patient(str(uuid.uuid4()), identifier=[]), "identifier"),
        ("/encounter", {"identifier": [], "status": "finished"}, "identifier"),
    ],
)
def test_invalid_input_is_400_with_message(server: Api, path: str, body: dict, fragment: str) -> None:
    r = server.post("/mediator" + path, json=body)
    assert r.status_code == 400, r.text
    out = r.json()
    assert out["valid"] is False and fragment in out["message"]
    assert out["outcome"]["resourceType"] == "OperationOutcome"


def test_encounter_from_cht_outbound_is_stored_as_valid_r4(server: Api) -> None:
    cht_id = str(uuid.uuid4())
    pid = server.post("/mediator/patient", json=poc_patient(cht_id)).json()["id"]
    # exactly what the PoC's CHT outbound mapping sends
    enc = {"resourceType": "Encounter", "identifier": [{"system": "cht", "use": "official", "value": cht_id}],
           "status": "finished", "class": "outpatient", "type": [{"text": "Community health worker visit"}],
           "subject": {"reference": f"Patient/?identifier={cht_id}"},
           "participant": [{"type": [{"text": "Community health worker"}]}]}
    r = server.post("/mediator/encounter", json=enc)
    assert r.status_code == 201, r.text
    stored = r.json()
    assert stored["class"]["system"] == "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    assert stored["class"]["code"] == "AMB"
    assert stored["subject"]["reference"] == f"Patient/{pid}"
    found = server.get(f"/fhir/Encounter?identifier={cht_id}").json()
    assert found["total"] == 1
    unknown = server.post("/mediator/encounter", json={**enc, "subject": {"reference": "Patient/?identifier=nope"}})
    assert unknown.status_code == 404
