"""`ltfu demo`: the mediator, the CHT emulator and the facility emulator on this machine, wired like a
deployment (three processes on loopback, SQLite), and N follow-up cases through the whole loop.

Nothing here takes a shortcut around the mediator: the facility emulator speaks FHIR to it, CHT's
outbound push brings persons and CHW reports to it, and its own workers call CHT and the facility.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ltfu.emulators import population
from ltfu.emulators.facility import FacilityClient, roster
from ltfu.emulators.facility.config import FacilityEmulatorConfig
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work

PUSH_USER = "cht"  # CHT's outbound push: a ``cht`` client (/cht only)
FACILITY_USER = "kisumu-emr"  # the facility emulator: a ``facility`` client of FACILITY_ORG only
FACILITY_ORG = "kisumu-crh"
POPULATION_SEED = 7
PERSONS_PER_CASE = 4  # CHT knows about four persons per patient on the list


@dataclass
class DemoOptions:
    cases: int = 200
    keep_running: bool = False
    mediator_port: int | None = None
    cht_port: int | None = None
    facility_port: int | None = None
    admin_password: str | None = None
    cht_admin_password: str = "password"
    timeout_s: float = 180.0
    chw_delay_s: float = 1.0
    database_url: str | None = None  # default: SQLite in the demo folder (the embedded default)


@dataclass
class Services:
    data: Path
    mediator: str
    cht: str
    facility: str
    admin: tuple[str, str]
    cht_admin: tuple[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    specs: list[tuple[str, list[str], str, dict[str, str]]] = field(default_factory=list)

    def launch(self, index: int) -> None:
        """(Re)start process ``index`` of ``specs`` and wait until it answers."""
        name, args, health, env = self.specs[index]
        log = self.data / f"{name.split()[0].lower()}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        if index < len(self.procs):
            self.procs[index] = proc
        else:
            self.procs.append(proc)
        _wait(health, name, proc, log)

    def kill(self, index: int) -> None:
        """SIGKILL one process (a crash, not a shutdown)."""
        proc = self.procs[index]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DemoHttpError(RuntimeError):
    """A demo service answered something unexpected, or could not be reached."""


def _call(method: str, url: str, auth: tuple[str, str] | None = None, body: Any = None,
          timeout: float = 30) -> tuple[int, Any]:
    """One JSON call with the standard library (the demo needs no HTTP client beyond the core deps)."""
    headers = {"Accept": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (OSError, ValueError) as exc:
        raise DemoHttpError(f"{method} {url}: {type(exc).__name__}") from None
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw[:200].decode(errors="replace")


def _wait(url: str, what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited (code {proc.returncode}); see {log}")
        try:
            if _call("GET", url, timeout=2)[0] < 500:
                return
        except DemoHttpError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f} s; see {log}")


async def _add_clients(settings: Settings, push_password: str, facility_password: str) -> None:
    """Least privilege: CHT's push may use /cht only, the facility EMR acts for its Organization only."""
    db = Database(settings)
    try:
        await db.upgrade()
        async with unit_of_work(db) as uow:
            await uow.clients.upsert(PUSH_USER, push_password, role="cht", organization_id=None)
            await uow.clients.upsert(FACILITY_USER, facility_password, role="facility", organization_id=FACILITY_ORG)
    finally:
        await db.dispose()


def register_facility(svc: Services) -> None:
    """The operator's step (as admin): the facility's Organization and callback Endpoint, which the
    facility's own client may then update but not create or take from another facility."""
    config = FacilityEmulatorConfig()
    endpoint = roster.endpoint_resource(config, svc.facility + config.notify_path)
    for path, body in ((f"/fhir/Endpoint/{FACILITY_ORG}-callback", {**endpoint, "id": f"{FACILITY_ORG}-callback"}),
                       (f"/fhir/Organization/{FACILITY_ORG}",
                        {**roster.organization_resource(config, f"{FACILITY_ORG}-callback"), "id": FACILITY_ORG})):
        status, _ = _call("PUT", svc.mediator + path, svc.admin, body)
        if status not in (200, 201):
            raise RuntimeError(f"registering the facility failed: {path} answered {status}")


