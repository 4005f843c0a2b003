"""The CHT person and place index on SQLite and PostgreSQL: docs in, candidates and frequencies out."""

from __future__ import annotations

from ltfu.domain.matching import query_keys
from ltfu.domain.matching.normalise import birth_date, name_tokens
from ltfu.domain.matching.records import Person
from ltfu.services.cht_index import changed_docs, index_docs
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work

UNIT = {
    "_id": "cu1",
    "type": "contact",
    "contact_type": "c_community_health_unit",
    "name": "Kanyawegi CU",
    "code": "612345",
    "link_facility_code": "13939",
    "parent": {"_id": "sc1", "parent": {"_id": "county1"}},
}
AREA = {
    "_id": "area1",
    "type": "contact",
    "contact_type": "d_community_health_volunteer_area",
    "name": "Akinyi Area",
    "parent": {"_id": "cu1", "parent": {"_id": "sc1", "parent": {"_id": "county1"}}},
}
HOUSE = {
    "_id": "hh1",
    "type": "contact",
    "contact_type": "e_household",
    "name": "Otieno household",
    "parent": {"_id": "area1", "parent": {"_id": "cu1", "parent": {"_id": "sc1", "parent": {"_id": "county1"}}}},
}
LINEAGE = {"_id": "hh1", "parent": {"_id": "area1", "parent": {"_id": "cu1", "parent": {"_id": "sc1"}}}}


def person_doc(pid: str, name: str, **extra: object) -> dict:
    return {"_id": pid, "type": "person", "name": name, "parent": LINEAGE, **extra}


async def test_persons_are_indexed_with_lineage_identifiers_and_phones(db: Database) -> None:
    docs = [
        UNIT,
        AREA,
        HOUSE,
        person_doc(
            "p1",
            "Mary Akinyi Otieno",
            sex="female",
            date_of_birth="1990-05-17",
            phone="0712 345 678",
            upi="MOHR13K16YL12",
            identification_type="national_id",
            identification_number="27345618",
            facility_mrn=["urn:emr|A-17"],
        ),
        {"_id": "r1", "type": "data_record", "form": "x"},
    ]
    async with unit_of_work(db) as uow:
        stats = await index_docs(uow, docs)
    assert (stats.persons, stats.places, stats.ignored) == (1, 3, 1)
    async with unit_of_work(db) as uow:
        person = await uow.cht_index.person("p1")
    assert person is not None
    assert (person.given, person.family, person.sex) == (("MARY", "AKINYI"), ("OTIENO",), "F")
    assert person.birth == birth_date("1990-05-17")
    assert person.phones == ("+254712345678",)
    assert dict(person.identifiers) == {
        "cht_id": "p1",
        "upi": "MOHR13K16YL12",
        "national_id": "27345618",
        "mrn:urn:emr": "A17",
    }
    assert (person.household_id, person.chw_area_id, person.unit_id) == ("hh1", "area1", "cu1")
    assert (person.unit_code, person.facility_code) == ("612345", "13939")


async def test_candidates_come_from_blocking_keys_and_overflow_is_reported(db: Database) -> None:
    docs = [UNIT, AREA, HOUSE] + [
        person_doc(f"p{i}", "Grace Wambui", date_of_birth=f"1988-11-{10 + i}") for i in range(6)
    ]
    docs.append(person_doc("far", "Peter Mwangi", date_of_birth="1950-01-01"))
    async with unit_of_work(db) as uow:
        await index_docs(uow, docs)
    incoming = Person(given=name_tokens("Grace"), family=name_tokens("Wambui"), birth=birth_date("1988-11-23"))
    async with unit_of_work(db) as uow:
        found, overflow = await uow.cht_index.candidates(query_keys(incoming), cap=100)
        assert sorted(p.id for p in found) == [f"p{i}" for i in range(6)]
        assert overflow == []
        found, overflow = await uow.cht_index.candidates(query_keys(incoming), cap=3)
        assert found == []
        assert overflow  # every key is over the cap: said, not silently empty


async def test_name_frequencies_follow_updates_and_deletions(db: Database) -> None:
    async with unit_of_work(db) as uow:
        await index_docs(
            uow,
            [
                person_doc("a", "Grace Otieno"),
                person_doc("b", "Mary Otieno"),
                person_doc("c", "Peter Kamau"),
                person_doc("d", "Jane Wanjiru"),
            ],
        )
    async with unit_of_work(db) as uow:
        assert await uow.cht_index.frequencies(["OTIENO", "GRACE", "NOBODY"]) == {"OTIENO": 0.5, "GRACE": 0.25}
        await index_docs(uow, [person_doc("b", "Mary Kamau")])  # renamed
        await index_docs(uow, changed_docs([{"id": "a", "deleted": True, "changes": []}]))
    async with unit_of_work(db) as uow:
        assert await uow.cht_index.frequencies(["OTIENO", "KAMAU"]) == {"KAMAU": 2 / 3}
        assert await uow.cht_index.count_persons() == 3
        assert await uow.cht_index.person("a") is None


