"""Regression guard for growth: the queries of the write path and of the dashboard use indexes.

Every statement the server sends while it accepts new cases (both routes and a Bundle) and serves each
dashboard page is recorded with its parameters, then explained on the same database. On SQLite its
``EXPLAIN QUERY PLAN`` must not ``SCAN`` (read from the start) a table that grows with the cases, unless
the scan is of a partial index (its rows are the few not yet delivered) or stops at the statement's
``LIMIT`` with nothing sorted after it (a walk along an index in the order asked for: the cost is the
page, not the store). On PostgreSQL, with sequential scans priced out (``enable_seqscan = off``, as if
the tables were big), no ``Seq Scan`` on one may remain, unless under a ``Limit`` with no ``Sort``.
A query that cannot use an index fails here, whatever the tables hold. Nothing is timed:
bench/write_path.py growth and bench/ui_load.py --grow-to measure the cost.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url

from ltfu.api.app import create_app
from ltfu.metrics import MetricsMiddleware, metrics_route
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.schema import metadata
from ltfu.ui import routes as ui_routes
from tests.conftest import Api, _truncate
from tests.store.test_statement_counts import _defaulters, _facility, _poc_request
from tests.support.server import ServerThread

# Tables with rows per case (or per resource, delivery, event): a full read of one grows with the store.
GROWING = ("cases", "resources", "resource_history", "search_index", "resource_owners", "outbox",
           "delivery_attempts", "subscription_events", "inbound_receipts", "match_reviews", "match_decisions",
           "cht_persons", "cht_person_keys")
# "SEARCH t" with no index named is a full read too (SQLite's plan of a MAX() no index serves)
SQLITE_SCAN = re.compile(r"\bSCAN (" + "|".join(GROWING) + r")\b|\bSEARCH (" + "|".join(GROWING) + r")$")
# A walk along every resource of a type (``res_type=?`` alone) testing each row with a subquery: its LIMIT stops
# it only once enough rows passed the test, so a selective search reads the whole type.
SQLITE_TYPE_WALK = re.compile(r"SEARCH (resources|search_index) USING (?:COVERING )?INDEX \w+ \(res_type=\?\)$")
PG_SEQ_SCAN = re.compile(r"Seq Scan on (" + "|".join(GROWING) + r")\b")
PARTIAL = {ix.name for t in metadata.tables.values() for ix in t.indexes if ix.dialect_options["sqlite"]["where"]
           is not None}


def _pg_full_scan(sql: str, plan: str) -> bool:
    bounded = re.search(r"\bLIMIT\b", sql) and "Limit" in plan and "Sort" not in plan
    return bool(PG_SEQ_SCAN.search(plan)) and not bounded


def _sqlite_full_scan(sql: str, plan: str) -> bool:
    bounded = re.search(r"\bLIMIT\b", sql) and "TEMP B-TREE" not in plan
    for line in plan.splitlines():
        if SQLITE_TYPE_WALK.search(line) and "SUBQUERY" in plan:
            return True
        if not SQLITE_SCAN.search(line):
            continue
        index = re.search(r"USING (?:COVERING )?INDEX (\w+)", line)
        if index and index.group(1) in PARTIAL:
            continue
        if not bounded:
            return True
    return False


class Recorder:
    """The statements (with their parameters) the server's engines execute, one at a time."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, Any]] = {}  # statement -> (label, parameters) of its first run
        self.label = ""

    def __call__(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool) -> None:
        if not many and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            self.seen.setdefault(statement, (self.label, parameters))


@pytest.fixture
def recorded(settings: Settings) -> Iterator[tuple[Api, Recorder]]:
    async def reset() -> None:
        database = Database(settings)
        await database.upgrade()
        await _truncate(database)
        await database.dispose()

    asyncio.run(reset())
    app = create_app(settings)
    app.router.routes.extend([*ui_routes.routes, metrics_route])
    app.add_middleware(MetricsMiddleware)
    recorder = Recorder()
    for engine in app.state.db.engines():
        event.listen(engine.sync_engine, "before_cursor_execute", recorder)
    with ServerThread(app) as srv:
        yield Api(srv.url), recorder