def start(opts: DemoOptions, base: Settings, console: Console) -> Services:
    data = base.data_dir / "demo"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    admin = ("admin", opts.admin_password or secrets.token_urlsafe(12))
    cht_admin = ("medic", opts.cht_admin_password)
    push_password = secrets.token_urlsafe(16)
    facility_password = secrets.token_urlsafe(16)
    mport, cport, fport = (opts.mediator_port or _free_port(), opts.cht_port or _free_port(),
                           opts.facility_port or _free_port())
    svc = Services(data, f"http://127.0.0.1:{mport}", f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{fport}",
                   admin, cht_admin)
    db_url = opts.database_url or f"sqlite:///{(data / 'ltfu.db').resolve()}"
    env = {**os.environ, "LTFU_DATA_DIR": str(data), "LTFU_DATABASE_URL": db_url, "LTFU_ADMIN_PASSWORD": admin[1],
           "LTFU_CHT_URL": svc.cht, "LTFU_CHT_USERNAME": cht_admin[0], "LTFU_CHT_PASSWORD": cht_admin[1],
           "LTFU_PUBLIC_URL": svc.mediator, "LTFU_POLL_INTERVAL_S": "0.2", "LTFU_RETRY_INITIAL_S": "2",
           "LTFU_RETRY_MAX_S": "30", "LTFU_CHT_MAX_RATE_PER_S": "200",  # a local emulator, not a shared CHT
           "LTFU_CHT_SYNC_INTERVAL_S": "0.5",
           "LTFU_CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8"}  # the facility emulator listens on loopback
    asyncio.run(_add_clients(Settings(database_url=db_url, data_dir=data), push_password, facility_password))
    ltfu = str(Path(sys.executable).with_name("ltfu"))
    commands = [
        ("mediator", [ltfu, "serve", "--port", str(mport)], svc.mediator + "/health"),
        ("CHT emulator", [ltfu, "emulate", "cht", "--port", str(cport), "--db", str(data / "cht.db"),
                          "--admin-password", cht_admin[1], "--mediator-url", svc.mediator,
                          "--credential-key", "ltfu-mediator", "--mediator-username", PUSH_USER,
                          "--mediator-password", push_password, "--retry-interval", "5",
                          "--chw-delay", str(opts.chw_delay_s), "--chw-retry-delay", str(opts.chw_delay_s)],
         svc.cht + "/api/info"),
        ("facility emulator", [ltfu, "emulate", "facility", "--port", str(fport), "--mediator-url", svc.mediator,
                               "--username", FACILITY_USER, "--password", facility_password, "--cht-url", svc.cht,
                               "--cht-username", cht_admin[0], "--cht-password", cht_admin[1],
                               "--require-signature"],
         svc.facility + "/_facility/info"),
    ]
    for name, args, health in commands:
        svc.specs.append((name, args, health, env))
        try:
            svc.launch(len(svc.specs) - 1)
        except BaseException:  # a failed start, Ctrl-C or a stop signal: nothing stays behind
            svc.stop()
            raise
        where = svc.mediator if name == "mediator" else health.rsplit("/", 2)[0]
        console.print(f"  [green]✓[/green] {name:<18} {where}")
    try:
        register_facility(svc)
        hand_over_signing_secret(svc, FacilityClient(svc.facility), FACILITY_ORG)
    except BaseException:
        svc.stop()
        raise
    return svc


def seed_cht(svc: Services, cases: int) -> dict[str, int]:
    """A seeded community in CHT (:func:`population.standard_hierarchy`: units with ``code`` and the facility's
    ``link_facility_code``, CHW areas, households, persons) and a CHW (offline user) per unit and area. The
    facility emulator draws its list from the same seed. Returns the population to give the facility."""
    pop = {"seed": POPULATION_SEED, "persons": max(PERSONS_PER_CASE * cases, 50)}
    seeded = population.standard_hierarchy(pop["seed"], pop["persons"], FacilityEmulatorConfig().facility_code)
    for i in range(0, len(seeded.docs), 500):
        status, answer = _call("POST", svc.cht + "/medic/_bulk_docs", svc.cht_admin, {"docs": seeded.docs[i:i + 500]})
        if status != 201 or any("error" in r for r in answer):
            raise RuntimeError(f"CHT emulator refused the community: {status} {str(answer)[:200]}")
    for n, place in enumerate(seeded.units + seeded.areas):
        user = [{"username": f"chw{n + 1}", "password": f"Chw-{secrets.token_hex(6)}-Aa1!", "roles": ["chw"],
                 "place": place["_id"], "contact": {"name": f"CHW {n + 1}", "role": "chw",
                                                    "phone": f"+25471100{n:04d}"}}]
        status, answer = _call("POST", svc.cht + "/api/v2/users", svc.cht_admin, user)
        if status != 200:
            raise RuntimeError(f"CHT emulator refused a CHW user: {status} {str(answer)[:200]}")
    persons = sum(1 for d in seeded.docs if d["type"] == "person")
    deadline = time.monotonic() + 60
    while _stats(svc)["cht_index"]["persons"] < persons:  # the mediator's index follows CHT's _changes
        if time.monotonic() > deadline:
            raise RuntimeError("the mediator did not index the CHT persons within 60 s")
        time.sleep(0.3)
    return pop


