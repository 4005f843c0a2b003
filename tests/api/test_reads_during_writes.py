"""Readers never wait for writers: FHIR reads, searches and authentication go on while another
transaction holds the write lock (a large Bundle, the workers), and never see its uncommitted rows."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.conftest import Api

MRN = "https://facility.example/mrn"


@pytest.fixture(params=[False, True], ids=["writer-threads", "writer-inline"])
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """Both SQLite writer modes (``LTFU_SQLITE_INLINE_WRITES``); PostgreSQL ignores the setting."""
    return settings.model_copy(update={"sqlite_inline_writes": request.param})


def _patient(api: Api, mrn: str) -> dict:
    r = api.post(
        "/fhir/Patient",
        json={
            "resourceType": "Patient",
            "identifier": [{"system": MRN, "value": mrn}],
            "gender": "female",
            "name": [{"family": "Akinyi"}],
        },
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_reads_answer_while_another_transaction_writes(server: Api, settings: Settings) -> None:
    known = _patient(server, "m-1")
    writing, release = threading.Event(), threading.Event()

    async def hold_write_lock() -> None:
        db = Database(settings)  # another process's writer, e.g. `ltfu worker` or a long Bundle
        try:
            async with unit_of_work(db) as uow:
                await uow.resources.create(
                    {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "m-2"}], "gender": "male"}
                )
                await uow.flush()
                writing.set()
                while not release.is_set():
                    await asyncio.sleep(0.02)
        finally:
            await db.dispose()

    holder = threading.Thread(target=lambda: asyncio.run(hold_write_lock()))
    holder.start()
    queued: list[int] = []
    writer = threading.Thread(target=lambda: queued.append(_status_of_create(server, "m-3")))
    try:
        assert writing.wait(10)
        writer.start()  # this write waits for the lock (off the event loop): the reads below must not
        time.sleep(0.3)
        t0 = time.monotonic()
        read = server.get(f"/fhir/Patient/{known['id']}")
        found = server.get(f"/fhir/Patient?identifier={MRN}|m-2")
        meta = server.get("/fhir/metadata")
        waited = time.monotonic() - t0
        assert read.status_code == 200 and read.json()["id"] == known["id"]
        assert found.status_code == 200 and found.json().get("total", 0) == 0  # not committed yet
        assert meta.status_code == 200
        assert waited < 5, f"reads waited {waited:.1f} s for the writer"
        if settings.is_sqlite:  # one writer at a time: it is still waiting (PostgreSQL lets it through)
            assert not queued
    finally:
        release.set()
        holder.join(30)
        if writer.ident:
            writer.join(30)
    assert queued == [201]
    assert server.get(f"/fhir/Patient?identifier={MRN}|m-2").json()["total"] == 1
    assert server.get(f"/fhir/Patient?identifier={MRN}|m-3").json()["total"] == 1


def _status_of_create(api: Api, mrn: str) -> int:
    r = api.post(
        "/fhir/Patient",
        json={"resourceType": "Patient", "identifier": [{"system": MRN, "value": mrn}], "gender": "female"},
    )
    return r.status_code