def _sqlite_plans(url: str, statements: dict[str, tuple[str, Any]]) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(make_url(url).database or "")
    try:
        return [(label, sql, "\n".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params or ())))
                for sql, (label, params) in statements.items()]
    finally:
        conn.close()


def _pg_plans(url: str, statements: dict[str, tuple[str, Any]]) -> list[tuple[str, str, str]]:
    import asyncpg

    async def explain() -> list[tuple[str, str, str]]:
        u = make_url(url)
        conn = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                                     database=u.database)
        try:
            await conn.execute("SET enable_seqscan = off")
            out = []
            for sql, (label, params) in statements.items():
                rows = await conn.fetch("EXPLAIN " + sql, *(params or ()))
                out.append((label, sql, "\n".join(r[0] for r in rows)))
            return out
        finally:
            await conn.close()

    return asyncio.run(explain())


def _scans(settings: Settings, recorder: Recorder) -> list[str]:
    sqlite = settings.database_url.startswith("sqlite")
    plans = (_sqlite_plans if sqlite else _pg_plans)(settings.database_url, recorder.seen)
    return [f"{label}: {sql}\n{plan}" for label, sql, plan in plans
            if (_sqlite_full_scan(sql, plan) if sqlite else _pg_full_scan(sql, plan))]


def test_write_path_and_dashboard_queries_use_indexes(recorded: tuple[Api, Recorder], settings: Settings) -> None:
    api, recorder = recorded
    recorder.label = "setup"
    org = _facility(api)
    assert api.post("/mediator/service-request", json=_poc_request(0)).status_code == 201
    recorder.label = "POST /mediator/service-request"
    for n in range(1, 4):
        assert api.post("/mediator/service-request", json=_poc_request(n)).status_code == 201
    recorder.label = "POST /fhir/ServiceRequest"
    for n in range(3):
        body = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                "identifier": [{"system": "https://facility.example/ltfu-request", "value": f"k-{n}"}],
                "subject": {"identifier": {"system": "cht", "value": "3fa85f64-5717-4562-b3fc-2c963f66afa6"}},
                "requester": {"reference": f"Organization/{org}"}}
        assert api.post("/fhir/ServiceRequest", json=body).status_code == 201
    recorder.label = "POST /fhir (transaction Bundle)"
    assert api.post("/fhir", json=_defaulters(org, 0, 3)).status_code == 200
    case_id = api.get("/fhir/ServiceRequest?_count=1").json()["entry"][0]["resource"]["id"]
    pages = ["/ui/cases", "/ui/cases?state=completed", "/ui/cases?state=open", f"/ui/cases?facility={org}",
             f"/ui/cases?facility={org}&state=open&age=0-7", "/ui/cases?outcome=refused", "/ui/cases?outcome=none",
             "/ui/cases?chw=chw-1", "/ui/cases?q=m-1", "/ui/cases?page=2", "/ui/cases?from=2020-01-01&to=2030-01-01",
             f"/ui/cases/{case_id}", "/ui/deliveries", "/ui/deliveries?state=dead", "/ui/deliveries?state=retrying",
             "/ui/programme", f"/ui/programme?facility={org}", "/ui/programme/weeks.csv", "/ui/review"]
    for path in pages:
        recorder.label = "GET " + path
        r = api.get(path)
        assert r.status_code == 200, (path, r.status_code)
    assert len(recorder.seen) > 30  # the recorder saw the routes' queries
    scans = _scans(settings, recorder)
    assert not scans, "\n\n".join(scans)