def _stats(svc: Services) -> dict[str, Any]:
    return _call("GET", svc.mediator + "/admin/stats", svc.admin, timeout=10)[1]


def hand_over_signing_secret(svc: Services, fac: FacilityClient, org_id: str) -> None:
    """The mediator hands over the facility's signing secret (shown once: the key every call so far was signed
    with) and the facility keeps it: from then on it refuses any notification that is not signed with it."""
    status, issued = _call("POST", f"{svc.mediator}/admin/organizations/{org_id}/signing-secret", svc.admin, {})
    if status != 200:
        raise RuntimeError(f"issuing the facility's signing secret failed: {status}")
    for sub in issued["subscriptions"]:
        fac.set_signing_secret(sub["secret"])


def run_cases(opts: DemoOptions, svc: Services, console: Console) -> tuple[dict[str, Any], dict[str, Any], float]:
    fac = FacilityClient(svc.facility)
    with console.status("A seeded community goes into CHT and the mediator's person index"):
        pop = seed_cht(svc, opts.cases)
    console.print(f"  CHT holds {pop['persons']} persons; the facility's list names most of them its own way")
    fac.register()
    started = time.monotonic()
    with console.status(f"Facility sends its defaulter list of {opts.cases} patients (no CHT ids)"):
        sent = fac.send_list(opts.cases, population=pop)
    console.print(f"  list sent: {sent.get('requests_created', opts.cases)} requests in one FHIR transaction")
    columns = (TextColumn("{task.description:<34}"), BarColumn(bar_width=36), MofNCompleteColumn(),
               TimeElapsedColumn())
    stages = ["Cases opened (Task requested)", "Received by CHT", "CHW attempted", "Outcome recorded / closed",
              "Facility notified of the end"]
    deadline = time.monotonic() + opts.timeout_s
    with Progress(*columns, console=console) as progress:
        bars = [progress.add_task(name, total=opts.cases) for name in stages]
        while True:
            st, rep = _stats(svc), fac.report()
            reached = st["reached"]
            closable = opts.cases - st["matching"]["in_review"]  # a case in review waits for a person
            values = [st["cases"], reached["cht"], reached["attempted"], reached["closed"], rep["tasks"]["terminal"]]
            for bar, v in zip(bars, values, strict=True):
                progress.update(bar, completed=v)
            if values[-1] >= closable and values[3] >= closable or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    return _stats(svc), fac.report(), time.monotonic() - started


