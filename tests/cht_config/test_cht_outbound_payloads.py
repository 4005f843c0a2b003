"""Outbound push of the harness's reports: app_settings.outbound applied with CHT's semantics
(node's vm.runInNewContext, fresh context with only `doc`; see cht-config/scripts/outbound-map.js)
gives the payloads of docs/cht-contract.md; `ltfu.cht.outbound_mapping`, when present, agrees.

The payloads are left in the harness export folder as `<doc>.<outbound key>.payload.json`, ready to
be posted to a running mediator's /cht/... routes."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, Run, run_tool

CONTRACT = REPO / "docs" / "cht-contract.md"
AREA = {"_id": "area_kondele", "type": "health_center", "name": "Kondele CHW area", "parent": {
    "_id": "facility_kisumu", "type": "district_hospital", "name": "Kisumu County Hospital"}}


def _contract_section(title: str) -> str:
    text = CONTRACT.read_text()
    start = text.index(title)
    nxt = text.find("\n`/cht/", start + len(title))
    return text[start : nxt if nxt != -1 else len(text)]


def contract_follow_up_fields() -> tuple[set[str], dict[str, set[str]]]:
    names: set[str] = set()
    enums: dict[str, set[str]] = {}
    for line in _contract_section("`/cht/follow-up`").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        row = re.findall(r"`([^`]+)`", cells[0])
        names.update(row)
        values = re.findall(r"`([^`]+)`", cells[1])
        if len(row) == 1 and values and "\\|" in cells[1]:
            enums[row[0]] = set(values)
    return names, enums


def contract_patient_fields() -> set[str]:
    line = next(ln for ln in CONTRACT.read_text().splitlines() if ln.startswith("`/cht/patient`"))
    section = line + _contract_section("`/cht/patient`")[len(line) :].split("\n\n")[0]
    return set(re.findall(r"`([a-z_]+)`", section)) - {"cht"}


@pytest.fixture(scope="session")
def mapped(built_project: Path, harness_run: tuple[Run, Path]) -> dict[str, dict]:
    run, export_dir = harness_run
    assert run.returncode == 0, run.output[-4000:]
    # Docs that must not be pushed: the mediator's own request/cancel records (loop hazard), a CHW.
    extra = {
        "request-record": {
            "_id": "rec-1",
            "type": "data_record",
            "form": "INTEROP_FOLLOW_UP",
            "errors": [],
            "tasks": [],
            "fields": {"patient_uuid": "patient_amina", "case_ref": "SR-1001"},
            "reported_date": 1,
        },
        "cancel-record": {
            "_id": "rec-2",
            "type": "data_record",
            "form": "INTEROP_FOLLOW_UP_CANCEL",
            "fields": {"patient_uuid": "patient_amina", "case_ref": "SR-1001"},
            "reported_date": 2,
        },
        "person-chw": {"_id": "chw_jane", "type": "person", "role": "chw", "name": "Jane Achieng"},
        # what the users API stores for a CHW (no role, recorded on 5.2), hydrated: a person in a CHW area
        "person-chw-users-api": {"_id": "chw-2", "type": "person", "name": "Mary Atieno", "phone": "0712345678",
                                 "patient_id": "11111", "reported_date": 3, "parent": AREA},
        # a patient as cht-datasource's POST /api/v1/person stores it (5.x), in a household
        "person-patient-datasource": {"_id": "patient-2", "type": "contact", "contact_type": "person",
                                      "name": "Datasource Person", "reported_date": 4, "parent": {
                                          "_id": "household-2", "type": "contact", "contact_type": "clinic",
                                          "name": "Household 2", "parent": AREA}},
        # a report of the reference PoC's own app form, its name upper-cased
        "poc-report-upper": {"_id": "rep-9", "type": "data_record", "content_type": "xml",
                             "form": "INTEROP_FOLLOW_UP", "reported_date": 5,
                             "fields": {"inputs": {"contact": {"_id": "patient_amina"}}}},
    }
    for name, doc in extra.items():
        (export_dir / f"{name}.json").write_text(json.dumps(doc))
    docs = sorted(p for p in export_dir.glob("*.json") if not p.name.endswith(".payload.json"))
    res = run_tool(
        ["node", str(built_project / "scripts" / "outbound-map.js"), str(built_project / "app_settings.json")]
        + [str(p) for p in docs],
        cwd=built_project,
        timeout=60,
    )
    assert res.returncode == 0, res.output
    result = {Path(k).stem: v for k, v in json.loads(res.output).items()}
    for stem, per_key in result.items():
        for key, entry in per_key.items():
            if "payload" in entry:
                (export_dir / f"{stem}.{key}.payload.json").write_text(json.dumps(entry["payload"], indent=2))
    return result


def test_only_follow_up_reports_and_patients_are_pushed(mapped: dict[str, dict]) -> None:
    for stem, per_key in mapped.items():
        relevant = {key for key, entry in per_key.items() if entry["relevant"]}
        if stem.startswith("follow-up-"):
            assert relevant == {"ltfu_follow_up"}, stem
        elif stem.startswith("person-patient"):
            assert relevant == {"ltfu_patient"}, stem
        elif stem.startswith("poc-report"):
            assert relevant == {"poc_encounter"}, stem
        else:
            assert relevant == set(), stem
        for key in relevant:
            assert "error" not in per_key[key], per_key[key]


def test_follow_up_payloads_follow_the_contract(mapped: dict[str, dict]) -> None:
    names, enums = contract_follow_up_fields()
    assert {"report_id", "case_ref", "outcome", "method", "attempt_no"} <= names  # parsed the table
    outcomes_seen = set()
    for stem, per_key in mapped.items():
        if not stem.startswith("follow-up-"):
            continue
        entry = per_key["ltfu_follow_up"]
        assert entry["url"].endswith("/cht/follow-up")
        payload = entry["payload"]
        assert set(payload) <= names, set(payload) - names
        for required in (
            "report_id",
            "reported_date",
            "case_ref",
            "patient_uuid",
            "patient_id",
            "chw_id",
            "chw_name",
            "attempt_no",
            "method",
            "contacted",
            "outcome",
        ):
            assert required in payload, (stem, required)
        assert payload["case_ref"] == "SR-1001"
        assert payload["patient_uuid"] == "patient_amina"
        assert payload["chw_id"] == "chw_jane"
        assert isinstance(payload["attempt_no"], int) and payload["attempt_no"] >= 1
        assert isinstance(payload["reported_date"], int)
        for field, allowed in enums.items():
            if field in payload:
                assert payload[field] in allowed, (stem, field, payload[field])
        if payload["outcome"] == "returning_to_care":
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", payload["next_appointment_date"])
        if payload["outcome"] == "deceased":
            assert payload["death_date"] == "2025-02-27"
        assert all(v != "" for v in payload.values()), "empty answers are left out"
        outcomes_seen.add(payload["outcome"])
    assert outcomes_seen == enums["outcome"]


def test_patient_payload_follows_the_contract(mapped: dict[str, dict]) -> None:
    payload = mapped["person-patient"]["ltfu_patient"]["payload"]
    assert set(payload) <= contract_patient_fields(), set(payload) - contract_patient_fields()
    assert payload["_id"] == "patient_amina"
    assert payload["parent"] == {
        "_id": "household_otieno",
        "parent": {"_id": "area_kondele", "parent": {"_id": "facility_kisumu"}},
    }


def test_python_outbound_mapping_agrees(
    mapped: dict[str, dict], built_project: Path, harness_run: tuple[Run, Path]
) -> None:
    module = importlib.import_module("ltfu.cht.outbound_mapping")
    _, export_dir = harness_run
    outbound = json.loads((built_project / "app_settings.json").read_text())["outbound"]
    checked = 0
    for stem, per_key in mapped.items():
        doc = json.loads((export_dir / f"{stem}.json").read_text())
        for key, entry in per_key.items():
            if "payload" in entry:
                assert module.map_outbound(doc, outbound[key]["mapping"]) == entry["payload"], (stem, key)
                checked += 1
    assert checked >= 9


def test_outbound_map_script_is_valid_node() -> None:
    proc = subprocess.run(
        ["node", "--check", str(REPO / "cht-config" / "scripts" / "outbound-map.js")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_the_running_mediator_accepts_the_payloads(mapped: dict[str, dict], tmp_path: Path) -> None:
    """What CHT would push after the harness's reports, posted to a real mediator on loopback."""
    import requests

    from ltfu.api.app import create_app
    from ltfu.settings import Settings
    from tests.support.server import ServerThread

    auth = ("admin", "cht-config-test-1")
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'm.db'}", admin_password=auth[1], workers=False))
    with ServerThread(app) as srv:
        base = srv.url
        person = mapped["person-patient"]["ltfu_patient"]["payload"]
        assert requests.post(base + "/cht/patient", json=person, auth=auth, timeout=30).status_code == 201
        org = requests.post(base + "/fhir/Organization", auth=auth, timeout=30,
                            json={"resourceType": "Organization", "name": "Kisumu"}).json()
        # the case the harness's task came from: ServiceRequest id = case_ref
        sr = {"resourceType": "ServiceRequest", "id": "SR-1001", "status": "active", "intent": "order",
              "identifier": [{"system": "urn:test", "value": "SR-1001"}],
              "subject": {"reference": f"Patient/{person['_id']}"},
              "requester": {"reference": f"Organization/{org['id']}"}}
        assert requests.put(base + "/fhir/ServiceRequest/SR-1001", json=sr, auth=auth, timeout=30).status_code == 201
        posted = 0
        for stem in sorted(mapped):
            entry = mapped[stem].get("ltfu_follow_up")
            if not entry or "payload" not in entry:
                continue
            r = requests.post(base + "/cht/follow-up", json=entry["payload"], auth=auth, timeout=30)
            assert r.status_code == 201, (stem, r.text)
            posted += 1
        assert posted >= 9
        encounters = requests.get(base + "/fhir/Encounter", params={"based-on": "ServiceRequest/SR-1001"},
                                  auth=auth, timeout=30).json()
        assert encounters["total"] == posted
        task = requests.get(base + "/fhir/Task", auth=auth, timeout=30).json()["entry"][0]["resource"]
        assert task["status"] == "completed"
