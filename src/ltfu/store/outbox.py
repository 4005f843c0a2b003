"""The transactional outbox: rows written with the state change that causes them, claimed by workers.

Order: a row is claimable only when no earlier *pending* row shares its ``order_key`` (dead rows
do not block). Claims take a lease; a worker that dies mid-delivery loses its lease when it ends,
and another worker picks the row up again (at-least-once; receivers are idempotent).

A row that may have left the building is known as such: the claim that leases it for sending also
stamps ``sent_at`` (first time only), in the transaction that commits before the first byte is sent.
``sent_at`` is never cleared (not by a retry, not by a replay), so a later try knows that an earlier
one may have reached the receiver even when that try died without recording anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import and_, case, func, insert, not_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.store import tallies
from ltfu.store.resources import now_instant
from ltfu.store.schema import delivery_attempts, outbox
from ltfu.store.write_buffer import PendingId, WriteBuffer

# A second enqueue of a deduplicated message is a no-op: one statement, no look-up first.
_ADD_ONCE = {
    "sqlite": sqlite.insert(outbox).on_conflict_do_nothing(index_elements=[outbox.c.dedupe_key])
    .returning(outbox.c.id),
    "postgresql": postgresql.insert(outbox).on_conflict_do_nothing(index_elements=[outbox.c.dedupe_key])
    .returning(outbox.c.id),
}


def instant_in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class OutboxRow:
    id: int
    destination: str
    kind: str
    order_key: str
    payload: dict[str, Any]
    attempts: int
    created_at: str
    case_id: str | None
    subscription_id: str | None
    organization_id: str | None
    last_error: str | None = None
    maybe_sent: bool = False  # an earlier claim took it to send: the receiver may already have it


def _row(r: Any) -> OutboxRow:
    return OutboxRow(r.id, r.destination, r.kind, r.order_key, orjson.loads(r.payload), r.attempts, r.created_at,
                     r.case_id, r.subscription_id, r.organization_id, r.last_error, r.sent_at is not None)


def _ids(row_ids: int | Sequence[int]) -> list[int]:
    return [row_ids] if isinstance(row_ids, int) else list(row_ids)


def _message(destination: str, kind: str, order_key: str, payload: dict[str, Any], dedupe_key: str | None,
             case_id: str | None, subscription_id: str | None, organization_id: str | None,
             delay_s: float) -> dict[str, Any]:
    now = now_instant()
    return dict(destination=destination, kind=kind, order_key=order_key, dedupe_key=dedupe_key,
                payload=orjson.dumps(payload).decode(), status="pending", attempts=0, created_at=now,
                next_attempt_at=instant_in(delay_s) if delay_s else now, case_id=case_id,
                subscription_id=subscription_id, organization_id=organization_id)


class OutboxRepository:
    def __init__(self, conn: AsyncConnection, *, skip_locked: bool, buffer: WriteBuffer | None = None) -> None:
        self.conn = conn
        self.skip_locked = skip_locked
        self.buffer = buffer

    async def enqueue(
        self, destination: str, kind: str, order_key: str, payload: dict[str, Any], *, dedupe_key: str | None = None,
        case_id: str | None = None, subscription_id: str | None = None, organization_id: str | None = None,
        delay_s: float = 0.0,
    ) -> int | None:
        """Add a message; with ``dedupe_key`` a second enqueue of the same message is a no-op (None)."""
        row = _message(destination, kind, order_key, payload, dedupe_key, case_id, subscription_id,
                       organization_id, delay_s)
        if dedupe_key is None:
            result = await self.conn.execute(insert(outbox).returning(outbox.c.id), row)
        else:
            result = await self.conn.execute(_ADD_ONCE[self.conn.dialect.name], row)
        found = result.scalar_one_or_none()
        return None if found is None else int(found)

    def enqueue_new(
        self, destination: str, kind: str, order_key: str, payload: dict[str, Any], *, dedupe_key: str,
        case_id: str | None = None, subscription_id: str | None = None, organization_id: str | None = None,
    ) -> PendingId:
        """Add a message whose ``dedupe_key`` was minted in this transaction (a new case's id, an event
        number just counted), so no earlier row holds it: the insert waits in the write buffer."""
        row = _message(destination, kind, order_key, payload, dedupe_key, case_id, subscription_id,
                       organization_id, 0.0)
        assigned = PendingId()
        if self.buffer is None:
            raise RuntimeError("enqueue_new needs a unit of work's write buffer")
        self.buffer.add(outbox, row, assigned)
        return assigned

    def enqueue_event(self, subscription_id: str, payload: dict[str, Any], *, case_id: str | None,
                      organization_id: str | None) -> None:
        """Queue a notification event of a subscription, to be numbered by the database (migration 0015).

        The row goes as ``unnumbered``: the database makes it ``pending`` with the subscription's next number
        (its ``event:<sub>:<n>`` key, ``"event"`` in its payload, its ``subscription_events`` row) in
        commit order, taking the subscription's counter lock inside COMMIT only (PostgreSQL). The
        subscription's events are delivered in number order: their outbox ids follow the numbers."""
        if self.buffer is None:
            raise RuntimeError("enqueue_event needs a unit of work's write buffer")
        row = _message("notify", "event", f"sub:{subscription_id}", payload, None, case_id, subscription_id,
                       organization_id, 0.0)
        self.buffer.add(outbox, {**row, "status": "unnumbered"})

    async def claim(self, worker: str, limit: int, lease_s: float, destinations: tuple[str, ...],
                    order_key: str | None = None) -> list[OutboxRow]:
        """Due rows at the head of their order key (of ``order_key`` only, when given), leased to ``worker``
        and marked as (maybe) sent.

        The returned rows say whether an *earlier* claim took them (``maybe_sent``)."""
        now = now_instant()
        earlier = outbox.alias("earlier")
        head = not_(
            select(earlier.c.id)
            .where(and_(earlier.c.order_key == outbox.c.order_key, earlier.c.status == "pending",
                        earlier.c.id < outbox.c.id))
            .exists()
        )
        q = (
            select(outbox)
            .where(and_(outbox.c.status == "pending", outbox.c.next_attempt_at <= now,
                        outbox.c.destination.in_(destinations),
                        or_(outbox.c.lease_until.is_(None), outbox.c.lease_until < now), head))
            .order_by(outbox.c.next_attempt_at, outbox.c.id)
            .limit(limit)
        )
        if order_key is not None:
            q = q.where(outbox.c.order_key == order_key)
        if self.skip_locked:
            q = q.with_for_update(skip_locked=True, of=outbox)
        rows = (await self.conn.execute(q)).all()
        if not rows:
            return []
        await self.conn.execute(
            update(outbox).where(outbox.c.id.in_([r.id for r in rows]))
            .values(lease_owner=worker, lease_until=instant_in(lease_s),
                    sent_at=func.coalesce(outbox.c.sent_at, now))
        )
        return [_row(r) for r in rows]

    async def lease_owners(self, prefix: str) -> list[str]:
        held = and_(outbox.c.status == "pending", outbox.c.lease_owner.like(prefix + "%"))
        rows = await self.conn.execute(select(outbox.c.lease_owner).where(held).distinct())
        return [r for (r,) in rows if r]

    async def release(self, owner: str, grace_s: float = 0.0) -> int:
        """Give up the leases of a worker that is gone; its rows become claimable after ``grace_s``.

        A request the dead worker had sent may still be being processed by the receiver (CHT goes on
        with a request whose client vanished): a retry before it is stored would not find it, and
        would create a second one. The grace is as long as the worker would have waited for it."""
        due = instant_in(grace_s)
        result = await self.conn.execute(update(outbox).where(outbox.c.lease_owner == owner).values(
            lease_owner=None, lease_until=None,
            next_attempt_at=case((outbox.c.next_attempt_at < due, due), else_=outbox.c.next_attempt_at)))
        return int(result.rowcount or 0)

    async def claim_followers(self, worker: str, head: OutboxRow, limit: int, lease_s: float) -> list[OutboxRow]:
        """The due messages of the same kind that follow ``head`` in its lane without a gap, up to ``limit``,
        leased to ``worker`` with it, so that one call carries them all (a facility's events in one Bundle).

        Asked in the transaction that claimed ``head``: no other worker claims rows behind a pending head, so
        the rows come back in lane order, without a gap."""
        now = now_instant()
        q = (select(outbox).where(and_(outbox.c.order_key == head.order_key, outbox.c.status == "pending",
                                       outbox.c.id > head.id))
             .order_by(outbox.c.id).limit(limit))
        if self.skip_locked:
            q = q.with_for_update(of=outbox)
        taken = []
        for r in (await self.conn.execute(q)).all():
            free = r.lease_until is None or r.lease_until < now
            if r.kind != head.kind or r.destination != head.destination or r.next_attempt_at > now or not free:
                break  # the group stops at the first row that cannot go now: order stays
            taken.append(r)
        if not taken:
            return []
        await self.conn.execute(
            update(outbox).where(outbox.c.id.in_([r.id for r in taken]))
            .values(lease_owner=worker, lease_until=instant_in(lease_s),
                    sent_at=func.coalesce(outbox.c.sent_at, now))
        )
        return [_row(r) for r in taken]

    async def still_leased_by(self, row_ids: Sequence[int], worker: str) -> bool:
        """Every row of ``row_ids`` is pending and leased to ``worker``."""
        rows = (await self.conn.execute(
            select(outbox.c.lease_owner, outbox.c.status).where(outbox.c.id.in_(row_ids)))).all()
        return len(rows) == len(set(row_ids)) and all(r.lease_owner == worker and r.status == "pending" for r in rows)

    async def record_attempt(self, row_ids: int | Sequence[int], status_code: int | None, latency_ms: int,
                             result: str, error: str | None) -> None:
        at = now_instant()
        await self.conn.execute(insert(delivery_attempts), [
            dict(outbox_id=i, attempted_at=at, status_code=status_code, latency_ms=latency_ms, result=result,
                 error=error) for i in _ids(row_ids)])

    async def done(self, row_ids: int | Sequence[int]) -> None:
        now = now_instant()
        await self.conn.execute(update(outbox).where(outbox.c.id.in_(_ids(row_ids))).values(
            status="done", done_at=now, last_attempt_at=now, attempts=outbox.c.attempts + 1, lease_owner=None,
            lease_until=None, last_error=None))

    async def retry_later(self, row_ids: int | Sequence[int], delay_s: float, error: str) -> None:
        await self.conn.execute(update(outbox).where(outbox.c.id.in_(_ids(row_ids))).values(
            next_attempt_at=instant_in(delay_s), last_attempt_at=now_instant(), attempts=outbox.c.attempts + 1,
            last_error=error[:2000], lease_owner=None, lease_until=None))

    async def dead(self, row_ids: int | Sequence[int], error: str) -> None:
        await self.conn.execute(update(outbox).where(outbox.c.id.in_(_ids(row_ids))).values(
            status="dead", last_attempt_at=now_instant(), attempts=outbox.c.attempts + 1, last_error=error[:2000],
            lease_owner=None, lease_until=None))

    async def cancel_pending(self, order_key: str, kind: str) -> int:
        """Drop pending rows of a kind for a key that no worker ever took to send (so the receiver
        cannot have them), e.g. a follow-up a cancel overtakes. A row that may have been sent stays:
        the caller then sends what undoes it (a cancel record)."""
        result = await self.conn.execute(
            update(outbox).where(and_(outbox.c.order_key == order_key, outbox.c.kind == kind,
                                      outbox.c.status == "pending", outbox.c.sent_at.is_(None)))
            .values(status="done", done_at=now_instant(), last_error="superseded before delivery"))
        return int(result.rowcount or 0)

    async def replay(self, *, row_id: int | None = None, destination: str | None = None,
                     organization_id: str | None = None) -> int:
        """Put dead rows back in the queue (one, or all matching), with a fresh retry budget.

        ``sent_at`` stays: a replayed row may have reached the receiver before it died."""
        cond = [outbox.c.status == "dead"]
        if row_id is not None:
            cond.append(outbox.c.id == row_id)
        if destination:
            cond.append(outbox.c.destination == destination)
        if organization_id:
            cond.append(outbox.c.organization_id == organization_id)
        result = await self.conn.execute(update(outbox).where(and_(*cond)).values(
            status="pending", next_attempt_at=now_instant(), attempts=0, lease_owner=None, lease_until=None))
        return int(result.rowcount or 0)

    async def list(self, status: str | None = None, destination: str | None = None, limit: int = 100,
                   organization_id: str | None = None, case_id: str | None = None) -> list[Any]:
        q = select(outbox)
        if status:
            q = q.where(outbox.c.status == status)
        if destination:
            q = q.where(outbox.c.destination == destination)
        if organization_id:
            q = q.where(outbox.c.organization_id == organization_id)
        if case_id:
            q = q.where(outbox.c.case_id == case_id)
        return list((await self.conn.execute(q.order_by(outbox.c.id.desc()).limit(limit))).all())

    async def depth(self) -> dict[tuple[str, str], tuple[int, str | None]]:
        """(destination, status) → (count, oldest next_attempt_at) for pending and dead rows (the oldest of
        pending rows only). The counts are kept by triggers (``store/tallies.py``); the oldest is one step
        along the partial index of pending rows per destination."""
        counts = {(d or "", s or ""): n for (d, s), n in tallies.summed(await tallies.read(self.conn, "outbox"), 0, 1)
                  if s != "done"}
        out: dict[tuple[str, str], tuple[int, str | None]] = {}
        for (dest, status), n in counts.items():
            oldest = None
            if status == "pending":
                oldest = (await self.conn.execute(select(func.min(outbox.c.next_attempt_at)).where(and_(
                    outbox.c.status == "pending", outbox.c.destination == dest)))).scalar_one_or_none()
            out[(dest, status)] = (n, oldest)
        return out
