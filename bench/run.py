"""Benchmarks: `POST /mediator/service-request` latency/throughput, and full-loop throughput.

The mediator runs as a real `ltfu serve` process; CHT and the facility callback are fast local
stubs in this process (aiohttp), so the numbers measure ltfu, not its neighbours. The CHT stub
answers the records API at once and, like an instant CHW, pushes a final follow-up report back.

    .venv/bin/python bench/run.py [--requests 400] [--concurrency 1,16,64] [--database-url postgresql://...]
                                  [--worker-process]

``--worker-process``: the deliveries run in a separate ``ltfu worker`` (``LTFU_WORKERS=false`` on the
API), the deployment that puts a second core to work; best with PostgreSQL.

Beside each rate: the CPU the `ltfu serve` process spent per case (its user+system time over the phase,
from /proc), and this process's own (load, stubs, instant CHW), so a busy machine's wall time can be
read against what each case cost, and the harness can be seen not to be the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web

AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:bench-admin-1").decode()}
CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stubs:
    """CHT records API + instant CHW, and the facility callback."""

    def __init__(self, mediator: str) -> None:
        self.mediator = mediator
        self.notified_final: dict[str, float] = {}
        self.records = 0
        self.session: aiohttp.ClientSession | None = None
        self.pending: set[asyncio.Task[None]] = set()

    async def records_api(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.records += 1
        rid = uuid.uuid4().hex
        if body["_meta"]["form"].upper() == "INTEROP_FOLLOW_UP":
            task = asyncio.create_task(self._chw(body, rid))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        return web.json_response({"success": True, "id": rid})

    async def _chw(self, record: dict, rid: str) -> None:
        await asyncio.sleep(0.05)
        assert self.session is not None
        report = {"report_id": f"r-{rid}", "case_ref": record["case_ref"], "patient_uuid": record["patient_uuid"],
                  "method": "phone", "contacted": "yes", "outcome": "returning_to_care", "attempt_no": 1,
                  "reported_date": int(time.time() * 1000)}
        for _ in range(20):  # like CHT's outbound push: again until it is acknowledged
            try:
                async with self.session.post(self.mediator + "/cht/follow-up", json=report, headers=AUTH) as r:
                    if r.status < 500 and r.status != 409:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)

    async def medic_doc(self, request: web.Request) -> web.Response:
        doc_id = request.match_info["id"]
        return web.json_response({"_id": doc_id, "type": "person", "errors": []})

    async def find(self, request: web.Request) -> web.Response:
        return web.json_response({"docs": []})

    async def callback(self, request: web.Request) -> web.Response:
        bundle = await request.json()
        for e in bundle["entry"][1:]:
            r = e["resource"]
            if r["resourceType"] == "Task" and r["status"] == "completed":
                self.notified_final.setdefault(r["id"], time.perf_counter())
        return web.json_response({"ok": True})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v2/records", self.records_api)
        app.router.add_post("/medic/_find", self.find)
        app.router.add_get("/medic/{id}", self.medic_doc)
        app.router.add_post("/notify", self.callback)
        return app


def cpu_s(pid: int) -> float:
    """User+system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def make_patients(session: aiohttp.ClientSession, base: str, n: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    for i in range(0, n, 200):
        entries = [{"resource": {"resourceType": "Patient", "identifier": [{"system": "cht", "value": pid}],
                                 "name": [{"family": "Bench", "given": ["P"]}], "gender": "female",
                                 "birthDate": "1990-01-01"},
                    "request": {"method": "POST", "url": "Patient"}} for pid in ids[i:i + 200]]
        async with session.post(base + "/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": entries},
                                headers=AUTH) as r:
            assert r.status == 200, await r.text()
    return ids


