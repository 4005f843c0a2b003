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

from collections import namedtuple
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, case, func, insert, not_, null, or_, select, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ClauseElement

from ltfu.store import tallies
from ltfu.store.driver import compiled
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


# The statements of every delivery, built once (``store/driver.py`` runs them without SQLAlchemy's per-statement
# work when the unit of work has a driver): variants by the shape that changes (destinations, how many ids:
# at most a claim's or a group's size). Kept for good: ``compiled`` knows a statement by its identity.
_Record = namedtuple("_Record", [c.name for c in outbox.columns])  # type: ignore[misc]  # noqa: PYI024
_ATTEMPT = insert(delivery_attempts)
_STATUSES = ("unnumbered", "pending", "done", "dead")  # every status a row can have


def _id_list(n: int) -> Any:
    return outbox.c.id.in_([bindparam(f"i{k}") for k in range(n)])


def _id_params(ids: Sequence[int]) -> dict[str, Any]:
    return {f"i{k}": i for k, i in enumerate(ids)}


@cache
def _claim_statement(destinations: tuple[str, ...], by_key: bool, skip_locked: bool) -> ClauseElement:
    """Due rows at the head of their order key, the oldest due first (``:now``, ``:lim``; ``:key``)."""
    earlier = outbox.alias("earlier")
    head = not_(
        select(earlier.c.id)
        .where(and_(earlier.c.order_key == outbox.c.order_key, earlier.c.status == "pending",
                    earlier.c.id < outbox.c.id))
        .exists()
    )
    q = (
        select(outbox)
        .where(and_(outbox.c.status == "pending", outbox.c.next_attempt_at <= bindparam("now"),
                    outbox.c.destination.in_([bindparam(f"d{k}", d) for k, d in enumerate(destinations)]),
                    or_(outbox.c.lease_until.is_(None), outbox.c.lease_until < bindparam("now")), head))
        .order_by(outbox.c.next_attempt_at, outbox.c.id)
        .limit(bindparam("lim"))
    )
    if by_key:
        q = q.where(outbox.c.order_key == bindparam("key"))
    if skip_locked:
        q = q.with_for_update(skip_locked=True, of=outbox)
    return q


@cache
def _followers_statement(skip_locked: bool) -> ClauseElement:
    q = (select(outbox).where(and_(outbox.c.order_key == bindparam("key"), outbox.c.status == "pending",
                                   outbox.c.id > bindparam("after")))
         .order_by(outbox.c.id).limit(bindparam("lim")))
    return q.with_for_update(of=outbox) if skip_locked else q


@cache
def _lease_statement(n: int) -> ClauseElement:
    return update(outbox).where(_id_list(n)).values(
        lease_owner=bindparam("w"), lease_until=bindparam("until"),
        sent_at=func.coalesce(outbox.c.sent_at, bindparam("now")))


