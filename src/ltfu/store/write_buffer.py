"""Inserts held back until the unit of work next talks to the database, then sent table by table.

A new case writes about a dozen rows (two resource versions with their history and index rows, the
case, two outbox rows, an event). Sent one statement at a time each costs a statement build and a
round trip (a thread hop on SQLite, a network trip on PostgreSQL). Held here, they go as one
``executemany`` per table just before the next statement of the same transaction runs — so every read
sees them — or just before commit. A transaction that fails rolls back whether or not they were sent.

Only inserts whose keys cannot collide wait here (new resource ids, ids minted in the transaction);
database-assigned numbers a later row needs (a history ``seq``, an outbox ``id``) are ``PendingId``s
filled in at flush.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Table, insert, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from ltfu.store.driver import Driver, compiled
from ltfu.store.schema import (
    cases,
    outbox,
    resource_history,
    resource_owners,
    resources,
    search_index,
    subscription_events,
)
from ltfu.turns import turn


class PendingId:
    """A number the database assigns when the buffered row is inserted."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: int | None = None

    def __int__(self) -> int:
        if self.value is None:
            raise RuntimeError("read before the buffered insert was flushed")
        return self.value


# Flush order: a table's rows may hold PendingIds of the tables before it.
_ORDER: tuple[Table, ...] = (resource_history, resources, search_index, resource_owners, cases, outbox,
                             subscription_events)
_CHUNK = 500  # rows per executemany: on the inline SQLite writer the loop turns between two (a few ms each)
COPY_ROWS = 100  # a run this long goes to PostgreSQL as one COPY (a bulk load) instead of INSERTs
_INSERT: dict[str, Insert] = {t.name: insert(t) for t in _ORDER}
_ID_COLUMN = {resource_history.name: "seq", outbox.name: "id"}
# The numbers for the held history and outbox rows, taken in one statement before they are inserted
# (a multi-row INSERT ... RETURNING does not promise its rows' order). SQLite: the next rowids — the
# write lock is ours until commit (BEGIN IMMEDIATE), so nobody else takes them. PostgreSQL: the
# columns' own sequences, as a single-row insert would.
_NEXT_IDS = {
    "sqlite": text(
        "SELECT (SELECT coalesce(max(seq), 0) FROM resource_history), (SELECT coalesce(max(id), 0) FROM outbox)"
    ),
    "postgresql": text(
        "SELECT 0, nextval(pg_get_serial_sequence('resource_history', 'seq')) "
        "FROM generate_series(1, :h) UNION ALL "
        "SELECT 1, nextval(pg_get_serial_sequence('outbox', 'id')) FROM generate_series(1, :o)"
    ),
}