async def test_a_person_before_its_places_uses_depth_then_types_once_known(db: Database) -> None:
    async with unit_of_work(db) as uow:
        await index_docs(uow, [person_doc("p1", "Mary Otieno")])
        early = await uow.cht_index.person("p1")
        assert (early.household_id, early.chw_area_id, early.unit_id) == ("hh1", "area1", "cu1")
        assert early.unit_code is None
        await index_docs(uow, [UNIT, AREA, HOUSE, person_doc("p1", "Mary Otieno")])
        later = await uow.cht_index.person("p1")
    assert later.unit_code == "612345"


async def test_catchment_places_by_link_facility_code_and_tree(db: Database) -> None:
    async with unit_of_work(db) as uow:
        await index_docs(uow, [UNIT, AREA, HOUSE])
        units = await uow.cht_index.places_where(link_facility_code="13939")
        assert [u.id for u in units] == ["cu1"]
        below = await uow.cht_index.places_under(["cu1"], ["d_community_health_volunteer_area"])
        assert [p.id for p in below] == ["area1"]
        await uow.cht_index.set_sync_seq("medic", "12-abc")
        await uow.cht_index.set_sync_seq("medic", "13-abd")
        assert await uow.cht_index.sync_seq("medic") == "13-abd"


async def test_the_migration_creates_exactly_the_index_tables_of_schema_py(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from ltfu.store.schema import metadata

    ours = {
        "cht_places",
        "cht_persons",
        "cht_person_keys",
        "cht_name_tokens",
        "cht_sync_state",
        "facility_places",
        "match_reviews",
        "match_decisions",
    }

    def diff(sync_conn: object) -> list:
        context = MigrationContext.configure(sync_conn, opts={"compare_type": False})
        return compare_metadata(context, metadata)

    async with db.connect() as conn:
        changes = await conn.run_sync(diff)
    flat = [c for group in changes for c in (group if isinstance(group, list) else [group])]
    mine = [c for c in flat if any(name in repr(c) for name in ours)]
    assert mine == []


async def test_two_writers_of_one_person_at_once_do_not_collide(db: Database) -> None:
    """Outbound push and the sync may index the same person in two transactions at the same time."""
    import asyncio

    first_in = asyncio.Event()

    async def first() -> None:
        async with unit_of_work(db) as uow:
            await index_docs(uow, [person_doc("p1", "Mary Otieno", phone="+254712345678")])
            first_in.set()
            await asyncio.sleep(0.5)

    async def second() -> None:
        await first_in.wait()
        async with unit_of_work(db) as uow:
            await index_docs(uow, [person_doc("p1", "Mary Akinyi Otieno", phone="+254712345678")])

    await asyncio.gather(first(), second())
    async with unit_of_work(db) as uow:
        assert (await uow.cht_index.person("p1")).given == ("MARY", "AKINYI")
        assert await uow.cht_index.frequencies(["OTIENO"]) == {"OTIENO": 1.0}


async def test_a_partial_push_keeps_what_the_index_knows(db: Database) -> None:
    """Outbound push sends the fields its mapping names (no upi, no lineage): the sync's fuller data stays."""
    from ltfu.services.cht_index import index_person_doc

    async with unit_of_work(db) as uow:
        await index_docs(uow, [UNIT, AREA, HOUSE, person_doc("p1", "Mary Otieno", upi="MOHR13K16YL12")])
        await index_person_doc(
            uow, {"_id": "p1", "type": "person", "name": "Mary Akinyi Otieno", "phone": "0712345678"}
        )
        person = await uow.cht_index.person("p1")
    assert ("upi", "MOHR13K16YL12") in person.identifiers
    assert person.household_id == "hh1" and person.unit_code == "612345"
    assert person.given == ("MARY", "AKINYI") and person.phones == ("+254712345678",)


async def _key_rows(db: Database) -> set[tuple[str, str]]:
    from sqlalchemy import select

    from ltfu.store.schema import cht_person_keys

    async with db.connect() as conn:
        return {tuple(r) for r in await conn.execute(select(cht_person_keys.c.key, cht_person_keys.c.person_id))}


async def test_replacing_or_removing_a_person_leaves_no_key_of_its_old_version(db: Database) -> None:
    """A person's key rows are deleted by the list its row keeps: none of an old version survives."""
    from ltfu.domain.matching import index_keys

    async with unit_of_work(db) as uow:
        await index_docs(
            uow,
            [
                UNIT,
                AREA,
                HOUSE,
                person_doc("p1", "Mary Otieno", date_of_birth="1990-05-17", phone="+254712345678", upi="MOHR13K16YL12"),
                person_doc("p2", "Mary Otieno", date_of_birth="1990-05-17"),
            ],
        )
        await index_docs(uow, [person_doc("p1", "Grace Wambui", date_of_birth="1971-02-03")])
        p1, p2 = await uow.cht_index.person("p1"), await uow.cht_index.person("p2")
    assert await _key_rows(db) == {(k, "p1") for k in index_keys(p1)} | {(k, "p2") for k in index_keys(p2)}
    async with unit_of_work(db) as uow:
        await index_docs(uow, changed_docs([{"id": "p1", "deleted": True, "changes": []}]))
    assert await _key_rows(db) == {(k, "p2") for k in index_keys(p2)}


async def test_migration_0019_gives_stored_persons_their_key_lists(db: Database) -> None:
    """An index built before 0019 (keys found through an index on person_id) keeps working after it: each row
    gets the list of its keys, so the next update of the person removes them."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from ltfu.store.db import MIGRATIONS

    def migrate(sync_conn: object, target: str) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = sync_conn
        (command.downgrade if target == "0018" else command.upgrade)(cfg, target)

    async with db.transaction() as conn:
        await conn.run_sync(migrate, "0018")
        await conn.execute(
            text(
                "INSERT INTO cht_persons (person_id, name, given, family, phones, identifiers, lineage, flags,"
                " updated_at) VALUES ('old', 'Mary Otieno', 'MARY', 'OTIENO', '[]',"
                " '[[\"cht_id\",\"old\"]]', '[]', '', 'x')"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO cht_person_keys (key, person_id) VALUES "
                "('np:M600:O350', 'old'), ('ph:+254700000001', 'old')"
            )
        )
        await conn.run_sync(migrate, "0020")
    if db.is_sqlite:
        async with db.connect() as conn:
            sql = (await conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'cht_person_keys'"))).scalar()
        assert "WITHOUT ROWID" in sql
    assert await _key_rows(db) == {("np:M600:O350", "old"), ("ph:+254700000001", "old")}
    async with db.transaction() as conn:
        await conn.run_sync(migrate, "head")  # 0023 re-derives the keys from the row
    async with unit_of_work(db) as uow:
        await index_docs(uow, [person_doc("old", "Peter Kamau")])
    assert ("ph:+254700000001", "old") not in await _key_rows(db)
    assert ("np:M600:O350", "old") not in await _key_rows(db)


async def test_a_page_indexed_twice_leaves_the_index_as_once(db: Database) -> None:
    """A crash after indexing a page but before its seq is stored re-reads the page: nothing doubles."""
    page = [UNIT, AREA, HOUSE] + [
        person_doc(f"p{i}", f"Grace Wambui {name}", date_of_birth=f"1988-11-2{i}", phone="+254712345678")
        for i, name in enumerate(["Otieno", "Kamau", "Otieno"])
    ]

    async def state() -> tuple:
        async with unit_of_work(db) as uow:
            freq = await uow.cht_index.frequencies(["GRACE", "OTIENO", "KAMAU"])
            return await _key_rows(db), freq, await uow.cht_index.count_persons()

    async with unit_of_work(db) as uow:
        await index_docs(uow, page)
    once = await state()
    async with unit_of_work(db) as uow:
        await index_docs(uow, page)
    assert await state() == once
    assert once[1] == {"GRACE": 1.0, "OTIENO": 2 / 3, "KAMAU": 1 / 3}


async def test_statistics_refresh_after_a_large_load_runs_on_both_databases(db: Database) -> None:
    from ltfu.store.cht_index import vacuum_analyze

    async with unit_of_work(db) as uow:
        await index_docs(uow, [UNIT, AREA, HOUSE, person_doc("p1", "Mary Otieno")])
    await vacuum_analyze(db)  # PostgreSQL: VACUUM outside a transaction; SQLite: nothing
    async with unit_of_work(db) as uow:
        assert await uow.cht_index.count_persons() == 1
