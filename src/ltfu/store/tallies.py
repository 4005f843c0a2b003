"""Counts that cost the same however many rows are stored: kept by triggers, read as ``tallies`` + deltas.

Triggers (migration 0020) append a ``(metric, scope, key, ±1)`` row to ``tally_deltas`` on every insert or
delete of a case, outbox row or delivery attempt, and on every update that moves a row from one key to
another. Writers only insert — no row that every writer updates, so nobody queues behind anybody (on
PostgreSQL a counter row would be locked by each transaction until it commits). :func:`fold` moves the deltas
into ``tallies`` in one transaction, and a count is the sum over both tables, read in one statement: exact
at any moment, whatever the fold has done so far.

The keys (scope is the organization id, ``''`` for none):

- ``cases``: ``status|business_status|outcome|matched_by|sent|attempted|closed`` (the last three ``1`` when
  ``sent_to_cht_at``, ``first_attempt_at``, ``closed_at`` is set).
- ``outbox``: ``destination|status|failed`` (``failed`` is ``1`` once an attempt failed: ``attempts > 0``).
- ``attempts``: the attempt's ``result`` (scope ``''``).

Missing values are ``''`` in a key and ``None`` here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_READ = """
SELECT scope, key, SUM(n) FROM (
  SELECT scope, key, n FROM tallies WHERE metric = :metric{scoped}
  UNION ALL
  SELECT scope, key, n FROM tally_deltas WHERE metric = :metric{scoped}
) AS t GROUP BY scope, key
"""
_READ_ALL = text(_READ.format(scoped=""))
_READ_SCOPED = text(_READ.format(scoped=" AND scope = :scope"))

# PostgreSQL: exactly the deltas deleted are added (a delta committed meanwhile stays for the next fold).
_FOLD_PG = text("""
WITH moved AS (DELETE FROM tally_deltas RETURNING metric, scope, key, n)
INSERT INTO tallies (metric, scope, key, n)
SELECT metric, scope, key, SUM(n) FROM moved GROUP BY metric, scope, key
ON CONFLICT (metric, scope, key) DO UPDATE SET n = tallies.n + excluded.n
""")
# SQLite: the fold's transaction holds the write lock from its first statement, so both see the same deltas.
_FOLD_SQLITE = (
    text(
        "INSERT INTO tallies (metric, scope, key, n) SELECT metric, scope, key, SUM(n) FROM tally_deltas "
        "WHERE true GROUP BY metric, scope, key "
        "ON CONFLICT (metric, scope, key) DO UPDATE SET n = tallies.n + excluded.n"
    ),
    text("DELETE FROM tally_deltas"),
)
_DROP_ZEROS = text("DELETE FROM tallies WHERE n = 0")
_FOLD_LOCK = 7468746676  # one fold at a time across replicas (db.py's migration lock is ...675)


class Tally(NamedTuple):
    scope: str | None
    key: tuple[str | None, ...]
    n: int


async def read(conn: AsyncConnection, metric: str, scope: str | None = None) -> list[Tally]:
    """The non-zero counts of ``metric`` (of one organization's rows when ``scope`` is given)."""
    if scope is None:
        result = await conn.execute(_READ_ALL, {"metric": metric})
    else:
        result = await conn.execute(_READ_SCOPED, {"metric": metric, "scope": scope})
    return [Tally(s or None, tuple(part or None for part in k.split("|")), int(n)) for s, k, n in result.all() if n]


def flag(value: str | None) -> bool:
    return value == "1"


def summed(tallies: list[Tally], *positions: int) -> Iterator[tuple[tuple[str | None, ...], int]]:
    """Totals by the key parts at ``positions``."""
    totals: dict[tuple[str | None, ...], int] = {}
    for t in tallies:
        part = tuple(t.key[p] for p in positions)
        totals[part] = totals.get(part, 0) + t.n
    yield from totals.items()


async def fold(conn: AsyncConnection) -> bool:
    """Move the deltas into ``tallies`` (in the caller's transaction). False when another process is folding."""
    if conn.dialect.name == "postgresql":
        if not (await conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _FOLD_LOCK})).scalar():
            return False
        await conn.execute(_FOLD_PG)
    else:
        for statement in _FOLD_SQLITE:
            await conn.execute(statement)
    await conn.execute(_DROP_ZEROS)
    return True
