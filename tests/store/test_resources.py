"""The versioned resource store and search index, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from ltfu.fhir.outcome import FhirError
from ltfu.fhir.search_params import parse_search
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work


def patient(mrn: str, **extra: object) -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "https://facility.example/mrn", "value": mrn}],
        "name": [{"family": "Otieno", "given": ["Akinyi"]}],
        "gender": "female",
        "birthDate": "1991-04-12",
        **extra,
    }


async def test_create_update_versions_and_history(db: Database) -> None:
    async with unit_of_work(db) as uow:
        first = await uow.resources.create(patient("A1"))
        pid = first.resource["id"]
        second = await uow.resources.update({**first.resource, "gender": "other"}, pid, if_match=1)
    assert (first.version_id, second.version_id) == (1, 2)
    assert second.resource["meta"]["versionId"] == "2"
    assert second.resource["meta"]["lastUpdated"] >= first.resource["meta"]["lastUpdated"]
    async with unit_of_work(db) as uow:
        assert (await uow.resources.read("Patient", pid)).resource["gender"] == "other"
        assert (await uow.resources.vread("Patient", pid, 1)).resource["gender"] == "female"
        rows = await uow.resources.history("Patient", pid, None, 10, None)
    assert [r[4] for r in rows] == [2, 1]
    assert [r[1] for r in rows] == ["PUT", "POST"]


async def test_if_match_conflict_is_412_and_changes_nothing(db: Database) -> None:
    async with unit_of_work(db) as uow:
        pid = (await uow.resources.create(patient("A2"))).resource["id"]
    with pytest.raises(FhirError) as err:
        async with unit_of_work(db) as uow:
            await uow.resources.update({**patient("A2"), "id": pid, "gender": "male"}, pid, if_match=7)
    assert err.value.status == 412
    async with unit_of_work(db) as uow:
        stored = await uow.resources.read("Patient", pid)
    assert (stored.version_id, stored.resource["gender"]) == (1, "female")


async def test_delete_then_read_is_410_and_search_forgets_it(db: Database) -> None:
    async with unit_of_work(db) as uow:
        pid = (await uow.resources.create(patient("A3"))).resource["id"]
        assert await uow.resources.delete("Patient", pid)
    async with unit_of_work(db) as uow:
        with pytest.raises(FhirError) as err:
            await uow.resources.read("Patient", pid)
        found = await uow.search(parse_search("Patient", [("identifier", "A3")]))
    assert err.value.status == 410
    assert found.total == 0


async def test_rollback_leaves_no_trace(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with unit_of_work(db) as uow:
            await uow.resources.create(patient("ROLLBACK"))
            raise RuntimeError("boom")
    async with unit_of_work(db) as uow:
        found = await uow.search(parse_search("Patient", [("identifier", "ROLLBACK")]))
        assert found.total == 0
        assert await uow.resources.history("Patient", None, None, 10, None) == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("identifier", "https://facility.example/mrn|S1")], {"S1"}),
        ([("identifier", "|S1")], set()),
        ([("identifier", "https://facility.example/mrn|")], {"S1", "S2", "S3"}),
        ([("identifier", "S1,S3")], {"S1", "S3"}),
        ([("gender", "male")], {"S2"}),
        ([("gender:not", "male")], {"S1", "S3"}),
        ([("birthdate", "1980")], {"S2"}),
        ([("birthdate", "ge1990-01-01")], {"S1", "S3"}),
        ([("birthdate", "lt1990"), ("gender", "male")], {"S2"}),
        ([("name", "oti")], {"S1", "S3"}),
        ([("name:exact", "otieno")], {"S1", "S3"}),
        ([("name:contains", "chie")], {"S2"}),
        ([("organization", "Organization/org-1")], {"S3"}),
        ([("organization", "org-1")], {"S3"}),
        ([("organization:missing", "true")], {"S1", "S2"}),
        ([("_lastUpdated", "gt2000-01-01")], {"S1", "S2", "S3"}),
        ([("_lastUpdated", "lt2000-01-01")], set()),
    ],
)
async def test_search_parameters(db: Database, params: list[tuple[str, str]], expected: set[str]) -> None:
    async with unit_of_work(db) as uow:
        await uow.resources.create(patient("S1"))
        await uow.resources.create(patient("S2", gender="male", birthDate="1980-02-02",
                                           name=[{"family": "Achieng", "given": ["Tom"]}]))
        await uow.resources.create(patient("S3", managingOrganization={"reference": "Organization/org-1"}))
    async with unit_of_work(db) as uow:
        result = await uow.search(parse_search("Patient", params))
    got = {r["identifier"][0]["value"] for r in result.matches}
    assert got == expected
    assert result.total == len(expected)


async def test_paging_is_stable_keyset(db: Database) -> None:
    async with unit_of_work(db) as uow:
        for i in range(7):
            await uow.resources.create(patient(f"P{i}"))
    seen: list[str] = []
    cursor = None
    async with unit_of_work(db) as uow:
        while True:
            q = parse_search("Patient", [("_count", "3")])
            q.cursor = cursor
            page = await uow.search(q)
            seen += [r["identifier"][0]["value"] for r in page.matches]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert seen == [f"P{i}" for i in range(7)]


async def test_include_and_revinclude(db: Database) -> None:
    async with unit_of_work(db) as uow:
        pat = await uow.resources.create(patient("I1"))
        sr = await uow.resources.create({
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "subject": {"reference": pat.ref},
        })
        await uow.resources.create({
            "resourceType": "Task", "status": "requested", "intent": "order",
            "focus": {"reference": sr.ref}, "for": {"reference": pat.ref},
        })
    async with unit_of_work(db) as uow:
        res = await uow.search(parse_search("ServiceRequest", [
            ("_id", sr.resource["id"]), ("_include", "ServiceRequest:subject"), ("_revinclude", "Task:focus")]))
    assert [m["id"] for m in res.matches] == [sr.resource["id"]]
    assert sorted(r["resourceType"] for r in res.included) == ["Patient", "Task"]
