"""The ``ltfu`` command line."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ltfu.openhim import cli as openhim_cli
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import UnitOfWork, unit_of_work

app = typer.Typer(help="ltfu: the Loss-To-Follow-Up mediator between facilities (FHIR) and CHT.",
                  no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
clients_app = typer.Typer(help="API clients (HTTP Basic credentials).", no_args_is_help=True)
outbox_app = typer.Typer(help="Deliveries to CHT and to facilities (the transactional outbox).", no_args_is_help=True)
emulate_app = typer.Typer(help="Emulators of CHT and of a facility, for demos and tests.", no_args_is_help=True)
import_app = typer.Typer(help="Import data: a facility's defaulter line list.", no_args_is_help=True)
cht_config_app = typer.Typer(help="The CHT configuration in cht-config/.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(clients_app, name="clients")
app.add_typer(outbox_app, name="outbox")
app.add_typer(emulate_app, name="emulate")
app.add_typer(cht_config_app, name="cht-config")
app.add_typer(import_app, name="import")
app.add_typer(openhim_cli.app, name="openhim")
cht_app = typer.Typer(help="The CHT person and place index (matching).", no_args_is_help=True)
facilities_app = typer.Typer(help="Facilities' catchments: the CHT places they follow up.", no_args_is_help=True)
app.add_typer(cht_app, name="cht")
app.add_typer(facilities_app, name="facilities")
console = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic ValidationError: show the message, not a trace
        err.print(f"[red]Invalid configuration:[/red] {exc}")
        raise typer.Exit(2) from None


async def _with_db(settings: Settings, fn):  # type: ignore[no-untyped-def]
    db = Database(settings)
    try:
        await db.upgrade()
        return await fn(db)
    finally:
        await db.dispose()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (LTFU_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (LTFU_PORT).")] = None,
) -> None:
    """Run the mediator (HTTP API and delivery workers)."""
    import uvicorn

    from ltfu.api.app import create_app
    from ltfu.api.server import server_config
    from ltfu.gc_tuning import tune_gc
    from ltfu.logs import configure_logging

    settings = _settings()
    configure_logging()
    host = host or settings.host
    port = port or settings.port
    where = settings.database_url or f"SQLite in {settings.data_dir}/"
    if not settings.public_url and host not in ("127.0.0.1", "localhost", "::1"):
        err.print("[yellow]LTFU_PUBLIC_URL is not set: links (Location, fullUrl) follow each request's Host "
                  "header. Set it to the address clients use.[/yellow]")
    console.print(f"ltfu listening on http://{host}:{port}  (FHIR at /fhir, PoC API at /mediator; data: {where})")
    config = server_config(create_app(settings), settings, host, port)
    tune_gc(settings)
    uvicorn.Server(config).run()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (also done at every start)."""
    settings = _settings()

    async def run(db: Database) -> None:
        return None

    asyncio.run(_with_db(settings, run))
    console.print(f"database at head ({settings.database_url or settings.data_dir})")


@clients_app.command("add")
def clients_add(
    name: str,
    admin: Annotated[bool, typer.Option("--admin", help="Admin client: sees and manages everything.")] = False,
    facility: Annotated[str | None, typer.Option(help="Facility client: acts for this Organization id only.")] = None,
    cht: Annotated[bool, typer.Option("--cht", help="CHT's outbound push: may use /cht/* only.")] = False,
    gateway: Annotated[bool, typer.Option("--gateway", help="OpenHIM's route credentials: acts for the OpenHIM "
                                          "client named in X-OpenHIM-ClientID (see map-openhim).")] = False,
    matcher: Annotated[bool, typer.Option("--matcher", help="Patient matching review.")] = False,
    password_file: Annotated[Path | None, typer.Option(
        help="Read the password from this file (its first line).", dir_okay=False)] = None,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password from standard input (its first line).")] = False,
    password: Annotated[str | None, typer.Option(
        hidden=True, help="Deprecated: visible to other users (ps) and kept in shell history.")] = None,
) -> None:
    """Create a client, or reset its password and role. Give exactly one role. The password is prompted
    for unless --password-file or --password-stdin gives it."""
    roles = [r for r, on in (("admin", admin), ("facility", bool(facility)), ("cht", cht), ("gateway", gateway),
                             ("matcher", matcher)) if on]
    if len(roles) != 1:
        err.print("Give exactly one of --admin, --facility ORG_ID, --cht, --gateway or --matcher.")
        raise typer.Exit(2)
    secret = _password(password, password_file, password_stdin)
    if len(secret) < CLIENT_PASSWORD_MIN:
        err.print(f"The password must have at least {CLIENT_PASSWORD_MIN} characters.")
        raise typer.Exit(2)
    role = roles[0]

    async def run(db: Database) -> None:
        async with unit_of_work(db) as uow:
            await uow.clients.upsert(name, secret, role=role, organization_id=facility)

    asyncio.run(_with_db(_settings(), run))
    console.print(f"client {name!r} saved ({role}{' ' + str(facility) if facility else ''})")


