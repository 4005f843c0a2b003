"""A throw-away PostgreSQL database per test session (or None when no server answers)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid

import asyncpg

ADMIN_URL = os.environ.get("LTFU_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def _exec(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database() -> str | None:
    """Create a fresh database; its URL, or None when PostgreSQL is unreachable."""
    name = f"ltfu_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_exec(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    base = ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
        asyncio.run(_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
