"""Review queue: flag a CHT duplicate (audited, held back from auto-linking, listed for a CHT admin), manual
decisions surviving re-matching, and the catchment admin API. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import requests

from ltfu.domain.matching import Person, match
from ltfu.services import intake
from ltfu.services.cht_index import index_docs
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.conftest import Api
from tests.matching.test_match_api import GRACE, PEOPLE, PLACES, _grades, _params
from tests.matching.test_review import _case, _org

MATCHER = ("m", "matcher-pw-123")
FACILITY_A = ("fa", "facility-a-pw-1")


def _world(server: Api, settings: Settings) -> dict[str, Any]:
    """Facilities A and B, a case of each in review (Grace Otieno without a birth date: two Graces)."""
    org_a, org_b = _org(server, "a"), _org(server, "b")
    case_a, patient_a = _case(server, org_a, "ra")
    case_b, patient_b = _case(server, org_b, "rb")

    async def setup() -> dict[str, Any]:
        db = Database(settings)
        out: dict[str, Any] = {"org_a": org_a, "org_b": org_b, "patient_a": patient_a, "patient_b": patient_b}
        async with unit_of_work(db) as uow:
            await index_docs(uow, PLACES + PEOPLE)
            await uow.clients.upsert("m", MATCHER[1], role="matcher", organization_id=None)
            await uow.clients.upsert("fa", FACILITY_A[1], role="facility", organization_id=org_a)
            for key, case, org, patient in (("a", case_a, org_a, patient_a), ("b", case_b, org_b, patient_b)):
                sr = (await uow.resources.read("ServiceRequest", case)).resource
                body = (await uow.resources.read("Patient", patient)).resource
                decision = await intake.decide(uow, case, sr, body, org)
                assert decision.action == "review"
                out[f"case_{key}"] = case
                out[f"review_{key}"] = await intake.open_review(uow, case, org, patient, decision)
        await db.dispose()
        return out

    return asyncio.run(setup())


def _decide_again(settings: Settings, case: str, patient: str, org: str) -> intake.Decision:
    async def run() -> intake.Decision:
        db = Database(settings)
        async with unit_of_work(db) as uow:
            sr = (await uow.resources.read("ServiceRequest", case)).resource
            body = (await uow.resources.read("Patient", patient)).resource
            decision = await intake.decide(uow, case, sr, body, org)
        await db.dispose()
        return decision

    return asyncio.run(run())


def test_flag_duplicate_is_audited_listed_and_holds_matching_back(server: Api, settings: Settings) -> None:
    w = _world(server, settings)
    item = f"/admin/review/{w['review_a']}"
    assert _grades(server.post("/fhir/Patient/$match", json=_params(GRACE)).json())[0] == ("grace", "certain")

    for bad in ({"persons": ["grace"]}, {"persons": "grace"}, {"persons": ["grace", "grace"]}, {}):
        r = requests.post(server.url + item, json={"action": "flag-duplicate", **bad}, auth=MATCHER, timeout=30)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    unknown = requests.post(
        server.url + item, json={"action": "flag-duplicate", "persons": ["grace", "ghost-42"]}, auth=MATCHER, timeout=30
    )
    assert unknown.status_code == 422 and "ghost-42" in unknown.text
    flag = {"action": "flag-duplicate", "persons": ["grace", "grace2"], "note": "same mother, two households"}
    refused = requests.post(server.url + item, json=flag, auth=FACILITY_A, timeout=30)
    assert refused.status_code == 403  # its own item: it may read it, not decide

    done = requests.post(server.url + item, json=flag, auth=MATCHER, timeout=30)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "open"  # the case still needs a link or create decision
    assert [(d["action"], d["actor"]) for d in done.json()["decisions"]] == [("flag-duplicate", "m")]
    again = requests.post(server.url + item, json=flag, auth=MATCHER, timeout=30)
    assert again.status_code == 200

    groups = requests.get(server.url + "/admin/review/duplicates", auth=MATCHER, timeout=30).json()["groups"]
    assert len(groups) == 1  # flagging the same persons twice: one group, two audited decisions
    group = groups[0]
    assert (group["flagged_by"], group["review_id"], group["note"], group["active"]) == (
        "m",
        w["review_a"],
        "same mother, two households",
        True,
    )
    assert [(p["id"], p["name"]) for p in group["persons"]] == [
        ("grace", "Grace Akinyi Otieno"),
        ("grace2", "Grace Atieno Otieno"),
    ]
    assert group["persons"][0]["lineage"]["unit"] == {"id": "cu1", "name": "Kanyawegi CU"}
    facility = requests.get(server.url + "/admin/review/duplicates", auth=FACILITY_A, timeout=30)
    assert facility.status_code == 403 and facility.json()["resourceType"] == "OperationOutcome"

    # matching: the exact Grace is no longer auto-linked, her flagged twin record is proposed beside her
    held = server.post("/fhir/Patient/$match", json=_params(GRACE)).json()
    assert ("grace", "possible") in _grades(held)
    assert not [g for g in _grades(held) if g[1] == "certain"]

    # a decision is still possible on the item, and it is the one that counts
    linked = requests.post(server.url + item, json={"action": "link", "person": "grace"}, auth=MATCHER, timeout=30)
    assert linked.status_code == 200 and linked.json()["status"] == "linked"

    # the CHT admin merged them in CHT: resolved here, matching is free again
    resolve = f"/admin/review/duplicates/{group['group']}/resolve"
    resolved = requests.post(server.url + resolve, auth=MATCHER, timeout=30)
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
    assert resolved.json()["resolved_by"] == "m"
    assert server.get("/admin/review/duplicates").json()["groups"] == []
    assert len(server.get("/admin/review/duplicates?status=all").json()["groups"]) == 1
    assert _grades(server.post("/fhir/Patient/$match", json=_params(GRACE)).json())[0] == ("grace", "certain")
    assert server.post("/admin/review/duplicates/nope/resolve").status_code == 404
    assert server.get("/admin/review/duplicates?status=bogus").status_code == 400


def test_a_group_stops_holding_back_once_cht_merged_it(server: Api, settings: Settings) -> None:
    """CHT's merge deletes the merged-away contact; the sync drops it from the index: the group is inactive."""
    w = _world(server, settings)
    r = requests.post(
        server.url + f"/admin/review/{w['review_a']}",
        json={"action": "flag-duplicate", "persons": ["grace", "grace2"]},
        auth=MATCHER,
        timeout=30,
    )
    assert r.status_code == 200
    assert "certain" not in {g for _, g in _grades(server.post("/fhir/Patient/$match", json=_params(GRACE)).json())}

    async def merged_in_cht() -> None:
        db = Database(settings)
        async with unit_of_work(db) as uow:
            await uow.cht_index.remove_persons(["grace2"])
        await db.dispose()

    asyncio.run(merged_in_cht())
    assert _grades(server.post("/fhir/Patient/$match", json=_params(GRACE)).json())[0] == ("grace", "certain")
    group = server.get("/admin/review/duplicates").json()["groups"][0]
    assert group["active"] is False
    assert group["persons"][1] == {"id": "grace2", "indexed": False}


