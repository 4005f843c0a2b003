"""API clients (HTTP Basic): stored with argon2 hashes, each with a role (ltfu.services.policy.ROLES)
and, for a facility, its Organization."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.store.resources import now_instant
from ltfu.store.schema import clients

_hasher = PasswordHasher()


@dataclass(frozen=True)
class Client:
    name: str
    is_admin: bool
    organization_id: str | None
    role: str = "facility"


@dataclass(frozen=True)
class StoredClient:
    """A client as stored: who it is, and the hash its password must match."""

    client: Client
    password_hash: str


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@cache
def dummy_hash() -> str:
    """A hash of a random password with our parameters: verified for unknown names, so that an
    unknown user costs as much as a wrong password (no user enumeration by timing)."""
    return _hasher.hash(secrets.token_urlsafe(24))


def verify_password(password_hash: str, password: str) -> bool:
    """argon2 check (CPU-bound, tens of ms: callers on an event loop run it in a thread)."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _client(row: Any) -> Client:
    return Client(row.name, row.is_admin, row.organization_id, row.role)


class ClientRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def upsert(self, name: str, password: str, *, organization_id: str | None, is_admin: bool = False,
                     role: str | None = None) -> None:
        """``role`` wins over ``is_admin`` (the older spelling: admin, else facility)."""
        role = role or ("admin" if is_admin else "facility")
        values = dict(password_hash=hash_password(password), is_admin=role == "admin", role=role,
                      organization_id=organization_id)
        result = await self.conn.execute(update(clients).where(clients.c.name == name).values(**values))
        if result.rowcount == 0:
            await self.conn.execute(insert(clients).values(name=name, created_at=now_instant(), **values))

    async def remove(self, name: str) -> bool:
        result = await self.conn.execute(delete(clients).where(clients.c.name == name))
        return result.rowcount > 0

    async def list(self) -> list[Client]:
        rows = await self.conn.execute(
            select(clients.c.name, clients.c.is_admin, clients.c.organization_id, clients.c.role)
            .order_by(clients.c.name)
        )
        return [_client(r) for r in rows]

    async def lookup(self, name: str) -> StoredClient | None:
        """The client named ``name`` with its password hash (one primary-key read, no hashing)."""
        row = (
            await self.conn.execute(
                select(
                    clients.c.name, clients.c.password_hash, clients.c.is_admin, clients.c.organization_id,
                    clients.c.role,
                ).where(
                    clients.c.name == name
                )
            )
        ).first()
        return StoredClient(_client(row), row.password_hash) if row is not None else None

    async def authenticate(self, name: str, password: str) -> Client | None:
        """Check a password here and now (CLI and start-up; the HTTP path runs argon2 off the loop)."""
        stored = await self.lookup(name)
        ok = verify_password(stored.password_hash if stored else dummy_hash(), password)
        return stored.client if stored is not None and ok else None

    async def password_matches(self, name: str, password: str) -> bool:
        """True when the client exists with exactly this password (avoids re-hashing at each start)."""
        return await self.authenticate(name, password) is not None
