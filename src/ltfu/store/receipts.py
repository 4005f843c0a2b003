"""Receipts of inbound messages (CHT outbound push re-sends forever): the key and a content hash."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.store.driver import compiled
from ltfu.store.resources import now_instant
from ltfu.store.schema import inbound_receipts
from ltfu.store.write_buffer import WriteBuffer

# Built once: a CHT push reads and writes its receipt at the unit of work's driver (store/driver.py).
_BY_KEY = select(inbound_receipts.c.content_hash, inbound_receipts.c.result).where(
    inbound_receipts.c.key == bindparam("k"))
_ADD = insert(inbound_receipts)
_SET = update(inbound_receipts).where(inbound_receipts.c.key == bindparam("k")).values(
    content_hash=bindparam("h"), received_at=bindparam("at"), result=bindparam("r"))


def content_hash(payload: Any) -> str:
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


class ReceiptRepository:
    def __init__(self, conn: AsyncConnection, buffer: WriteBuffer | None = None) -> None:
        self.conn = conn
        self.buffer = buffer  # its driver, when the unit of work has one (no receipt is ever held in it)

    async def get(self, key: str) -> tuple[str, dict[str, Any]] | None:
        driver = self.buffer.driver if self.buffer is not None else None
        if driver is not None:
            rows = await driver.fetch(compiled(_BY_KEY, driver.dialect), {"k": key})
        else:
            rows = [tuple(r) for r in await self.conn.execute(_BY_KEY, {"k": key})]
        return (rows[0][0], orjson.loads(rows[0][1])) if rows else None

    async def put(self, key: str, digest: str, result: dict[str, Any], *, exists: bool) -> None:
        values = {"k": key, "h": digest, "at": now_instant(), "r": orjson.dumps(result).decode()}
        driver = self.buffer.driver if self.buffer is not None else None
        if exists:
            if driver is not None:
                await driver.execute_many(compiled(_SET, driver.dialect), [values])
            else:
                await self.conn.execute(_SET, values)
            return
        row = {"key": key, "content_hash": digest, "received_at": values["at"], "result": values["r"]}
        if driver is not None:
            await driver.execute_many(compiled(_ADD, driver.dialect, list(row)), [row])
        else:
            await self.conn.execute(_ADD, row)
