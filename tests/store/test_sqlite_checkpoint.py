"""The inline SQLite writer never checkpoints inside a commit (that would stall the event loop on the
disk's sync): its ``wal_autocheckpoint`` is off and the ``Checkpointer`` thread copies the WAL back."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from ltfu.settings import Settings
from ltfu.store import sqlite_inline
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.conftest import ADMIN_PASSWORD


def _settings(tmp_path: Path, inline: bool = True) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'ltfu.db'}", data_dir=tmp_path,
                    admin_password=ADMIN_PASSWORD, workers=False, sqlite_inline_writes=inline)


async def _write_patients(db: Database, n: int, tag: str, size: int = 2000) -> None:
    for i in range(n):
        async with unit_of_work(db) as uow:
            await uow.resources.create({"resourceType": "Patient", "gender": "female",
                                        "identifier": [{"system": "urn:t", "value": f"{tag}-{i}"}],
                                        "name": [{"family": "x" * size}]})


def test_inline_is_the_default_writer(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).sqlite_inline_writes is True


async def test_inline_writer_leaves_checkpoints_to_its_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_inline, "CHECKPOINT_BYTES", 64 * 1024)
    db = Database(_settings(tmp_path))
    try:
        await db.upgrade()
        async with db.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw.sqlite.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        assert db.checkpointer is not None
        before = (tmp_path / "ltfu.db").stat().st_size
        await _write_patients(db, 60, "a")  # ~60 × 4 KiB (current row and history): the threshold, 3 times
        db.checkpointer.close()  # waits for a running checkpoint to end
        assert db.checkpointer.runs >= 1
        assert (tmp_path / "ltfu.db").stat().st_size > before + 30 * 2000  # the rows reached the file
    finally:
        await db.dispose()


async def test_without_its_thread_nothing_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other half: with the thread never woken the database file does not grow (the writer's commits
    leave everything in the WAL), so it is the thread that checkpoints, off the event loop."""
    monkeypatch.setattr(sqlite_inline, "CHECKPOINT_BYTES", 64 * 1024)
    monkeypatch.setattr(sqlite_inline.Checkpointer, "maybe", lambda self: None)
    db = Database(_settings(tmp_path))
    try:
        await db.upgrade()
        before = (tmp_path / "ltfu.db").stat().st_size
        await _write_patients(db, 150, "b", size=20_000)  # ~6 MiB: past SQLite's own 1,000-page threshold
        assert (tmp_path / "ltfu.db").stat().st_size == before
    finally:
        await db.dispose()


async def test_after_a_checkpoint_small_commits_do_not_wake_it_again(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint leaves the WAL file as large as it was; the writer's ``journal_size_limit`` truncates it
    when the WAL starts over, so the next small commit is below the threshold and wakes nobody (else every
    commit past the first threshold woke a checkpoint)."""
    monkeypatch.setattr(sqlite_inline, "CHECKPOINT_BYTES", 256 * 1024)
    db = Database(_settings(tmp_path))
    try:
        await db.upgrade()
        assert db.checkpointer is not None
        await _write_patients(db, 60, "c")  # past the threshold, many times
        for _ in range(1000):  # until a woken checkpoint has run and the thread is idle (no time asserted)
            if db.checkpointer.runs and not db.checkpointer._wake.is_set():
                break
            await asyncio.sleep(0.01)
        with contextlib.closing(sqlite3.connect(tmp_path / "ltfu.db")) as conn:  # the WAL copied back (no writer)
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and frames == copied
        assert (tmp_path / "ltfu.db-wal").stat().st_size > 256 * 1024  # a checkpoint leaves the file as it was
        await _write_patients(db, 1, "d", size=10)  # the WAL starts over here (one unit: ~50 KiB)
        assert (tmp_path / "ltfu.db-wal").stat().st_size < 256 * 1024
        assert not db.checkpointer._wake.is_set()
    finally:
        await db.dispose()