CLIENT_PASSWORD_MIN = 8


def _password(given: str | None, file: Path | None, stdin: bool) -> str:
    """The password from exactly one source: a file, standard input, a prompt (or the legacy option)."""
    if sum((given is not None, file is not None, stdin)) > 1:
        err.print("Give the password one way only: --password-file, --password-stdin, or at the prompt.")
        raise typer.Exit(2)
    if given is not None:
        err.print("[yellow]--password is deprecated: other users can read it (ps, shell history); "
                  "use --password-file, --password-stdin or the prompt.[/yellow]")
        return given
    if file is not None:
        try:
            return (file.read_text(encoding="utf-8").splitlines() or [""])[0]
        except (OSError, UnicodeDecodeError) as exc:
            err.print(f"[red]Cannot read the password file:[/red] {exc.__class__.__name__}")
            raise typer.Exit(2) from None
    if stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@clients_app.command("list")
def clients_list() -> None:
    """List clients (never their passwords) and the OpenHIM client ids a gateway may name."""

    async def run(db: Database):  # type: ignore[no-untyped-def]
        async with unit_of_work(db) as uow:
            return await uow.clients.list(), await uow.openhim_clients.list()

    rows, mapped = asyncio.run(_with_db(_settings(), run))
    table = Table("name", "role", "facility")
    for c in rows:
        table.add_row(c.name, c.role, c.organization_id or "")
    for m in mapped:
        table.add_row(f"(OpenHIM) {m.client_id}", m.role, m.organization_id or "")
    console.print(table)


@clients_app.command("secret")
def clients_secret(
    organization: Annotated[str, typer.Argument(help="The facility's Organization id.")],
    retire_previous: Annotated[bool, typer.Option(
        "--retire-previous", help="End a rotation: drop the previous key (no new secret).")] = False,
) -> None:
    """The facility's notification signing secret, shown once: the first time the key its calls were signed
    with from the start, then a new one (the previous one stays live)."""
    from ltfu.fhir.outcome import FhirError
    from ltfu.services import notifications

    async def run(db: Database) -> dict[str, str]:
        async with unit_of_work(db) as uow:
            return await notifications.issue_signing_secret(uow, organization, retire_previous=retire_previous)

    try:
        issued = asyncio.run(_with_db(_settings(), run))
    except FhirError as exc:
        err.print(exc.message)
        raise typer.Exit(1) from None
    for sub_id, secret in issued.items():
        if retire_previous:
            console.print(f"Subscription/{sub_id}: only the newest signing key is live now")
        else:
            print(f"Subscription/{sub_id} {secret}")
    if not retire_previous:
        err.print("Give the secret to the facility now: it is not shown again. The previous key stays live "
                  "until `ltfu clients secret ORG --retire-previous`.")


@app.command("secrets-key")
def secrets_key() -> None:
    """Print a new key for LTFU_SECRETS_KEY (Fernet; callback secrets are stored encrypted with it)."""
    from cryptography.fernet import Fernet

    print(Fernet.generate_key().decode())


