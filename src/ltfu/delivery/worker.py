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
from ltfu.store.uow import unit_of_work

log = logging.getLogger("ltfu.delivery")


class Worker:
    def __init__(self, db: Database, settings: Settings, handlers: list[Handler], *, batch: int = 32) -> None:
        self.db = db
        self.settings = settings
        self.handlers = {h.destination: h for h in handlers}
        self.policy = RetryPolicy(settings.retry_initial_s, settings.retry_max_s, settings.retry_budget_s,
                                  settings.retry_permanent_4xx)
        self.batch = batch
        self.host = os.uname().nodename
        self.name = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # A CHT delivery makes up to four calls (person, find, record, read back).
        self.lease_s = max(settings.delivery_timeout_s, 4 * settings.cht_timeout_s) + 15
        # The longest one request of a delivery can be in flight (we would have stopped waiting then).
        self.in_flight_s = max(settings.delivery_timeout_s, settings.cht_timeout_s)
        self.last_beat = time.monotonic()
        self.wake = asyncio.Event()
        self.sent = 0

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
        log.info("delivery worker %s started for %s", self.name, ", ".join(self.handlers))
        try:
            await self.release_dead_workers()
        except Exception as exc:  # noqa: BLE001 - best effort: leases also expire
            log.error("could not release stale leases: %s", type(exc).__name__)
        while not stop.is_set():
            self.last_beat = time.monotonic()
            try:
                busy = await self.run_once()
            except Exception as exc:  # noqa: BLE001 - a worker must survive a database hiccup
                log.error("delivery round failed: %s", type(exc).__name__)
                busy = False
            if not busy:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=self.settings.poll_interval_s)
        for h in self.handlers.values():
            await h.close()

    async def run_once(self) -> bool:
        """One claim-and-send round; True when it found work."""
        async with unit_of_work(self.db) as uow:
            rows = await uow.outbox.claim(self.name, self.batch, self.lease_s, tuple(self.handlers))
        if not rows:
            return False
        await asyncio.gather(*(self._deliver(row) for row in rows))
        return True

    async def _deliver(self, row: OutboxRow) -> None:
        """Send ``row``; while that succeeds, claim and send the next due message of its order key, up to a
        batch. An ordered lane (one facility's notifications) then moves many messages per round instead
        of one; each is still claimed only once the one before it is done."""
        for _ in range(self.batch - 1):
            if not await self._send(row):
                return
            async with unit_of_work(self.db) as uow:
                after = await uow.outbox.claim(self.name, 1, self.lease_s, tuple(self.handlers),
                                               order_key=row.order_key)
            if not after:
                return
            row = after[0]
        await self._send(row)  # the last one claimed: sent, not left leased

    async def _send(self, row: OutboxRow) -> bool:
        """One attempt, recorded; True when it succeeded."""
        handler = self.handlers[row.destination]
        try:
            attempt = await handler.send(row)
        except Exception as exc:  # noqa: BLE001 - a bug in one message must not stop the others
            log.error("delivery of outbox row %s crashed: %s", row.id, type(exc).__name__)
            attempt = Attempt(Verdict.RETRY, error=f"internal error: {type(exc).__name__}")
        return await self._record(row, handler, attempt)

    async def _record(self, row: OutboxRow, handler: Handler, attempt: Attempt) -> bool:
        async with unit_of_work(self.db) as uow:
            if not await uow.outbox.still_leased_by(row.id, self.name):
                log.warning("lease on outbox row %s lost; its result is dropped (it will be retried)", row.id)
                return False
            error = attempt.error or ""
            if attempt.verdict is Verdict.OK:
                await uow.outbox.record_attempt(row.id, attempt.status_code, attempt.latency_ms, "ok", attempt.error)
                metrics.observe_delivery(row.destination, "ok", attempt.status_code, attempt.latency_ms)
                if attempt.on_done:
                    await attempt.on_done(uow)
                await uow.outbox.done(row.id)
                self.sent += 1
                return True
            wait = self.policy.next_step(attempt.verdict, row.attempts)
            if wait is None:
                await uow.outbox.record_attempt(row.id, attempt.status_code, attempt.latency_ms, "dead", error)
                metrics.observe_delivery(row.destination, "dead", attempt.status_code, attempt.latency_ms)
                effect = handler.dead_effect(row, error)
                if effect:
                    await effect(uow)
                await uow.outbox.dead(row.id, error)
                log.warning("outbox row %s (%s %s) is dead after %s attempts: %s", row.id, row.destination,
                            row.kind, row.attempts + 1, error[:200])
            else:
                await uow.outbox.record_attempt(row.id, attempt.status_code, attempt.latency_ms, "retry", error)
                metrics.observe_delivery(row.destination, "retry", attempt.status_code, attempt.latency_ms)
                await uow.outbox.retry_later(row.id, wait, error)
        return False


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
