"""Roles: ``cht`` may use /cht only (and /cht only it, besides admin); a report's case_ref and patient_uuid
must agree; ``gateway`` acts for the mapped OpenHIM client; ``ltfu clients add/map-openhim`` set them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from ltfu.cli import app as cli
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.conftest import Api

CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}


def _facility(server: Api, x: str) -> tuple[str, str]:
    server.put(
        f"/fhir/Endpoint/ep-{x}",
        json={
            "resourceType": "Endpoint",
            "id": f"ep-{x}",
            "status": "active",
            "connectionType": CONN,
            "payloadType": [{"text": "Task"}],
            "address": f"http://127.0.0.1:9/{x}",
        },
    )
    server.put(
        f"/fhir/Organization/org-{x}",
        json={
            "resourceType": "Organization",
            "id": f"org-{x}",
            "name": x,
            "endpoint": [{"reference": f"Endpoint/ep-{x}"}],
        },
    )
    cht_id = f"0000000{x}-0000-4000-8000-000000000000"
    patient = server.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "gender": "male", "identifier": [{"system": "cht", "value": cht_id}]},
    ).json()["id"]
    sr = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "identifier": [{"system": "urn:req", "value": f"R-{x}"}],
        "subject": {"reference": f"Patient/{patient}"},
        "requester": {"reference": f"Organization/org-{x}"},
    }
    return server.post("/fhir/ServiceRequest", json=sr).json()["id"], cht_id


def _clients(settings: Settings) -> None:
    async def run() -> None:
        db = Database(settings)
        async with unit_of_work(db) as uow:
            await uow.clients.upsert("push", "cht-push-pw-1", role="cht", organization_id=None)
            await uow.clients.upsert("fa", "facility-a-pw-1", role="facility", organization_id="org-a")
            await uow.clients.upsert("gw", "gateway-pw-123", role="gateway", organization_id=None)
            await uow.clients.upsert("m", "matcher-pw-123", role="matcher", organization_id=None)
            await uow.openhim_clients.put("cht-push", "cht", None)
        await db.dispose()

    asyncio.run(run())


def _report(case: str, report_id: str, **over: object) -> dict:
    return {"report_id": report_id, "case_ref": case, "method": "phone", "outcome": "refused", "attempt_no": 1, **over}


def test_cht_uses_cht_routes_only_and_only_cht_posts_outcomes(server: Api, settings: Settings) -> None:
    case_a, cht_a = _facility(server, "a")
    case_b, cht_b = _facility(server, "b")
    _clients(settings)
    push, fa, gw, matcher = (requests.Session() for _ in range(4))
    push.auth, fa.auth, gw.auth, matcher.auth = (
        ("push", "cht-push-pw-1"),
        ("fa", "facility-a-pw-1"),
        ("gw", "gateway-pw-123"),
        ("m", "matcher-pw-123"),
    )
    url = server.url
    assert push.post(f"{url}/cht/follow-up", json=_report(case_a, "r1", patient_uuid=cht_a)).status_code == 201
    for method, path in (
        ("GET", "/fhir/Patient"),
        ("GET", f"/fhir/ServiceRequest/{case_a}"),
        ("GET", "/ui/cases"),
        ("GET", "/mediator/"),
        ("POST", "/mediator/service-request"),
        ("GET", "/admin/stats"),
        ("GET", "/metrics"),
        ("POST", "/fhir/"),
    ):
        assert push.request(method, url + path, json={}).status_code == 403, path
    # the PoC's CHT visit report is CHT's route too (not a facility's)
    enc = {
        "resourceType": "Encounter",
        "identifier": [{"system": "cht", "use": "official", "value": cht_a}],
        "status": "finished",
        "class": "outpatient",
        "type": [{"text": "Community health worker visit"}],
        "subject": {"reference": f"Patient/?identifier={cht_a}"},
        "participant": [{"type": [{"text": "Community health worker"}]}],
    }
    assert push.post(f"{url}/mediator/encounter", json=enc).status_code == 201
    assert fa.post(f"{url}/mediator/encounter", json=enc).status_code == 403
    assert fa.post(f"{url}/encounter", json=enc).status_code == 403
    # no other role posts CHW outcomes or CHT people
    for s in (fa, matcher):
        assert s.post(f"{url}/cht/follow-up", json=_report(case_b, "forged", outcome="deceased")).status_code == 403
        assert s.post(f"{url}/cht/patient", json={"_id": cht_b, "type": "person", "name": "x"}).status_code == 403
        assert s.get(f"{url}/fhir/Patient").status_code == (200 if s is fa else 403)
    assert (
        server.get(f"/fhir/Task?based-on=ServiceRequest/{case_b}").json()["entry"][0]["resource"]["status"]
        == "requested"
    )
    # a gateway acts for the OpenHIM client it names: CHT's push through OpenHIM
    ok = gw.post(
        f"{url}/cht/follow-up", json=_report(case_a, "r2", attempt_no=2), headers={"X-OpenHIM-ClientID": "cht-push"}
    )
    assert ok.status_code == 201
    assert gw.get(f"{url}/fhir/Patient", headers={"X-OpenHIM-ClientID": "cht-push"}).status_code == 403
    assert gw.post(f"{url}/cht/follow-up", json=_report(case_a, "r3")).status_code == 403


def test_case_ref_and_patient_uuid_must_agree(server: Api, settings: Settings) -> None:
    case_a, cht_a = _facility(server, "a")
    case_b, cht_b = _facility(server, "b")
    _clients(settings)
    push = requests.Session()
    push.auth = ("push", "cht-push-pw-1")
    crossed = push.post(
        f"{server.url}/cht/follow-up", json=_report(case_b, "x1", patient_uuid=cht_a, outcome="deceased")
    )
    assert crossed.status_code == 409
    assert (
        server.get(f"/fhir/Task?based-on=ServiceRequest/{case_b}").json()["entry"][0]["resource"]["status"]
        == "requested"
    )
    assert push.post(f"{server.url}/cht/follow-up", json=_report(case_b, "x2", patient_uuid=cht_b)).status_code == 201


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("LTFU_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LTFU_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    return Settings()


def test_cli_roles_and_openhim_map(cli_env: Settings) -> None:
    run = CliRunner().invoke
    for args in (["--cht"], ["--gateway"], ["--matcher"], ["--admin"], ["--facility", "org-a"]):
        result = run(cli, ["clients", "add", f"c{args[0]}", "--password", "long-enough-1", *args])
        assert result.exit_code == 0, result.output
    assert run(cli, ["clients", "add", "two", "--password", "long-enough-1", "--cht", "--admin"]).exit_code == 2
    assert run(cli, ["clients", "add", "none", "--password", "long-enough-1"]).exit_code == 2
    assert run(cli, ["clients", "map-openhim", "emr-a", "org-a"]).exit_code == 0
    assert run(cli, ["clients", "map-openhim", "push", "--cht"]).exit_code == 0
    assert run(cli, ["clients", "map-openhim", "both", "org-a", "--cht"]).exit_code == 2

    async def read() -> tuple[dict[str, str], dict[str, tuple[str, str | None]]]:
        db = Database(cli_env)
        async with unit_of_work(db) as uow:
            roles = {c.name: c.role for c in await uow.clients.list()}
            mapped = {m.client_id: (m.role, m.organization_id) for m in await uow.openhim_clients.list()}
        await db.dispose()
        return roles, mapped

    roles, mapped = asyncio.run(read())
    assert roles == {
        "c--cht": "cht",
        "c--gateway": "gateway",
        "c--matcher": "matcher",
        "c--admin": "admin",
        "c--facility": "facility",
    }
    assert mapped == {"emr-a": ("facility", "org-a"), "push": ("cht", None)}
    assert run(cli, ["clients", "map-openhim", "push", "--remove"]).exit_code == 0
    assert run(cli, ["clients", "map-openhim", "push", "--remove"]).exit_code == 1
    listed = run(cli, ["clients", "list"])
    assert "gateway" in listed.output and "emr-a" in listed.output


def test_a_facility_cannot_take_another_facilitys_identifier_or_endpoint(server: Api, settings: Settings) -> None:
    _facility(server, "a")
    _facility(server, "b")
    _clients(settings)
    fa = requests.Session()
    fa.auth = ("fa", "facility-a-pw-1")
    url = server.url + "/fhir"
    org = fa.get(f"{url}/Organization/org-a").json()
    stolen = {**org, "identifier": [{"system": "urn:mfl", "value": "MFL-B"}]}
    assert fa.put(f"{url}/Organization/org-a", json=stolen).status_code == 403
    taken = {**org, "endpoint": [*org["endpoint"], {"reference": "Endpoint/ep-b"}]}
    assert fa.put(f"{url}/Organization/org-a", json=taken).status_code == 403
    renamed = {**org, "name": "Facility A, renamed"}
    assert fa.put(f"{url}/Organization/org-a", json=renamed).status_code == 200
    shadow = {"resourceType": "Subscription", "status": "requested", "reason": "x",
              "criteria": "Task?requester=Organization/org-b",
              "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/s", "payload": "application/fhir+json"}}
    assert fa.post(f"{url}/Subscription", json=shadow).status_code == 403
    assert fa.post(f"{url}/Organization", json={"resourceType": "Organization", "name": "x"}).status_code == 403
    assert server.get("/fhir/Organization/org-a").json()["name"] == "Facility A, renamed"
    assert server.get("/fhir/Organization", params={"endpoint": "Endpoint/ep-b"}).json()["total"] == 1
