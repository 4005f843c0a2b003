"""The emulated CHW report is the report the real ``ltfu_follow_up`` form produces, and the emulator
runs on the real ``cht-config/`` settings.

* Against cht-conf-test-harness: for the same request, patient, attempt, time and answers, the
  emulator's report equals the one Enketo (cht-core 4.11) saved in the harness
  (``fixtures/harness_reports.json``), value for value.
* Against the XForm and CSV sources: inputs, top-level calculates, questions, relevance, required,
  date constraints and choices of ``cht-config/forms/app/ltfu_follow_up.xml`` /
  ``xlsforms/app/ltfu_follow_up/choices.csv`` are the emulator's.
* End to end: the emulator loaded from ``cht-config/`` (outbound pointed at a receiver with
  ``mediator_url``) pushes each simulated report through ``ltfu.cht.outbound_mapping`` to
  ``/cht/follow-up``; every payload has exactly the fields of ``docs/cht-contract.md``.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import random
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ltfu.cht.config_build import build_app_settings
from ltfu.emulators.cht import ChtEmulatorConfig
from ltfu.emulators.cht import follow_up_form as form
from ltfu.emulators.cht.app_settings import load_app_settings
from ltfu.emulators.cht.chw import ChwSimulation
from ltfu.emulators.cht.config import ChwSimConfig, default_cht_config_dir
from ltfu.emulators.cht.store import DocStore
from tests.emulators.cht.emu_support import (
    CHT_CONFIG,
    CRED_KEY,
    CRED_SECRET,
    FIXTURES,
    make_config,
    receiver,
    seed_area,
    serve,
    wait_for,
)

NAIROBI = ZoneInfo("Africa/Nairobi")
XF = "{http://www.w3.org/2002/xforms}"
HARNESS = json.loads((FIXTURES / "harness_reports.json").read_text())["reports"]
CONTRACT = Path(__file__).resolve().parents[3] / "docs" / "cht-contract.md"

# harness.defaults.json and the spec's requestRecord()
PATIENT = {
    "_id": "patient_amina",
    "type": "person",
    "name": "Amina Otieno",
    "role": "patient",
    "sex": "female",
    "phone": "+254700000002",
    "patient_id": "28469",
    "parent": {"_id": "household_otieno", "parent": {"_id": "area_kondele", "parent": {"_id": "facility_kisumu"}}},
}
CHW = {
    "_id": "chw_jane",
    "type": "person",
    "name": "Jane Achieng",
    "role": "chw",
    "phone": "+254700000001",
    "parent": {"_id": "area_kondele", "parent": {"_id": "facility_kisumu"}},
}


def local_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=NAIROBI).timestamp() * 1000)


def harness_request(record_id: str) -> dict:
    return {
        "_id": record_id,
        "type": "data_record",
        "form": "INTEROP_FOLLOW_UP",
        "reported_date": local_ms("2025-03-03T08:00:00"),
        "fields": {
            "patient_uuid": "patient_amina",
            "case_ref": "SR-1001",
            "request_id": "KE-ART-1001",
            "facility_id": "13939",
            "facility_name": "Kisumu County Hospital",
            "reason": "HIV.H.DE2",
            "reason_text": "Missed ART refill",
            "missed_appointment_date": local_ms("2025-02-24T00:00:00"),
            "priority": "routine",
        },
    }


def simulation(**chw: object) -> ChwSimulation:
    return ChwSimulation(DocStore(None), lambda: None, ChwSimConfig(**chw), NAIROBI)  # type: ignore[arg-type]


def masked(fields: dict) -> dict:
    out = json.loads(json.dumps(fields))
    out["meta"]["instanceID"] = "uuid:*"
    return out


def key_paths(value: object, prefix: str = "") -> set[str]:
    if not isinstance(value, dict):
        return set()
    paths = set()
    for k, v in value.items():
        path = f"{prefix}/{k}"
        paths.add(path)
        paths |= key_paths(v, path)
    return paths


def xform() -> ET.Element:
    return ET.parse(CHT_CONFIG / "forms" / "app" / "ltfu_follow_up.xml").getroot()


# --------------------------------------------------------------------------- against the harness


def test_fixture_covers_every_outcome() -> None:
    outcomes = {r["fields"]["follow_up"]["outcome"] for r in HARNESS.values()}
    assert outcomes == set(form.CHOICES["outcome"])


@pytest.mark.parametrize("name", sorted(HARNESS))
def test_report_equals_the_harness_report(name: str) -> None:
    real = HARNESS[name]
    fields = real["fields"]
    answers = {k: v for k, v in fields["follow_up"].items() if k in form.QUESTION_NAMES}
    now = datetime.fromtimestamp(real["reported_date"] / 1000, NAIROBI)
    report = simulation().build_report(
        harness_request(fields["inputs"]["source_id"]),
        PATIENT,
        CHW,
        int(fields["inputs"]["task_attempt_no"]),
        answers["outcome"],
        answers=answers,
        now=now,
    )
    for key in ("form", "type", "content_type", "hidden_fields", "reported_date"):
        assert report[key] == real[key], key
    assert masked(report["fields"]) == masked(fields)
    # CHT stores the submitting user's contact, minified
    assert report["contact"] == {
        "_id": "chw_jane",
        "parent": {"_id": "area_kondele", "parent": {"_id": "facility_kisumu"}},
    }
    assert report["from"] == "+254700000001"


def test_simulated_reports_have_the_harness_shape() -> None:
    """Without given answers: same key tree as the harness report of the same answer pattern."""
    sim = simulation()
    today = date(2025, 3, 3)
    seen: set[str] = set()
    for i in range(300):
        outcome = form.CHOICES["outcome"][i % 8]
        attempt = 1 + (i % 3)
        rng = random.Random(i)
        answers = sim.simulated_answers(outcome, form.suggested_method(attempt), rng, today)
        report = sim.build_report(
            harness_request(f"rec-{i}"),
            PATIENT,
            CHW,
            attempt,
            outcome,
            answers=answers,
            now=datetime(2025, 3, 3, 10, tzinfo=NAIROBI),
        )
        fields = report["fields"]
        follow_up = fields["follow_up"]
        assert all(isinstance(v, str) for v in follow_up.values())
        # the page is a fixed point of the form rules (what Enketo would save again)
        again = {k: v for k, v in follow_up.items() if k in form.QUESTION_NAMES}
        assert form.follow_up_page(again, fields["inputs"], fields["case_ref"], today) == follow_up
        # same keys as a harness report with the same relevant questions
        pattern = tuple(sorted(k for k in follow_up))
        for real in HARNESS.values():
            if tuple(sorted(real["fields"]["follow_up"])) == pattern:
                assert key_paths(fields) == key_paths(real["fields"])
                seen.add(outcome)
    # the harness answers patterns the simulation also produces cover most outcomes
    assert len(seen) >= 6, seen


def test_form_rules_refuse_what_enketo_refuses() -> None:
    inputs = form.task_inputs(harness_request("r"), PATIENT, 1, NAIROBI)
    today = date(2025, 3, 3)
    ok = {
        "method": "phone",
        "contacted": "yes",
        "info_source": "client",
        "outcome": "refused",
        "refusal_reason": "stigma",
    }
    page = form.follow_up_page({**ok, "transfer_facility": "ignored", "notes": None}, inputs, "SR-1", today)
    assert "transfer_facility" not in page and page["notes"] == ""
    bad = [
        ({**ok, "refusal_reason": ""}, "required"),
        ({**ok, "method": "pigeon"}, "not one of"),
        ({**ok, "contacted": "no", "info_source": ""}, "only not_located"),
        ({**ok, "outcome": "returning_to_care", "next_appointment_date": "2025-03-02"}, "past"),
        ({**ok, "outcome": "moved", "new_area": "X", "moved_date": "2025-03-04"}, "future"),
        ({**ok, "outcome": "deceased", "death_date": "03/01/2025"}, "not a date"),
        ({**ok, "favourite_colour": "blue"}, "not questions"),
    ]
    for answers, message in bad:
        with pytest.raises(form.FormError, match=message):
            form.follow_up_page(answers, inputs, "SR-1", today)


def test_task_inputs_follow_tasks_js() -> None:
    record = harness_request("r")
    assert form.task_inputs(record, PATIENT, 1, NAIROBI)["due_date"] == "2025-03-17"
    record["fields"]["due_date"] = local_ms("2025-03-10T00:00:00")
    inputs = form.task_inputs(record, PATIENT, 2, NAIROBI)
    assert inputs["due_date"] == "2025-03-10" and inputs["suggested_method"] == "home_visit"
    assert inputs["missed_appointment_date"] == "2025-02-24" and inputs["task_attempt_no"] == "2"
    bare = {"_id": "r2", "reported_date": local_ms("2025-03-03T08:00:00"), "fields": {"case_ref": "SR-2"}}
    inputs = form.task_inputs(bare, {"_id": "p"}, 1, NAIROBI)
    assert inputs["request_id"] == inputs["reason"] == inputs["contact"]["patient_id"] == ""


# ----------------------------------------------------------------------- against the XForm sources


def test_xform_instance_and_binds_are_the_emulator_s() -> None:
    root = xform()
    data = root.find(f".//{XF}instance/{XF}data")
    assert data is not None and data.get("id") == "ltfu_follow_up"

    def tree(el: ET.Element, prefix: str = "") -> set[str]:
        out = set()
        for child in el:
            path = f"{prefix}/{child.tag.removeprefix(XF)}"
            out.add(path)
            out |= tree(child, path)
        return out

    instance = tree(data)
    report = simulation().build_report(
        harness_request("r"),
        PATIENT,
        CHW,
        1,
        "moved",
        answers={
            "method": "phone",
            "contacted": "yes",
            "info_source": "other",
            "info_source_other": "N",
            "outcome": "moved",
            "moved_date": "2025-03-01",
            "new_area": "Kisumu",
        },
        now=datetime(2025, 3, 3, 10, tzinfo=NAIROBI),
    )
    emitted = key_paths(report["fields"])
    # Enketo adds meta/deprecatedID; the rest of the report is the instance minus irrelevant questions
    assert emitted - instance == {"/meta/deprecatedID"}
    irrelevant = {f"/follow_up/{q.name}" for q in form.QUESTIONS} - emitted
    assert instance - emitted == irrelevant
    assert report["hidden_fields"] == ["request_doc_id", "meta"]
    assert {"/request_doc_id", "/meta"} == {
        p for p in instance if data.find("." + p.replace("/", f"/{XF}")).get("tag") == "hidden"
    }

    binds = {b.get("nodeset"): b for b in root.iter(f"{XF}bind")}
    for q in form.QUESTIONS:
        bind = binds[f"/data/follow_up/{q.name}"]
        assert (bind.get("required") == "true()") == q.required, q.name
        relevant = bind.get("relevant")
        if q.relevant_if is None:
            assert relevant is None, q.name
        else:
            m = re.fullmatch(r"\s*/data/follow_up/(\w+)\s*=\s*'(\w+)'\s*", relevant or "")
            assert m and (m.group(1), m.group(2)) == q.relevant_if, (q.name, relevant)
        constraint = bind.get("constraint") or ""
        if q.kind.startswith("date"):
            assert bind.get("type") == "date"
            assert (">=" in constraint) == (q.kind == "date>=today") and ("<=" in constraint) == (
                q.kind == "date<=today"
            )
        else:
            assert bind.get("type") == "string" and not constraint, q.name
    # the top-level calculates the report carries
    calcs = {k.removeprefix("/data/"): b.get("calculate") for k, b in binds.items() if k.count("/") == 2}
    assert calcs["patient_uuid"] == "../inputs/contact/_id"
    assert calcs["attempt_no"] == "../inputs/task_attempt_no"
    assert calcs["request_doc_id"] == "../inputs/source_id"
    assert calcs["case_ref"].startswith("coalesce(../inputs/task_case_ref,")


def test_choices_are_the_csv_s() -> None:
    rows = list(csv.DictReader((CHT_CONFIG / "xlsforms" / "app" / "ltfu_follow_up" / "choices.csv").open()))
    lists: dict[str, list[str]] = {}
    for row in rows:
        lists.setdefault(row["list_name"], []).append(row["name"])
    survey = list(csv.DictReader((CHT_CONFIG / "xlsforms" / "app" / "ltfu_follow_up" / "survey.csv").open()))
    for row in survey:
        if row["type"].startswith("select_one "):
            assert tuple(lists[row["type"].split()[1]]) == form.CHOICES[row["name"]], row["name"]


# ------------------------------------------------------------------- settings from cht-config/


def test_settings_via_build_app_settings_equal_mediator_url(tmp_path: Path) -> None:
    assert default_cht_config_dir() == CHT_CONFIG
    url, key = "http://127.0.0.1:8080/", "ltfu-key"
    build_app_settings(CHT_CONFIG, url, key, out_dir=tmp_path / "cht-config")
    from_files = load_app_settings(ChtEmulatorConfig(app_settings_path=tmp_path / "cht-config"))
    in_memory = load_app_settings(
        ChtEmulatorConfig(app_settings_path=CHT_CONFIG, mediator_url=url, mediator_credential_key=key)
    )
    assert from_files == in_memory
    assert set(in_memory["forms"]) == {"INTEROP_FOLLOW_UP", "INTEROP_FOLLOW_UP_CANCEL"}
    for entry in in_memory["outbound"].values():
        assert entry["destination"]["base_url"] == "http://127.0.0.1:8080"
        assert entry["destination"]["auth"] == {"type": "basic", "username": "cht", "password_key": key}
    # the work tree is untouched
    untouched = load_app_settings(ChtEmulatorConfig(app_settings_path=CHT_CONFIG))
    assert untouched["outbound"]["ltfu_follow_up"]["destination"]["base_url"] == "http://openhim-core:5001"


# ------------------------------------------------------------------------- end to end, outbound


def contract_follow_up() -> tuple[set[str], dict[str, set[str]]]:
    text = CONTRACT.read_text()
    section = text[text.index("`/cht/follow-up`") :]
    names: set[str] = set()
    enums: dict[str, set[str]] = {}
    for line in section.splitlines()[1:]:
        if line.startswith("`/cht/") or line.startswith("#"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        row = re.findall(r"`([^`]+)`", cells[0])
        names.update(row)
        if len(row) == 1 and "\\|" in cells[1]:
            enums[row[0]] = set(re.findall(r"`([^`]+)`", cells[1]))
    return names, enums


ALWAYS = {
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
}
DETAILS = {
    "info_source",
    "next_appointment_date",
    "refusal_reason",
    "transfer_facility",
    "new_area",
    "moved_date",
    "death_date",
    "death_place",
    "not_located_reason",
    "notes",
}


async def test_outbound_payloads_of_simulated_reports_are_the_contract(tmp_path: Path) -> None:
    names, enums = contract_follow_up()
    assert names == ALWAYS | DETAILS, names ^ (ALWAYS | DETAILS)
    assert enums["outcome"] == set(form.CHOICES["outcome"]) and enums["method"] == set(form.CHOICES["method"])
    async with (
        receiver() as rec,
        serve(make_config(tmp_path, rec.url + "/", cht_config=True, chw={"enabled": False})) as run,
    ):
        # the real settings are loaded, with the receiver as mediator
        outbound = run.emu.settings().outbound
        assert {"ltfu_patient", "ltfu_follow_up"} <= set(outbound)
        assert outbound["ltfu_follow_up"]["destination"]["base_url"] == rec.url
        ids = await seed_area(run)
        await wait_for(lambda: (run.emu.store.peek("medic", ids["patient"]) or {}).get("patient_id"))
        patient = run.emu.store.peek("medic", ids["patient"])
        submitted: list[dict] = []
        cases = [(o, None) for o in form.CHOICES["outcome"]]
        # a CHW who answers everything, so that every optional field is seen once
        cases.append(
            (
                "deceased",
                {
                    "method": "home_visit",
                    "contacted": "yes",
                    "info_source": "other",
                    "info_source_other": "Neighbour",
                    "outcome": "deceased",
                    "death_date": "2025-01-02",
                    "death_place": "home",
                    "notes": "Buried at home",
                },
            )
        )
        cases.append(
            (
                "moved",
                {
                    "method": "home_visit",
                    "contacted": "yes",
                    "info_source": "family_partner",
                    "outcome": "moved",
                    "moved_date": "2025-01-02",
                    "new_area": "Mombasa",
                },
            )
        )
        for i, (outcome, answers) in enumerate(cases):
            case_ref = f"SR-{i}"
            status, body, _ = await run.call(
                "POST",
                "/api/v2/records",
                json_body={
                    "_meta": {"form": "interop_follow_up"},
                    "patient_uuid": ids["patient"],
                    "case_ref": case_ref,
                    "request_id": f"KE-{i}",
                    "reason": "HIV.H.DE2",
                    "missed_appointment_date": "2025-01-28",
                    "due_date": "2025-02-11",
                },
            )
            assert status == 200, body
            request = {"case_ref": case_ref, "outcome": outcome, **({"answers": answers} if answers else {})}
            status, report, _ = await run.call("POST", "/_emulator/chw/submit", json_body=request)
            assert status == 201, report
            submitted.append(report)
        # a second attempt after an unsuccessful one
        status, report, _ = await run.call("POST", "/_emulator/chw/submit", json_body={"case_ref": "SR-3"})
        assert status == 201 and report["fields"]["attempt_no"] == "2"
        assert report["fields"]["inputs"]["suggested_method"] == "home_visit"
        submitted.append(report)
        # answers the form would refuse: 400, nothing saved, the follow-up stays open
        status, body, _ = await run.call(
            "POST",
            "/api/v2/records",
            json_body={"_meta": {"form": "interop_follow_up"}, "patient_uuid": ids["patient"], "case_ref": "SR-X"},
        )
        assert status == 200, body
        bad = {"method": "phone", "contacted": "yes", "info_source": "client", "outcome": "moved"}
        status, body, _ = await run.call(
            "POST", "/_emulator/chw/submit", json_body={"case_ref": "SR-X", "answers": bad}
        )
        assert status == 400 and "new_area" in body["reason"], body
        case = next(c for c in run.emu.chw.cases() if c["case_ref"] == "SR-X")
        assert case["state"] == "open" and case["attempt"] == 0

        await wait_for(lambda: len(rec.bodies("/cht/follow-up")) == len(submitted))
        payloads = {p["report_id"]: p for p in rec.bodies("/cht/follow-up")}
        expected_auth = "Basic " + base64.b64encode(f"cht:{CRED_SECRET}".encode()).decode()
        assert {r["headers"]["Authorization"] for r in rec.requests if r["path"] == "/cht/follow-up"} == {
            expected_auth
        }
        assert run.emu.settings().outbound["ltfu_follow_up"]["destination"]["auth"]["password_key"] == CRED_KEY

        union: set[str] = set()
        for report in submitted:
            payload = payloads[report["_id"]]
            f = report["fields"]
            answered = {k for k in DETAILS if f["follow_up"].get(k)}
            assert set(payload) == ALWAYS | answered, (f["follow_up"], payload)
            assert payload["case_ref"] == f["case_ref"] and payload["patient_uuid"] == ids["patient"]
            assert payload["patient_id"] == patient["patient_id"]
            assert payload["chw_id"] == ids["chw_contact"] and payload["chw_name"] == "Wanjiru CHW"
            assert payload["attempt_no"] == int(f["attempt_no"]) and payload["reported_date"] == report["reported_date"]
            for k in answered | {"method", "contacted", "outcome"}:
                assert payload[k] == f["follow_up"][k]
            for k, allowed in enums.items():
                if k in payload:
                    assert payload[k] in allowed, (k, payload[k])
            union |= set(payload)
        assert union == names


def test_compiled_app_settings_load_like_the_project(tmp_path: Path) -> None:
    """What ``cht compile-app-settings`` writes gives the emulator the same settings as the
    project's ``app_settings/`` sources (the emulator needs no node at run time)."""
    cht = CHT_CONFIG / "node_modules" / ".bin" / "cht"
    if not cht.exists():
        pytest.fail("cht-config/node_modules is missing: run scripts/setup-cht-tooling.sh first", pytrace=False)
    project = tmp_path / "cht-config"
    shutil.copytree(CHT_CONFIG, project, ignore=shutil.ignore_patterns("node_modules", "app_settings.json"))
    (project / "node_modules").symlink_to(CHT_CONFIG / "node_modules", target_is_directory=True)
    build_app_settings(project, "http://127.0.0.1:9/", CRED_KEY)
    proc = subprocess.run(
        [str(cht), "--no-check", "compile-app-settings"],
        cwd=project,
        env={**os.environ, "TZ": "Africa/Nairobi", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    compiled = load_app_settings(ChtEmulatorConfig(app_settings_path=project / "app_settings.json"))
    sources = load_app_settings(ChtEmulatorConfig(app_settings_path=project))
    for key in sources:
        assert compiled[key] == sources[key], key
    # compiled extras the emulator does not use
    assert set(compiled) - set(sources) <= {"tasks", "contact_summary", "purge"}
    assert compiled["outbound"]["ltfu_follow_up"]["destination"]["base_url"] == "http://127.0.0.1:9"
