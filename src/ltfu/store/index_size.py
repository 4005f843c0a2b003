"""How many persons the CHT index holds: the population the matcher's prior is spread over."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.store.cht_index import ALL
from ltfu.store.schema import cht_name_tokens


async def indexed_persons(conn: AsyncConnection) -> int:
    """The count the name frequencies are shares of (the ``*`` row of ``cht_name_tokens``, kept by every
    write of the index): one primary-key read, where ``count(*)`` would scan a million rows."""
    row = (await conn.execute(select(cht_name_tokens.c.persons).where(cht_name_tokens.c.token == ALL))).first()
    return int(row[0]) if row and row[0] else 0
