"""Errors carry a code from the ltfu error CodeSystem (details.coding) that a client can translate;
the English text (details.text, diagnostics) stays as it was."""

from __future__ import annotations

import pytest

from ltfu.fhir.error_codes import BY_ISSUE_TYPE, ERROR_CODES, ERROR_SYSTEM
from ltfu.fhir.outcome import FhirError, Issue, information
from tests.conftest import Api


def _codings(body: dict) -> list[tuple[str, str]]:
    assert body["resourceType"] == "OperationOutcome"
    out = []
    for issue in body["issue"]:
        (coding,) = issue["details"]["coding"]
        assert coding["system"] == ERROR_SYSTEM
        assert coding["display"] == ERROR_CODES[coding["code"]]
        assert issue["details"]["text"] == issue["diagnostics"]  # the English text is unchanged
        out.append((issue["code"], coding["code"]))
    return out


def test_every_issue_type_has_a_default_code() -> None:
    assert set(BY_ISSUE_TYPE.values()) <= set(ERROR_CODES)
    issue = Issue("not-found", "Patient/x is not known").to_fhir()
    assert issue["details"]["coding"][0]["code"] == "not-found"
    assert (
        Issue("conflict", "x", kind="version-conflict").to_fhir()["details"]["coding"][0]["code"] == "version-conflict"
    )
    assert Issue("invalid", "x", kind="no-such-code").to_fhir()["details"]["coding"][0]["code"] == "invalid"
    assert "coding" not in information("All OK")["issue"][0]["details"]  # information is not an error
    assert FhirError.of("forbidden", "no", status=403).outcome()["issue"][0]["details"]["coding"][0]["code"] == (
        "forbidden"
    )


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (b"{not json", {"content-type": "application/fhir+json"}, "invalid-json"),
        (b"[1, 2]", {"content-type": "application/fhir+json"}, "not-json-object"),
        (b'{"id": "x"}', {"content-type": "application/fhir+json"}, "resource-type-missing"),
        (b'{"resourceType": "Organization"}', {"content-type": "application/fhir+json"}, "wrong-resource-type"),
        (
            b'{"resourceType": "Patient", "gender": "yes"}',
            {"content-type": "application/fhir+json"},
            "invalid-resource",
        ),
        (b'{"resourceType": "Patient"}', {"content-type": "text/csv"}, "unsupported-media-type"),
    ],
)
def test_fhir_route_errors_are_coded(server: Api, body: bytes, headers: dict, expected: str) -> None:
    r = server.post("/fhir/Patient", data=body, headers=headers)
    assert 400 <= r.status_code < 500
    assert expected in [code for _, code in _codings(r.json())]


def test_not_found_search_and_version_conflict_are_coded(server: Api) -> None:
    r = server.get("/fhir/Patient/does-not-exist")
    assert r.status_code == 404 and _codings(r.json()) == [("not-found", "not-found")]
    r = server.get("/fhir/Patient", params={"birthdate": "not-a-date"})
    assert r.status_code == 400 and _codings(r.json())[0][1] == "invalid-search"
    created = server.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female"})
    assert created.status_code == 201
    pid = created.json()["id"]
    r = server.put(
        f"/fhir/Patient/{pid}",
        json={"resourceType": "Patient", "id": pid, "gender": "male"},
        headers={"If-Match": 'W/"7"'},
    )
    assert r.status_code == 412 and _codings(r.json())[0][1] == "version-conflict"


def test_authentication_is_coded(server: Api) -> None:
    import requests

    r = requests.get(server.url + "/fhir/Patient", timeout=10)
    assert r.status_code == 401 and _codings(r.json()) == [("login", "authentication-required")]


@pytest.mark.parametrize("prefix", ["/mediator", ""])
def test_poc_route_errors_are_coded(server: Api, prefix: str) -> None:
    r = server.post(prefix + "/patient", json={"identifier": [{"system": "cht", "value": "x"}], "gender": "nope"})
    assert r.status_code == 400
    body = r.json()
    assert body["valid"] is False and body["message"]  # the PoC's shape, unchanged
    assert _codings(body["outcome"])
