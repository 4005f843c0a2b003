"""A CHW's follow-up report that names a CHT person who was deleted or merged away in CHT after the case was
sent (the CHW worked offline on the old task, or CHT's push was late): it is recorded on the case the task
belonged to — never lost (a 4xx CHT would retry forever), never on another case or patient — and audited on
the case's review item. While the case still waits for a person, an attempt keeps it ``awaiting-match``, so
the reviewer's decision still sends the case to the new person. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import requests

from ltfu.settings import Settings
from tests.api.test_roles import _clients
from tests.conftest import Api
from tests.matching.test_cht_person_gone import _business, _request, _revoke, _task
from tests.matching.test_pushed_twin import _link
from tests.matching.test_review import _org

CONTACT = "https://ltfu.example.org/fhir/NamingSystem/cht-contact-id"


def _push() -> requests.Session:
    push = requests.Session()
    push.auth = ("push", "cht-push-pw-1")
    return push


def _person(pid: str, name: str = "Achieng Otieno") -> dict[str, Any]:
    return {"_id": pid, "type": "person", "name": name, "sex": "female", "date_of_birth": "1990-02-03",
            "phone": "+254711000111", "parent": {"_id": "hh-1"}}


def _report(report_id: str, person: str, case: str | None, outcome: str = "not_located", attempt: int = 1,
            ) -> dict[str, Any]:
    body = {"report_id": report_id, "patient_uuid": person, "method": "home_visit", "outcome": outcome,
            "attempt_no": attempt, "chw_id": "chw-1"}
    if case:
        body["case_ref"] = case
    return body


def _review_item(server: Api, case: str) -> dict[str, Any]:
    [item] = [i for i in server.get("/admin/review", params={"status": "all"}).json()["items"] if i["case_id"] == case]
    return dict(server.get(f"/admin/review/{item['review_id']}").json())


def _setup(server: Api, settings: Settings, *, twin: bool) -> tuple[str, str, str, str]:
    """(org, case, facility Patient, gone person): the facility's Patient linked to a CHT person that CHT
    then deleted (``twin``: CHT had pushed the person first, so a retired pushed twin still carries its id)."""
    org = _org(server, "a")
    _clients(settings)
    push = _push()
    gone = str(uuid.uuid4())
    if twin:
        assert push.post(f"{server.url}/cht/patient", json=_person(gone)).status_code == 201
    facility = server.post("/fhir/Patient", json={
        "resourceType": "Patient", "gender": "female", "birthDate": "1990-02-03",
        "name": [{"family": "Otieno", "given": ["Achieng"]}],
        "identifier": [{"system": "https://facility.example/mrn", "value": "MRN-5"}]}).json()["id"]
    case = _request(server, org, facility, "gone-1")
    _link(settings, facility, gone)
    r = push.post(f"{server.url}/cht/patient", json={"_id": gone, "_deleted": True})
    assert r.json() == {"status": "deleted", "cases_to_review": 1}, r.text
    assert _business(_task(server, case)) == "awaiting-match"
    return org, case, facility, gone


def test_a_report_for_the_deleted_person_lands_on_its_case_and_keeps_it_awaiting_a_match(
    server: Api, settings: Settings
) -> None:
    _, case, facility, gone = _setup(server, settings, twin=True)
    push = _push()
    # the CHW's offline attempt on the old task arrives after the person went: was 409 (the pushed twin still
    # carries the id), which CHT retries forever
    first = push.post(f"{server.url}/cht/follow-up", json=_report("rep-1", gone, case))
    assert first.status_code == 201, first.text
    assert first.json()["case"] == case
    encounter = server.get(f"/fhir/{first.json()['encounter']}").json()
    assert encounter["subject"]["reference"] == f"Patient/{facility}"
    assert gone in [i["value"] for i in encounter["identifier"]]  # the person the CHW's task named
    task = _task(server, case)
    # the attempt counts, and the case still waits for its new person (the decision re-sends it)
    assert (task["status"], _business(task)) == ("in-progress", "awaiting-match")
    item = _review_item(server, case)
    assert item["status"] == "open"
    assert [(d["action"], d["person"]) for d in item["decisions"]] == [
        ("cht-person-gone", gone), ("report-old-link", gone)]

    # a replay changes nothing
    again = push.post(f"{server.url}/cht/follow-up", json=_report("rep-1", gone, case))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"

    # the reviewer links another person; a later report on the old task still lands on the case
    survivor = str(uuid.uuid4())
    assert push.post(f"{server.url}/cht/patient", json=_person(survivor, "Achieng A. Otieno")).status_code == 201
    done = server.post(f"/admin/review/{item['review_id']}", json={"action": "link", "person": survivor})
    assert done.status_code == 200, done.text
    later = push.post(f"{server.url}/cht/follow-up", json=_report("rep-2", gone, case, "returning_to_care", 2))
    assert later.status_code == 201, later.text
    assert later.json()["case"] == case
    assert _task(server, case)["status"] == "completed"


def test_a_report_naming_only_the_deleted_person_finds_the_case_it_was_linked_to(
    server: Api, settings: Settings
) -> None:
    _, case, _facility, gone = _setup(server, settings, twin=False)
    landed = _push().post(f"{server.url}/cht/follow-up", json=_report("rep-1", gone, None))
    assert landed.status_code == 201, landed.text  # was 404: no Patient carries the id any more
    assert landed.json()["case"] == case


def test_a_report_for_the_deleted_person_never_lands_on_another_case(server: Api, settings: Settings) -> None:
    org, case, _facility, gone = _setup(server, settings, twin=False)
    other_patient = server.post("/fhir/Patient", json={
        "resourceType": "Patient", "gender": "male", "name": [{"family": "Kamau", "given": ["John"]}],
        "identifier": [{"system": CONTACT, "value": str(uuid.uuid4())}]}).json()["id"]
    other = _request(server, org, other_patient, "other-1")
    wrong = _push().post(f"{server.url}/cht/follow-up", json=_report("rep-9", gone, other))
    assert wrong.status_code == 409, wrong.text  # case_ref names John's case, patient_uuid Achieng's old person
    assert wrong.json()["resourceType"] == "OperationOutcome"
    assert _task(server, other)["status"] == "requested"
    assert _task(server, case)["status"] == "requested"


def test_a_final_report_while_awaiting_a_match_closes_the_case_and_its_review_item(
    server: Api, settings: Settings
) -> None:
    """The CHW found the patient on the old task (back in care): the case is done, so its review item no longer
    asks for a decision (was left open, to expire days later with nothing to decide)."""
    _, case, _facility, gone = _setup(server, settings, twin=False)
    done = _push().post(f"{server.url}/cht/follow-up", json=_report("rep-1", gone, case, "returning_to_care"))
    assert done.status_code == 201, done.text
    assert _task(server, case)["status"] == "completed"
    item = _review_item(server, case)
    assert item["status"] == "closed"
    assert [d["action"] for d in item["decisions"]] == ["cht-person-gone", "report-old-link", "case-closed"]
    assert case not in [i["case_id"] for i in server.get("/admin/review", params={"status": "open"}).json()["items"]]
    late = server.post(f"/admin/review/{item['review_id']}", json={"action": "defer"})
    assert late.status_code == 409  # nothing left to decide


def test_a_case_revoked_while_in_review_closes_its_review_item(server: Api, settings: Settings) -> None:
    _, case, _facility, _gone = _setup(server, settings, twin=False)
    _revoke(server, case)
    item = _review_item(server, case)
    assert (item["status"], item["decisions"][-1]["action"]) == ("closed", "case-closed")