async def service_requests(session: aiohttp.ClientSession, base: str, patients: list[str], concurrency: int,
                           org_code: str) -> tuple[float, list[float]]:
    queue = list(patients)
    latencies: list[float] = []

    async def one(pid: str) -> None:
        body = {"intent": "order", "status": "active", "subject": {"reference": f"Patient/{pid}"},
                "requester": {"reference": f"Organization/{org_code}"}}
        t0 = time.perf_counter()
        async with session.post(base + "/mediator/service-request", json=body, headers=AUTH) as r:
            await r.read()
            assert r.status == 201, r.status
        latencies.append(time.perf_counter() - t0)

    async def worker() -> None:
        while queue:
            await one(queue.pop())

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ltfu-bench-"))
    mport, sport = free_port(), free_port()
    base, stub_url = f"http://127.0.0.1:{mport}", f"http://127.0.0.1:{sport}"
    stubs = Stubs(base)
    runner = web.AppRunner(stubs.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", sport).start()
    env = {**os.environ, "LTFU_DATA_DIR": str(tmp), "LTFU_ADMIN_PASSWORD": "bench-admin-1",
           "LTFU_CHT_URL": stub_url, "LTFU_CHT_USERNAME": "medic", "LTFU_CHT_PASSWORD": "x",
           "LTFU_POLL_INTERVAL_S": "0.1", "LTFU_CHT_MAX_RATE_PER_S": "10000",  # measure ltfu, not the pacing
           "LTFU_CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8"}  # the facility callback stub listens on loopback
    if args.database_url:
        env["LTFU_DATABASE_URL"] = args.database_url
    ltfu = str(Path(sys.executable).with_name("ltfu"))
    log = (tmp / "mediator.log").open("wb")  # noqa: SIM115 - lives as long as the child process
    if args.worker_process:
        env["LTFU_WORKERS"] = "false"
    proc = subprocess.Popen([ltfu, "serve", "--port", str(mport)], env=env, stdout=subprocess.DEVNULL, stderr=log)
    procs = [proc]
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:
        stubs.session = session
        for _ in range(200):
            try:
                async with session.get(base + "/health") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        if args.worker_process:  # after serve has migrated the database
            procs.append(subprocess.Popen([ltfu, "worker"], env={**env, "LTFU_WORKERS": "true"},
                                          stdout=subprocess.DEVNULL, stderr=log))
        async with session.post(base + "/mediator/endpoint", headers=AUTH, json={
                "connectionType": CONN, "identifier": [{"system": "official", "value": "bench-ep"}],
                "status": "active", "address": stub_url + "/notify", "payloadType": [{"text": "Task"}]}) as r:
            ep = (await r.json())["id"]
        async with session.post(base + "/mediator/organization", headers=AUTH, json={
                "identifier": [{"system": "official", "value": "bench-org"}], "name": "Bench facility",
                "endpoint": [{"reference": f"Endpoint/{ep}"}]}) as r:
            assert r.status == 201
        print(f"database: {args.database_url or 'SQLite (embedded default)'}; {os.cpu_count()} cores")
        print("POST /mediator/service-request (each a new case: Task + CHT outbox row + notification)")
        print(f"{'concurrency':>11} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for c in args.concurrency:
            n = args.requests if c > 1 else max(50, args.requests // 4)
            patients = await make_patients(session, base, n)
            start_final = len(stubs.notified_final)
            cpu0, own0 = sum(cpu_s(p.pid) for p in procs), own_cpu_s()
            elapsed, lat = await service_requests(session, base, patients, c, "bench-org")
            print(f"{c:>11} {n:>8} {n / elapsed:>8.1f} {pct(lat, 50) * 1000:>8.1f} {pct(lat, 99) * 1000:>8.1f}")
            t0 = time.perf_counter() - elapsed
            deadline = time.perf_counter() + 120
            while len(stubs.notified_final) - start_final < n and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
            done = len(stubs.notified_final) - start_final
            loop_s = time.perf_counter() - t0
            cpu, own = sum(cpu_s(p.pid) for p in procs) - cpu0, own_cpu_s() - own0
            print(f"{'':>11} full loop: {done}/{n} cases request→CHT→outcome→facility notified in {loop_s:.1f} s "
                  f"= {done / loop_s:.1f} cases/s; CPU per case: ltfu {cpu / max(done, 1) * 1000:.1f} ms, "
                  f"load+stubs {own / max(done, 1) * 1000:.1f} ms; load average {os.getloadavg()[0]:.1f}")
    for p in procs:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:  # a loaded machine: it was still finishing deliveries
            p.kill()
            p.wait()
    log.close()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=lambda v: [int(c) for c in v.split(",")], default=[1, 16, 64],
                        help="comma-separated client concurrencies (default 1,16,64)")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--worker-process", action="store_true",
                        help="deliveries in a separate `ltfu worker` process (LTFU_WORKERS=false on the API)")
    asyncio.run(main(parser.parse_args()))
