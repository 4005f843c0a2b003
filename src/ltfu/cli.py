"""The ``ltfu`` command line."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work

app = typer.Typer(help="ltfu: the Loss-To-Follow-Up mediator between facilities (FHIR) and CHT.",
                  no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
clients_app = typer.Typer(help="API clients (HTTP Basic credentials).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(clients_app, name="clients")
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
    from ltfu.logs import configure_logging

    settings = _settings()
    configure_logging()
    host = host or settings.host
    port = port or settings.port
    where = settings.database_url or f"SQLite in {settings.data_dir}/"
    console.print(f"ltfu listening on http://{host}:{port}  (FHIR at /fhir, PoC API at /mediator; data: {where})")
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False,
                proxy_headers=True, server_header=False)


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
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True,
                                          help="The client's password (prompted when omitted).")],
    admin: Annotated[bool, typer.Option("--admin", help="Admin client: sees every facility.")] = False,
    facility: Annotated[str | None, typer.Option(help="Organization id this client acts for.")] = None,
) -> None:
    """Create a client, or reset its password and role."""
    if admin == bool(facility):
        err.print("Give exactly one of --admin or --facility ORG_ID.")
        raise typer.Exit(2)
    if len(password) < 8:
        err.print("The password must have at least 8 characters.")
        raise typer.Exit(2)

    async def run(db: Database) -> None:
        async with unit_of_work(db) as uow:
            await uow.clients.upsert(name, password, is_admin=admin, organization_id=facility)

    asyncio.run(_with_db(_settings(), run))
    console.print(f"client {name!r} saved ({'admin' if admin else 'facility ' + str(facility)})")


@clients_app.command("list")
def clients_list() -> None:
    """List clients (never their passwords)."""

    async def run(db: Database):  # type: ignore[no-untyped-def]
        async with unit_of_work(db) as uow:
            return await uow.clients.list()

    rows = asyncio.run(_with_db(_settings(), run))
    table = Table("name", "role", "facility")
    for c in rows:
        table.add_row(c.name, "admin" if c.is_admin else "facility", c.organization_id or "")
    console.print(table)


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


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())
