"""``POST /fhir/Patient/$match`` conformance (IHE PDQm ITI-119 cases) on a real server, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import requests

from ltfu.services.cht_index import index_docs
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.conftest import Api

GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
LINEAGE = {"_id": "hh1", "parent": {"_id": "area1", "parent": {"_id": "cu1"}}}
PLACES = [
    {
        "_id": "cu1",
        "type": "contact",
        "contact_type": "c_community_health_unit",
        "name": "Kanyawegi CU",
        "code": "612345",
        "link_facility_code": "13939",
    },
    {
        "_id": "area1",
        "type": "contact",
        "contact_type": "d_community_health_volunteer_area",
        "name": "Akinyi Area",
        "parent": {"_id": "cu1"},
    },
    {
        "_id": "hh1",
        "type": "contact",
        "contact_type": "e_household",
        "name": "Otieno household",
        "parent": {"_id": "area1", "parent": {"_id": "cu1"}},
    },
]


def _person(pid: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"_id": pid, "type": "person", "name": name, "parent": LINEAGE, **extra}


PEOPLE = [
    _person(
        "grace",
        "Grace Akinyi Otieno",
        sex="female",
        date_of_birth="1988-11-23",
        phone="+254722000111",
        upi="MOHR13K16YL12",
    ),
    _person("grace2", "Grace Atieno Otieno", sex="female", date_of_birth="1991-03-02"),
    _person("peter", "Peter Otieno", sex="male", date_of_birth="1960-01-01", phone="+254722000999"),
    _person("dup1", "Mary Wanjiku", sex="female", upi="DUPL1CATE9"),
    _person("dup2", "Mary Wanjiru", sex="female", upi="DUPL1CATE9"),
    # others, so that Grace and Otieno are not the commonest names of the index
    *[
        _person(f"other{i}", f"{g} {f}", sex="male")
        for i, (g, f) in enumerate(
            (g, f)
            for g in ("John", "Brian", "Kevin", "Moses", "Paul", "Isaac")
            for f in ("Kamau", "Wafula", "Rotich", "Mutua", "Abdi", "Koech")
        )
    ],
]


def _seed(settings: Settings) -> None:
    async def run() -> None:
        db = Database(settings)
        async with unit_of_work(db) as uow:
            await index_docs(uow, PLACES + PEOPLE)
            await uow.clients.upsert("m", "matcher-pw-123", role="matcher", organization_id=None)
            await uow.clients.upsert("fa", "facility-a-pw-1", role="facility", organization_id="org-a")
        await db.dispose()

    asyncio.run(run())


def _params(patient: dict[str, Any], **extra: Any) -> dict[str, Any]:
    parameter: list[dict[str, Any]] = [{"name": "resource", "resource": {"resourceType": "Patient", **patient}}]
    if "only" in extra:
        parameter.append({"name": "onlyCertainMatches", "valueBoolean": extra["only"]})
    if "count" in extra:
        parameter.append({"name": "count", "valueInteger": extra["count"]})
    return {"resourceType": "Parameters", "parameter": parameter}


GRACE = {
    "name": [{"family": "Otieno", "given": ["Grace"]}],
    "gender": "female",
    "birthDate": "1988-11-23",
    "telecom": [{"system": "phone", "value": "0722 000 111"}],
}


def _grades(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (e["resource"]["id"], e["search"]["extension"][0]["valueCode"])
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Patient"
    ]


def test_match_is_ordered_scored_graded_and_projected(server: Api, settings: Settings) -> None:
    _seed(settings)
    r = server.post("/fhir/Patient/$match", json=_params(GRACE))
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "searchset")
    scores = [e["search"]["score"] for e in bundle["entry"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert all(e["search"]["mode"] == "match" and e["search"]["extension"][0]["url"] == GRADE for e in bundle["entry"])
    assert _grades(bundle)[0] == ("grace", "certain")
    top = bundle["entry"][0]["resource"]
    assert top["gender"] == "female" and top["birthDate"] == "1988-11-23"
    assert top["name"][0]["text"] == "Grace Akinyi Otieno"
    assert {"system": "urn:upi", "value": "MOHR13K16YL12"} in top["identifier"]
    assert top["address"][0]["line"] == ["Otieno household", "Akinyi Area"]
    assert top["address"][0]["district"] == "Kanyawegi CU"
    assert bundle["entry"][0]["fullUrl"].endswith("/Patient/grace")


def test_count_and_only_certain_matches(server: Api, settings: Settings) -> None:
    _seed(settings)
    loose = {"name": [{"family": "Otieno", "given": ["Grace"]}], "gender": "female"}
    several = server.post("/fhir/Patient/$match", json=_params(loose)).json()
    assert len(several["entry"]) >= 2
    assert len(server.post("/fhir/Patient/$match", json=_params(loose, count=1)).json()["entry"]) == 1
    # ITI-119 case 4: the best is not certain → empty with onlyCertainMatches
    assert server.post("/fhir/Patient/$match", json=_params(loose, only=True)).json()["entry"] == []
    certain = server.post("/fhir/Patient/$match", json=_params(GRACE, only=True)).json()
    assert _grades(certain) == [("grace", "certain")]
    # case 5: several persons share one UPI → not confirmable as one person
    dup = {"identifier": [{"system": "urn:upi", "value": "DUPL1CATE9"}], "name": [{"given": ["Mary"]}]}
    assert server.post("/fhir/Patient/$match", json=_params(dup, only=True)).json()["entry"] == []
    assert sorted(i for i, _ in _grades(server.post("/fhir/Patient/$match", json=_params(dup)).json())) == [
        "dup1",
        "dup2",
    ]


def test_no_match_is_an_empty_bundle(server: Api, settings: Settings) -> None:
    _seed(settings)
    stranger = {"name": [{"family": "Zzyzx", "given": ["Quentin"]}], "gender": "male", "birthDate": "2001-02-03"}
    bundle = server.post("/fhir/Patient/$match", json=_params(stranger)).json()
    assert (bundle["type"], bundle["total"], bundle["entry"]) == ("searchset", 0, [])


def test_bad_input_is_an_operation_outcome(server: Api, settings: Settings) -> None:
    _seed(settings)
    r = server.post(
        "/fhir/Patient/$match",
        json=_params({"gender": "female", "identifier": [{"system": "urn:upi", "value": "N/A"}]}),
    )
    assert r.status_code == 422
    text = r.json()["issue"][0]["diagnostics"]
    assert "name" in text and "identifier" in text
    assert server.post("/fhir/Patient/$match", json={"resourceType": "Patient"}).status_code == 400
    assert server.post("/fhir/Patient/$match", json={"resourceType": "Parameters"}).status_code == 400
    bad_count = _params(GRACE, count=0)
    assert server.post("/fhir/Patient/$match", json=bad_count).status_code == 400


def test_only_admin_and_matcher_clients_may_match(server: Api, settings: Settings) -> None:
    _seed(settings)
    body = _params(GRACE)
    as_matcher = requests.post(server.url + "/fhir/Patient/$match", json=body, auth=("m", "matcher-pw-123"), timeout=30)
    assert as_matcher.status_code == 200
    assert _grades(as_matcher.json())[0][0] == "grace"
    as_facility = requests.post(
        server.url + "/fhir/Patient/$match", json=body, auth=("fa", "facility-a-pw-1"), timeout=30
    )
    assert as_facility.status_code == 403
    assert as_facility.json()["resourceType"] == "OperationOutcome"
    # the matcher role opens $match only, not the rest of the FHIR API
    assert requests.get(server.url + "/fhir/Patient", auth=("m", "matcher-pw-123"), timeout=30).status_code == 403
