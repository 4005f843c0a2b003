"""Where one accepted request's CPU goes: the ASGI app driven in-process (no HTTP server, no socket), new
cases through ``/mediator/service-request`` or ``POST /fhir/ServiceRequest``, profiled with cProfile.

Prints the CPU per request (``process_time``: every thread, so aiosqlite's thread is counted; and the
event loop's thread alone) and the profiled self time grouped by layer (starlette, our middlewares,
authentication, JSON, validation, SQLAlchemy, the driver, the thread hops). The delivery workers are off:
this is the accept path alone. A statement counter gives the statements per request.

    .venv/bin/python bench/profile_request.py [--route mediator|fhir] [--db postgresql://...] [-n 400] [--conc 16]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import os
import pstats
import tempfile
import time
from collections import defaultdict
from typing import Any

import orjson

PASSWORD = "bench-admin-secret-1"
AUTH = b"Basic " + base64.b64encode(f"admin:{PASSWORD}".encode())
CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}
PID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
SR = "http://bench.example/sr"

# (substring of the code's file path or function name, layer); first match wins.
LAYERS = [
    ("ltfu/api/auth", "auth"),
    ("argon2", "auth"),
    ("ltfu/api/access", "middlewares"),
    ("ltfu/api/body_deadline", "middlewares"),
    ("ltfu/api/crash_guard", "middlewares"),
    ("ltfu/api/asgi", "middlewares"),
    ("ltfu/metrics", "middlewares"),
    ("prometheus_client", "middlewares"),
    ("ltfu/openhim/envelope", "middlewares"),
    ("ltfu/logs", "middlewares"),
    ("logging/", "middlewares"),
    ("starlette", "starlette/routing"),
    ("anyio", "starlette/routing"),
    ("orjson", "json"),
    ("json/", "json"),
    ("ltfu/fhir/validation", "validation"),
    ("fhir/resources", "validation"),
    ("fhir_core", "validation"),
    ("pydantic", "validation"),
    ("sqlalchemy/sql", "sql compile"),
    ("sqlalchemy/engine/default", "sql execute (sqlalchemy)"),
    ("sqlalchemy", "sql execute (sqlalchemy)"),
    ("aiosqlite", "thread hops (aiosqlite)"),
    ("ltfu/store/sqlite_inline", "driver"),
    ("asyncpg", "driver"),
    ("sqlite3", "driver"),
    ("ltfu/store", "ltfu store"),
    ("ltfu/services", "ltfu services"),
    ("ltfu/domain", "ltfu services"),
    ("ltfu/fhir", "ltfu fhir (index, search params)"),
    ("ltfu/api", "ltfu routes"),
    ("asyncio", "asyncio loop"),
    ("selectors", "asyncio loop"),
    ("threading", "thread hops (aiosqlite)"),
    ("queue", "thread hops (aiosqlite)"),
]


def layer(filename: str, func: str) -> str:
    key = filename.replace("\\", "/")
    if "commit" in func:
        return "commit"
    if key == "~":  # builtins: named by their function
        if "sqlite3" in func or "execute" in func:
            return "driver"
        if "orjson" in func or "loads" in func or "dumps" in func:
            return "json"
        if "acquire" in func or "wait" in func or "put" in func:
            return "thread hops (aiosqlite)"
        return "builtins (other)"
    for needle, name in LAYERS:
        if needle in key:
            return name
    return "other"


class App:
    """The ASGI app with its lifespan, called with raw scopes."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def call(self, method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        raw = orjson.dumps(body) if body is not None else b""
        headers = [(b"host", b"bench"), (b"content-type", b"application/fhir+json"),
                   (b"content-length", str(len(raw)).encode())]
        if auth:
            headers.append((b"authorization", AUTH))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
                 "headers": headers, "client": ("127.0.0.1", 5000), "server": ("bench", 80), "app": self.app}
        sent = False
        status, chunks = 0, []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        data = b"".join(chunks)
        return status, orjson.loads(data) if data else None


async def facility(app: App) -> str:
    s, ep = await app.call("POST", "/mediator/endpoint", {
        "resourceType": "Endpoint", "identifier": [{"system": "official", "value": "ep-bench"}], "status": "active",
        "connectionType": CONN, "payloadType": [{"text": "application/json"}], "address": "http://127.0.0.1:9/cb"})
    assert s == 201, ep
    s, org = await app.call("POST", "/mediator/organization", {
        "resourceType": "Organization", "identifier": [{"system": "official", "value": "test-org"}],
        "name": ["Bench"], "endpoint": [{"reference": f"Endpoint/{ep['id']}"}]})
    assert s == 201, org
    s, pat = await app.call("POST", "/mediator/patient", {
        "resourceType": "Patient", "identifier": [{"system": "cht", "value": PID}],
        "name": [{"family": "Doe", "given": ["John"]}], "gender": "male", "birthDate": "2000-01-01"})
    assert s == 201, pat
    return str(org["id"])