@cache
def _settle_statement(n: int, leased: bool) -> ClauseElement:
    """Rows ``:i0..`` done, dead or due again (``:st``, ``:next``), leases dropped; with ``leased`` only while
    pending and leased to ``:w``. Returns the ids it changed."""
    where = _id_list(n)
    if leased:
        where = and_(where, outbox.c.lease_owner == bindparam("w"), outbox.c.status == "pending")

    def kept(column: Any, name: str) -> Any:  # the parameter, or the value the row has when it is None
        return func.coalesce(bindparam(name, type_=column.type), column)

    return update(outbox).where(where).values(
        status=kept(outbox.c.status, "st"), done_at=kept(outbox.c.done_at, "done_at"), last_error=bindparam("err"),
        next_attempt_at=kept(outbox.c.next_attempt_at, "next"),
        last_attempt_at=bindparam("at"), attempts=outbox.c.attempts + 1, lease_owner=null(), lease_until=null(),
    ).returning(outbox.c.id)


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
    # What its handler read for it in the claim's transaction (``Handler.prepare``), if anything.
    prepared: Any = field(default=None, compare=False, repr=False)


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

    async def _fetch(self, statement: ClauseElement, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """A statement built once, at the unit of work's driver when it has one (after the held inserts:
        they may be outbox rows)."""
        driver = self.buffer.driver if self.buffer is not None else None
        if driver is None:
            return [tuple(r) for r in await self.conn.execute(statement, params)]
        assert self.buffer is not None
        await self.buffer.flush()
        return await driver.fetch(compiled(statement, driver.dialect), params)

    async def _execute_many(self, statement: ClauseElement, rows: list[dict[str, Any]]) -> None:
        driver = self.buffer.driver if self.buffer is not None else None
        if driver is None:
            await self.conn.execute(statement, rows)
            return
        assert self.buffer is not None
        await self.buffer.flush()
        await driver.execute_many(compiled(statement, driver.dialect, list(rows[0])), rows)

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
        params: dict[str, Any] = {"now": now, "lim": limit}
        if order_key is not None:
            params["key"] = order_key
        found = await self._fetch(_claim_statement(tuple(destinations), order_key is not None, self.skip_locked),
                                  params)
        rows = [_Record(*r) for r in found]
        await self._lease(rows, worker, lease_s, now)
        return [_row(r) for r in rows]

    async def _lease(self, rows: list[Any], worker: str, lease_s: float, now: str) -> None:
        if rows:
            await self._fetch(_lease_statement(len(rows)), {
                "w": worker, "until": instant_in(lease_s), "now": now, **_id_params([r.id for r in rows])})

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
        taken = []
        found = await self._fetch(_followers_statement(self.skip_locked),
                                  {"key": head.order_key, "after": head.id, "lim": limit})
        for r in map(_Record._make, found):
            free = r.lease_until is None or r.lease_until < now
            if r.kind != head.kind or r.destination != head.destination or r.next_attempt_at > now or not free:
                break  # the group stops at the first row that cannot go now: order stays
            taken.append(r)
        await self._lease(taken, worker, lease_s, now)
        return [_row(r) for r in taken]

    async def settle(self, row_ids: int | Sequence[int], outcome: str, *, worker: str | None = None,
                     delay_s: float = 0.0, error: str | None = None) -> bool:
        """Rows ``done``, ``dead`` or due again in ``delay_s`` (``retry``), their leases dropped, one more attempt
        counted. With ``worker``: all or none, only while every row is still pending and leased to it (else
        nothing changes and False: the lease was lost, another worker may have the rows)."""
        ids = _ids(row_ids)
        now = now_instant()
        params = {"st": None if outcome == "retry" else outcome, "done_at": now if outcome == "done" else None,
                  "err": error[:2000] if error is not None and outcome != "done" else None,
                  "next": instant_in(delay_s) if outcome == "retry" else None, "at": now, **_id_params(ids)}
        if worker is not None:
            params["w"] = worker
        changed = await self._fetch(_settle_statement(len(ids), worker is not None), params)
        return len(changed) == len(set(ids))

    async def record_attempt(self, row_ids: int | Sequence[int], status_code: int | None, latency_ms: int,
                             result: str, error: str | None) -> None:
        at = now_instant()
        await self._execute_many(_ATTEMPT, [
            dict(outbox_id=i, attempted_at=at, status_code=status_code, latency_ms=latency_ms, result=result,
                 error=error) for i in _ids(row_ids)])

    async def done(self, row_ids: int | Sequence[int]) -> None:
        await self.settle(row_ids, "done")

    async def retry_later(self, row_ids: int | Sequence[int], delay_s: float, error: str) -> None:
        await self.settle(row_ids, "retry", delay_s=delay_s, error=error)

    async def dead(self, row_ids: int | Sequence[int], error: str) -> None:
        await self.settle(row_ids, "dead", error=error)

    async def last_enqueued_at(self, order_keys: Sequence[str]) -> str | None:
        """When the newest message of these lanes was queued (None: never). Each lane's newest id per status is
        one step along ``ix_outbox_order`` (order key, status, id), however many rows the outbox keeps."""
        newest = union_all(*[
            select(func.max(outbox.c.id).label("m")).where(and_(outbox.c.order_key == k, outbox.c.status == s))
            for k in order_keys for s in _STATUSES]).subquery()
        q = select(outbox.c.created_at).where(outbox.c.id == select(func.max(newest.c.m)).scalar_subquery())
        return (await self.conn.execute(q)).scalar_one_or_none()

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
