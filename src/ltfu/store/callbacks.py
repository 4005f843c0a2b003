"""Callback secrets and ownership, kept apart from the FHIR resources.

- ``endpoint_owners``: which Organization owns an Endpoint (set by the server; one owner).
- ``callback_secrets``: the real ``header`` lines of an Endpoint or Subscription; the stored
  resource (and so every read, search and history version) carries ``Name: ***`` only.
- ``signing_keys``: Standard Webhooks secrets per Subscription; the two newest are live. The first is made with
  the Subscription (every call is signed from the first one) and handed over by the first issue (``shown_at``).

Secret values are encrypted with Fernet when ``LTFU_SECRETS_KEY`` is configured.
"""

from __future__ import annotations

import base64
import functools
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Select, and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.settings import Settings
from ltfu.store.resources import now_instant
from ltfu.store.schema import callback_secrets, endpoint_owners, resource_owners, signing_keys

LIVE_KEYS = 2


class SecretUnreadable(Exception):
    """A stored secret was encrypted with a key that is not configured (any more)."""


class SecretBox:
    """Seals secret text with the configured Fernet key(s) (``fernet:<token>``), else ``plain:<text>``."""

    def __init__(self, keys: str | None) -> None:
        parts = [k.strip() for k in (keys or "").split(",") if k.strip()]
        self._fernet = MultiFernet([Fernet(k) for k in parts]) if parts else None

    @classmethod
    def of(cls, settings: Settings) -> SecretBox:
        return _box(settings.secrets_key.get_secret_value() if settings.secrets_key else None)

    def seal(self, text: str) -> str:
        if self._fernet is None:
            return "plain:" + text
        return "fernet:" + self._fernet.encrypt(text.encode()).decode()

    def open(self, sealed: str) -> str:
        kind, _, body = sealed.partition(":")
        if kind == "plain":
            return body
        if self._fernet is None:
            raise SecretUnreadable("a callback secret is encrypted but LTFU_SECRETS_KEY is not set")
        try:
            return self._fernet.decrypt(body.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable("a callback secret cannot be decrypted with LTFU_SECRETS_KEY") from None


@functools.lru_cache(maxsize=4)
def _box(keys: str | None) -> SecretBox:
    return SecretBox(keys)


def new_signing_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class SigningKey:
    key_id: int
    secret: str
    created_at: str


_cs = callback_secrets.c


@functools.lru_cache(maxsize=16)
def _headers_of(n: int) -> Select[Any]:
    """The header lines of ``n`` (type, id) pairs: one statement, built once per ``n``."""
    pairs = (and_(_cs.res_type == bindparam(f"t{i}"), _cs.res_id == bindparam(f"i{i}")) for i in range(n))
    return select(_cs.res_type, _cs.res_id, _cs.headers).where(or_(*pairs))


Fetch = Callable[..., Awaitable[list[tuple[Any, ...]]]]


class CallbackStore:
    """``fetch``: the unit of work's way to run a statement built once (``UnitOfWork.fetch``)."""

    def __init__(self, conn: AsyncConnection, box: SecretBox, fetch: Fetch) -> None:
        self.conn = conn
        self.box = box
        self._fetch = fetch
        self._headers: dict[tuple[str, str], list[str]] = {}  # read within this unit of work

    def forget(self) -> None:
        """Drop what was read (a rolled-back savepoint may have written it)."""
        self._headers.clear()

    # ------------------------------------------------------------------ ownership
    async def owner(self, endpoint_id: str) -> str | None:
        return await endpoint_owner(self.conn, endpoint_id)

    async def set_owner(self, endpoint_id: str, organization_id: str) -> None:
        """Record the Organization that references an Endpoint as its owner (once set, it is kept)."""
        row = await self.conn.execute(
            select(endpoint_owners.c.organization_id).where(endpoint_owners.c.endpoint_id == endpoint_id)
        )
        if row.scalar_one_or_none() is None:
            await self.conn.execute(
                insert(endpoint_owners).values(
                    endpoint_id=endpoint_id, organization_id=organization_id, created_at=now_instant()
                )
            )

    # ------------------------------------------------------------------ header secrets
    def remember(self, res_type: str, res_id: str, sealed: str | None) -> None:
        """Header lines read by another statement (a join); what this unit of work set is kept."""
        if (res_type, res_id) not in self._headers:
            self._headers[(res_type, res_id)] = list(orjson.loads(self.box.open(sealed))) if sealed else []

    async def prime(self, keys: list[tuple[str, str]]) -> None:
        """Read the header lines of several Endpoints/Subscriptions in one statement (``headers`` then asks no one).

        The write buffer never holds these rows: no flush first."""
        wanted = [k for k in dict.fromkeys(keys) if k not in self._headers]
        for start in range(0, len(wanted), 16):
            chunk = wanted[start : start + 16]
            params = {}
            for i, (t, res_id) in enumerate(chunk):
                params[f"t{i}"], params[f"i{i}"] = t, res_id
            found = {(t, i): h for t, i, h in await self._fetch(_headers_of(len(chunk)), params, see_buffer=False)}
            for key in chunk:
                self.remember(*key, found.get(key))

    async def headers(self, res_type: str, res_id: str) -> list[str]:
        """The real header lines of an Endpoint or Subscription ([] when none)."""
        if (res_type, res_id) not in self._headers:
            await self.prime([(res_type, res_id)])
        return list(self._headers[(res_type, res_id)])

    async def set_headers(self, res_type: str, res_id: str, lines: list[str]) -> None:
        key = and_(callback_secrets.c.res_type == res_type, callback_secrets.c.res_id == res_id)
        await self.conn.execute(delete(callback_secrets).where(key))
        self._headers[(res_type, res_id)] = list(lines)
        if lines:
            await self.conn.execute(
                insert(callback_secrets).values(
                    res_type=res_type,
                    res_id=res_id,
                    headers=self.box.seal(orjson.dumps(lines).decode()),
                    updated_at=now_instant(),
                )
            )

    # ------------------------------------------------------------------ signing keys
    async def signing_keys(self, subscription_id: str) -> list[SigningKey]:
        """The live keys of a subscription, newest first (at most two: during a rotation)."""
        sk = signing_keys.c
        rows = await self.conn.execute(
            select(sk.id, sk.secret, sk.created_at)
            .where(and_(sk.subscription_id == subscription_id, sk.retired_at.is_(None)))
            .order_by(sk.id.desc())
            .limit(LIVE_KEYS)
        )
        return [SigningKey(r.id, self.box.open(r.secret), r.created_at) for r in rows]

    async def add_signing_key(self, subscription_id: str, *, shown: bool = True) -> str:
        """A new key for the subscription; the previous one stays live, older ones are retired. ``shown``: it
        goes to the caller now (a key made with the subscription is not: the first hand-over reveals it)."""
        secret = new_signing_secret()
        now = now_instant()
        await self.conn.execute(
            insert(signing_keys).values(subscription_id=subscription_id, secret=self.box.seal(secret), created_at=now,
                                        shown_at=now if shown else None)
        )
        live = await self.signing_keys(subscription_id)
        sk = signing_keys.c
        await self.conn.execute(
            update(signing_keys)
            .where(
                and_(
                    sk.subscription_id == subscription_id,
                    sk.retired_at.is_(None),
                    sk.id.not_in([k.key_id for k in live]),
                )
            )
            .values(retired_at=now)
        )
        return secret

    async def reveal_unshown_key(self, subscription_id: str) -> str | None:
        """The newest live key if it was never handed to anyone (made with the subscription), marked shown now;
        None otherwise. Every call signed so far carries it, so the facility can check them all."""
        live = await self.signing_keys(subscription_id)
        if not live:
            return None
        sk = signing_keys.c
        taken = await self.conn.execute(
            update(signing_keys)
            .where(and_(sk.id == live[0].key_id, sk.shown_at.is_(None), sk.retired_at.is_(None)))
            .values(shown_at=now_instant())
        )
        return live[0].secret if taken.rowcount == 1 else None  # shown once, even to two callers at once

    async def retire_previous_keys(self, subscription_id: str) -> int:
        """End a rotation: only the newest key stays live."""
        live = await self.signing_keys(subscription_id)
        if len(live) < 2:
            return 0
        sk = signing_keys.c
        result = await self.conn.execute(
            update(signing_keys)
            .where(and_(sk.subscription_id == subscription_id, sk.retired_at.is_(None), sk.id != live[0].key_id))
            .values(retired_at=now_instant())
        )
        return result.rowcount or 0


async def endpoint_owner(conn: AsyncConnection, endpoint_id: str) -> str | None:
    """The Organization id that owns ``Endpoint/endpoint_id``: the first Organization that referenced
    it, else the facility that created it (``resource_owners``); None while nobody owns it.

    For the authorisation policy: a facility may change only an Endpoint it owns, and no
    Organization may reference an Endpoint another one owns."""
    row = await conn.execute(
        select(endpoint_owners.c.organization_id).where(endpoint_owners.c.endpoint_id == endpoint_id)
    )
    owner = row.scalar_one_or_none()
    if owner is not None:
        return owner
    row = await conn.execute(
        select(resource_owners.c.organization_id).where(
            and_(resource_owners.c.res_type == "Endpoint", resource_owners.c.res_id == endpoint_id)
        )
    )
    return row.scalar_one_or_none()
