"""Two facilities naming the same unclaimed Patient at once: the first claim wins, the second is refused
as if the Patient were unknown (no 500 on the owner's key, no case on another facility's Patient)."""

from __future__ import annotations

import asyncio

from ltfu.domain.access import Actor
from ltfu.services import policy
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work


async def test_concurrent_claims_of_one_patient(db: Database) -> None:
    async with unit_of_work(db) as uow:  # a Patient CHT pushed: nobody's, in no case
        patient = await uow.resources.create({"resourceType": "Patient", "gender": "female"})
    pid = patient.resource["id"]
    a_claimed = asyncio.Event()

    async def claim_a() -> list[str]:
        async with unit_of_work(db, Actor("facility", "org-a")) as uow:
            found = await policy.bind_patients(uow, [pid])
            a_claimed.set()
            await asyncio.sleep(0.3)  # B asks meanwhile (PostgreSQL: its claim waits for this commit)
            return found

    async def claim_b() -> list[str]:
        await a_claimed.wait()
        async with unit_of_work(db, Actor("facility", "org-b")) as uow:
            return await policy.bind_patients(uow, [pid])

    a, b = await asyncio.gather(claim_a(), claim_b())
    assert a == [pid]
    assert b == []
    async with unit_of_work(db) as uow:
        assert await uow.owners.get("Patient", pid) == "org-a"