@clients_app.command("map-openhim")
def clients_map_openhim(
    client_id: Annotated[str, typer.Argument(help="The OpenHIM client id (X-OpenHIM-ClientID).")],
    organization: Annotated[str | None, typer.Argument(help="The Organization id it acts for.")] = None,
    cht: Annotated[bool, typer.Option("--cht", help="The client is CHT's outbound push (no Organization).")] = False,
    remove: Annotated[bool, typer.Option("--remove", help="Forget this OpenHIM client id.")] = False,
) -> None:
    """Map an OpenHIM client to a facility (or to CHT's push); a gateway client then acts for it."""
    if not remove and bool(organization) == cht:
        err.print("Give exactly one of ORG or --cht (or --remove).")
        raise typer.Exit(2)

    async def run(db: Database) -> bool:
        async with unit_of_work(db) as uow:
            if remove:
                return await uow.openhim_clients.remove(client_id)
            await uow.openhim_clients.put(client_id, "cht" if cht else "facility", organization)
            return True

    if not asyncio.run(_with_db(_settings(), run)):
        err.print(f"no OpenHIM client {client_id!r} mapped")
        raise typer.Exit(1)
    console.print(f"OpenHIM client {client_id!r} " + ("forgotten" if remove else f"acts as {organization or 'cht'}"))


@clients_app.command("remove")
def clients_remove(name: str) -> None:
    """Remove a client."""

    async def run(db: Database) -> bool:
        async with unit_of_work(db) as uow:
            return await uow.clients.remove(name)

    if not asyncio.run(_with_db(_settings(), run)):
        err.print(f"no client named {name!r}")
        raise typer.Exit(1)
    console.print(f"client {name!r} removed")


@app.command()
def demo(
    cases: Annotated[int, typer.Option(help="Follow-up cases to run through the loop (0: only start and wire)")] = 200,
    keep_running: Annotated[bool, typer.Option("--keep-running", help="Leave the services up afterwards")] = False,
    mediator_port: Annotated[int | None, typer.Option(help="Default: a free port")] = None,
    cht_port: Annotated[int | None, typer.Option(help="Default: a free port")] = None,
    facility_port: Annotated[int | None, typer.Option(help="Default: a free port")] = None,
    admin_password: Annotated[str | None, typer.Option(help="The mediator's `admin` client (default: random)")] = None,
    cht_admin_password: Annotated[str, typer.Option(help="The CHT emulator's admin `medic`")] = "password",
    database_url: Annotated[str | None, typer.Option(help="Default: SQLite in ltfu-data/demo/")] = None,
) -> None:
    """The whole loop on this machine: mediator + CHT emulator + facility emulator, with a summary."""
    from ltfu.demo import DemoOptions, run

    code = run(DemoOptions(cases=cases, keep_running=keep_running, mediator_port=mediator_port, cht_port=cht_port,
                           facility_port=facility_port, admin_password=admin_password,
                           cht_admin_password=cht_admin_password, database_url=database_url), _settings())
    raise typer.Exit(code)


@app.command()
def purge(
    days: Annotated[int | None, typer.Option(min=1, help="Days after a case closes (LTFU_RETENTION_DAYS).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; change nothing.")] = False,
) -> None:
    """Remove the PHI of cases closed more than N days ago (see docs/operations.md, Retention)."""
    from ltfu.logs import configure_logging
    from ltfu.services.retention import PurgeReport
    from ltfu.services.retention import purge as purge_cases

    settings = _settings()
    days = days or settings.retention_days
    if days is None:
        err.print("Give --days N, or set LTFU_RETENTION_DAYS.")
        raise typer.Exit(2)
    configure_logging()

    async def run(db: Database) -> PurgeReport:
        return await purge_cases(db, days, dry_run=dry_run)

    report = asyncio.run(_with_db(settings, run))
    console.print(f"{'would purge' if dry_run else 'purged'}: {report.summary()}")


