"""Where a case's CPU goes after it is accepted: the ASGI app and the delivery worker driven in-process, stage
by stage, with CHT and the facility callback replaced by instant in-process fakes (no HTTP, no socket).

Stages, each over the same ``-n`` cases: ``accept`` (``POST /mediator/service-request``), ``cht`` (the worker
sends each follow-up to CHT and records it: Task ``received``), ``push`` (the CHW's final report through
``POST /cht/follow-up``), ``notify`` (the worker delivers the facility's events, grouped per
``LTFU_NOTIFY_MAX_EVENTS``). For each: CPU per case (``process_time``, every thread), statements per case,
transactions per case (SQLite); with ``--profile`` the profiled self time of each stage by layer.

    .venv/bin/python bench/profile_loop.py [--db postgresql://...] [-n 400] [--conc 16] [--profile]

What is left out: the HTTP client and server work of the real calls (``bench/run.py`` measures the whole
loop with real processes and sockets). The fake CHT answers what a real one does for the calls the
submitter makes (a person, a stored record without errors, an empty ``_find``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import tempfile
import time
import uuid
from collections import defaultdict
from typing import Any

from profile_request import PASSWORD, PID, App, _admin, body, facility, layer


class FakeCht:
    """The CHT calls of the submitter, answered at once (what CHT answers when all is well)."""

    def __init__(self) -> None:
        self.calls = 0
        self.cases: list[str] = []  # the case_ref of each follow-up record, for the CHW's report

    async def _answer(self, status: int, body: Any) -> Any:
        from ltfu.cht.client import ChtResponse

        self.calls += 1
        return ChtResponse(status, body, 0)

    async def get_person(self, person_id: str) -> Any:
        return await self._answer(200, {"_id": person_id, "type": "person", "patient_id": "12345"})

    async def create_record(self, record: dict[str, Any]) -> Any:
        self.cases.append(record["case_ref"])
        return await self._answer(200, {"success": True, "id": uuid.uuid4().hex})

    async def get_doc(self, doc_id: str) -> Any:
        return await self._answer(200, {"_id": doc_id, "type": "data_record", "errors": []})

    async def find(self, selector: dict[str, Any], limit: int = 5) -> Any:
        return await self._answer(200, {"docs": []})

    async def close(self) -> None:
        return None


async def run(args: argparse.Namespace) -> None:
    from sqlalchemy import event

    from ltfu.api.app import create_app
    from ltfu.delivery.attempt import Attempt
    from ltfu.delivery.cht_submitter import ChtSubmitter
    from ltfu.delivery.notifier import Notifier
    from ltfu.delivery.retry import Verdict
    from ltfu.delivery.worker import Worker
    from ltfu.settings import Settings

    tmp = tempfile.mkdtemp(prefix="ltfu-profile-loop-")
    os.environ.update({"LTFU_ADMIN_PASSWORD": PASSWORD, "LTFU_DATA_DIR": tmp, "LTFU_WORKERS": "false",
                       "LTFU_LOG_LEVEL": "WARNING", "LTFU_CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8",
                       "LTFU_CHT_URL": "http://cht.invalid", "LTFU_CHT_USERNAME": "medic", "LTFU_CHT_PASSWORD": "x",
                       "LTFU_CHT_MAX_RATE_PER_S": "100000",
                       # an event tried before its subscription's handshake is recorded waits this long
                       "LTFU_RETRY_INITIAL_S": "0.05"})
    fresh = None
    if args.db != "sqlite":
        fresh = f"ltfu_profile_loop_{os.getpid()}"
        await _admin(args.db, f'CREATE DATABASE "{fresh}"')
        os.environ["LTFU_DATABASE_URL"] = args.db.rsplit("/", 1)[0] + "/" + fresh
    settings = Settings()
    asgi = create_app(settings)
    db = asgi.state.db
    texts: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        texts.append(statement)

    for engine in db.engines():
        event.listen(engine.sync_engine, "before_cursor_execute", count)
    db.raw_listeners.append(lambda sql: count(None, None, sql))
    app = App(asgi)
    submitter = ChtSubmitter(db, settings)
    cht = FakeCht()
    submitter.client = cht  # type: ignore[assignment]
    notifier = Notifier(db, settings)

    async def instant_callback(*_: Any, **__: Any) -> Attempt:
        return Attempt(Verdict.OK, 200, 0)

    notifier._post = instant_callback  # type: ignore[method-assign]  # the Bundle is built, not sent
    cht_worker = Worker(db, settings, [submitter], concurrency=args.conc)
    notify_worker = Worker(db, settings, [notifier], concurrency=args.conc)
    results: list[tuple[str, float, float, int, dict[str, float]]] = []

    async def stage(name: str, work: Any) -> None:
        texts.clear()
        prof = cProfile.Profile(time.thread_time) if args.profile else None
        cpu0 = time.process_time()
        if prof:
            prof.enable()
        await work()
        if prof:
            prof.disable()
        cpu = time.process_time() - cpu0
        begins = sum(1 for t in texts if t.lstrip().upper().startswith("BEGIN"))
        buckets: dict[str, float] = defaultdict(float)
        if prof:
            for (filename, _line, func), (_cc, _nc, tt, _ct, _c) in pstats.Stats(prof).stats.items():  # type: ignore[attr-defined]
                buckets[layer(filename, func)] += tt
        results.append((name, cpu, len(texts), begins, buckets))

    async def pending(destination: str) -> int:
        from sqlalchemy import func, select

        from ltfu.store.schema import outbox

        async with db.read_transaction() as conn:
            return int((await conn.execute(select(func.count()).where(
                outbox.c.destination == destination, outbox.c.status == "pending"))).scalar_one())

    async def drain(worker: Worker) -> None:
        while await worker.run_once():
            pass

    async with asgi.router.lifespan_context(asgi):
        org_id = await facility(app)
        numbers = iter(range(10**9))
        cases = cht.cases

        async def accept(n: int) -> None:
            sem = asyncio.Semaphore(args.conc)

            async def one() -> None:
                async with sem:
                    path, b = body("mediator", next(numbers), org_id)
                    s, out = await app.call("POST", path, b)
                    assert s == 201, (s, out)

            await asyncio.gather(*(one() for _ in range(n)))

        async def push() -> None:
            sem = asyncio.Semaphore(args.conc)

            async def one(case_id: str) -> None:
                report = {"report_id": f"r-{uuid.uuid4().hex}", "case_ref": case_id, "patient_uuid": PID,
                          "method": "phone", "contacted": "yes", "outcome": "returning_to_care", "attempt_no": 1,
                          "reported_date": int(time.time() * 1000)}
                async with sem:
                    s, out = await app.call("POST", "/cht/follow-up", report)
                    assert s == 201, (s, out)

            await asyncio.gather(*(one(c) for c in cases))

        await accept(20)  # warm-up: the Subscription exists, caches are filled, every stage ran once
        await drain(cht_worker)
        await push()
        while await pending("notify"):  # the handshake, and events that were tried before it was recorded
            await drain(notify_worker)
            await asyncio.sleep(0.05)
        cases.clear()
        n = args.n
        await stage("accept", lambda: accept(n))
        await stage("cht", lambda: drain(cht_worker))
        assert len(cases) == n, len(cases)
        await stage("push", push)
        await stage("notify", lambda: drain(notify_worker))
        assert not await pending("cht") and not await pending("notify")
    await db.dispose()
    if fresh:
        await _admin(args.db, f'DROP DATABASE "{fresh}"')
    kind = "sqlite" if args.db == "sqlite" else "postgresql"
    print(f"db={kind} n={args.n} conc={args.conc} notify_max_events={settings.notify_max_events} "
          f"profiled={args.profile}")
    print(f"{'stage':>8} {'cpu ms/case':>12} {'statements/case':>16} {'transactions/case':>18}")
    total = 0.0
    for name, cpu, statements, begins, _ in results:
        total += cpu
        tx = f"{begins / n:>18.2f}" if kind == "sqlite" else f"{'-':>18}"  # PostgreSQL's BEGIN is not a statement
        print(f"{name:>8} {cpu * 1000 / n:>12.3f} {statements / n:>16.2f} {tx}")
    print(f"{'all':>8} {total * 1000 / n:>12.3f}")
    if args.profile:
        for name, _cpu, _s, _b, buckets in results:
            spent = sum(buckets.values())
            print(f"{name}: profiled self time by layer (ms per case, share)")
            for layer_name, tt in sorted(buckets.items(), key=lambda kv: -kv[1])[:12]:
                print(f"  {layer_name:34s} {tt * 1000 / n:7.3f}  {100 * tt / spent:5.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="sqlite", help="sqlite (a temporary file) or a postgresql:// URL")
    parser.add_argument("-n", type=int, default=400)
    parser.add_argument("--conc", type=int, default=16)
    parser.add_argument("--profile", action="store_true", help="also profile each stage (cProfile, by layer)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
