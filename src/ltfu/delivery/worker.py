"""Outbox workers: claim due rows, send them, record every attempt, retry or give up.

Several workers (in one process or many, on one PostgreSQL) share the outbox safely: claims use
``FOR UPDATE SKIP LOCKED`` and a lease; a result is recorded only while the lease is still ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid

from ltfu import metrics
from ltfu.delivery.attempt import Attempt, Handler
from ltfu.delivery.retry import RetryPolicy, Verdict
from ltfu.services import notifications, requests, review
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.outbox import OutboxRow
from ltfu.store.uow import UnitOfWork, unit_of_work

log = logging.getLogger("ltfu.delivery")


class Worker:
    """Keeps up to ``concurrency`` deliveries in flight: whenever one ends (or new work is committed) it
    claims due rows for the free slots, so a slow lane never holds up the others (no round waits for its
    slowest delivery)."""

    def __init__(self, db: Database, settings: Settings, handlers: list[Handler], *, batch: int = 32,
                 concurrency: int | None = None) -> None:
        self.db = db
        self.settings = settings
        self.handlers = {h.destination: h for h in handlers}
        self.policy = RetryPolicy(settings.retry_initial_s, settings.retry_max_s, settings.retry_budget_s,
                                  settings.retry_permanent_4xx)
        self.batch = batch
        self.concurrency = concurrency or settings.delivery_concurrency
        self.host = os.uname().nodename
        self.name = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # A CHT delivery makes up to four calls (person, find, record, read back).
        self.lease_s = max(settings.delivery_timeout_s, 4 * settings.cht_timeout_s) + 15
        # The longest one request of a delivery can be in flight (we would have stopped waiting then).
        self.in_flight_s = max(settings.delivery_timeout_s, settings.cht_timeout_s)
        self.last_beat = time.monotonic()
        self.wake = asyncio.Event()
        self.sent = 0
        self._running: set[asyncio.Task[None]] = set()
        # Claims are made for a quarter of the slots at a time (or when idle), not for each slot that frees:
        # a claim scans the due heads of every lane, the dearest statement of a delivery under a backlog.
        self._refill = max(1, self.concurrency // 4)

    async def release_dead_workers(self) -> None:
        """Leases of crashed workers on this host (their process is gone) are freed, so a restart does
        not wait for them to expire; their rows are tried again once a request they may have had in
        flight has surely ended at the receiver. Leases of other hosts expire on their own."""
        async with unit_of_work(self.db) as uow:
            for owner in await uow.outbox.lease_owners(self.host + ":"):
                pid = owner.split(":")[1]
                if pid.isdigit() and not _alive(int(pid)):
                    n = await uow.outbox.release(owner, self.in_flight_s)
                    log.warning("released %s deliveries leased by %s, which is gone", n, owner)

    async def run(self, stop: asyncio.Event) -> None:
        log.info("delivery worker %s started for %s (%s at once)", self.name, ", ".join(self.handlers),
                 self.concurrency)
        try:
            await self.release_dead_workers()
        except Exception as exc:  # noqa: BLE001 - best effort: leases also expire
            log.error("could not release stale leases: %s", type(exc).__name__)
        while not stop.is_set():
            self.last_beat = time.monotonic()
            self.wake.clear()  # before the claim: work committed while it runs wakes the next one
            try:
                await self._fill()
            except Exception as exc:  # noqa: BLE001 - a worker must survive a database hiccup
                log.error("delivery round failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):  # a delivery ending, a nudge, or the poll
                await asyncio.wait_for(self.wake.wait(), timeout=self.settings.poll_interval_s)
        await asyncio.gather(*self._running, return_exceptions=True)  # what left is recorded
        for h in self.handlers.values():
            await h.close()

    async def _fill(self) -> int:
        """Claim due rows for the free slots and start their deliveries; how many were started."""
        free = self.concurrency - len(self._running)
        if free <= 0 or (self._running and free < self._refill):
            return 0
        async with unit_of_work(self.db) as uow:
            rows = await uow.outbox.claim(self.name, free, self.lease_s, tuple(self.handlers))
            groups = [await self._group(uow, row) for row in rows]
        for group in groups:
            task = asyncio.create_task(self._deliver(group))
            self._running.add(task)
            task.add_done_callback(self._ended)
        return len(groups)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:  # a database hiccup: the lease expires
            log.error("a delivery failed before its result was recorded: %s", type(task.exception()).__name__)
        self.wake.set()  # a free slot, and its lane may have a next message

    async def run_once(self) -> bool:
        """One claim of due rows for the free slots, their deliveries awaited; True when it found work."""
        if not await self._fill():
            return False
        await asyncio.gather(*self._running)
        return True

    async def _deliver(self, group: list[OutboxRow]) -> None:
        """Send ``group`` (a lane's head, with its followers if any); while that succeeds, send the next due
        message of its order key, up to a batch, claimed in the transaction that records the one before. An
        ordered lane (one facility's notifications) then moves many messages per claim instead of one; each
        is still claimed only once the one before it is done. A handler that can send several messages of a
        lane in one call (:meth:`Handler.group_limit`) gets the due ones that follow the head with it."""
        for sent in range(1, self.batch + 1):
            group = await self._send(group, chain=sent < self.batch)
            if not group:
                return  # failed, or the lane is empty, or the batch is used up: nothing is left leased

    async def _group(self, uow: UnitOfWork, head: OutboxRow) -> list[OutboxRow]:
        """``head`` (claimed in ``uow``) and the followers its handler may send with it, leased in ``uow`` too,
        with what the handler reads for them in ``uow`` (:meth:`Handler.prepare`)."""
        handler = self.handlers[head.destination]
        limit = handler.group_limit(head)
        rows = [head]
        if limit > 1:
            rows += await uow.outbox.claim_followers(self.name, head, limit - 1, self.lease_s)
        return await handler.prepare(uow, rows)

    async def _send(self, rows: list[OutboxRow], *, chain: bool) -> list[OutboxRow]:
        """One attempt (of one message, or of a lane's group in one call), recorded. When it succeeded and
        ``chain``: the next group of the lane, claimed in the same transaction (else nothing)."""
        handler = self.handlers[rows[0].destination]
        try:
            attempt = await (handler.send(rows[0]) if len(rows) == 1 else handler.send_group(rows))
        except Exception as exc:  # noqa: BLE001 - a bug in one message must not stop the others
            log.error("delivery of outbox row %s crashed: %s", rows[0].id, type(exc).__name__)
            attempt = Attempt(Verdict.RETRY, error=f"internal error: {type(exc).__name__}")
        return await self._record(rows, handler, attempt, chain=chain and handler.chains)

    async def _record(self, rows: list[OutboxRow], handler: Handler, attempt: Attempt, *,
                      chain: bool = False) -> list[OutboxRow]:
        """The attempt's result for every row it carried, in one transaction (a group shares its fate); on
        success and with ``chain``, the lane's next group claimed in it too. The rows' new state is written
        first, only while they are still leased to us: a lost lease rolls the whole result back."""
        head = rows[0]
        ids = [r.id for r in rows]
        error = attempt.error or ""
        if attempt.verdict is Verdict.OK:
            result, wait, effect = "ok", None, attempt.on_done
        else:
            wait = self.policy.next_step(attempt.verdict, head.attempts)
            result = "dead" if wait is None else "retry"
            effect = handler.dead_effect(head, error) if wait is None else None
        try:
            async with unit_of_work(self.db) as uow:
                if not await uow.outbox.settle(ids, "done" if result == "ok" else result, worker=self.name,
                                               delay_s=wait or 0.0, error=None if result == "ok" else error):
                    raise _LeaseLost
                await uow.outbox.record_attempt(ids, attempt.status_code, attempt.latency_ms, result,
                                                attempt.error if result == "ok" else error)
                if effect:
                    await effect(uow)
                after = []
                if result == "ok" and chain:
                    after = await uow.outbox.claim(self.name, 1, self.lease_s, tuple(self.handlers),
                                                   order_key=head.order_key)
                group = await self._group(uow, after[0]) if after else []
        except _LeaseLost:
            log.warning("lease on outbox row %s lost; its result is dropped (it will be retried)", head.id)
            return []
        metrics.observe_delivery(head.destination, result, attempt.status_code, attempt.latency_ms)
        if result == "ok":
            self.sent += len(rows)
        elif result == "dead":
            log.warning("outbox row %s (%s %s) is dead after %s attempts: %s", head.id, head.destination,
                        head.kind, head.attempts + 1, error[:200])
        return group


class _LeaseLost(Exception):
    """Another worker may hold the rows now: nothing of this attempt's result is written."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Sweeper:
    """Ends the cases whose follow-up window passed without an outcome; queues subscription heartbeats."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.interval = settings.sweep_interval_s
        self.last_beat = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.last_beat = time.monotonic()
            try:
                async with unit_of_work(self.db) as uow:
                    n = await requests.expire_due(uow)
                    n += await review.expire_due(uow)  # review items past LTFU_MATCH_REVIEW_DAYS
                    await notifications.queue_heartbeats(uow)
                if n:
                    log.info("expired %s cases", n)
            except Exception as exc:  # noqa: BLE001
                log.error("expiry sweep failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
