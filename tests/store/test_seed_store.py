"""The growth benchmarks' seeding (bench/seed_store.py) copies a template the service wrote while the server
keeps running: a write between two of its table reads must not end in copies that collide."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.conftest import ADMIN_PASSWORD

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import seed_store  # noqa: E402


async def _store(tmp_path: Path) -> str:
    """A migrated SQLite store holding two patients (each one version: its current row is its history's)."""
    url = f"sqlite:///{tmp_path / 'ltfu.db'}"
    db = Database(Settings(database_url=url, data_dir=tmp_path, admin_password=ADMIN_PASSWORD, workers=False))
    try:
        await db.upgrade()
        async with unit_of_work(db) as uow:
            for i in range(2):
                await uow.resources.create({"resourceType": "Patient", "gender": "female",
                                            "identifier": [{"system": "urn:t", "value": f"p-{i}"}]})
    finally:
        await db.dispose()
    return url


def _concurrent_update(path: str) -> None:
    """What the running server does meanwhile: the newest patient gets a second version."""
    with sqlite3.connect(path, isolation_level=None) as other:
        res_type, res_id, content = other.execute(
            "SELECT res_type, res_id, content FROM resources ORDER BY seq DESC LIMIT 1").fetchone()
        other.execute("BEGIN IMMEDIATE")
        seq = other.execute(
            "INSERT INTO resource_history (res_type, res_id, version_id, last_updated, deleted, method, content) "
            "VALUES (?, ?, 2, '2026-01-01T00:00:00.000000Z', 0, 'PUT', ?) RETURNING seq",
            (res_type, res_id, content)).fetchone()[0]
        other.execute("UPDATE resources SET version_id = 2, seq = ? WHERE res_type = ? AND res_id = ?",
                      (seq, res_type, res_id))
        other.execute("COMMIT")


async def test_a_write_during_capture_leaves_copies_that_do_not_collide(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = seed_store.Snapshot(keys={t: set() for t in seed_store.CLONED})  # the template: the whole store
    url = await _store(tmp_path)
    path = str(tmp_path / "ltfu.db")

    reads = seed_store.Store.rows

    def rows(self: seed_store.Store, table: str) -> list[tuple[Any, ...]]:
        out = reads(self, table)
        if table == "resource_history":  # the history is read: the server writes before the current rows are
            _concurrent_update(path)
        return out

    with monkeypatch.context() as m:
        m.setattr(seed_store.Store, "rows", rows)
        with seed_store.Store(url) as store:
            template = seed_store.capture(store, before)
    history = {r[0] for r in template.rows["resource_history"]}
    current = {r[seed_store._columns("resources").index("seq")] for r in template.rows["resources"]}
    assert current <= history  # every current version copied has its history row in the template

    seed_store.replicate(url, template, before, 4, batch_cases=1, progress=False)  # one copy per transaction
    with sqlite3.connect(path) as conn:
        patients = conn.execute("SELECT COUNT(*) FROM resources WHERE res_type = 'Patient'").fetchone()[0]
        orphans = conn.execute("SELECT COUNT(*) FROM resources r WHERE NOT EXISTS "
                               "(SELECT 1 FROM resource_history h WHERE h.seq = r.seq)").fetchone()[0]
    assert patients == 2 + 4 * 2
    assert orphans == 0
