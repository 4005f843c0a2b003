"""Retention (finding M4): N days after a case closes its PHI is removed, on SQLite and PostgreSQL;
the run logs counts only; `ltfu purge` and the worker's sweep run it; database files are private."""

from __future__ import annotations

import asyncio
import logging
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, insert, select, update
from typer.testing import CliRunner

from ltfu.cht.inbound import parse_follow_up
from ltfu.cli import app as cli_app
from ltfu.delivery.retention_sweep import RetentionSweep
from ltfu.fhir.outcome import FhirError
from ltfu.services import attempts
from ltfu.services import resources as resource_service
from ltfu.services.retention import purge
from ltfu.services.workflow import install_hooks
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.schema import cases, delivery_attempts, outbox, resource_history, resources, subscription_events
from ltfu.store.uow import unit_of_work

CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}
NAME = "Akinyi-Secret-Name"
NOTE = "lives behind the blue kiosk"
LATER = datetime.now(UTC) + timedelta(days=31)


async def _create(db: Database, resource: dict[str, Any]) -> dict[str, Any]:
    async with unit_of_work(db) as uow:
        return (await resource_service.create(uow, resource)).stored.resource


async def _facility(db: Database) -> str:
    ep = await _create(
        db,
        {
            "resourceType": "Endpoint",
            "status": "active",
            "connectionType": CONN,
            "payloadType": [{"text": "Task"}],
            "address": "http://127.0.0.1:9/cb",
        },
    )
    org = await _create(
        db, {"resourceType": "Organization", "name": "Facility", "endpoint": [{"reference": f"Endpoint/{ep['id']}"}]}
    )
    return org["id"]


async def _patient(db: Database) -> str:
    p = await _create(
        db,
        {
            "resourceType": "Patient",
            "gender": "female",
            "birthDate": "1990-02-03",
            "name": [{"family": NAME, "given": ["Rose"]}],
            "telecom": [{"system": "phone", "value": "+254700000001"}],
        },
    )
    async with unit_of_work(db) as uow:  # a second version: history must go too
        await uow.resources.update({**p, "telecom": [{"system": "phone", "value": "+254700000002"}]}, p["id"])
    return p["id"]


async def _case(db: Database, org: str, patient_id: str, key: str, outcome: str | None = "deceased") -> str:
    sr = await _create(
        db,
        {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "identifier": [{"system": "urn:req", "value": key}],
            "subject": {"reference": f"Patient/{patient_id}"},
            "requester": {"reference": f"Organization/{org}"},
            "note": [{"text": NOTE}],
        },
    )
    if outcome:
        doc = {
            "report_id": f"rep-{key}",
            "case_ref": sr["id"],
            "method": "home_visit",
            "contacted": "yes",
            "outcome": outcome,
            "attempt_no": 1,
            "reported_date": 1732440000000,
            "chw_id": "chw-1",
            "death_date": "2026-11-01",
            "notes": NOTE,
        }
        async with unit_of_work(db) as uow:
            await attempts.record_follow_up(uow, parse_follow_up(doc), doc)
    async with unit_of_work(db) as uow:  # the worker delivered everything, with one recorded attempt each
        ids = (await uow.conn.execute(select(outbox.c.id).where(outbox.c.case_id == sr["id"]))).scalars().all()
        await uow.conn.execute(update(outbox).where(outbox.c.id.in_(ids)).values(status="done"))
        for i in ids:
            await uow.conn.execute(
                insert(delivery_attempts).values(
                    outbox_id=i, attempted_at="2026-11-02T00:00:00Z", status_code=200, latency_ms=5, result="ok"
                )
            )
    return sr["id"]


async def _count(db: Database, table: Any, *where: Any) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one())


async def _content(db: Database, res_type: str, res_id: str) -> dict[str, Any] | None:
    async with db.connect() as conn:
        row = (
            await conn.execute(
                select(resources.c.content).where(resources.c.res_type == res_type, resources.c.res_id == res_id)
            )
        ).first()
    return orjson.loads(row.content) if row else None


async def _all_text(db: Database) -> str:
    async with db.connect() as conn:
        parts = [r.content for r in await conn.execute(select(resources.c.content))]
        parts += [r.content for r in await conn.execute(select(resource_history.c.content))]
        parts += [r.payload for r in await conn.execute(select(outbox.c.payload))]
    return "\n".join(parts)


@pytest.fixture(autouse=True)
def _hooks() -> None:
    install_hooks()


