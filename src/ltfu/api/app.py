"""The ASGI application: routes, error rendering, start-up (migrations, admin client, workers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route, Router
from starlette.types import Receive, Scope, Send

from ltfu.api import (
    admin_routes,
    cht_routes,
    fhir_routes,
    mediator_routes,
    ops_routes,
    review_routes,
    subscription_routes,
)
from ltfu.api.asgi import Api, Pipeline
from ltfu.api.auth import Authenticator
from ltfu.api.http import fhir_error_response
from ltfu.cht.client import ChtClient
from ltfu.cht.users import ChtUsers
from ltfu.delivery.runtime import Runtime
from ltfu.fhir.outcome import FhirError, Issue
from ltfu.fhir.validation import SUPPORTED_TYPES
from ltfu.metrics import count_auth_failure, metrics_route
from ltfu.openhim.client import RegistrationRejected
from ltfu.openhim.runtime import run_openhim
from ltfu.services.workflow import install_hooks
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from ltfu.ui import routes as ui_routes

log = logging.getLogger("ltfu.api")


async def ensure_admin(db: Database, settings: Settings) -> None:
    """With LTFU_ADMIN_PASSWORD set, make sure the ``admin`` client exists with that password."""
    if settings.admin_password is None:
        return
    password = settings.admin_password.get_secret_value()
    async with unit_of_work(db) as uow:
        if not await uow.clients.password_matches("admin", password):
            await uow.clients.upsert("admin", password, role="admin", organization_id=None)
            log.info("admin client created or its password reset from LTFU_ADMIN_PASSWORD")


async def _openhim(settings: Settings, stop: asyncio.Event) -> None:
    """Register with OpenHIM and heartbeat; a rejected registration is logged, the API keeps serving."""
    try:
        await run_openhim(settings, stop)
    except RegistrationRejected as exc:
        log.error("OpenHIM rejected the mediator registration (fix the configuration): %s", exc)


class _SlashTolerantRouter(Router):
    """``[base]/Patient/`` is served as ``[base]/Patient`` (as HAPI does), since a redirect is not an option."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if len(path) - len(scope.get("root_path", "")) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/")}
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> Api:
    settings = settings or Settings()
    install_hooks()
    db = Database(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await db.upgrade()
        await ensure_admin(db, settings)
        runtime = Runtime(db, settings) if settings.workers else None
        app.state.runtime = runtime
        cht_users = ChtUsers(ChtClient.from_settings(settings)) if settings.cht_url else None
        app.state.cht_users = cht_users
        if runtime:
            runtime.start()
        openhim_stop = asyncio.Event()
        openhim = asyncio.create_task(_openhim(settings, openhim_stop)) if settings.openhim_url else None
        try:
            yield
        finally:
            openhim_stop.set()
            if openhim:
                await asyncio.gather(openhim, return_exceptions=True)
            if runtime:
                await runtime.close()
            if cht_users:
                await cht_users.close()
            await db.dispose()

    async def on_fhir_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FhirError)
        if request.url.path.startswith(mediator_routes.PREFIXES):
            return mediator_routes.error_response(exc)
        return fhir_error_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
        text = "No such route" if exc.status_code == 404 else str(exc.detail)
        return fhir_error_response(FhirError([Issue(code, text)], exc.status_code))

    authenticator = Authenticator(db, settings, on_failure=count_auth_failure)
    app = Api(
        pipeline=lambda inner, handlers: Pipeline(inner, db, settings, authenticator, handlers),
        route_params={"type": SUPPORTED_TYPES},
        routes=[
            *ops_routes.routes,
            # [base] with and without the trailing slash, and never a redirect under it: many FHIR
            # clients do not follow one on POST, and behind a proxy its Location names the inner host.
            *[Route("/fhir", r.endpoint, methods=r.methods) for r in fhir_routes.routes if r.path == "/"],
            Mount(
                "/fhir",
                app=_SlashTolerantRouter([*subscription_routes.routes, *fhir_routes.routes], redirect_slashes=False),
            ),
            *cht_routes.routes,
            *review_routes.routes,
            *admin_routes.routes,
            *ui_routes.routes,
            metrics_route,
            *mediator_routes.routes,
        ],
        exception_handlers={FhirError: on_fhir_error, HTTPException: on_http_error},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.runtime = None
    app.state.cht_users = None
    return app