class WriteBuffer:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._rows: dict[str, list[dict[str, Any]]] = {t.name: [] for t in _ORDER}
        self._ids: dict[str, list[PendingId]] = {resource_history.name: [], outbox.name: []}
        self._holds_ids: set[str] = set()  # tables with rows that hold a PendingId (resolved at flush)
        self._pending = False
        self.driver: Driver | None = None  # set by the unit of work: the inserts go straight to the driver

    @property
    def pending(self) -> bool:
        """Rows are held (the next statement sends them first)."""
        return self._pending

    def add(self, table: Table, row: dict[str, Any], assigned: PendingId | None = None) -> None:
        """Queue one row; ``assigned`` receives the database's id (history and outbox rows only)."""
        self._rows[table.name].append(row)
        if table.name not in self._holds_ids and PendingId in map(type, row.values()):  # the test runs in C
            self._holds_ids.add(table.name)
        if table.name in self._ids:
            self._ids[table.name].append(assigned or PendingId())
        self._pending = True

    def add_many(self, table: Table, rows: list[dict[str, Any]]) -> None:
        """Queue rows of plain values (no ``PendingId``): index rows."""
        if rows:
            self._rows[table.name].extend(rows)
            self._pending = True

    def discard(self) -> None:
        """Drop what is held (its savepoint was rolled back)."""
        for rows in self._rows.values():
            rows.clear()
        for ids in self._ids.values():
            ids.clear()
        self._holds_ids.clear()
        self._pending = False

    async def flush(self) -> None:
        if not self._pending:
            return
        self._pending = False
        await self._assign_ids()
        holds_ids, self._holds_ids = self._holds_ids, set()
        runs: list[tuple[Table, list[dict[str, Any]]]] = []  # rows of one table with the same columns
        for table in _ORDER:
            rows = self._rows[table.name]
            if not rows:
                continue
            self._rows[table.name] = []
            if table.name in holds_ids:
                rows = [_resolved(r) for r in rows]
            start = 0
            for end in range(1, len(rows) + 1):
                if end < len(rows) and rows[end].keys() == rows[start].keys():
                    continue
                runs.append((table, rows[start:end] if start or end < len(rows) else rows))
                start = end
        if self.driver is not None and self.driver.copies and len(runs) > 1 and all(
                len(rows) < COPY_ROWS for _, rows in runs):
            # PostgreSQL: a new case's rows (history, current, index, case, outbox) in one statement, one round
            # trip instead of one per table
            sql, args = _insert_all(runs)
            await self.driver.execute(sql, args)
            return
        for table, rows in runs:
            if self.driver is not None and self.driver.copies and len(rows) >= COPY_ROWS:
                c = compiled(_INSERT[table.name], self.driver.dialect, list(rows[0]))
                await self.driver.copy(table.name, c.names, c.args_of(rows))
                continue
            for chunk in range(0, len(rows), _CHUNK):
                if chunk:
                    await turn()  # a long list: other requests get a turn between chunks
                batch = rows[chunk : chunk + _CHUNK]
                if self.driver is not None:
                    c = compiled(_INSERT[table.name], self.driver.dialect, list(batch[0]))
                    await self.driver.execute_many(c, batch)
                else:
                    await self._conn.execute(_INSERT[table.name], batch)

    async def _assign_ids(self) -> None:
        history, messages = self._ids[resource_history.name], self._ids[outbox.name]
        if not history and not messages:
            return
        if self._conn.dialect.name == "sqlite":
            if self.driver is not None:
                ((last_seq, last_id),) = await self.driver.fetch(compiled(_NEXT_IDS["sqlite"], self.driver.dialect), {})
            else:
                last_seq, last_id = (await self._conn.execute(_NEXT_IDS["sqlite"])).one()
            numbers = [
                list(range(last_seq + 1, last_seq + 1 + len(history))),
                list(range(last_id + 1, last_id + 1 + len(messages))),
            ]
        else:
            counts = {"h": len(history), "o": len(messages)}
            if self.driver is not None:
                rows = await self.driver.fetch(compiled(_NEXT_IDS["postgresql"], self.driver.dialect), counts)
            else:
                rows = await self._conn.execute(_NEXT_IDS["postgresql"], counts)
            numbers = [[], []]
            for which, value in rows:
                numbers[which].append(int(value))
            numbers = [sorted(n) for n in numbers]
        for (name, pending), values in zip(
            ((resource_history.name, history), (outbox.name, messages)), numbers, strict=True
        ):
            column = _ID_COLUMN[name]
            for p, row, value in zip(pending, self._rows[name], values, strict=True):
                p.value = value
                row[column] = value
            pending.clear()


_JSON_TYPES = {bool: "boolean", int: "bigint", float: "float8"}  # else text (assigned to the varchar columns)
_INSERT_ALL: dict[tuple[tuple[str, tuple[str, ...]], ...], str] = {}


def _insert_all(runs: list[tuple[Table, list[dict[str, Any]]]]) -> tuple[str, list[Any]]:
    """PostgreSQL: one statement inserting every run, each an ``INSERT ... SELECT`` from
    ``json_to_recordset`` (the run's rows as one JSON parameter: encoded by orjson, where arrays of values
    cost the driver a type check per value) in a ``WITH`` of its own. No run reads another's rows: the buffer
    holds no row that depends on another's insert but through the numbers it assigned before."""
    shape = tuple((table.name, tuple(rows[0])) for table, rows in runs)
    sql = _INSERT_ALL.get(shape)
    if sql is None:
        parts = []
        for n, ((name, columns), (table, _)) in enumerate(zip(shape, runs, strict=True), 1):
            fields = ", ".join(f"{c} {_JSON_TYPES.get(table.c[c].type.python_type, 'text')}" for c in columns)
            names = ", ".join(columns)
            parts.append(f"w{n} AS (INSERT INTO {name} ({names}) SELECT {names} FROM json_to_recordset(${n}::json) "
                         f"AS r({fields}))")
        sql = _INSERT_ALL[shape] = f"WITH {', '.join(parts)} SELECT 1"
    return sql, [orjson.dumps(rows).decode() for _, rows in runs]


def _resolved(row: dict[str, Any]) -> dict[str, Any]:
    if PendingId in map(type, row.values()):  # the test runs in C: every held row passes here
        return {k: int(v) if type(v) is PendingId else v for k, v in row.items()}
    return row