@app.command()
def worker() -> None:
    """Run delivery workers and the expiry sweeper alone (several may share one PostgreSQL)."""
    from ltfu.delivery.runtime import Runtime
    from ltfu.gc_tuning import tune_gc
    from ltfu.logs import configure_logging
    from ltfu.services.workflow import install_hooks

    settings = _settings()
    configure_logging()
    install_hooks()
    tune_gc(settings)

    async def run(db: Database) -> None:
        import signal

        runtime = Runtime(db, settings)
        runtime.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runtime.stop.set)
        console.print(f"ltfu worker {runtime.worker.name} running; Ctrl-C to stop")
        await runtime.stop.wait()
        await runtime.close()

    asyncio.run(_with_db(settings, run))


@outbox_app.command("list")
def outbox_list(
    status: Annotated[str | None, typer.Option(help="pending, done or dead")] = "dead",
    destination: Annotated[str | None, typer.Option(help="cht or notify")] = None,
    limit: int = 50,
) -> None:
    """List deliveries (default: the dead ones) with their last error."""

    async def run(db: Database):  # type: ignore[no-untyped-def]
        async with unit_of_work(db) as uow:
            return await uow.outbox.list(status=status, destination=destination, limit=limit)

    rows = asyncio.run(_with_db(_settings(), run))
    table = Table("id", "to", "kind", "status", "tries", "case", "last error")
    for r in rows:
        table.add_row(str(r.id), r.destination, r.kind, r.status, str(r.attempts), r.case_id or "",
                      (r.last_error or "")[:60])
    console.print(table)


@outbox_app.command("retry")
def outbox_retry(
    row_id: Annotated[int | None, typer.Argument(help="One dead delivery; omit with --all")] = None,
    all_dead: Annotated[bool, typer.Option("--all", help="Every dead delivery (narrow with the options)")] = False,
    destination: Annotated[str | None, typer.Option(help="cht or notify")] = None,
    facility: Annotated[str | None, typer.Option(help="Only this Organization's deliveries")] = None,
) -> None:
    """Put dead deliveries back in the queue with a fresh retry budget."""
    if (row_id is None) == (not all_dead):
        err.print("Give one delivery id, or --all.")
        raise typer.Exit(2)

    async def run(db: Database) -> int:
        async with unit_of_work(db) as uow:
            return await uow.outbox.replay(row_id=row_id, destination=destination, organization_id=facility)

    n = asyncio.run(_with_db(_settings(), run))
    console.print(f"{n} deliveries re-queued")
    if n == 0 and row_id is not None:
        raise typer.Exit(1)


