"""The kept counts (store/tallies.py, migration 0020's triggers) equal a GROUP BY over the rows, whatever was
done to them: random cases, deliveries, failures, dead rows, replays, closes, retention purges and folds, on
SQLite and PostgreSQL. And the readers built on them (dashboard, /admin/stats, /metrics) say the same as
counting the rows."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from sqlalchemy import func, select, text

from ltfu.store import tallies
from ltfu.store.db import Database
from ltfu.store.outbox import OutboxRepository
from ltfu.store.retention import RetentionRepository
from ltfu.store.schema import cases, delivery_attempts, outbox
from ltfu.store.stats import loop_stats
from ltfu.store.uow import unit_of_work
from ltfu.ui import queries
from ltfu.ui.queries import Scope

ORGS = ("org-a", "org-b", None)
STATUSES = ("requested", "received", "in-progress", "completed", "failed", "cancelled")
BUSINESS = (None, "received-by-cht", "attempt-unsuccessful", "outcome-recorded", "expired", "unassignable")
OUTCOMES = (None, "returning-to-care", "deceased", "moved")
MATCHED = (None, "identifier", "score", "review", "created")
WHEN = "2026-01-01T00:00:00.000000Z"


def _flag(column: Any) -> Any:
    return column.is_not(None)


async def _truth(conn: Any) -> dict[str, dict[tuple[Any, ...], int]]:
    """Each metric's counts straight from the rows, keyed as the tallies are."""
    c, o, a = cases.c, outbox.c, delivery_attempts.c
    out: dict[str, dict[tuple[Any, ...], int]] = {"cases": {}, "outbox": {}, "attempts": {}}
    q = select(
        c.organization_id,
        c.status,
        c.business_status,
        c.outcome,
        c.matched_by,
        c.sent_to_cht_at,
        c.first_attempt_at,
        c.closed_at,
    )
    for org, status, business, outcome, matched, sent, first, closed in (await conn.execute(q)).all():
        key = (org, (status, business, outcome, matched, *("1" if v else "0" for v in (sent, first, closed))))
        out["cases"][key] = out["cases"].get(key, 0) + 1
    failed = (o.attempts > 0).label("failed")
    q = select(o.organization_id, o.destination, o.status, failed, func.count()).group_by(
        o.organization_id, o.destination, o.status, "failed"
    )
    for org, dest, status, failed, n in (await conn.execute(q)).all():
        out["outbox"][(org, (dest, status, "1" if failed else "0"))] = n
    for result, n in (await conn.execute(select(a.result, func.count()).group_by(a.result))).all():
        out["attempts"][(None, (result,))] = n
    return out


async def _kept(conn: Any) -> dict[str, dict[tuple[Any, ...], int]]:
    return {m: {(t.scope, t.key): t.n for t in await tallies.read(conn, m)} for m in ("cases", "outbox", "attempts")}


async def _check(db: Database) -> None:
    async with db.transaction() as conn:
        truth, kept = await _truth(conn), await _kept(conn)
        assert kept == truth
        # the facility-scoped read is that facility's share
        assert {t.key: t.n for t in await tallies.read(conn, "outbox", "org-a")} == {
            k: n for (org, k), n in truth["outbox"].items() if org == "org-a"
        }


