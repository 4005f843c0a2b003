"""Each resource of a request is validated once (route or service, not both; each Bundle entry once)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ltfu.fhir import validation
from tests.conftest import Api

MRN = "http://example.org/mrn"


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The resource type of every ``validate`` call (each call walks its resource once)."""
    seen: list[str] = []

    class Counting(validation._Walk):
        def object(self, node, spec, path, depth):  # type: ignore[no-untyped-def]
            if depth == 0:
                seen.append(path)
            return super().object(node, spec, path, depth)

    monkeypatch.setattr(validation, "_Walk", Counting)
    yield seen


def patient(mrn: str) -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": MRN, "value": mrn}], "gender": "female",
            "name": [{"family": "Wanjiru"}], "birthDate": "1990-02-13"}


def test_create_and_update_validate_once(server: Api, walks: list[str]) -> None:
    r = server.post("/fhir/Patient", json=patient("m1"))
    assert r.status_code == 201 and walks == ["Patient"]
    walks.clear()
    r = server.put(f"/fhir/Patient/{r.json()['id']}", json={**r.json(), "gender": "male"})
    assert r.status_code == 200 and walks == ["Patient"]
    walks.clear()
    r = server.put(f"/fhir/Patient?identifier={MRN}|m1", json={**patient("m1"), "gender": "other"})
    assert r.status_code == 200 and walks == ["Patient"]


def test_each_bundle_entry_is_validated_once(server: Api, walks: list[str]) -> None:
    org = server.post("/fhir/Organization", json={"resourceType": "Organization", "name": "Clinic"}).json()
    walks.clear()
    entries = []
    for i in range(3):
        full = f"urn:uuid:{uuid.uuid4()}"
        entries.append({"fullUrl": full, "resource": patient(f"b{i}"),
                        "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={MRN}|b{i}"}})
        entries.append({"request": {"method": "POST", "url": "ServiceRequest"}, "resource": {
            "resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": {"reference": full},
            "requester": {"reference": f"Organization/{org['id']}"}}})
    r = server.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert r.status_code == 200, r.text[:300]
    assert sorted(walks) == ["Patient"] * 3 + ["ServiceRequest"] * 3


def test_poc_route_validates_once(server: Api, walks: list[str]) -> None:
    body = {"identifier": [{"system": "cht", "value": str(uuid.uuid4())}], "name": [{"family": "Doe", "given": ["J"]}],
            "gender": "male", "birthDate": "2000-01-01"}
    r = server.post("/mediator/patient", json=body)
    assert r.status_code == 201 and walks == ["Patient"]
