"""Who a request acts for, and whether its role may enter that part of the API (asks the policy).

Run by the request pipeline (:mod:`ltfu.api.asgi`) on every authenticated request, right after
authentication: the actor goes to ``request.state`` for the routes, which pass it to their unit of work.
A refusal is answered there, so no route code runs for a client that may not use it (``/cht`` for a
facility, ``/fhir`` for CHT...).
"""

from __future__ import annotations

from typing import Any

from ltfu.domain.access import Actor, area_of
from ltfu.services import policy
from ltfu.store.clients import Client
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work


async def actor_for(db: Database, client: Client, openhim_client_id: str | None, path: str) -> Actor:
    """The actor of a request by ``client`` to ``path``; FhirError when its role may not enter that area.

    A gateway (OpenHIM core) acts for the client core names in ``X-OpenHIM-ClientID``.
    """
    if client.role == "gateway":
        async with unit_of_work(db) as uow:
            actor = await policy.actor_for(uow, client, openhim_client_id)
    else:
        actor = policy.actor_of(client)
    policy.require_area(actor, area_of(path))
    return actor


def current_actor(request: Any) -> Actor:
    return request.scope["state"]["actor"]