@emulate_app.command("cht", add_help_option=False,
                      context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def emulate_cht(ctx: typer.Context) -> None:
    """Run the CHT emulator (options: `ltfu emulate cht --help`)."""
    from ltfu.emulators.cht.server import main as cht_main

    cht_main(list(ctx.args))


@emulate_app.command("facility", add_help_option=False,
                      context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def emulate_facility(ctx: typer.Context) -> None:
    """Run the facility (EMR) emulator (options: `ltfu emulate facility --help`)."""
    from ltfu.emulators.facility.server import main as facility_main

    facility_main(list(ctx.args))


@cht_config_app.command("build")
def cht_config_build(
    mediator_url: Annotated[str | None, typer.Option(
        help="Where CHT reaches the mediator, e.g. https://ltfu.example.org")] = None,
    credential_key: Annotated[str | None, typer.Option(help="CHT credential key holding the mediator password")] = None,
    username: Annotated[str, typer.Option(help="The ltfu client CHT pushes as")] = "cht",
    calendar: Annotated[str | None, typer.Option(
        help="Calendar of the forms' date questions: gregorian or bikram-sambat (Nepal)")] = None,
    config_dir: Annotated[str, typer.Option(help="The cht-conf project")] = "cht-config",
    out: Annotated[str | None, typer.Option(help="Write a copy here instead of changing config_dir")] = None,
) -> None:
    """Point the CHT app's outbound push at this mediator (writes app_settings), and/or set the date calendar."""
    from pathlib import Path

    from ltfu.cht.config_build import ConfigBuildError, build_app_settings

    try:
        path = build_app_settings(Path(config_dir), mediator_url, credential_key, username=username,
                                  out_dir=Path(out) if out else None, calendar=calendar)
    except ConfigBuildError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if calendar:
        console.print(f"date questions of {path.parent.parent / 'forms'} use the {calendar} calendar")
    console.print(f"wrote {path}; then: cht --url=<your CHT> compile-app-settings upload-app-settings "
                  "upload-app-forms upload-contact-forms")


@import_app.command("csv")
def import_csv(
    path: Annotated[str, typer.Argument(help="CSV file with a header row (see `ltfu.services.line_list`)")],
    facility: Annotated[str, typer.Option(help="The requesting Organization's id")],
    list_id: Annotated[str | None, typer.Option(help="Name of this list (default: the file name)")] = None,
    mrn_system: Annotated[str, typer.Option(help="Identifier system of the MRN column")] = (
        "https://facility.example/NamingSystem/mrn"),
    request_system: Annotated[str, typer.Option(help="Identifier system of the requests")] = (
        "https://facility.example/NamingSystem/ltfu-request"),
) -> None:
    """Send a defaulter line list: one request per row, idempotent, bad rows reported and skipped."""
    from pathlib import Path

    from rich.progress import Progress

    from ltfu.fhir.outcome import FhirError
    from ltfu.fhir.systems import Systems
    from ltfu.services.line_list import ListContext, RowResult, import_row, read_rows
    from ltfu.services.workflow import install_hooks

    settings = _settings()
    install_hooks()
    file = Path(path)
    try:
        rows = list(read_rows(file.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        err.print(f"[red]Cannot read {file}:[/red] {exc}")
        raise typer.Exit(2) from None
    ctx = ListContext(facility, list_id or file.stem, mrn_system, request_system, Systems(settings.base_url))

    async def run(db: Database) -> list[RowResult]:
        out: list[RowResult] = []
        with Progress(console=console) as progress:
            bar = progress.add_task(f"Importing {file.name}", total=len(rows))
            for line, row in rows:
                try:
                    async with unit_of_work(db) as uow:
                        out.append(await import_row(uow, line, row, ctx))
                except FhirError as exc:
                    out.append(RowResult(line, row.get("request_id"), "error", exc.message))
                progress.advance(bar)
        return out

    results = asyncio.run(_with_db(settings, run))
    counts = {k: sum(1 for r in results if r.status == k) for k in ("created", "existing", "error")}
    console.print(f"{counts['created']} new requests, {counts['existing']} already known, "
                  f"{counts['error']} rows refused")
    for r in results:
        if r.status == "error":
            console.print(f"  line {r.line}: {r.detail}")
    if counts["error"]:
        raise typer.Exit(1)


@app.command("match")
def match_cmd(
    path: Annotated[str, typer.Argument(help="A FHIR Patient (or a $match Parameters) as JSON; - for stdin")],
    count: Annotated[int, typer.Option(help="Candidates to show")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the $match searchset Bundle")] = False,
) -> None:
    """Match a patient against the CHT person index: candidates, grades, scores and the why of each."""
    import orjson

    from ltfu.fhir.match_patient import person_from_patient
    from ltfu.fhir.outcome import FhirError
    from ltfu.fhir.systems import Systems
    from ltfu.services.matching import find_matches, match_patient

    settings = _settings()
    try:
        raw = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
        body = orjson.loads(raw)
    except (OSError, orjson.JSONDecodeError) as exc:
        err.print(f"[red]Cannot read {path}:[/red] {exc}")
        raise typer.Exit(2) from None
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        body = next((p.get("resource") for p in body.get("parameter") or [] if p.get("name") == "resource"), None)

    async def run(db: Database) -> None:
        async with unit_of_work(db) as uow:
            if as_json:
                bundle = await match_patient(uow, body, only_certain=False, count=count, base_url=settings.base_url)
                console.print_json(orjson.dumps(bundle).decode())
                return
            incoming = person_from_patient(body, Systems(settings.base_url), settings.match_identifiers,
                                           settings.match_default_region)
            result = await find_matches(uow, incoming)
        if not result.candidates:
            console.print(f"No candidate ({result.considered} compared"
                          + (f", vetoed: {len(result.vetoed)}" if result.vetoed else "") + ")")
        for rank, c in enumerate(result.candidates[:count], 1):
            console.print(f"[bold]{rank}. {c.person_id}[/bold] {c.person.name}  grade={c.grade} "
                          f"score={c.probability:.4f} weight={c.weight:.1f} bits  ({', '.join(c.reasons)})")
            table = Table("field", "verdict", "level", "weight", "incoming", "CHT")
            for f in c.fields:
                table.add_row(f.field, f.verdict, f.level, f"{f.weight:+.1f}", f.incoming, f.candidate)
            console.print(table)
        if result.reasons:
            console.print("notes: " + ", ".join(result.reasons))

    try:
        asyncio.run(_with_db(settings, run))
    except FhirError as exc:
        err.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None


@cht_app.command("sync")
def cht_sync(
    full: Annotated[bool, typer.Option("--full", help="Read CHT's _changes from the start")] = False,
) -> None:
    """Index CHT's persons and places from its _changes feed (incremental from the stored sequence)."""
    from ltfu.delivery.cht_sync import ChtSync, SyncError
    from ltfu.gc_tuning import tune_gc

    settings = _settings()
    tune_gc(settings)  # a full sync allocates millions of short-lived dicts, as ``serve``/``worker`` do

    async def run(db: Database) -> None:
        sync = ChtSync(db, settings)
        try:
            result = await sync.sync_once(full=full)
        finally:
            await sync.client.close()
        console.print(f"{result.changes} changes read in {result.pages} pages: {result.persons} persons, "
                      f"{result.places} places indexed, {result.removed} removed; at seq {result.seq}")
        if result.merged is not None:
            console.print(f"staged build: {result.merged} persons merged into the index in {result.merge_s:.1f} s")

    try:
        asyncio.run(_with_db(settings, run))
    except SyncError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


@facilities_app.command("link")
def facilities_link(
    organization: Annotated[str, typer.Argument(help="The facility's Organization id")],
    places: Annotated[list[str], typer.Argument(help="CHT place ids (community units, CHW areas …)")],
) -> None:
    """Add CHT places to a facility's catchment (besides units whose link_facility_code is its code)."""
    from ltfu.services import catchment

    async def run(uow: UnitOfWork) -> tuple[list[str], list[str]]:
        return await catchment.link(uow, organization, places, allow_unknown=True)

    added, unknown = _catchment_change(run)
    console.print(f"{len(added)} place(s) linked to Organization/{organization}")
    if unknown:
        console.print(f"not in the index yet (run `ltfu cht sync`): {', '.join(unknown)}")


@facilities_app.command("unlink")
def facilities_unlink(
    organization: Annotated[str, typer.Argument(help="The facility's Organization id")],
    places: Annotated[list[str], typer.Argument(help="CHT place ids linked before")],
) -> None:
    """Remove explicitly linked places from a facility's catchment (link_facility_code ones stay)."""
    from ltfu.services import catchment

    async def run(uow: UnitOfWork) -> list[str]:
        return await catchment.unlink(uow, organization, places)

    gone = _catchment_change(run)
    console.print(f"{len(gone)} place(s) unlinked from Organization/{organization}")


def _catchment_change(change: Any) -> Any:
    from ltfu.fhir.outcome import FhirError

    async def run(db: Database) -> Any:
        async with unit_of_work(db) as uow:
            return await change(uow)

    try:
        return asyncio.run(_with_db(_settings(), run))
    except FhirError as exc:
        err.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None


@facilities_app.command("show")
def facilities_show(organization: Annotated[str, typer.Argument(help="The facility's Organization id")]) -> None:
    """The facility's catchment: units by link_facility_code and linked places."""
    from ltfu.services import catchment

    settings = _settings()

    async def run(db: Database) -> list:
        async with unit_of_work(db) as uow:
            return await catchment.catchment(uow, organization)

    for place in asyncio.run(_with_db(settings, run)):
        console.print(f"{place.id}  {place.contact_type}  {place.name}  code={place.code or '-'}")


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())
