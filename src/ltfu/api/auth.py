"""HTTP Basic authentication of API clients (pure ASGI middleware: cheap on every request).

argon2 verification costs tens of milliseconds by design, so a successful check is remembered
for ``CACHE_SECONDS`` keyed by an HMAC of the credentials under a per-process random key; a
removed client or changed password therefore takes effect within that time in other processes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from ltfu.fhir.outcome import FhirError, Issue
from ltfu.store.clients import Client
from ltfu.store.db import Database
from ltfu.store.uow import read_unit_of_work

OPEN_PATHS = ("/health", "/ready", "/fhir/metadata")  # probes and clients bootstrap without credentials
CACHE_SECONDS = 60.0
_KEY = os.urandom(32)


class BasicAuthMiddleware:
    def __init__(self, app: ASGIApp, db: Database) -> None:
        self.app = app
        self.db = db
        self._cache: dict[bytes, tuple[float, Client]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        client = await self._client(scope)
        if client is None:
            await _unauthorized(send)
            return
        scope.setdefault("state", {})["client"] = client
        await self.app(scope, receive, send)

    async def _client(self, scope: Scope) -> Client | None:
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if not header or header[:6].lower() != b"basic ":
            return None
        try:
            name, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        key = hmac.new(_KEY, header, hashlib.sha256).digest()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
        async with read_unit_of_work(self.db) as uow:
            client = await uow.clients.authenticate(name, password)
        if client is not None:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now + CACHE_SECONDS, client)
        return client


async def _unauthorized(send: Send) -> None:
    body = orjson.dumps(
        FhirError([Issue("login", "Authentication required: HTTP Basic with an ltfu client")], 401).outcome()
    )
    await send({
        "type": "http.response.start",
        "status": 401,
        "headers": [
            (b"content-type", b"application/fhir+json; charset=utf-8"),
            (b"www-authenticate", b'Basic realm="ltfu"'),
            (b"content-length", str(len(body)).encode()),
        ],
    })
    await send({"type": "http.response.body", "body": body})


def current_client(request: Any) -> Client:
    return request.scope["state"]["client"]