def body(route: str, n: int, org_id: str) -> tuple[str, dict[str, Any]]:
    ident = [{"system": SR, "value": f"p-{n}"}]
    if route == "mediator":
        return "/mediator/service-request", {
            "resourceType": "ServiceRequest", "identifier": ident, "intent": "order", "status": "active",
            "subject": {"reference": f"Patient/{PID}"}, "requester": {"reference": "Organization/test-org"}}
    return "/fhir/ServiceRequest", {
        "resourceType": "ServiceRequest", "identifier": ident, "intent": "order", "status": "active",
        "subject": {"identifier": {"system": "cht", "value": PID}},
        "requester": {"reference": f"Organization/{org_id}"}}


async def _admin(url: str, sql: str) -> None:
    """CREATE/DROP DATABASE on the server of ``url`` (a fresh database per run)."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> None:
    from sqlalchemy import event

    from ltfu.api.app import create_app
    from ltfu.settings import Settings

    tmp = tempfile.mkdtemp(prefix="ltfu-profile-")
    os.environ.update({"LTFU_ADMIN_PASSWORD": PASSWORD, "LTFU_DATA_DIR": tmp, "LTFU_WORKERS": "false",
                       "LTFU_LOG_LEVEL": "WARNING", "LTFU_CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8"})
    fresh = None
    if args.db != "sqlite":
        fresh = f"ltfu_profile_{os.getpid()}"
        await _admin(args.db, f'CREATE DATABASE "{fresh}"')
        os.environ["LTFU_DATABASE_URL"] = args.db.rsplit("/", 1)[0] + "/" + fresh
    settings = Settings()
    asgi = create_app(settings)
    statements = [0]
    texts: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements[0] += 1
        texts.append(statement)

    for engine in asgi.state.db.engines():
        event.listen(engine.sync_engine, "before_cursor_execute", count)
    raw = getattr(asgi.state.db, "raw_listeners", None)  # statements that skip SQLAlchemy (store/driver.py)
    if raw is not None:
        raw.append(lambda sql: count(None, None, sql))
    app = App(asgi)
    async with asgi.router.lifespan_context(asgi):
        org_id = await facility(app)
        counter = iter(range(10**9))

        async def batch(n: int) -> None:
            sem = asyncio.Semaphore(args.conc)

            async def one() -> None:
                async with sem:
                    path, b = body(args.route, next(counter), org_id)
                    s, out = await app.call("POST", path, b)
                    assert s == 201, (s, out)

            await asyncio.gather(*(one() for _ in range(n)))

        await batch(50)  # warm-up: the Subscription exists, caches are filled
        if args.show_statements:
            texts.clear()
            await batch(1)
            for t in texts:
                print("  SQL", " ".join(t.split())[:160])
        statements[0] = 0
        cpu0, thr0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
        prof = cProfile.Profile(time.thread_time) if args.profile else None  # CPU, not wall
        if prof:
            prof.enable()
        await batch(args.n)
        if prof:
            prof.disable()
        cpu, thr, wall = time.process_time() - cpu0, time.thread_time() - thr0, time.perf_counter() - t0
    await asgi.state.db.dispose()
    if fresh:
        await _admin(args.db, f'DROP DATABASE "{fresh}"')
    kind = "sqlite" if args.db == "sqlite" else "postgresql"
    inline = os.environ.get("LTFU_SQLITE_INLINE_WRITES", "default")
    print(f"route={args.route} db={kind} inline={inline} n={args.n} conc={args.conc} profiled={bool(prof)} "
          f"cpu_ms_req={cpu * 1000 / args.n:.3f} loop_thread_ms_req={thr * 1000 / args.n:.3f} "
          f"statements_req={statements[0] / args.n:.2f} wall_ms_req={wall * 1000 / args.n:.2f}")
    if prof:
        stats = pstats.Stats(prof)
        buckets: dict[str, float] = defaultdict(float)
        total = 0.0
        for (filename, _line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            buckets[layer(filename, func)] += tt
            total += tt
        print("profiled self time by layer (ms per request, share):")
        for name, tt in sorted(buckets.items(), key=lambda kv: -kv[1]):
            print(f"  {name:34s} {tt * 1000 / args.n:7.3f}  {100 * tt / total:5.1f}%")
        if args.top:
            stats.sort_stats("tottime").print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--route", choices=["mediator", "fhir"], default="mediator")
    parser.add_argument("--db", default="sqlite", help="sqlite (a temporary file) or a postgresql:// URL")
    parser.add_argument("-n", type=int, default=400)
    parser.add_argument("--conc", type=int, default=16)
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="CPU time only (no cProfile)")
    parser.add_argument("--show-statements", action="store_true", help="print the statements of one request")
    parser.add_argument("--top", type=int, default=0, help="also print the N functions with most self time")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