async def test_random_operations_keep_the_counts_equal_to_counting_the_rows(db: Database) -> None:
    rnd = random.Random(20)
    case_ids: list[str] = []
    for step in range(600):
        async with unit_of_work(db) as uow:
            conn, ob = uow.conn, uow.outbox
            op = rnd.choice(
                [
                    "create",
                    "create",
                    "deliver",
                    "fail",
                    "dead",
                    "replay",
                    "close",
                    "update",
                    "purge",
                    "attempt",
                    "cancel",
                    "fold",
                ]
            )
            rows = list((await conn.execute(select(outbox.c.id, outbox.c.status, outbox.c.case_id))).all())
            pending = [r.id for r in rows if r.status == "pending"]
            if op == "create" or not case_ids:
                case_id = f"case-{step}"
                org = rnd.choice(ORGS)
                await uow.cases.add(
                    case_id=case_id,
                    task_id=f"task-{step}",
                    request_key=f"sys|{step}",
                    patient_id=f"p-{step % 30}",
                    organization_id=org,
                    status="requested",
                    attempts=0,
                    created_at=WHEN,
                    updated_at=WHEN,
                    matched_by=rnd.choice(MATCHED),
                )
                case_ids.append(case_id)
                await ob.enqueue(
                    "cht", "follow-up", f"case:{case_id}", {"c": case_id}, case_id=case_id, organization_id=org
                )
                for _ in range(rnd.randint(0, 2)):
                    await ob.enqueue(
                        "notify",
                        "event",
                        f"sub:{org}",
                        {"c": case_id},
                        case_id=case_id,
                        organization_id=org,
                        dedupe_key=f"event:{step}:{rnd.random()}",
                    )
            elif op == "deliver" and pending:
                await ob.done(rnd.choice(pending))
            elif op == "fail" and pending:
                await ob.retry_later(rnd.choice(pending), 10, "503")
            elif op == "dead" and pending:
                await ob.dead(rnd.choice(pending), "gave up")
            elif op == "replay":
                org = rnd.choice(ORGS[:2])
                await ob.replay(organization_id=org) if rnd.random() < 0.5 else await ob.replay(
                    row_id=rnd.choice([r.id for r in rows] or [0])
                )
            elif op == "attempt" and rows:
                await ob.record_attempt(rnd.choice(rows).id, 200, 5, rnd.choice(["ok", "retry", "dead"]), None)
            elif op == "cancel":
                await ob.cancel_pending(f"case:{rnd.choice(case_ids)}", "follow-up")
            elif op in ("close", "update"):
                # any subset of the counted columns, one alone too (each must move the counts by itself)
                choices: dict[str, Any] = {
                    "status": STATUSES,
                    "business_status": BUSINESS,
                    "outcome": OUTCOMES,
                    "matched_by": MATCHED,
                    "sent_to_cht_at": (None, WHEN),
                    "first_attempt_at": (None, WHEN),
                    "closed_at": (None, WHEN),
                    "organization_id": ORGS,
                }
                values: dict[str, Any] = {"updated_at": WHEN}
                for column in rnd.sample(sorted(choices), rnd.randint(1, 3)):
                    values[column] = rnd.choice(choices[column])
                if op == "close":
                    values["closed_at"] = WHEN
                if rnd.random() < 0.15:
                    values = {"updated_at": WHEN, "attempts": rnd.randint(0, 3)}  # no counted column
                await uow.cases.set(rnd.choice(case_ids), **values)
            elif op == "purge":
                await RetentionRepository(conn).drop_deliveries(rnd.choice(case_ids))
            elif op == "fold":
                assert await tallies.fold(conn)
        if step % 25 == 0:
            await _check(db)
    await _check(db)
    async with db.transaction() as conn:
        await tallies.fold(conn)
        assert (await conn.execute(text("SELECT COUNT(*) FROM tally_deltas"))).scalar_one() == 0
    await _check(db)