async def test_purge_removes_the_phi_of_a_closed_case(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    org = await _facility(db)
    pat = await _patient(db)
    case_id = await _case(db, org, pat, "R-1")
    assert NAME in await _all_text(db) and NOTE in await _all_text(db)
    assert await _count(db, subscription_events, subscription_events.c.case_id == case_id) > 0
    assert await _count(db, outbox, outbox.c.case_id == case_id) > 0

    assert (await purge(db, 30)).cases == 0  # closed today: not due

    dry = await purge(db, 30, dry_run=True, now=LATER)
    assert dry.cases == 1 and dry.patients_anonymised == 1 and dry.resources_removed == 2
    assert NAME in await _all_text(db)  # a dry run changes nothing

    caplog.set_level(logging.INFO, "ltfu.retention")
    report = await purge(db, 30, now=LATER)
    assert report == dry
    assert report.deliveries_removed > 0 and report.delivery_attempts_removed > 0 and report.events_removed > 0
    text = await _all_text(db)
    assert NAME not in text and NOTE not in text and "+2547" not in text and "1990-02-03" not in text
    assert "2026-11-01" not in text  # the death date of the outcome Observation

    patient = await _content(db, "Patient", pat)
    assert patient is not None and set(patient) == {"resourceType", "id", "meta", "active"}
    assert patient["meta"]["security"][0]["code"] == "REDACTED"
    sr = await _content(db, "ServiceRequest", case_id)
    assert sr is not None and "note" not in sr and sr["subject"] == {"reference": f"Patient/{pat}"}
    async with unit_of_work(db) as uow:
        with pytest.raises(FhirError) as gone:
            await uow.resources.vread("Patient", pat, 1)
        assert gone.value.status == 404
        case = await uow.cases.get(case_id)
    assert case.outcome is not None and case.status == "completed"  # the figures stay
    for res_type in ("Encounter", "Observation"):
        assert await _count(db, resources, resources.c.res_type == res_type) == 0
        assert await _count(db, resource_history, resource_history.c.res_type == res_type) == 0
    for res_type, res_id in (("Patient", pat), ("ServiceRequest", case_id)):
        assert (
            await _count(
                db, resource_history, resource_history.c.res_type == res_type, resource_history.c.res_id == res_id
            )
            == 1
        )
    assert await _count(db, outbox, outbox.c.case_id == case_id) == 0
    assert await _count(db, delivery_attempts) == 0
    assert await _count(db, subscription_events, subscription_events.c.case_id == case_id) == 0
    assert await _count(db, cases, cases.c.purged_at.is_not(None)) == 1

    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "ltfu.retention")
    assert "cases 1" in logged and case_id not in logged and pat not in logged and NAME not in logged

    assert (await purge(db, 30, now=LATER)).cases == 0  # done once


async def test_what_another_case_needs_stays(db: Database) -> None:
    org = await _facility(db)
    shared = await _patient(db)
    closed = await _case(db, org, shared, "S-1")
    still_open = await _case(db, org, shared, "S-2", outcome=None)
    other = await _patient(db)
    waiting = await _case(db, org, other, "W-1")
    async with unit_of_work(db) as uow:  # a delivery of that case is still to go: it waits
        await uow.outbox.enqueue("notify", "event", f"x-{waiting}", {"p": 1}, case_id=waiting)

    report = await purge(db, 30, now=LATER)
    assert report.cases == 1 and report.patients_anonymised == 0
    patient = await _content(db, "Patient", shared)
    assert patient is not None and patient["name"][0]["family"] == NAME  # the open case needs it
    assert await _count(db, cases, cases.c.case_id == closed, cases.c.purged_at.is_not(None)) == 1
    assert await _count(db, cases, cases.c.case_id.in_([still_open, waiting]), cases.c.purged_at.is_not(None)) == 0


async def test_purge_command(db: Database, db_url: str, tmp_path: Path) -> None:
    org = await _facility(db)
    case_id = await _case(db, org, await _patient(db), "C-1")
    old = (datetime.now(UTC) - timedelta(days=40)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    async with unit_of_work(db) as uow:
        await uow.conn.execute(update(cases).where(cases.c.case_id == case_id).values(closed_at=old))
    env = {"LTFU_DATABASE_URL": db_url, "LTFU_DATA_DIR": str(tmp_path), "LTFU_ADMIN_PASSWORD": ""}

    def ltfu(*args: str, **extra: str) -> Any:  # the command runs its own event loop: give it a thread
        return asyncio.to_thread(CliRunner().invoke, cli_app, list(args), env={**env, **extra})

    assert (await ltfu("purge")).exit_code == 2  # neither --days nor LTFU_RETENTION_DAYS
    dry = await ltfu("purge", "--days", "30", "--dry-run")
    assert dry.exit_code == 0 and "would purge: cases 1" in dry.output
    done = await ltfu("purge", LTFU_RETENTION_DAYS="30")
    assert done.exit_code == 0 and "purged: cases 1" in done.output
    assert "purged: cases 0" in (await ltfu("purge", "--days", "30")).output


async def test_the_worker_sweeps_when_retention_is_set(db: Database, settings: Settings) -> None:
    org = await _facility(db)
    case_id = await _case(db, org, await _patient(db), "D-1")
    old = (datetime.now(UTC) - timedelta(days=8)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    async with unit_of_work(db) as uow:
        await uow.conn.execute(update(cases).where(cases.c.case_id == case_id).values(closed_at=old))
    sweep = RetentionSweep(db, settings.model_copy(update={"retention_interval_s": 3600}), 7)
    stop = asyncio.Event()
    task = asyncio.create_task(sweep.run(stop))
    for _ in range(200):
        if sweep.runs:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    assert await _count(db, cases, cases.c.case_id == case_id, cases.c.purged_at.is_not(None)) == 1


async def test_database_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "ltfu-data"
    db = Database(Settings(data_dir=data))
    await db.upgrade()
    await db.dispose()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [p for p in data.iterdir() if p.name.startswith("ltfu.db")]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
