"""Creates that must happen once although their delivery is tried until it is acknowledged.

A try that was cut off (a crash, a timeout, an answer lost after the receiver stored the thing) may
still have created it. So every try of a row that may have been sent before (``OutboxRow.maybe_sent``,
stamped when the lease is taken) first looks for what an earlier try left behind, by a deterministic
key the created thing carries, and creates only when there is nothing. A look-up that fails is a
retry, never a blind create. Any delivery kind that creates something (CHT follow-up and cancel
records, CHT persons) declares its look-up and its create and goes through :func:`create_once`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ltfu.delivery.attempt import Attempt
from ltfu.delivery.retry import Verdict
from ltfu.store.outbox import OutboxRow


@dataclass(frozen=True)
class Lookup:
    """What a look-up for an earlier try's result found: an id, nothing, or a failure to find out."""

    found: str | None = None
    latency_ms: int = 0
    failure: Attempt | None = None  # the look-up itself failed: nothing is created on this try


Find = Callable[[], Awaitable[Lookup]]
Create = Callable[[], Awaitable[tuple[str | None, Attempt]]]


async def create_once(row: OutboxRow, find: Find, create: Create) -> tuple[str | None, Attempt]:
    """The id of the thing ``row`` creates and the attempt's outcome; creates at most once per thing."""
    if row.maybe_sent:
        lookup = await find()
        if lookup.failure is not None:
            return None, lookup.failure
        if lookup.found is not None:
            return lookup.found, Attempt(Verdict.OK, 200, lookup.latency_ms, "already there from an earlier try")
    return await create()