async def test_the_pages_counts_are_the_rows_counts(db: Database) -> None:
    """delivery_counts, dead_count, /admin/stats and the outbox depth, against counting the rows."""
    async with unit_of_work(db) as uow:
        for i, (org, status) in enumerate([("org-a", "requested"), ("org-a", "completed"), ("org-b", "failed")]):
            await uow.cases.add(
                case_id=f"c{i}",
                task_id=f"t{i}",
                request_key=f"s|{i}",
                patient_id="p",
                organization_id=org,
                status=status,
                attempts=0,
                created_at=WHEN,
                updated_at=WHEN,
                closed_at=WHEN if status != "requested" else None,
                outcome=None,
            )
        ids = [
            await uow.outbox.enqueue("notify", "event", f"k{i}", {}, organization_id=org)
            for i, org in enumerate(["org-a", "org-a", "org-a", "org-b", "org-b"])
        ]
        await uow.outbox.dead(ids[0], "x")
        await uow.outbox.retry_later(ids[1], 60, "x")
        await uow.outbox.done(ids[3])
        await uow.outbox.record_attempt(ids[3], 200, 1, "ok", None)
    async with db.transaction() as conn:
        a, b = Scope(False, "org-a"), Scope(False, "org-b")
        assert (await queries.delivery_counts(conn, a))["notify"] == {"queued": 1, "retrying": 1, "dead": 1}
        assert (await queries.delivery_counts(conn, b))["notify"] == {"queued": 1, "retrying": 0, "dead": 0}
        admin = Scope(True, None)
        assert (await queries.delivery_counts(conn, admin))["notify"] == {"queued": 2, "retrying": 1, "dead": 1}
        assert await queries.dead_count(conn, admin, "org-a") == 1
        assert await queries.dead_count(conn, b, "org-a") == 0  # not b's to count
        assert await queries.delivery_counts(conn, Scope(False, None)) == {
            d: {"queued": 0, "retrying": 0, "dead": 0} for d in ("cht", "notify")
        }
        stats = await loop_stats(conn)
        assert stats["by_status"] == {"requested": 1, "completed": 1, "failed": 1}
        assert stats["reached"] == {"cht": 0, "attempted": 0, "closed": 2}
        assert stats["deliveries"] == {"notify": {"pending": 3, "dead": 1, "done": 1}}
        assert stats["attempts"] == {"ok": 1}
        depth = await OutboxRepository(conn, skip_locked=False).depth()
        oldest = (
            await conn.execute(select(func.min(outbox.c.next_attempt_at)).where(outbox.c.status == "pending"))
        ).scalar_one()
        assert depth == {("notify", "pending"): (3, oldest), ("notify", "dead"): (1, None)}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_the_migration_backfills_what_is_stored(backend: str, tmp_path: Any) -> None:
    """A store upgraded from 0013 with rows in it starts with the counts of those rows."""
    from alembic import command
    from alembic.config import Config

    from ltfu.settings import Settings
    from ltfu.store.db import MIGRATIONS
    from tests.support import postgres

    sqlite_url = f"sqlite:///{tmp_path / 'old.db'}"
    url = sqlite_url if backend == "sqlite" else await asyncio.to_thread(postgres.create_database)
    if url is None:
        pytest.skip("PostgreSQL unreachable")
    database = Database(Settings(database_url=url, data_dir=tmp_path, admin_password="x" * 12))

    def upgrade(sync_conn: Any, to: str) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, to)

    try:
        async with database.transaction() as c:
            await c.run_sync(upgrade, "0013")
            await c.execute(
                cases.insert(),
                [
                    dict(
                        case_id=f"c{i}",
                        task_id=f"t{i}",
                        request_key=f"k{i}",
                        patient_id="p",
                        organization_id="o" if i % 2 else None,
                        status="requested",
                        attempts=0,
                        created_at=WHEN,
                        updated_at=WHEN,
                    )
                    for i in range(5)
                ],
            )
            await c.execute(
                outbox.insert(),
                [
                    dict(
                        destination="cht",
                        kind="f",
                        order_key=f"k{i}",
                        payload="{}",
                        status=("pending", "done", "dead")[i % 3],
                        attempts=i % 2,
                        created_at=WHEN,
                        next_attempt_at=WHEN,
                        organization_id="o",
                    )
                    for i in range(7)
                ],
            )
            await c.execute(
                delivery_attempts.insert(), [dict(outbox_id=1, attempted_at=WHEN, latency_ms=1, result="ok")]
            )
        async with database.transaction() as c:
            await c.run_sync(upgrade, "head")
        await _check(database)
        async with database.transaction() as c:
            assert (await c.execute(text("SELECT SUM(n) FROM tallies WHERE metric = 'outbox'"))).scalar_one() == 7
    finally:
        await database.dispose()
        if backend == "postgresql":
            await asyncio.to_thread(postgres.drop_database, url)
