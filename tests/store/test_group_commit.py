"""Group commit on the inline SQLite writer (``store/group_commit.py``): units of work that are ready at the
same moment share one COMMIT, and each keeps its own promise — all or nothing, and no answer before the
COMMIT that makes it durable."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from ltfu.settings import Settings
from ltfu.store import sqlite_inline
from ltfu.store.db import Database
from ltfu.store.uow import UnitOfWork, unit_of_work
from tests.conftest import ADMIN_PASSWORD


@pytest.fixture
async def db(tmp_path: Path) -> Any:
    database = Database(Settings(database_url=f"sqlite:///{tmp_path / 'ltfu.db'}", data_dir=tmp_path,
                                 admin_password=ADMIN_PASSWORD, workers=False))
    await database.upgrade()
    commits: list[int] = []
    event.listen(database.engine.sync_engine, "commit", lambda _conn: commits.append(1))
    database.commits = commits  # type: ignore[attr-defined]
    yield database
    await database.dispose()


def _committed(db: Database) -> set[str]:
    """Patient identifiers in the database file as another process sees it (committed rows only)."""
    path = db.settings.sqlalchemy_url.split(":///", 1)[1]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT value FROM search_index WHERE res_type = 'Patient' AND param = 'identifier'")
        return {r[0] for r in rows}


async def _patient(uow: UnitOfWork, tag: str) -> None:
    await uow.resources.create({"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": tag}]})
    await uow.flush()  # sent now: what a rollback must undo


async def test_units_of_work_ready_together_share_one_commit_and_end_after_it(db: Database) -> None:
    seen_at_exit: dict[str, bool] = {}

    async def one(tag: str) -> None:
        async with unit_of_work(db) as uow:
            await _patient(uow, tag)
        seen_at_exit[tag] = tag in _committed(db)  # answered: durable already

    await asyncio.gather(*(one(f"g-{i}") for i in range(10)))
    assert seen_at_exit == {f"g-{i}": True for i in range(10)}
    assert len(db.commits) == 1  # type: ignore[attr-defined]


async def test_a_failing_member_loses_only_its_own_work(db: Database) -> None:
    class Refused(Exception):
        pass

    async def one(tag: str, fail: bool) -> None:
        async with unit_of_work(db) as uow:
            await _patient(uow, tag)
            await _patient(uow, tag + "-b")
            if fail:
                raise Refused

    results = await asyncio.gather(*(one(f"f-{i}", i in (0, 3)) for i in range(6)), return_exceptions=True)
    assert [type(r) for r in results] == [Refused, type(None), type(None), Refused, type(None), type(None)]
    kept = {f"f-{i}" for i in (1, 2, 4, 5)}
    assert _committed(db) == kept | {t + "-b" for t in kept}
    async with unit_of_work(db) as uow:  # the writer is fine afterwards
        await _patient(uow, "after")
    assert "after" in _committed(db)


async def test_a_failed_commit_fails_every_member(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    real = sqlite_inline.InlineConnection.commit
    failed: list[int] = []

    async def commit_once_fails(self: sqlite_inline.InlineConnection) -> None:
        if not failed:
            failed.append(1)
            raise sqlite3.OperationalError("disk I/O error")
        await real(self)

    monkeypatch.setattr(sqlite_inline.InlineConnection, "commit", commit_once_fails)

    async def one(tag: str) -> None:
        async with unit_of_work(db) as uow:
            await _patient(uow, tag)

    results = await asyncio.gather(*(one(f"c-{i}") for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results), results
    assert _committed(db) == set()
    await one("again")
    assert _committed(db) == {"again"}


async def test_a_long_unit_of_work_alone_keeps_nobody_waiting(db: Database) -> None:
    """A defaulter list asks to commit alone: the short units of work before it are answered before it ends."""
    go_on = asyncio.Event()
    order: list[str] = []

    async def short(tag: str) -> None:
        async with unit_of_work(db) as uow:
            await _patient(uow, tag)
        order.append(tag)

    async def long() -> None:
        async with unit_of_work(db) as uow:
            await uow.alone()
            await _patient(uow, "long")
            await go_on.wait()  # holds the writer (as a 10,000-patient list does, between its turns)
        order.append("long")

    shorts = [asyncio.create_task(short(f"s-{i}")) for i in range(3)]
    await asyncio.sleep(0)
    task = asyncio.create_task(long())
    for _ in range(100):
        if len(order) == 3:
            break
        await asyncio.sleep(0.01)
    assert sorted(order) == ["s-0", "s-1", "s-2"]  # answered while the long one still runs
    assert _committed(db) == {"s-0", "s-1", "s-2"}
    go_on.set()
    await task
    await asyncio.gather(*shorts)
    assert _committed(db) == {"s-0", "s-1", "s-2", "long"}
