"""Receipts of inbound messages (CHT outbound push re-sends forever): the key and a content hash."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.store.resources import now_instant
from ltfu.store.schema import inbound_receipts


def content_hash(payload: Any) -> str:
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


class ReceiptRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, key: str) -> tuple[str, dict[str, Any]] | None:
        row = (await self.conn.execute(
            select(inbound_receipts.c.content_hash, inbound_receipts.c.result)
            .where(inbound_receipts.c.key == key))).first()
        return (row.content_hash, orjson.loads(row.result)) if row else None

    async def put(self, key: str, digest: str, result: dict[str, Any], *, exists: bool) -> None:
        values = dict(content_hash=digest, received_at=now_instant(), result=orjson.dumps(result).decode())
        if exists:
            await self.conn.execute(update(inbound_receipts).where(inbound_receipts.c.key == key).values(**values))
        else:
            await self.conn.execute(insert(inbound_receipts).values(key=key, **values))
