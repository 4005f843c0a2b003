"""Benchmarks of the write path (issue 14): accept rate and CPU per request, end-to-end rate, a defaulter
list as one transaction Bundle with the latency of small requests meanwhile, and the cost as the store grows.

The mediator runs as a real ``ltfu serve`` process pinned to CPU 0 (``taskset``, when there is one);
this process — the load, an instant CHT records API and the facility callback (aiohttp) — runs on CPU 1.
CPU per request is the server's CPU time (all its threads, from /proc) over the requests it accepted:
on a shared machine it is steadier than the rate. Compare figures of one run; repeat a run to see the noise.

    .venv/bin/python bench/write_path.py accept [--route mediator|fhir] [--conc 16] [--duration 8] [--runs 3]
    .venv/bin/python bench/write_path.py bundle [--sizes 1000,10000]
    .venv/bin/python bench/write_path.py growth [--cases 1000,100000,1000000] [--template 500] [--analyze]
add ``--db postgresql://user@host/fresh_database`` to any of them (default: SQLite in a temporary folder).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

PASSWORD = "bench-admin-secret-1"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}
CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}
PID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
MRN = "http://bench.example/mrn"
SR = "http://bench.example/sr"
TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system, all threads) of ``root`` and its live descendants."""
    kids: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2 :].split()
        kids.setdefault(int(rest[1]), []).append(int(d))
        ticks[int(d)] = int(rest[11]) + int(rest[12])
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += ticks.get(p, 0)
        todo.extend(kids.get(p, []))
    return total / TCK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))] if values else float("nan")