def test_background_work_reads_and_pushes_use_indexes(recorded: tuple[Api, Recorder], settings: Settings) -> None:
    """What runs however big the store is besides the accept path: the sweeper (expiry, review expiry, subscription
    heartbeats), the tally fold, the retention sweep, /metrics and /admin/stats, reads and searches of a case, a
    CHT push."""
    api, recorder = recorded
    recorder.label = "setup"
    org = _facility(api)
    assert api.post("/fhir", json=_defaulters(org, 0, 3)).status_code == 200  # review items
    for n in range(3):
        assert api.post("/mediator/service-request", json=_poc_request(n)).status_code == 201
    sub = api.get("/fhir/Subscription").json()["entry"][0]["resource"]
    sub["channel"]["extension"] = [{"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                                    "backport-heartbeat-period", "valueUnsignedInt": 60}]
    assert api.put(f"/fhir/Subscription/{sub['id']}", json=sub).status_code == 200
    case_id = api.get("/fhir/ServiceRequest?identifier=http://bench.example/sr|sr-1").json()["entry"][0]["resource"]["id"]
    for path in (f"/fhir/ServiceRequest/{case_id}", f"/fhir/Task?based-on=ServiceRequest/{case_id}",
                 "/fhir/ServiceRequest?identifier=http://bench.example/sr|sr-2", "/metrics", "/admin/stats"):
        recorder.label = "GET " + path
        assert api.get(path).status_code == 200, path
    recorder.label = "POST /cht/follow-up"
    report = {"report_id": "r-1", "case_ref": case_id, "patient_uuid": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
              "method": "phone", "contacted": "yes", "outcome": "returning_to_care", "attempt_no": 1}
    assert api.post("/cht/follow-up", json=report).status_code == 201

    async def background() -> None:
        from ltfu.services import notifications, retention, review
        from ltfu.services import requests as case_requests
        from ltfu.store import tallies
        from ltfu.store.uow import unit_of_work

        db = Database(settings)
        for engine in db.engines():
            event.listen(engine.sync_engine, "before_cursor_execute", recorder)
        try:
            async with unit_of_work(db) as uow:  # as after its handshake (no worker runs here)
                await notifications.set_status(uow, sub["id"], "active")
            recorder.label = "sweeper"
            async with unit_of_work(db) as uow:
                await case_requests.expire_due(uow)
                await review.expire_due(uow)
                assert await notifications.queue_heartbeats(uow) == 0  # it has heard something within its period
            recorder.label = "tally fold"
            async with db.transaction() as conn:
                await tallies.fold(conn)
            recorder.label = "retention"
            await retention.purge(db, 1)
        finally:
            await db.dispose()

    asyncio.run(background())
    assert {label for label, _ in recorder.seen.values()} >= {"sweeper", "tally fold", "retention"}
    scans = _scans(settings, recorder)
    assert not scans, "\n\n".join(scans)


def test_heartbeat_sweep_queries_use_indexes(recorded: tuple[Api, Recorder], settings: Settings) -> None:
    """The sweep asks, for each subscription with a heartbeat period, when it last queued a notification."""
    from ltfu.services import notifications
    from ltfu.store.uow import unit_of_work

    api, recorder = recorded
    _facility(api)
    assert api.post("/mediator/service-request", json=_poc_request(0)).status_code == 201
    org = api.get("/fhir/Organization?identifier=test-org").json()["entry"][0]["resource"]["id"]
    sub = {"resourceType": "Subscription", "status": "requested", "reason": "r",
           "criteria": f"Task?requester=Organization/{org}",
           "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hb", "payload": "application/fhir+json",
                       "extension": [{"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                                      "backport-heartbeat-period", "valueUnsignedInt": 3600}]}}
    created = api.post("/fhir/Subscription", json=sub)
    assert created.status_code == 201

    async def sweep() -> int:
        db = Database(settings)
        async with unit_of_work(db) as uow:  # as if its handshake had been answered
            await notifications.set_status(uow, created.json()["id"], "active")
        event.listen(db.engine.sync_engine, "before_cursor_execute", recorder)
        async with unit_of_work(db) as uow:
            queued = await notifications.queue_heartbeats(uow)
        await db.dispose()
        return queued

    recorder.seen.clear()
    recorder.label = "heartbeat sweep"
    assert asyncio.run(sweep()) == 0  # its handshake was queued within the period
    assert any("outbox" in sql for sql in recorder.seen), list(recorder.seen)
    scans = _scans(settings, recorder)
    assert not scans, "\n\n".join(scans)
