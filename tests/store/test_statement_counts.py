"""Regression guard for the write path: database statements per new case and per Bundle entry.

Counts what the driver is asked to execute (each ``execute``/``executemany`` is one round trip), through
the real HTTP routes on SQLite and PostgreSQL. The bounds are the figures of the fast write path with a
little room; a change that goes back to one statement per index row or per lookup fails here.
Wall time is not asserted: that belongs in ``bench/``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from ltfu.api.app import create_app
from ltfu.settings import Settings
from ltfu.store.db import Database
from tests.conftest import Api, _truncate
from tests.support.server import ServerThread

CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}
MRN = "https://facility.example/mrn"
REQ = "https://facility.example/ltfu-request"
PID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"

# Statements for one new case after the facility, its Subscription and the patient exist (on main at
# 511cc8e: 27 and 21 on SQLite, 26 and 20 on PostgreSQL; at 1129f5c: 21 and 16, 19 and 14). SQLite counts
# its BEGIN IMMEDIATE too. Statements sent to the driver without SQLAlchemy (store/driver.py, the client
# row read by authentication in store/client_reader.py) are counted through ``Database.raw_listeners``.
# Each request reads its client's row (a removed client stops at once in every process): one statement,
# no transaction. The PoC route also re-checks the facility's Subscription against its Endpoint's stored
# (encrypted) header secrets: one more SELECT, for both at once.
# Issue 14 (accept): the facility's subscriptions come with their rows and header secrets in
# one statement, and the header reads do not flush the write buffer (one batch at commit): 18 and 14 on
# SQLite, 17 and 13 on PostgreSQL. The facility's event is numbered by the database inside COMMIT
# (migration 0015): neither the counter's UPDATE nor the subscription_events INSERT is sent: 16 and 12 on
# SQLite, 15 and 11 on PostgreSQL.
# Issue 14 (accept, store): PostgreSQL sends a new case's held rows (history, current, index, case, outbox) in
# one statement (``write_buffer._insert_all``): 4 fewer; a key that may be an id or an identifier value (the PoC
# route's Organization and Patient) is looked up as both at once (``prime_id_or_token``): 2 fewer on that route.
# Concurrent requests on SQLite share a COMMIT (``group_commit``): a member after the first sends a SAVEPOINT
# instead of BEGIN IMMEDIATE (one at a time, as here, each is the first of its group).
MAX_PER_POC_CASE = {"sqlite": 11, "postgresql": 6}
MAX_PER_FHIR_CASE = {"sqlite": 9, "postgresql": 4}
# Statements for a whole defaulter list (a Patient ifNoneExist entry + a ServiceRequest entry each) in a
# transaction Bundle, whatever its length (on main at 511cc8e: 21 to 23 per defaulter; the bound was 18 at 1129f5c).
# Since issue 14 (bundle) the held rows go in executemany chunks of 500 (``write_buffer._CHUNK``: the SQLite
# writer gives the loop a turn between two), so a list costs one statement more per 500 rows of a table;
# those repeats of one INSERT are counted apart: at most one per ``ROWS_PER_DEFAULTER`` x 500 rows.
# 12 since the facility's events are numbered by the database (migration 0015).
MAX_PER_BUNDLE = 12
ROWS_PER_DEFAULTER = 30  # history, current and index rows of a Patient, a ServiceRequest and its Task, ...
# A long list sends its held rows every ``bundles.FLUSH_EVERY`` entries (the memory it holds and the time the
# SQLite writer keeps the event loop stay bounded): each send costs a few statements more, never per entry.
MAX_PER_FLUSH = 8


def _runs(statements: list[str]) -> tuple[int, int]:
    """(statements, repeats): an INSERT right after the same INSERT is the next chunk of one executemany."""
    repeats = sum(1 for a, b in zip(statements, statements[1:], strict=False) if a == b and b.startswith("INSERT"))
    return len(statements) - repeats, repeats


def _chunks(defaulters: int) -> int:
    return -(-defaulters * ROWS_PER_DEFAULTER // 500)


class Counter:
    def __init__(self, dialect: str) -> None:
        self.statements: list[str] = []
        self.dialect = dialect

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.statements.append(statement)

    def take(self) -> list[str]:
        out, self.statements = self.statements, []
        return out


@pytest.fixture
def counted(settings: Settings) -> Iterator[tuple[Api, Counter]]:
    async def reset() -> None:
        database = Database(settings)
        await database.upgrade()
        await _truncate(database)
        await database.dispose()

    asyncio.run(reset())
    app = create_app(settings)
    counter = Counter("sqlite" if settings.is_sqlite else "postgresql")
    for engine in app.state.db.engines():
        event.listen(engine.sync_engine, "before_cursor_execute", counter)
    app.state.db.raw_listeners.append(lambda sql: counter(None, None, sql))  # what skips SQLAlchemy (driver.py)
    with ServerThread(app) as srv:
        yield Api(srv.url), counter


def _facility(api: Api) -> str:
    ep = api.post(
        "/mediator/endpoint",
        json={
            "resourceType": "Endpoint",
            "identifier": [{"system": "official", "value": "ep-1"}],
            "status": "active",
            "connectionType": CONN,
            "payloadType": [{"text": "application/json"}],
            "address": "http://127.0.0.1:9/cb",
        },
    )
    assert ep.status_code == 201, ep.text
    org = api.post(
        "/mediator/organization",
        json={
            "resourceType": "Organization",
            "identifier": [{"system": "official", "value": "test-org"}],
            "name": ["Bench"],
            "endpoint": [{"reference": f"Endpoint/{ep.json()['id']}"}],
        },
    )
    assert org.status_code == 201, org.text
    pat = api.post(
        "/mediator/patient",
        json={
            "resourceType": "Patient",
            "identifier": [{"system": "cht", "value": PID}],
            "name": [{"family": "Doe", "given": ["John"]}],
            "gender": "male",
            "birthDate": "2000-01-01",
        },
    )
    assert pat.status_code == 201, pat.text
    return org.json()["id"]


def _poc_request(n: int) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": "http://bench.example/sr", "value": f"sr-{n}"}],
        "intent": "order",
        "status": "active",
        "subject": {"reference": f"Patient/{PID}"},
        "requester": {"reference": "Organization/test-org"},
    }


def test_statements_per_new_case_poc_route(counted: tuple[Api, Counter]) -> None:
    api, counter = counted
    _facility(api)
    assert api.post("/mediator/service-request", json=_poc_request(0)).status_code == 201  # creates the Subscription
    counts = []
    for n in range(1, 6):
        counter.take()
        r = api.post("/mediator/service-request", json=_poc_request(n))
        assert r.status_code == 201, r.text
        counts.append(len(counter.take()))
    assert max(counts) <= MAX_PER_POC_CASE[counter.dialect], counts
    again = api.post("/mediator/service-request", json=_poc_request(1))  # the same case: no new rows
    assert again.status_code == 200
    assert api.get("/fhir/Task?_summary=count").json()["total"] == 6


def test_statements_per_new_case_fhir_create(counted: tuple[Api, Counter]) -> None:
    api, counter = counted
    org = _facility(api)
    counts = []
    for n in range(6):
        body = {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "identifier": [{"system": REQ, "value": f"k-{n}"}],
            "subject": {"identifier": {"system": "cht", "value": PID}},
            "requester": {"reference": f"Organization/{org}"},
        }
        counter.take()
        r = api.post("/fhir/ServiceRequest", json=body)
        assert r.status_code == 201, r.text
        counts.append(len(counter.take()))
    assert max(counts[1:]) <= MAX_PER_FHIR_CASE[counter.dialect], counts
    assert api.get("/fhir/Task?_summary=count").json()["total"] == 6


def _defaulters(org: str, start: int, n: int) -> dict[str, Any]:
    entries = []
    for i in range(start, start + n):
        full = f"urn:uuid:{uuid.uuid4()}"
        entries.append(
            {
                "fullUrl": full,
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={MRN}|m-{i}"},
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": MRN, "value": f"m-{i}"}],
                    "name": [{"family": "Otieno", "given": ["A"]}],
                    "gender": "female",
                },
            }
        )
        entries.append(
            {
                "request": {"method": "POST", "url": "ServiceRequest"},
                "resource": {
                    "resourceType": "ServiceRequest",
                    "status": "active",
                    "intent": "order",
                    "identifier": [{"system": REQ, "value": f"b-{i}"}],
                    "subject": {"reference": full},
                    "requester": {"reference": f"Organization/{org}"},
                },
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_statements_per_bundle_do_not_grow_with_its_entries(counted: tuple[Api, Counter]) -> None:
    api, counter = counted
    org = _facility(api)
    assert api.post("/fhir", json=_defaulters(org, 0, 2)).status_code == 200  # the Subscription exists now
    totals = []
    for start, n in ((100, 20), (200, 80)):
        counter.take()
        r = api.post("/fhir", json=_defaulters(org, start, n))
        assert r.status_code == 200, r.text
        assert [e["response"]["status"] for e in r.json()["entry"]] == ["201 Created"] * (2 * n)
        statements, repeats = _runs(counter.take())
        assert repeats <= _chunks(n), repeats
        totals.append(statements)
    assert max(totals) <= MAX_PER_BUNDLE, totals
    assert api.get("/fhir/Task?_summary=count").json()["total"] == 102
    again = api.post("/fhir", json=_defaulters(org, 200, 80))  # the same list again: nothing new
    assert {e["response"]["status"] for e in again.json()["entry"]} == {"200 OK"}
    assert api.get("/fhir/Task?_summary=count").json()["total"] == 102


def test_statements_of_a_long_bundle_grow_per_send_of_its_rows_not_per_entry(
    counted: tuple[Api, Counter], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ltfu.services import bundles

    api, counter = counted
    org = _facility(api)
    assert api.post("/fhir", json=_defaulters(org, 0, 2)).status_code == 200  # the Subscription exists now
    monkeypatch.setattr(bundles, "FLUSH_EVERY", 40)  # 20 defaulters' entries per send
    counter.take()
    r = api.post("/fhir", json=_defaulters(org, 300, 80))
    assert r.status_code == 200, r.text
    assert [e["response"]["status"] for e in r.json()["entry"]] == ["201 Created"] * 160
    sends = 160 // 40
    statements, repeats = _runs(counter.take())
    assert repeats <= _chunks(80), repeats
    assert statements <= MAX_PER_BUNDLE + MAX_PER_FLUSH * sends, statements
    assert api.get("/fhir/Task?_summary=count").json()["total"] == 82


# The loop after a case is accepted (issue 14, full loop). A CHT delivery of a follow-up, one at a time: its
# claim with the case read for the record (one transaction), and the transaction that records the attempt,
# moves the Task to ``received`` and queues the facility's event (on main at fd43740: 23 on SQLite, 20 on
# PostgreSQL, in three transactions; the lease check is the UPDATE that records the result).
MAX_PER_CHT_DELIVERY = {"sqlite": 20, "postgresql": 18}
# The CHW's report pushed by CHT (``/cht/follow-up``): Encounter, Observation, Task completed, the
# ServiceRequest closed, the event and the receipt (at fd43740: 27 on SQLite, 26 on PostgreSQL; the rows it
# reads now come in one statement; one more since 7191c37: is the CHT person one the case was linked to before?).
MAX_PER_FOLLOW_UP_PUSH = {"sqlite": 24, "postgresql": 23}


class InstantCht:
    """What CHT answers the submitter when all is well, without HTTP."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def get_person(self, person_id: str) -> Any:
        from ltfu.cht.client import ChtResponse

        return ChtResponse(200, {"_id": person_id, "type": "person", "patient_id": "12345"}, 0)

    async def create_record(self, record: dict[str, Any]) -> Any:
        from ltfu.cht.client import ChtResponse

        self.records.append(record)
        return ChtResponse(200, {"success": True, "id": f"rec-{len(self.records)}"}, 0)

    async def get_doc(self, doc_id: str) -> Any:
        from ltfu.cht.client import ChtResponse

        return ChtResponse(200, {"_id": doc_id, "type": "data_record", "errors": []}, 0)

    async def close(self) -> None:
        return None


