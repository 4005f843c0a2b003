"""Readers never wait for writers: FHIR reads, searches and authentication go on while another
transaction holds the write lock (a large Bundle, the workers), and never see its uncommitted rows."""

from __future__ import annotations

import asyncio
import threading
import time

from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.conftest import Api

MRN = "https://facility.example/mrn"


def _patient(api: Api, mrn: str) -> dict:
    r = api.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [{"system": MRN, "value": mrn}],
                                        "gender": "female", "name": [{"family": "Akinyi"}]})
    assert r.status_code == 201, r.text
    return r.json()


def test_reads_answer_while_another_transaction_writes(server: Api, settings: Settings) -> None:
    known = _patient(server, "m-1")
    writing, release = threading.Event(), threading.Event()

    async def hold_write_lock() -> None:
        db = Database(settings)  # another process's writer, e.g. `ltfu worker` or a long Bundle
        try:
            async with unit_of_work(db) as uow:
                await uow.resources.create({"resourceType": "Patient", "identifier": [{"system": MRN, "value": "m-2"}],
                                            "gender": "male"})
                await uow.flush()
                writing.set()
                while not release.is_set():
                    await asyncio.sleep(0.02)
        finally:
            await db.dispose()

    holder = threading.Thread(target=lambda: asyncio.run(hold_write_lock()))
    holder.start()
    try:
        assert writing.wait(10)
        t0 = time.monotonic()
        read = server.get(f"/fhir/Patient/{known['id']}")
        found = server.get(f"/fhir/Patient?identifier={MRN}|m-2")
        meta = server.get("/fhir/metadata")
        waited = time.monotonic() - t0
        assert read.status_code == 200 and read.json()["id"] == known["id"]
        assert found.status_code == 200 and found.json().get("total", 0) == 0  # not committed yet
        assert meta.status_code == 200
        assert waited < 5, f"reads waited {waited:.1f} s for the writer"
    finally:
        release.set()
        holder.join(30)
    assert server.get(f"/fhir/Patient?identifier={MRN}|m-2").json()["total"] == 1