class Stubs:
    """CHT records API (instant) and the facility's callback; counts what arrives."""

    def __init__(self) -> None:
        self.records = 0
        self.callbacks = 0
        self.keep_refs = False
        self.refs: list[tuple[str, str]] = []  # (case_ref, patient_uuid) of the follow-ups sent, when kept

    async def records_api(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.records += 1
        if self.keep_refs:
            doc = json.loads(body)
            if doc.get("case_ref"):
                self.refs.append((doc["case_ref"], doc.get("patient_uuid") or ""))
        return web.json_response({"success": True, "id": f"rec-{self.records}"})

    async def doc(self, request: web.Request) -> web.Response:
        doc_id = request.match_info["id"]
        kind = "data_record" if doc_id.startswith("rec-") else "person"
        return web.json_response({"_id": doc_id, "type": kind, "errors": [], "patient_id": "12345"})

    async def find(self, _: web.Request) -> web.Response:
        return web.json_response({"docs": []})

    async def users(self, _: web.Request) -> web.Response:
        """CHT's users look-up (``cht/users.py``): no pushed person is a CHT user's contact."""
        return web.json_response([])

    async def callback(self, request: web.Request) -> web.Response:
        await request.read()
        self.callbacks += 1
        return web.Response(status=200)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v2/records", self.records_api)
        app.router.add_post("/api/v1/records", self.records_api)
        app.router.add_post("/medic/_find", self.find)
        app.router.add_get("/medic/{id}", self.doc)
        app.router.add_get("/api/v1/person/{id}", self.doc)
        app.router.add_get("/api/v2/users", self.users)
        app.router.add_post("/callback", self.callback)
        return app


class Mediator:
    """``ltfu serve`` on a fresh database, pinned to CPU 0 when taskset exists."""

    def __init__(self, db: str, stub_url: str, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sqlite = db == "sqlite"
        self.db_url = f"sqlite:///{tmp}/ltfu.db" if self.sqlite else db
        env = {
            **os.environ,
            "LTFU_ADMIN_PASSWORD": PASSWORD,
            "LTFU_DATA_DIR": str(tmp),
            "LTFU_DATABASE_URL": self.db_url,
            "LTFU_CHT_URL": stub_url,
            "LTFU_CHT_USERNAME": "medic",
            "LTFU_CHT_PASSWORD": "password",
            "LTFU_CHT_MAX_RATE_PER_S": "100000",
            "LTFU_LOG_LEVEL": "WARNING",
            "LTFU_CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "LTFU_MAX_BODY_BYTES": str(512 * 1024 * 1024),
        }
        ltfu = str(Path(sys.executable).with_name("ltfu"))
        pin = ["taskset", "-c", "0"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
        self.log = (tmp / "serve.log").open("wb")  # noqa: SIM115 - lives as long as the child
        self.proc = subprocess.Popen(
            [*pin, ltfu, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def cpu_s(self) -> float:
        return tree_cpu_s(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with session.post(url, json=body, headers=AUTH) as r:
        return r.status, await r.json(content_type=None)


async def setup_facility(session: aiohttp.ClientSession, base: str, stub_url: str) -> str:
    for _ in range(1800):  # a loaded machine: the server may take a minute to start
        try:
            async with session.get(base + "/health") as r:
                if r.status == 200:
                    break
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    s, ep = await post(
        session,
        base + "/mediator/endpoint",
        {
            "resourceType": "Endpoint",
            "identifier": [{"system": "official", "value": "ep-bench"}],
            "status": "active",
            "connectionType": CONN,
            "payloadType": [{"text": "application/json"}],
            "address": stub_url + "/callback",
        },
    )
    assert s == 201, ep
    s, org = await post(
        session,
        base + "/mediator/organization",
        {
            "resourceType": "Organization",
            "identifier": [{"system": "official", "value": "test-org"}],
            "name": ["Bench"],
            "endpoint": [{"reference": f"Endpoint/{ep['id']}"}],
        },
    )
    assert s == 201, org
    s, pat = await post(
        session,
        base + "/mediator/patient",
        {
            "resourceType": "Patient",
            "identifier": [{"system": "cht", "value": PID}],
            "name": [{"family": "Doe", "given": ["John"]}],
            "gender": "male",
            "birthDate": "2000-01-01",
        },
    )
    assert s == 201, pat
    return str(org["id"])


def request_body(route: str, tag: str, n: int, org_id: str) -> tuple[str, dict[str, Any]]:
    ident = [{"system": SR, "value": f"{tag}-{n}"}]
    if route == "mediator":
        return "/mediator/service-request", {
            "resourceType": "ServiceRequest",
            "identifier": ident,
            "intent": "order",
            "status": "active",
            "subject": {"reference": f"Patient/{PID}"},
            "requester": {"reference": "Organization/test-org"},
        }
    return "/fhir/ServiceRequest", {
        "resourceType": "ServiceRequest",
        "identifier": ident,
        "intent": "order",
        "status": "active",
        "subject": {"identifier": {"system": "cht", "value": PID}},
        "requester": {"reference": f"Organization/{org_id}"},
    }


async def load(
    session: aiohttp.ClientSession, base: str, route: str, org_id: str, conc: int, seconds: float, tag: str
) -> tuple[int, int, list[float], float]:
    """New cases for ``seconds`` from ``conc`` clients: (accepted, errors, latencies, elapsed)."""
    counter = iter(range(10**9))
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        while time.perf_counter() < end:
            path, body = request_body(route, tag, next(counter), org_id)
            t0 = time.perf_counter()
            try:
                async with session.post(base + path, json=body, headers=AUTH) as r:
                    await r.read()
                    if r.status == 201:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        errors += 1
            except aiohttp.ClientError:  # a connection dropped (a loaded machine): counted, not fatal
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(conc)))
    return len(latencies), errors, latencies, time.perf_counter() - t0


async def with_mediator(args: argparse.Namespace, body: Any) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ltfu-bench-"))
    stubs = Stubs()
    runner = web.AppRunner(stubs.app(), access_log=None)
    await runner.setup()
    sport = free_port()
    await web.TCPSite(runner, "127.0.0.1", sport).start()
    stub_url = f"http://127.0.0.1:{sport}"
    mediator = Mediator(args.db, stub_url, tmp)
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256), timeout=aiohttp.ClientTimeout(total=1800)
        ) as session:
            org_id = await setup_facility(session, mediator.url, stub_url)
            await body(session, mediator, stubs, org_id)
    finally:
        mediator.stop()
        await runner.cleanup()
        if getattr(args, "keep", False):
            print(f"kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


async def accept(args: argparse.Namespace) -> None:
    async def run(session: aiohttp.ClientSession, m: Mediator, stubs: Stubs, org_id: str) -> None:
        await load(session, m.url, args.route, org_id, args.conc, 3, "warm")  # warm-up
        await drain(stubs, stubs.records, 0, 120)
        rows = []
        for i in range(args.runs):
            before, cpu0, t0 = stubs.records, m.cpu_s(), time.perf_counter()
            ok, errors, lat, elapsed = await load(
                session, m.url, args.route, org_id, args.conc, args.duration, f"run{i}"
            )
            cpu1 = m.cpu_s()
            delivered = await drain(stubs, before, ok, args.drain_timeout)
            cpu2, t2 = m.cpu_s(), time.perf_counter()
            row = {
                "req_s": ok / elapsed,
                "cpu_ms_req": (cpu1 - cpu0) * 1000 / max(ok, 1),
                "p50_ms": pct(lat, 50) * 1000,
                "p99_ms": pct(lat, 99) * 1000,
                "errors": errors,
                "delivered": delivered,
                "cases_s_end_to_end": delivered / (t2 - t0),
                "cpu_ms_case_total": (cpu2 - cpu0) * 1000 / max(delivered, 1),
            }
            rows.append(row)
            print(
                "RUN",
                " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                flush=True,
            )
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(
            f"MEDIAN route={args.route} db={'sqlite' if args.db == 'sqlite' else 'postgresql'} conc={args.conc} "
            + " ".join(f"{k}={v:.2f}" for k, v in med.items()),
            flush=True,
        )

    await with_mediator(args, run)


async def drain(stubs: Stubs, before: int, expected: int, timeout: float) -> int:
    deadline = time.perf_counter() + timeout
    while stubs.records - before < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.1)
    return stubs.records - before


async def settle(stubs: Stubs, timeout: float) -> None:
    """Wait until the facility callback has heard nothing for two seconds (the outbox is empty)."""
    deadline = time.perf_counter() + timeout
    last, quiet_since = -1, time.perf_counter()
    while time.perf_counter() < deadline:
        if stubs.callbacks != last:
            last, quiet_since = stubs.callbacks, time.perf_counter()
        elif time.perf_counter() - quiet_since > 2:
            return
        await asyncio.sleep(0.2)


def defaulters(n: int, org_id: str, tag: str) -> dict[str, Any]:
    entries = []
    for i in range(n):
        pu = f"urn:uuid:{uuid.uuid4()}"
        mrn = f"{tag}-{i:07d}"
        entries.append(
            {
                "fullUrl": pu,
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={MRN}|{mrn}"},
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": MRN, "value": mrn}],
                    "name": [{"family": f"F{i % 97}", "given": [f"G{i % 89}"]}],
                    "gender": "female" if i % 2 else "male",
                    "birthDate": f"{1960 + i % 40}-0{1 + i % 9}-1{i % 9}",
                    "telecom": [{"system": "phone", "value": f"+2547{i % 10**8:08d}"}],
                },
            }
        )
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "request": {"method": "POST", "url": "ServiceRequest", "ifNoneExist": f"identifier={SR}|{mrn}"},
                "resource": {
                    "resourceType": "ServiceRequest",
                    "identifier": [{"system": SR, "value": mrn}],
                    "status": "active",
                    "intent": "order",
                    "subject": {"reference": pu},
                    "requester": {"reference": f"Organization/{org_id}"},
                    "occurrencePeriod": {"start": "2026-11-20", "end": "2026-12-30"},
                },
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def probe(
    session: aiohttp.ClientSession, base: str, org_id: str, stop: asyncio.Event, ready: asyncio.Event
) -> dict[str, list[float]]:
    """Small requests while a Bundle is stored: health, a FHIR read, a CHT push, the dashboard — each kind on
    its own, one request every 50 ms after the last answer (a push that waits for the writer does not hide the
    reads). A probe still waiting when the Bundle is answered counts with the time it has waited so far."""
    seen: dict[str, list[float]] = {"health": [], "read": [], "cht_push": [], "dashboard": []}

    async def one(kind: str) -> None:
        if kind == "health":
            r = await session.get(base + "/health")
        elif kind == "read":
            r = await session.get(f"{base}/fhir/Organization/{org_id}", headers=AUTH)
        elif kind == "cht_push":
            r = await session.post(
                base + "/cht/patient",
                headers=AUTH,
                json={
                    "_id": uuid.uuid4().hex,
                    "type": "person",
                    "name": "Probe Person",
                    "sex": "female",
                    "date_of_birth": "1990-01-01",
                    "parent": {"_id": "household-1"},
                },
            )
        else:
            r = await session.get(base + "/ui/", headers=AUTH)
        await r.read()
        r.release()
        if r.status >= 400:
            raise RuntimeError(f"probe {kind}: HTTP {r.status}")

    async def loop(kind: str) -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            task = asyncio.ensure_future(one(kind))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            seen[kind].append(time.perf_counter() - t0)
            if not task.done():  # the Bundle was answered first: what this one waited is what it is owed
                stopped.cancel()
                await task
                return
            stopped.cancel()
            task.result()
            await asyncio.sleep(0.05)

    for kind in seen:  # warm (a running server has compiled its templates): not counted
        await one(kind)
    ready.set()
    await asyncio.gather(*(loop(k) for k in seen))
    return seen


async def bundle(args: argparse.Namespace) -> None:
    async def run(session: aiohttp.ClientSession, m: Mediator, stubs: Stubs, org_id: str) -> None:
        for n in [int(x) for x in args.sizes.split(",")]:
            body = defaulters(n, org_id, f"n{n}-{uuid.uuid4().hex[:6]}")
            stop, ready = asyncio.Event(), asyncio.Event()
            prober = asyncio.create_task(probe(session, m.url, org_id, stop, ready))
            await ready.wait()
            t0, cpu0 = time.perf_counter(), tree_cpu_s(m.proc.pid)
            async with session.post(m.url + "/fhir", json=body, headers=AUTH) as r:
                result = await r.json(content_type=None)
                status = r.status
            seconds, cpu = time.perf_counter() - t0, tree_cpu_s(m.proc.pid) - cpu0
            stop.set()
            seen = await prober
            ok = status == 200 and result.get("type") == "transaction-response"
            lat = [x for v in seen.values() for x in v]
            worst = {k: f"{pct(v, 99) * 1000:.0f}" for k, v in seen.items()}
            longest = {k: f"{max(v, default=float('nan')) * 1000:.0f}" for k, v in seen.items()}
            print(
                f"BUNDLE db={'sqlite' if args.db == 'sqlite' else 'postgresql'} defaulters={n} entries={2 * n} "
                f"status={status} ok={ok} seconds={seconds:.2f} server_cpu_s={cpu:.2f} "
                f"defaulters_per_s={n / seconds:.0f} server_peak_rss_mb={peak_rss_mb(m.proc.pid):.0f} "
                f"concurrent_p99_ms={pct(lat, 99) * 1000:.0f} "
                f"p99_ms_by_kind={worst} max_ms_by_kind={longest} probes={len(lat)}",
                flush=True,
            )

    await with_mediator(args, run)


def pg_scans(url: str) -> tuple[int, int]:
    """(sequential scans, index scans) of the ltfu tables so far (PostgreSQL's statistics)."""
    from seed_store import Store

    with Store(url) as store:
        rows = store.rows_sql("SELECT COALESCE(SUM(seq_scan), 0), COALESCE(SUM(idx_scan), 0) FROM pg_stat_user_tables")
    return int(rows[0][0]), int(rows[0][1])


def stored_cases(url: str) -> int:
    from seed_store import Store

    with Store(url) as store:
        return int(store.rows_sql("SELECT COUNT(*) FROM cases")[0][0])


def sample_cases(url: str, n: int) -> list[str]:
    """``n`` stored case ids spread over the whole store (old copies and new cases alike), shuffled."""
    from seed_store import Store

    with Store(url) as store:
        ids = [str(r[0]) for r in store.rows_sql("SELECT case_id FROM cases")]
    random.Random(14).shuffle(ids)
    return ids[:n]


def storage(url: str, breakdown: bool) -> tuple[int, list[tuple[str, int]]]:
    """Bytes the store takes (SQLite: the file and its WAL; PostgreSQL: the database) and, when asked, the
    largest tables and indexes."""
    from seed_store import Store

    with Store(url) as store:
        if store.sqlite:
            path = Path(store.url.database or "")
            wal = path.with_name(path.name + "-wal")
            total = sum(p.stat().st_size for p in (path, wal) if p.exists())
            parts = store.rows_sql("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 12") \
                if breakdown else []
            parts = [("wal_file", wal.stat().st_size if wal.exists() else 0), *parts]
        else:
            total = int(store.rows_sql("SELECT pg_database_size(current_database())")[0][0])
            parts = store.rows_sql(
                "SELECT relname, pg_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i', 't') ORDER BY 2 DESC LIMIT 12") \
                if breakdown else []
    return total, [(str(a), int(b)) for a, b in parts]


async def quiet(m: Mediator, timeout: float) -> float:
    """Wait until the server is idle (under 5% of a core over 3 s): the catch-up the copies caused is done.
    Returns the seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        cpu0 = m.cpu_s()
        await asyncio.sleep(3)
        if m.cpu_s() - cpu0 < 0.15:
            break
    return time.perf_counter() - t0


def follow_up(case_ref: str, patient_uuid: str, tag: str) -> dict[str, Any]:
    """A CHW's final follow-up report as CHT's outbound push sends it."""
    return {"report_id": f"{tag}-{case_ref}", "case_ref": case_ref, "patient_uuid": patient_uuid, "method": "phone",
            "contacted": "yes", "outcome": "returning_to_care", "attempt_no": 1,
            "reported_date": int(time.time() * 1000)}


async def requests_of(session: aiohttp.ClientSession, conc: int, calls: list[tuple[str, str, Any]],
                      ok: tuple[int, ...], seconds: float = 1e9) -> tuple[int, int, list[float], float]:
    """``calls`` (method, url, body) from ``conc`` clients, none started after ``seconds``: (answered with
    ``ok``, other, latencies, elapsed)."""
    todo = iter(calls)
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        for method, url, body in todo:
            if time.perf_counter() > end:
                return
            t0 = time.perf_counter()
            try:
                async with session.request(method, url, json=body, headers=AUTH) as r:
                    await r.read()
                    if r.status in ok:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(conc)))
    return len(latencies), errors, latencies, time.perf_counter() - t0


async def template_cases(session: aiohttp.ClientSession, base: str, n: int) -> None:
    """``n`` CHT-linked patients, each with a new request through /mediator (as a facility EMR sends them)."""
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with sem:
            cht_id = str(uuid.uuid4())
            s, pat = await post(session, base + "/mediator/patient", {
                "resourceType": "Patient", "identifier": [{"system": "cht", "value": cht_id}],
                "name": [{"family": f"F{i % 97}", "given": [f"G{i % 89}"]}], "gender": "female",
                "birthDate": f"{1960 + i % 40}-01-01"})
            assert s == 201, pat
            s, sr = await post(session, base + "/mediator/service-request", {
                "resourceType": "ServiceRequest", "identifier": [{"system": SR, "value": str(uuid.uuid4())}],
                "intent": "order", "status": "active", "subject": {"reference": f"Patient/{cht_id}"},
                "requester": {"reference": "Organization/test-org"}})
            assert s == 201, sr

    await asyncio.gather(*(one(i) for i in range(n)))


async def growth(args: argparse.Namespace) -> None:
    """Grow the store to each size, then measure there: new cases through both routes, reads of stored cases
    (by id and by search) and CHT pushes of final reports for the cases just accepted.

    The store grows by copies (bench/seed_store.py) of a template the service wrote itself: ``--template``
    CHT-linked patients with a request each (delivered to the CHT stub, notified to the facility, closed by a
    CHW's final report pushed from CHT), and a defaulter Bundle of a quarter as many unlinked patients (matched,
    or queued for review and rejected there). Copies are spread over the past year: a store of closed cases, as
    a deployment's is after a while. The measured requests are the real routes of the running ``ltfu serve``.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from seed_store import analyze, capture, replicate, snapshot

    async def run(session: aiohttp.ClientSession, m: Mediator, stubs: Stubs, org_id: str) -> None:
        from seed_store import Store

        def take_snapshot() -> Any:
            with Store(m.db_url) as store:
                return snapshot(store)

        def take_template() -> Any:
            with Store(m.db_url) as store:
                return capture(store, before, extra=[r"tpl-\d{7}"])

        db = "sqlite" if m.sqlite else "postgresql"
        # the plain drivers run their own event loop (PostgreSQL): off this one, in a thread
        before = await asyncio.to_thread(take_snapshot)
        t0 = time.perf_counter()
        stubs.keep_refs = True
        await template_cases(session, m.url, args.template)
        await drain(stubs, 0, args.template, args.drain_timeout)
        # a quarter as many again from a defaulter list of unlinked patients (matching, review queue)
        async with session.post(m.url + "/fhir", json=defaulters(args.template // 4, org_id, "tpl"),
                                headers=AUTH) as r:
            assert r.status == 200, await r.text()
        await settle(stubs, args.drain_timeout)
        # the CHW closes every delivered case; the reviewer rejects what is queued
        refs, stubs.refs = stubs.refs, []
        ok, errors, _, _ = await requests_of(session, 8, [
            ("POST", m.url + "/cht/follow-up", follow_up(c, p, "tpl")) for c, p in refs], (201,))
        assert not errors, f"{errors} template follow-ups refused"
        async with session.get(m.url + "/admin/review", headers=AUTH) as r:
            items = (await r.json())["items"]
        ok, errors, _, _ = await requests_of(session, 4, [
            ("POST", f"{m.url}/admin/review/{i['review_id']}", {"action": "reject"}) for i in items], (200,))
        assert not errors, f"{errors} template review decisions refused"
        await settle(stubs, args.drain_timeout)
        template = await asyncio.to_thread(take_template)
        rows = sum(len(v) for v in template.rows.values())
        print(f"template: {template.cases} cases, {rows} rows ({rows / template.cases:.1f} per case), "
              f"{len(refs)} closed by a CHW, {len(items)} rejected in review, in {time.perf_counter() - t0:.1f}s",
              flush=True)
        copies_made = 0
        for target in [int(x) for x in args.cases.split(",")]:
            stored = await asyncio.to_thread(stored_cases, m.db_url)
            copies = max(0, (target - stored) // template.cases)
            seconds = await asyncio.to_thread(replicate, m.db_url, template, before, copies, spread_days=365,
                                              extra=[r"tpl-\d{7}"], first_copy=copies_made, progress=False)
            copies_made += copies
            if args.analyze:
                await asyncio.to_thread(analyze, m.db_url)
            catch_up = await quiet(m, 900)
            stored = await asyncio.to_thread(stored_cases, m.db_url)
            size, parts = await asyncio.to_thread(storage, m.db_url, stored <= 200_000)
            print(f"STORE db={db} stored_cases={stored} seed_s={seconds:.0f} catch_up_s={catch_up:.0f} "
                  f"bytes={size} bytes_per_case={size / stored:.0f} "
                  + " ".join(f"{name}={b / stored:.0f}" for name, b in parts), flush=True)
            measured: list[tuple[str, int, int, list[float], float, float, str]] = []
            for route in ("mediator", "fhir"):
                await load(session, m.url, route, org_id, args.conc, 2, f"warm{target}{route}")
                await settle(stubs, args.drain_timeout)
                if route == "mediator":  # the CHT push below reports on the cases accepted now
                    stubs.refs, stubs.keep_refs = [], True
                scans0 = await asyncio.to_thread(pg_scans, m.db_url) if not m.sqlite else None
                cpu0 = m.cpu_s()
                ok, errors, lat, elapsed = await load(
                    session, m.url, route, org_id, args.conc, args.duration, f"at{target}{route}")
                cpu = m.cpu_s() - cpu0
                scans = ""
                if scans0 is not None:
                    s1 = await asyncio.to_thread(pg_scans, m.db_url)
                    scans = (f" seq_scans_per_req={(s1[0] - scans0[0]) / max(ok, 1):.2f}"
                             f" idx_scans_per_req={(s1[1] - scans0[1]) / max(ok, 1):.1f}")
                await drain(stubs, stubs.records - len(stubs.refs), ok, args.drain_timeout)
                stubs.keep_refs = False
                await settle(stubs, args.drain_timeout)
                measured.append((f"accept_{route}", ok, errors, lat, elapsed, cpu, scans))
            # reads of stored cases (old copies and new alike): by id, and the Task of a case by search
            sample = await asyncio.to_thread(sample_cases, m.db_url, 2000)
            for kind, calls in (
                ("read", [("GET", f"{m.url}/fhir/ServiceRequest/{c}", None) for c in sample]),
                ("search", [("GET", f"{m.url}/fhir/Task?based-on=ServiceRequest/{c}", None) for c in sample]),
                ("cht_push", [("POST", m.url + "/cht/follow-up", follow_up(c, p, f"at{target}"))
                              for c, p in stubs.refs]),
            ):
                cpu0 = m.cpu_s()
                ok, errors, lat, elapsed = await requests_of(session, args.conc, calls, (200, 201), args.duration)
                measured.append((kind, ok, errors, lat, elapsed, m.cpu_s() - cpu0, ""))
                await settle(stubs, args.drain_timeout)
            for kind, ok, errors, lat, elapsed, cpu, scans in measured:
                print(
                    f"GROWTH db={db} {kind} stored_cases={stored} analyzed={args.analyze} requests={ok} "
                    f"req_s={ok / elapsed:.1f} cpu_ms_req={cpu * 1000 / max(ok, 1):.2f} "
                    f"p50_ms={pct(lat, 50) * 1000:.0f} p99_ms={pct(lat, 99) * 1000:.0f} errors={errors}{scans}",
                    flush=True,
                )

    await with_mediator(args, run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["accept", "bundle", "growth"])
    parser.add_argument("--db", default="sqlite", help="sqlite (a temporary file) or a postgresql:// URL")
    parser.add_argument("--route", choices=["mediator", "fhir"], default="mediator")
    parser.add_argument("--conc", type=int, default=16)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--drain-timeout", type=float, default=300)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--cases", default="1000,100000,1000000")
    parser.add_argument("--template", type=int, default=500, help="growth: cases the service writes, then copied")
    parser.add_argument("--analyze", action="store_true", help="growth: ANALYZE after seeding (autovacuum's job)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (the SQLite store, the log)")
    args = parser.parse_args()
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the load and the stubs stay off the mediator's core
    asyncio.run({"accept": accept, "bundle": bundle, "growth": growth}[args.what](args))


if __name__ == "__main__":
    main()
