"""Dashboard page load times with many cases.

Seeds N cases (default 10,000) through the services layer — the same code the HTTP API runs: FHIR
create of Patient and ServiceRequest (→ case, Task, CHT outbox row, notification events), the CHT
acknowledgement transition, CHW reports through ``attempts.record_follow_up``, cancels through a
ServiceRequest update, expiry through ``requests.expire_due`` — with a simulated clock so that the
requests spread over the last 12 weeks. Then it serves the real app under uvicorn and times each
page over HTTP (server + transfer), and optionally in headless Chromium (navigation to load event).

    .venv/bin/python bench/ui_load.py --cases 10000 [--grow-to 100000] [--database-url postgresql://...] [--browser]

With ``--grow-to`` the seeded cases are then copied (bench/seed_store.py: the same rows with new ids, each
copy 12 weeks further back) up to each size, and every page is measured again.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import and_, insert, literal, select, update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ltfu.cht.inbound import parse_follow_up  # noqa: E402
from ltfu.services import attempts, tasks  # noqa: E402
from ltfu.services import requests as case_requests  # noqa: E402
from ltfu.services import resources as ops  # noqa: E402
from ltfu.services.workflow import install_hooks  # noqa: E402
from ltfu.settings import Settings  # noqa: E402
from ltfu.store import resources as store_resources  # noqa: E402
from ltfu.store import tallies  # noqa: E402
from ltfu.store.db import Database  # noqa: E402
from ltfu.store.schema import delivery_attempts, outbox  # noqa: E402
from ltfu.store.uow import unit_of_work  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from seed_store import Store, analyze, capture, replicate, snapshot  # noqa: E402

FMT = "%Y-%m-%dT%H:%M:%S.%fZ"
OUTCOMES = {"returning_to_care": 45, "already_returned": 10, "refused": 8, "self_transferred": 10,
            "hospitalized": 4, "moved": 10, "deceased": 8, "not_located": 5}


class SimClock:
    """Replaces ``now_instant`` in every loaded ltfu module with a settable clock."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)
        original = store_resources.now_instant
        for name, module in list(sys.modules.items()):
            if name.startswith("ltfu") and getattr(module, "now_instant", None) is original:
                module.now_instant = self.instant  # type: ignore[attr-defined]

    def instant(self) -> str:
        return self.now.strftime(FMT)