def summary(opts: DemoOptions, svc: Services, st: dict[str, Any], rep: dict[str, Any], elapsed: float,
            console: Console) -> bool:
    cht = _call("GET", svc.cht + "/_emulator/stats", svc.cht_admin, timeout=10)[1]
    requests_in_cht = cht["docs"].get("data_record:INTEROP_FOLLOW_UP", 0)
    outcomes = Table(title="Cases by outcome", show_edge=False)
    outcomes.add_column("outcome")
    outcomes.add_column("cases", justify="right")
    for name, n in sorted(st["by_outcome"].items(), key=lambda x: -x[1]):
        outcomes.add_row(name, str(n))
    for status, n in sorted(st["by_status"].items()):
        if status != "completed":
            outcomes.add_row(f"(Task {status})", str(n))
    console.print(outcomes)
    stages = Table(title="Median time from request", show_edge=False)
    stages.add_column("stage")
    stages.add_column("seconds", justify="right")
    for label, key in (("received by CHT", "request_to_cht"), ("first CHW attempt", "request_to_first_attempt"),
                       ("case closed", "request_to_close")):
        v = st["median_seconds"][key]
        stages.add_row(label, "-" if v is None else f"{v:.1f}")
    console.print(stages)
    m = st["matching"]
    console.print(
        f"Matching: {m['identifier']} by identifier, {m['score']} by score, {m['created']} created in CHT, "
        f"{m['in_review']} in review, {m['unassignable']} unassignable"
        + (f", {m['known']} already known to CHT" if m["known"] else "")
        + (f", {m['reviewed']} decided in review" if m["reviewed"] else "") + f" (of {st['cases']} cases)")
    console.print(f"Review queue: {svc.mediator}/ui/review")
    d = st["deliveries"]
    lost = st["cases"] - st["reached"]["closed"] - m["in_review"]
    problems = {
        "cases not closed": lost,
        "dead deliveries": sum(x.get("dead", 0) for x in d.values()),
        "duplicate notifications": rep["duplicates"],
        "missing notifications": rep["missing_events"],
        "out-of-order notifications": rep["out_of_order"],
        "notifications with a bad signature": sum(rep["notifications"].get(k, 0) for k in ("bad_signature", "skewed")),
        "no notification signature verified": int(not rep["notifications"].get("signature_ok")),
    }
    problems["duplicate CHT follow-ups"] = max(0, requests_in_cht - st["cases"])
    console.print(
        f"Deliveries: CHT {d.get('cht', {}).get('done', 0)} done, notifications {d.get('notify', {}).get('done', 0)} "
        f"done (with the handshake); {st['attempts'].get('retry', 0)} attempts retried. The facility received "
        f"{rep['events_received']} events ({rep['unique_events']} unique).")
    bad = {k: v for k, v in problems.items() if v}
    if bad:
        console.print("[red]Loop incomplete:[/red] " + ", ".join(f"{k}: {v}" for k, v in bad.items()))
    else:
        console.print(f"[green]All {st['cases'] - m['in_review']} closable cases closed the loop in {elapsed:.1f} s "
                      f"({m['in_review']} wait in review): nothing lost, nothing duplicated, every notification "
                      "in order.[/green]")
    return not bad


def urls(svc: Services, console: Console) -> None:
    console.print(f"\nLook at (user {svc.admin[0]} / password {svc.admin[1]}):")
    console.print(f"  {svc.mediator}/ui                  the operator dashboard")
    console.print(f"  {svc.mediator}/fhir/Task?_count=5  the cases as FHIR Tasks")
    console.print(f"  {svc.mediator}/admin/stats         loop figures")
    console.print(f"  {svc.facility}/_facility/report  what the facility saw (no auth)")
    console.print(f"  {svc.cht}/_emulator/stats  (medic / {svc.cht_admin[1]})  the CHT emulator")
    console.print(f"Logs and databases: {svc.data}/")


def _interrupt(signum: int, _frame: Any) -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):  # a second signal must not cut the shutdown short
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run(opts: DemoOptions, settings: Settings | None = None) -> int:
    """Start, run and stop the demo. SIGTERM and SIGHUP (``kill``, ``timeout``, a service manager,
    a closed terminal) stop the three servers exactly as Ctrl-C does."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return _run(opts, settings)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(opts: DemoOptions, settings: Settings | None) -> int:
    console = Console()
    settings = settings or Settings()
    console.print(f"[bold]ltfu demo[/bold]: {opts.cases} follow-up cases through mediator, CHT and facility")
    try:
        svc = start(opts, settings, console)
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    ok = True
    try:
        if opts.cases:
            st, rep, elapsed = run_cases(opts, svc, console)
            ok = summary(opts, svc, st, rep, elapsed, console)
        urls(svc, console)
        if opts.keep_running:
            console.print("Running; Ctrl-C to stop.")
            try:
                while all(p.poll() is None for p in svc.procs):
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    except RuntimeError as exc:
        console.print(f"[red]Demo failed: {exc}[/red] (logs in {svc.data}/)")
        ok = False
    finally:
        svc.stop()
    return 0 if ok else 1
