"""The dashboard's query layer on SQLite and PostgreSQL: filters, facility scoping, retry, programme figures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from ltfu.services import resources as ops
from ltfu.services.workflow import install_hooks
from ltfu.store.clients import Client
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from ltfu.ui import queries
from ltfu.ui.queries import CaseFilters, Scope

ADMIN = Scope.of(Client("admin", True, None))


async def _seed(db: Database) -> dict[str, str]:
    install_hooks()
    ids: dict[str, str] = {}
    async with unit_of_work(db) as uow:
        for key in ("A", "B"):
            org = await ops.create(uow, {"resourceType": "Organization", "name": f"Facility {key}",
                                         "identifier": [{"system": "https://mfl.example.org", "value": key}]})
            ids[key] = org.stored.resource["id"]
            for n in range(3):
                p = await ops.create(uow, {"resourceType": "Patient",
                                           "identifier": [{"system": "https://mrn.example.org", "value": f"{key}{n}"}]})
                sr = await ops.create(uow, {
                    "resourceType": "ServiceRequest", "status": "active", "intent": "order",
                    "identifier": [{"system": "https://req.example.org", "value": f"R-{key}{n}"}],
                    "subject": {"reference": f"Patient/{p.stored.resource['id']}"},
                    "requester": {"reference": f"Organization/{ids[key]}"}})
                ids[f"{key}{n}"] = sr.stored.resource["id"]
        rows = await uow.outbox.list(destination="cht", limit=100)
        for r in rows:  # every CHT submission dead (e.g. CHT refused them)
            await uow.outbox.dead(r.id, "CHT answered 400")
    return ids


async def test_scoping_filters_and_retry(db: Database) -> None:
    ids = await _seed(db)
    scope_a = Scope.of(Client("clinic-a", False, ids["A"]))
    nobody = Scope.of(Client("lost", False, None))
    async with db.connect() as conn:
        names = {f.id: f.name for f in await queries.facilities(conn, ADMIN)}
        assert sorted(names.values()) == ["Facility A", "Facility B"]
        assert [f.name for f in await queries.facilities(conn, scope_a)] == ["Facility A"]
        assert await queries.facilities(conn, nobody) == []

        assert (await queries.list_cases(conn, ADMIN, CaseFilters(), names)).total == 6
        page_a = await queries.list_cases(conn, scope_a, CaseFilters(), names)
        assert page_a.total == 3 and {r.organization_id for r in page_a.rows} == {ids["A"]}
        assert (await queries.list_cases(conn, scope_a, CaseFilters(facility=ids["B"]), names)).total == 0
        assert (await queries.list_cases(conn, nobody, CaseFilters(), names)).total == 0
        assert (await queries.list_cases(conn, ADMIN, CaseFilters(facility=ids["B"]), names)).total == 3
        found = await queries.list_cases(conn, ADMIN, CaseFilters(q="B1"), names)
        assert [r.case_id for r in found.rows] == [ids["B1"]]
        assert (await queries.list_cases(conn, ADMIN, CaseFilters(q="R-A2"), names)).rows[0].case_id == ids["A2"]
        assert (await queries.list_cases(conn, ADMIN, CaseFilters(state="completed"), names)).total == 0
        assert (await queries.list_cases(conn, ADMIN, CaseFilters(state="open"), names)).total == 6
        tomorrow = datetime.now(UTC).date() + timedelta(days=1)
        assert (await queries.list_cases(conn, ADMIN, CaseFilters(date_from=tomorrow), names)).total == 0
        assert (await queries.list_cases(conn, ADMIN, CaseFilters(age="31+"), names)).total == 0

        assert await queries.get_case(conn, scope_a, ids["B0"], names) is None
        assert await queries.case_detail(conn, scope_a, ids["B0"], names) is None
        assert (await queries.case_detail(conn, scope_a, ids["A0"], names)) is not None
        detail = await queries.case_detail(conn, ADMIN, ids["B0"], names)
        assert [e.kind for e in detail.events][:1] == ["request"]
        assert any(e.kind == "delivery" and e.state == "dead" for e in detail.events)

        dead_b = await queries.list_deliveries(conn, ADMIN, names, state="dead", facility=ids["B"])
        assert len(dead_b) == 3
        assert await queries.list_deliveries(conn, scope_a, names, facility=ids["B"]) == []
        assert len(await queries.list_deliveries(conn, scope_a, names)) == 3
        assert await queries.get_delivery(conn, scope_a, dead_b[0].id, names) is None
        counts = await queries.delivery_counts(conn, scope_a)
        assert counts["cht"] == {"queued": 0, "retrying": 0, "dead": 3}

    async with unit_of_work(db) as uow:  # a facility client cannot retry another facility's delivery
        assert await queries.retry_one(uow, scope_a, dead_b[0].id) == 0
        assert await queries.retry_facility(uow, scope_a, ids["B"]) == 0
        assert await queries.retry_facility(uow, nobody, ids["B"]) == 0
    async with db.connect() as conn:
        assert (await queries.get_delivery(conn, ADMIN, dead_b[0].id, names)).state == "dead"
    async with unit_of_work(db) as uow:
        assert await queries.retry_one(uow, ADMIN, dead_b[0].id) == 1
        assert await queries.retry_facility(uow, scope_a, ids["A"]) == 3
    async with db.connect() as conn:
        assert (await queries.get_delivery(conn, ADMIN, dead_b[0].id, names)).state == "queued"
        assert await queries.dead_count(conn, ADMIN, ids["A"]) == 0
        assert await queries.dead_count(conn, ADMIN, ids["B"]) == 2

        today = datetime.now(UTC).date()
        p = await queries.programme(conn, scope_a, names, facility=None, date_from=today - timedelta(days=7),
                                    date_to=today)
        assert p.total == 3 and p.funnel[0] == ("Requested", 3) and p.funnel[2] == ("Attempted by a CHW", 0)
        assert [t.label for t in p.by_facility] == ["Facility A"]
        p_other = await queries.programme(conn, scope_a, names, facility=ids["B"], date_from=date(2000, 1, 1),
                                          date_to=today)
        assert p_other.total == 0


def test_quantiles() -> None:
    assert queries.quantile([], 0.5) is None
    assert queries.quantile([1.0], 0.9) == 1.0
    assert queries.quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert round(queries.quantile([float(x) for x in range(1, 11)], 0.9), 6) == 9.1


async def test_case_pages_follow_the_last_row_and_the_count_is_capped(db: Database, monkeypatch) -> None:
    """Older/Newer links carry the last/first row shown: every case once, newest first, both ways."""
    await _seed(db)
    monkeypatch.setattr(queries, "PAGE_SIZE", 2)
    async with db.connect() as conn:
        first = await queries.list_cases(conn, ADMIN, CaseFilters(), {})
        assert (first.total, first.pages, first.capped, first.newer_args) == (6, 3, False, None)
        pages = [first]
        while pages[-1].older_args:
            pages.append(await queries.list_cases(conn, ADMIN, CaseFilters.parse(pages[-1].older_args), {}))
        seen = [r.case_id for p in pages for r in p.rows]
        assert len(pages) == 3 and [p.page for p in pages] == [1, 2, 3] and len(set(seen)) == 6
        created = [r.created_at for p in pages for r in p.rows]
        assert created == sorted(created, reverse=True)
        back = await queries.list_cases(conn, ADMIN, CaseFilters.parse(pages[2].newer_args), {})
        assert [r.case_id for r in back.rows] == [r.case_id for r in pages[1].rows] and back.page == 2
        assert back.older_args and back.newer_args == {}  # page 1 is the plain list
        filtered = await queries.list_cases(conn, ADMIN, CaseFilters.parse({"state": "open", **first.older_args}), {})
        assert filtered.rows == pages[1].rows  # a filter stays on the paging links ("open": all six)
        assert "state" in (await queries.list_cases(conn, ADMIN, CaseFilters(state="open"), {})).older_args
        monkeypatch.setattr(queries, "COUNT_CAP", 4)
        capped = await queries.list_cases(conn, ADMIN, CaseFilters(), {})
        assert (capped.total, capped.capped) == (4, True)
        assert (await queries.list_cases(conn, ADMIN, CaseFilters.parse({"older": "garbage"}), {})).page == 1