async def seed(settings: Settings, n_cases: int, n_facilities: int, seed_value: int) -> dict[str, Any]:
    """Seed through the services; ``info["before"]`` is the store's snapshot after the facilities (for copies)."""
    rnd = random.Random(seed_value)
    install_hooks()
    clock = SimClock()
    real_now = datetime.now(UTC)
    start = real_now - timedelta(days=84)
    db = Database(settings)
    await db.upgrade()
    orgs: list[str] = []
    clock.now = start - timedelta(days=1)
    async with unit_of_work(db) as uow:
        for f in range(n_facilities):
            ep = await ops.create(uow, {
                "resourceType": "Endpoint", "status": "active", "address": f"http://127.0.0.1:9/facility-{f}",
                "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                                   "code": "hl7-fhir-rest"}, "payloadType": [{"text": "Task"}]})
            org = await ops.create(uow, {
                "resourceType": "Organization", "name": f"Facility {f + 1:02d}",
                "identifier": [{"system": "https://mfl.example.org/ke", "value": str(10000 + f)}],
                "endpoint": [{"reference": f"Endpoint/{ep.stored.resource['id']}"}]})
            orgs.append(org.stored.resource["id"])
    with Store(settings.database_url) as store:
        before = snapshot(store)
    plan: list[tuple[datetime, str, int]] = []  # (when, action, case index)
    case_ids: list[str] = []
    t0 = time.perf_counter()
    batch = 100
    for b in range(0, n_cases, batch):
        async with unit_of_work(db) as uow:
            for i in range(b, min(n_cases, b + batch)):
                created = start + timedelta(days=84 * i / n_cases)
                clock.now = created
                org = orgs[rnd.randrange(n_facilities)] if rnd.random() > 0.3 else orgs[i % 3]
                p = await ops.create(uow, {
                    "resourceType": "Patient", "gender": rnd.choice(["female", "male"]),
                    "identifier": [{"use": "official", "system": "https://mrn.example.org", "value": f"MRN-{i:06d}"}],
                    "name": [{"family": f"Family{i}", "given": [f"Given{i}"]}], "birthDate": "1980-01-01"})
                sr = await ops.create(uow, {
                    "resourceType": "ServiceRequest", "status": "active", "intent": "order",
                    "identifier": [{"system": "https://req.example.org", "value": f"REQ-{i:06d}"}],
                    "subject": {"reference": f"Patient/{p.stored.resource['id']}"},
                    "requester": {"reference": f"Organization/{org}"},
                    "occurrencePeriod": {"start": created.strftime(FMT),
                                         "end": (created + timedelta(days=21)).strftime(FMT)}})
                case_ids.append(sr.stored.resource["id"])
                if rnd.random() < 0.03:
                    plan.append((created + timedelta(hours=rnd.uniform(1, 72)), "cancel", i))
                    continue
                if rnd.random() < 0.93:
                    plan.append((created + timedelta(minutes=rnd.uniform(1, 600)), "ack", i))
                if rnd.random() < 0.85:
                    first = created + timedelta(days=rnd.lognormvariate(1.1, 0.8))
                    plan.append((first, "attempt1", i))
                    if rnd.random() < 0.25:
                        plan.append((first + timedelta(days=rnd.uniform(1, 6)), "attempt2", i))
    print(f"  {n_cases} requests in {time.perf_counter() - t0:.1f}s", flush=True)
    t0 = time.perf_counter()
    plan = sorted((p for p in plan if p[0] < real_now), key=lambda p: p[0])
    for b in range(0, len(plan), batch):
        async with unit_of_work(db) as uow:
            for when, action, i in plan[b:b + batch]:
                clock.now = when
                case_id = case_ids[i]
                case = await uow.cases.get(case_id)
                if action == "cancel":
                    sr = await uow.resources.read("ServiceRequest", case_id)
                    await ops.update(uow, "ServiceRequest", case_id, {**sr.resource, "status": "revoked"})
                elif action == "ack" and case.status == "requested":
                    await tasks.transition(uow, case_id, "received", "received-by-cht",
                                           case_values={"cht_record_id": f"cht-{i}", "sent_to_cht_at": clock.instant()})
                elif action.startswith("attempt") and case.status not in case_requests.TERMINAL_CASE:
                    attempt_no = int(action[-1])
                    outcome = "not_located" if attempt_no == 1 and rnd.random() < 0.25 else rnd.choices(
                        list(OUTCOMES), weights=list(OUTCOMES.values()))[0]
                    raw = {"report_id": f"rep-{i}-{attempt_no}", "reported_date": int(when.timestamp() * 1000),
                           "case_ref": case_id, "chw_id": f"chw-{i % 150:03d}", "chw_name": f"CHW {i % 150:03d}",
                           "attempt_no": attempt_no, "method": rnd.choice(["home_visit", "phone", "sms"]),
                           "contacted": "no" if outcome == "not_located" else "yes", "outcome": outcome}
                    await attempts.record_follow_up(uow, parse_follow_up(raw), raw)
    clock.now = real_now
    expired = 0
    while True:
        async with unit_of_work(db) as uow:
            n = await case_requests.expire_due(uow, limit=500)
        expired += n
        if not n:
            break
    await deliver_like_a_worker(db, clock, orgs[0], real_now)
    print(f"  {len(plan)} CHT acks, reports and cancels, {expired} expiries in {time.perf_counter() - t0:.1f}s",
          flush=True)
    await db.dispose()
    return {"orgs": orgs, "case": case_ids[len(case_ids) // 2], "before": before}


async def deliver_like_a_worker(db: Database, clock: SimClock, down: str, now: datetime) -> None:
    """What working workers would have left: every delivery done (one attempt each) but those of a facility
    whose callback has been down for three days (queued behind its retrying first one) and 300 of its older
    notifications that went dead in an earlier outage; a few CHT follow-ups retrying."""
    since = (now - timedelta(days=3)).strftime(FMT)
    async with unit_of_work(db) as uow:
        backlog = select(outbox.c.id).where(and_(outbox.c.status == "pending", outbox.c.destination == "notify",
                                                  outbox.c.organization_id == down, outbox.c.created_at >= since))
        held = {r for (r,) in (await uow.conn.execute(backlog)).all()}
        earlier = (select(outbox.c.id).where(and_(outbox.c.status == "pending", outbox.c.destination == "notify",
                                                  outbox.c.organization_id == down, outbox.c.created_at < since))
                   .order_by(outbox.c.id).limit(300))
        for (row_id,) in (await uow.conn.execute(earlier)).all():
            await uow.outbox.dead(row_id, "callback answered 503")
        cht = await uow.outbox.list(status="pending", destination="cht", limit=20)
        retrying = {r.id for r in cht} | ({min(held)} if held else set())
        for row_id in retrying:
            await uow.outbox.retry_later(row_id, 600, "503 Service Unavailable")
        delivered = and_(outbox.c.status == "pending", outbox.c.id.not_in(held | retrying))
        await uow.conn.execute(insert(delivery_attempts).from_select(
            ["outbox_id", "attempted_at", "status_code", "latency_ms", "result"],
            select(outbox.c.id, outbox.c.created_at, literal(200), literal(40), literal("ok")).where(delivered)))
        await uow.conn.execute(update(outbox).where(delivered).values(
            status="done", attempts=outbox.c.attempts + 1, done_at=outbox.c.created_at,
            last_attempt_at=outbox.c.created_at, sent_at=outbox.c.created_at, lease_owner=None, lease_until=None))
    clock.now = now


async def fold_tallies(settings: Settings) -> None:
    """What the running server's fold does every few seconds (store/tallies.py), after bulk writes."""
    db = Database(settings)
    async with db.transaction() as conn:
        await tallies.fold(conn)
    await db.dispose()


class Statements:
    """Counts the SQL statements every engine of this process sends (the server runs in a thread here)."""

    def __init__(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        self.n = 0
        event.listen(Engine, "before_cursor_execute", self._count)

    def _count(self, *_: Any) -> None:
        self.n += 1


def measure(base: str, paths: list[str], runs: int, statements: Statements) -> list[dict[str, Any]]:
    """Per page: wall median/p95/max, CPU of this process per request, statements per request, bytes.

    The server is a thread of this process, so ``time.process_time`` counts it (and the small cost of the
    client here): CPU time, unlike wall time, does not depend on what else the machine is doing.
    """
    s = requests.Session()
    s.auth = ("admin", "bench-admin-1")
    out = []
    for path in paths:
        r = s.get(base + path, timeout=300)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        times = []
        n0, cpu0 = statements.n, time.process_time()
        for _ in range(runs):
            t = time.perf_counter()
            r = s.get(base + path, timeout=300)
            times.append((time.perf_counter() - t) * 1000)
        cpu = (time.process_time() - cpu0) * 1000 / runs
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        out.append({"path": path, "median": statistics.median(times), "p95": p95, "max": times[-1],
                    "cpu": cpu, "statements": (statements.n - n0) / runs, "bytes": len(r.content)})
    return out


def report(title: str, results: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"{'page':58} {'cpu ms':>8} {'stmts':>6} {'wall med':>9} {'p95':>7} {'max':>7} {'bytes':>8}")
    for r in results:
        print(f"{r['path'][:58]:58} {r['cpu']:8.1f} {r['statements']:6.0f} {r['median']:9.1f} {r['p95']:7.1f} "
              f"{r['max']:7.1f} {r['bytes']:8d}", flush=True)


def browser_measure(base: str, paths: list[str]) -> list[tuple[str, float]]:
    from playwright.sync_api import sync_playwright

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"]
    out = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=flags, headless=True)
        ctx = b.new_context(http_credentials={"username": "admin", "password": "bench-admin-1"})
        page = ctx.new_page()
        for path in paths:
            page.goto(base + path)  # warm
            page.goto(base + path, wait_until="load")
            nav = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0].toJSON())")
            import json

            entry = json.loads(nav)
            out.append((path, entry["loadEventEnd"] - entry["startTime"]))
        b.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--facilities", type=int, default=20)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file in a temp dir")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--browser", action="store_true", help="also time page loads in headless Chromium")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--grow-to", default="", help="then copy the seeded cases up to these sizes (e.g. 100000)"
                        " and measure again (bench/seed_store.py)")
    parser.add_argument("--analyze", action="store_true", help="ANALYZE before measuring (autovacuum's job)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ltfu-ui-bench-"))
    url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    settings = Settings(database_url=url, data_dir=tmp, admin_password="bench-admin-1", workers=False,
                        callback_allowed_networks="127.0.0.0/8")  # the facilities' (unused) callbacks
    print(f"seeding {args.cases} cases into {url.split('@')[-1]}", flush=True)
    info = asyncio.run(seed(settings, args.cases, args.facilities, args.seed))
    asyncio.run(fold_tallies(settings))

    from tests.support.server import ServerThread
    from tests.ui.conftest import build_app

    org = info["orgs"][1]
    paths = ["/ui/cases", "/ui/cases?state=completed", "/ui/cases?state=open", f"/ui/cases?facility={org}",
             f"/ui/cases?facility={org}&state=open&age=8-14", "/ui/cases?outcome=refused", "/ui/cases?chw=chw-007",
             "/ui/cases?q=MRN-005000", "/ui/cases?page=2", "/ui/cases?page=150", f"/ui/cases/{info['case']}",
             "/ui/deliveries", "/ui/deliveries?state=dead", "/ui/programme", f"/ui/programme?facility={org}",
             "/ui/programme/weeks.csv", "/ui/review", "/admin/stats", "/metrics"]
    db = "PostgreSQL" if "postgres" in url else "SQLite"
    statements = Statements()
    sizes = [args.cases, *[int(x) for x in args.grow_to.split(",") if x]]
    template = capture_template(url, info["before"]) if len(sizes) > 1 else None
    made = 0
    for size in sizes:
        if template is not None and size > args.cases:
            with Store(url) as store:
                stored = int(store.rows_sql("SELECT COUNT(*) FROM cases")[0][0])
            copies = max(0, (size - stored) // template.cases)
            # each copy is the template's 12 weeks moved further into the past: the store grows with time
            seconds = replicate(url, template, info["before"], copies, step_days=84, extra=EXTRA,
                                first_copy=made, progress=False)
            made += copies
            asyncio.run(fold_tallies(settings))
            print(f"  copied the {template.cases} seeded cases {copies} times in {seconds:.0f}s", flush=True)
        if args.analyze:
            analyze(url)
        with Store(url) as store:
            stored = int(store.rows_sql("SELECT COUNT(*) FROM cases")[0][0])
        with ServerThread(build_app(settings)) as srv:
            results = measure(srv.url, paths, args.runs, statements)
            report(f"{db}, {stored} stored cases ({args.runs} runs each after a warm-up; cpu and statements "
                   f"per request, wall ms on a shared machine):", results)
            if args.browser:
                print("\nChromium, navigation start to load event end (ms):")
                for path, ms in browser_measure(srv.url, paths[:-2] if len(paths) > 2 else paths):
                    print(f"{path[:62]:62} {ms:10.1f}")


# identifiers the seeding above makes (copies get ``-c<n>`` appended)
EXTRA = (r"MRN-\d{6}", r"REQ-\d{6}", r"rep-\d+-\d", r"cht-\d+")


def capture_template(url: str, before: Any) -> Any:
    """The seeded rows to copy into the past, where what is still pending now was delivered long since."""
    with Store(url) as store:
        template = capture(store, before, extra=EXTRA)
    cols = [c.name for c in outbox.columns]
    status, attempts, done_at, created = (cols.index(c) for c in ("status", "attempts", "done_at", "created_at"))
    for row in template.rows["outbox"]:
        if row[status] == "pending":
            row[status], row[attempts], row[done_at] = "done", max(1, row[attempts]), row[created]
            for c in ("lease_owner", "lease_until", "last_error"):
                row[cols.index(c)] = None
    return template

if __name__ == "__main__":
    main()
