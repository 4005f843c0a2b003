"""HTTP Basic authentication of API clients (run by the request pipeline, :mod:`ltfu.api.asgi`).

Each request reads its client's row (one primary-key SELECT at the driver, no transaction:
``store/client_reader.py``), so a removed client, a changed role or a changed password takes effect at
once in every process. argon2 costs tens of milliseconds by
design, so it runs in a small thread pool (never on the event loop), and a check that succeeded is
remembered, keyed by a BLAKE2b MAC (keyed mode) of the credentials under a per-process random key, with the
hash it matched: a new password gives a new hash and the remembered success no longer counts.

An unknown name is verified against a dummy hash (same cost as a wrong password: no user
enumeration by timing). Failures back off per client name and per remote address (429 with
``Retry-After``); a request whose credentials were already verified is not throttled, so clients
that share an address with a guesser keep working.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from anyio import CapacityLimiter
from starlette.types import Scope

from ltfu.api.login_backoff import FailureBackoff
from ltfu.fhir.outcome import FhirError, Issue
from ltfu.settings import Settings
from ltfu.store.clients import Client, dummy_hash, verify_password
from ltfu.store.db import Database

OPEN_PATHS = ("/health", "/ready", "/fhir/metadata")  # probes and clients bootstrap without credentials
CACHE_ENTRIES = 10_000
_KEY = os.urandom(32)


class Authenticator:
    def __init__(
        self, db: Database, settings: Settings, on_failure: Callable[[str], None] = lambda reason: None
    ) -> None:
        self.db = db
        self.on_failure = on_failure  # reason: bad_credentials | throttled
        backoff = {"base_s": settings.auth_backoff_s, "max_s": settings.auth_lockout_max_s}
        self.by_name = FailureBackoff(settings.auth_max_failures, **backoff)
        self.by_address = FailureBackoff(settings.auth_max_failures_per_address, **backoff)
        self._threads = settings.auth_threads
        self._limiter: CapacityLimiter | None = None
        self._verified: OrderedDict[bytes, str] = OrderedDict()  # MAC(credentials) -> hash they matched

    async def authenticate(self, scope: Scope, header: bytes | None) -> Client:
        """The client the ``Authorization`` header names; FhirError 401 (none, unknown, wrong) or 429."""
        client = await self._client(scope, header)
        if client is None:
            raise FhirError(
                [Issue("login", "Authentication required: HTTP Basic with an ltfu client")],
                401,
                headers={"WWW-Authenticate": 'Basic realm="ltfu"'},
            )
        return client

    async def _client(self, scope: Scope, header: bytes | None) -> Client | None:
        if not header or header[:6].lower() != b"basic ":
            return None
        try:
            name, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        stored = await self.db.client_reader.lookup(name)  # never waits for a writer
        key = hashlib.blake2b(header, key=_KEY, digest_size=32).digest()
        if stored is not None and self._verified.get(key) == stored.password_hash:
            self._verified.move_to_end(key)
            return stored.client
        address = f"addr:{scope['client'][0]}" if scope.get("client") else "addr:?"
        wait = max(self.by_name.wait(f"name:{name}"), self.by_address.wait(address))
        if wait > 0:
            self.on_failure("throttled")
            raise FhirError(
                [Issue("throttled", "Too many failed logins; try again later")],
                429,
                headers={"Retry-After": str(math.ceil(wait))},
            )
        ok = await self._verify(stored.password_hash if stored else dummy_hash(), password)
        if stored is None or not ok:
            self.by_name.failed(f"name:{name}")
            self.by_address.failed(address)
            self.on_failure("bad_credentials")
            return None
        self.by_name.succeeded(f"name:{name}")
        self._verified[key] = stored.password_hash
        if len(self._verified) > CACHE_ENTRIES:
            self._verified.popitem(last=False)
        return stored.client

    async def _verify(self, password_hash: str, password: str) -> bool:
        if self._limiter is None:
            self._limiter = CapacityLimiter(self._threads)
        return await anyio.to_thread.run_sync(verify_password, password_hash, password, limiter=self._limiter)


def current_client(request: Any) -> Client:
    return request.scope["state"]["client"]
