"""Who a request acts for, and whether its role may enter that part of the API (asks the policy).

Runs inside the Basic authentication middleware, on every authenticated request: the actor goes to
``request.state`` for the routes, which pass it to their unit of work. A refusal is answered here, so
no route code runs for a client that may not use it (``/cht`` for a facility, ``/fhir`` for CHT...).
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ltfu.api.http import fhir_error_response
from ltfu.domain.access import Actor, area_of
from ltfu.fhir.outcome import FhirError
from ltfu.services import policy
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work


class AccessMiddleware:
    def __init__(self, app: ASGIApp, db: Database) -> None:
        self.app = app
        self.db = db

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("state", {}).get("client") if scope["type"] == "http" else None
        if client is None:
            await self.app(scope, receive, send)
            return
        try:
            if client.role == "gateway":
                header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-openhim-clientid"), None)
                async with unit_of_work(self.db) as uow:
                    actor = await policy.actor_for(uow, client, header)
            else:
                actor = policy.actor_of(client)
            policy.require_area(actor, area_of(scope["path"]))
        except FhirError as err:
            await _refuse(err, scope, receive, send)
            return
        scope["state"]["actor"] = actor
        await self.app(scope, receive, send)


async def _refuse(err: FhirError, scope: Scope, receive: Receive, send: Send) -> None:
    from ltfu.api.mediator_routes import PREFIXES, error_response  # the PoC's error body shape

    response = error_response(err) if scope["path"].startswith(PREFIXES) else fhir_error_response(err)
    await response(scope, receive, send)


def current_actor(request: Any) -> Actor:
    return request.scope["state"]["actor"]