def _flag(server: Api, review: str, persons: list[str]) -> None:
    r = requests.post(server.url + f"/admin/review/{review}", json={"action": "flag-duplicate", "persons": persons},
                      auth=MATCHER, timeout=30)
    assert r.status_code == 200, r.text


def _open_groups(server: Api) -> list[tuple[str, list[str]]]:
    groups = requests.get(server.url + "/admin/review/duplicates", auth=MATCHER, timeout=30).json()["groups"]
    return [(g["group"], [p["id"] for p in g["persons"]]) for g in groups]


def _members(settings: Settings) -> dict[str, frozenset[str]]:
    async def run() -> dict[str, frozenset[str]]:
        db = Database(settings)
        try:
            async with unit_of_work(db) as uow:
                return await uow.duplicates.open_members()
        finally:
            await db.dispose()

    return asyncio.run(run())


def test_overlapping_duplicate_flags_make_one_group(server: Api, settings: Settings) -> None:
    """A~B and B~C flagged separately are one human recorded three times: one group (A, B, C), listed once,
    resolved once, every member holding the others back in matching. Was two groups sharing B."""
    w = _world(server, settings)
    _flag(server, w["review_a"], ["grace", "grace2"])
    [(first, persons)] = _open_groups(server)
    assert persons == ["grace", "grace2"]
    _flag(server, w["review_b"], ["grace2", "dup1"])
    assert _open_groups(server) == [(first, ["dup1", "grace", "grace2"])]
    assert _members(settings)["grace"] == {"grace2", "dup1"}
    # two separate groups bridged by a third flag: one group of all of them
    _flag(server, w["review_b"], ["peter", "other0"])
    _flag(server, w["review_b"], ["other0", "dup1"])
    assert _open_groups(server) == [(first, ["dup1", "grace", "grace2", "other0", "peter"])]
    # flagging persons all already in the group: no new group, the decision still audited
    _flag(server, w["review_a"], ["peter", "grace"])
    assert [g for g, _ in _open_groups(server)] == [first]
    every = requests.get(server.url + "/admin/review/duplicates?status=all", auth=MATCHER, timeout=30).json()["groups"]
    merged = [g for g in every if g["group"] != first]
    assert [(g["status"], g["merged_into"]) for g in merged] == [("merged", first)]
    assert merged[0]["persons"][0]["id"] in ("other0", "peter")  # what was flagged then, kept for the audit
    decisions = server.get(f"/admin/review/{w['review_a']}").json()["decisions"]
    assert [d["action"] for d in decisions] == ["flag-duplicate", "flag-duplicate"]

    done = requests.post(server.url + f"/admin/review/duplicates/{first}/resolve", auth=MATCHER, timeout=30)
    assert done.status_code == 200 and done.json()["status"] == "resolved"
    assert _open_groups(server) == [] and _members(settings) == {}


