"""``ltfu openhim ...`` commands (mounted by ``ltfu.cli``)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import aiohttp
import typer

from ltfu.openhim import mediator
from ltfu.openhim.client import OpenHIMClient, OpenHIMError
from ltfu.openhim.setup import ClientSpec, SetupError, apply_setup, plan_setup
from ltfu.settings import Settings

app = typer.Typer(help="OpenHIM integration: provisioning and inspection.", no_args_is_help=True)


def _client(settings: Settings) -> OpenHIMClient:
    if not settings.openhim_url:
        typer.echo("LTFU_OPENHIM_URL is not set (the OpenHIM core API, e.g. https://openhim:8080)", err=True)
        raise typer.Exit(2)
    password = settings.openhim_password.get_secret_value() if settings.openhim_password else ""
    return OpenHIMClient(
        settings.openhim_url, settings.openhim_username, password, verify_tls=settings.openhim_verify_tls
    )


@app.command()
def setup(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only read OpenHIM and print the plan.")] = False,
    facility: Annotated[
        list[str] | None,
        typer.Option(
            "--facility",
            help="Facility client: ID, ID:PASSWORD or ID:env:VAR (password from $VAR). Repeatable.",
        ),
    ] = None,
    cht_client: Annotated[
        str | None,
        typer.Option("--cht-client", help="Client used by CHT outbound push: ID, ID:PASSWORD or ID:env:VAR."),
    ] = None,
    route_credentials: Annotated[
        str | None,
        typer.Option(
            "--route-credentials",
            help="USER:PASSWORD or USER:env:VAR that OpenHIM sends to ltfu (route Basic auth): an ltfu client.",
        ),
    ] = None,
) -> None:
    """Register the mediator, create its clients and channels in OpenHIM; safe to run again."""
    settings = Settings()
    try:
        specs = [ClientSpec.parse(f, mediator.FACILITY_ROLE) for f in facility or []]
        if cht_client:
            specs.append(ClientSpec.parse(cht_client, mediator.CHT_ROLE))
        route_auth = None
        if route_credentials:
            cred = ClientSpec.parse(route_credentials, "")
            if not cred.password:
                raise ValueError("--route-credentials needs USER:PASSWORD or USER:env:VAR")
            route_auth = (cred.client_id, cred.password)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    raise typer.Exit(asyncio.run(_setup(settings, specs, route_auth, dry_run)))


async def _setup(settings: Settings, specs: list[ClientSpec], route_auth: tuple[str, str] | None, dry_run: bool) -> int:
    async with _client(settings) as client:
        try:
            plan = await plan_setup(client, settings, specs, route_auth)
            typer.echo(f"OpenHIM {settings.openhim_url} ({client.scheme} auth)")
            for action in plan.actions:
                typer.echo(f"  {action}")
            if dry_run:
                typer.echo("dry run: nothing changed" + ("" if plan.changes else " (nothing to change)"))
                return 0
            for line in await apply_setup(client, plan):
                typer.echo(f"  done: {line}")
            return 0
        except SetupError as exc:
            typer.echo(f"OpenHIM refused part of the setup: {exc}", err=True)
            return 1
        except (OpenHIMError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            typer.echo(f"OpenHIM setup failed: {exc}", err=True)
            return 1


@app.command()
def registration() -> None:
    """Print the registration document (urn, version, endpoints, channels, configDefs)."""
    typer.echo(json.dumps(mediator.registration(Settings()), indent=2))