def _deliver_one_at_a_time(settings: Settings, counter: Counter, cht: InstantCht, n: int) -> list[int]:
    """Statements of each of ``n`` CHT deliveries made by a worker with one slot."""
    from ltfu.delivery.cht_submitter import ChtSubmitter
    from ltfu.delivery.worker import Worker

    cht_settings = settings.model_copy(update={"cht_url": "http://cht.invalid"})

    async def run() -> list[int]:
        db = Database(cht_settings)
        for engine in db.engines():
            event.listen(engine.sync_engine, "before_cursor_execute", counter)
        db.raw_listeners.append(lambda sql: counter(None, None, sql))
        submitter = ChtSubmitter(db, cht_settings)
        submitter.client = cht  # type: ignore[assignment]
        worker = Worker(db, cht_settings, [submitter], concurrency=1, batch=1)
        counts = []
        counter.take()
        for _ in range(n):
            assert await worker.run_once()
            counts.append(len(counter.take()))
        await db.dispose()
        return counts

    return asyncio.run(run())


def test_statements_per_cht_delivery_and_follow_up_push(counted: tuple[Api, Counter], settings: Settings) -> None:
    api, counter = counted
    _facility(api)
    for n in range(4):
        assert api.post("/mediator/service-request", json=_poc_request(n)).status_code == 201
    cht = InstantCht()
    counts = _deliver_one_at_a_time(settings, counter, cht, 4)
    dialect = "sqlite" if settings.is_sqlite else "postgresql"
    assert max(counts[1:]) <= MAX_PER_CHT_DELIVERY[dialect], counts
    cases = [r["case_ref"] for r in cht.records]
    tasks = api.get("/fhir/Task", params={"status": "received"}).json()
    assert tasks["total"] == 4  # each delivery moved its Task
    pushes = []
    for i, case_id in enumerate(cases):
        counter.take()
        report = {"report_id": f"r-{i}", "case_ref": case_id, "patient_uuid": PID, "method": "phone",
                  "contacted": "yes", "outcome": "returning_to_care", "attempt_no": 1,
                  "reported_date": 1732440000000}
        r = api.post("/cht/follow-up", json=report)
        assert r.status_code == 201, r.text
        pushes.append(len(counter.take()))
    assert max(pushes[1:]) <= MAX_PER_FOLLOW_UP_PUSH[dialect], pushes
    assert api.get("/fhir/Task", params={"status": "completed"}).json()["total"] == 4
    again = api.post("/cht/follow-up", json=report)  # CHT's push again: a no-op
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