def test_flagged_persons_are_never_certain_in_the_matcher() -> None:
    incoming = Person(given=("GRACE",), family=("OTIENO",), sex="F", identifiers=(("upi", "U1"),))
    twin = Person(id="p1", given=("GRACE",), family=("OTIENO",), sex="F", identifiers=(("upi", "U1"),))
    other = Person(id="p2", given=("GRACE",), family=("OTIENO",), sex="F")
    assert match(incoming, [twin, other], lambda _t: None).candidates[0].grade == "certain"
    held = match(incoming, [twin, other], lambda _t: None, duplicates={"p1"})
    assert held.candidates[0].grade == "possible" and "cht-duplicate" in held.reasons
    assert "cht-duplicate" in held.candidates[0].reasons


def test_manual_decisions_survive_re_matching(server: Api, settings: Settings) -> None:
    """The EMR sends the Patient again without the CHT id: intake keeps the reviewer's person (not a new
    review, not another person); a created case keeps the chosen place."""
    w = _world(server, settings)
    link = requests.post(
        server.url + f"/admin/review/{w['review_a']}", json={"action": "link", "person": "grace2"}, auth=MATCHER,
        timeout=30,
    )
    assert link.status_code == 200, link.text
    create = requests.post(
        server.url + f"/admin/review/{w['review_b']}", json={"action": "create", "place": "hh1"}, auth=MATCHER,
        timeout=30,
    )
    assert create.status_code == 200, create.text
    patient = server.get(f"/fhir/Patient/{w['patient_a']}").json()
    assert any(i["value"] == "grace2" for i in patient["identifier"])
    patient.pop("identifier")  # the facility's EMR does not know CHT ids
    assert server.put(f"/fhir/Patient/{w['patient_a']}", json=patient).status_code == 200

    again = _decide_again(settings, w["case_a"], w["patient_a"], w["org_a"])
    assert (again.action, again.person_id, again.reason) == ("link", "grace2", "reviewed")
    created = _decide_again(settings, w["case_b"], w["patient_b"], w["org_b"])
    assert (created.action, created.place_id) == ("create", "hh1")


def test_catchment_admin_api(server: Api, settings: Settings) -> None:
    _org(server, "k")
    org = server.get("/fhir/Organization/org-k").json()
    org["identifier"] = [{"system": "urn:mfl", "value": "13939"}]
    assert server.put("/fhir/Organization/org-k", json=org).status_code == 200

    async def seed() -> None:
        db = Database(settings)
        async with unit_of_work(db) as uow:
            await index_docs(uow, PLACES)
            await uow.clients.upsert("m", MATCHER[1], role="matcher", organization_id=None)
        await db.dispose()

    asyncio.run(seed())
    base = "/admin/facilities/org-k/catchment"
    shown = server.get(base).json()
    assert [p["id"] for p in shown["by_link_facility_code"]] == ["cu1"]  # link_facility_code 13939
    assert shown["explicit"] == [] and shown["changes"] == []

    missing = server.get("/admin/facilities/org-nope/catchment")
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"
    unknown = server.put(base, json={"places": ["area1", "nowhere-7"]})
    assert unknown.status_code == 422 and "nowhere-7" in unknown.text
    assert server.get(base).json()["explicit"] == []  # nothing half-done
    assert server.put(base, json={"places": "area1"}).status_code == 422
    assert server.put(base, json={"place": ["area1"]}).status_code == 422

    put = server.put(base, json={"places": ["area1"]})
    assert put.status_code == 200 and [p["id"] for p in put.json()["explicit"]] == ["area1"]
    added = server.post(base + "/hh1")
    assert added.status_code == 201 and [p["id"] for p in added.json()["explicit"]] == ["area1", "hh1"]
    assert server.post(base + "/hh1").status_code == 200  # already linked
    assert server.post(base + "/ghost").status_code == 422
    removed = server.delete(base + "/area1")
    assert removed.status_code == 200 and [p["id"] for p in removed.json()["explicit"]] == ["hh1"]
    assert server.delete(base + "/area1").status_code == 404
    replaced = server.put(base, json={"places": []}).json()
    assert replaced["explicit"] == []
    changes = [(c["place"], c["action"], c["actor"]) for c in replaced["changes"]]
    assert changes == [
        ("hh1", "remove", "admin"),
        ("area1", "remove", "admin"),
        ("hh1", "add", "admin"),
        ("area1", "add", "admin"),
    ]
    matcher = requests.get(server.url + base, auth=MATCHER, timeout=30)
    assert matcher.status_code == 403 and matcher.json()["resourceType"] == "OperationOutcome"
