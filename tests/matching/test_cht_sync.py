"""``_changes`` sync of the person index from the CHT emulator (a real HTTP server), SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from ltfu.delivery.cht_sync import ChtSync
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.emulators.cht.emu_support import ADMIN, make_config, seed_area, serve


async def test_sync_indexes_then_follows_changes_from_the_stored_seq(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    async with serve(make_config(tmp_path)) as run:
        seeded = await seed_area(run)
        synced = settings.model_copy(
            update={"cht_url": run.url, "cht_username": ADMIN[0], "cht_password": SecretStr(ADMIN[1])}
        )
        sync = ChtSync(db, synced, page=2)  # several pages
        try:
            first = await sync.sync_once()
            assert first.pages > 1 and first.places == 3
            async with unit_of_work(db) as uow:
                jane = await uow.cht_index.person(seeded["patient"])
                assert jane is not None and jane.given == ("JANE",) and jane.phones == ("+254700000002",)
                assert (jane.household_id, jane.chw_area_id, jane.unit_id) == (
                    seeded["household"],
                    seeded["area"],
                    seeded["district"],
                )
            status, body, _ = await run.call(
                "POST",
                "/api/v1/people",
                json_body={"name": "Peter Otieno", "sex": "male", "place": seeded["household"], "upi": "MOHR13K16YL12"},
            )
            assert status == 200, body
            second = await sync.sync_once()
            assert second.persons == 1 and second.changes < first.changes
            async with unit_of_work(db) as uow:
                peter = await uow.cht_index.person(body["id"])
                assert peter is not None and ("upi", "MOHR13K16YL12") in peter.identifiers
                assert await uow.cht_index.sync_seq("medic") == second.seq
            status, doc, _ = await run.call("GET", f"/medic/{body['id']}")
            status, _, _ = await run.call("DELETE", f"/medic/{body['id']}?rev={doc['_rev']}")
            assert status == 200
            third = await sync.sync_once()
            assert third.removed == 1
            async with unit_of_work(db) as uow:
                assert await uow.cht_index.person(body["id"]) is None
            assert (await sync.sync_once()).changes == 0
        finally:
            await sync.client.close()
