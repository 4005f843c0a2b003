"""What one delivery attempt produced, and what it changes when it is recorded."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ltfu.delivery.retry import Verdict
from ltfu.store.outbox import OutboxRow
from ltfu.store.uow import UnitOfWork

Effect = Callable[[UnitOfWork], Awaitable[None]]


@dataclass
class Attempt:
    verdict: Verdict
    status_code: int | None = None
    latency_ms: int = 0
    error: str | None = None
    on_done: Effect | None = None  # applied in the transaction that marks the row done


class Handler(ABC):
    """Sends one outbox row (or a lane's group of them).

    Must not raise for delivery problems: return an Attempt instead."""

    destination: str
    # Its lanes often hold many messages (a facility's events): after a success the lane's next is claimed in
    # the transaction that records it. Lanes of one or two (a case's CHT records) leave it to the next claim.
    chains: bool = True

    @abstractmethod
    async def send(self, row: OutboxRow) -> Attempt: ...

    def group_limit(self, row: OutboxRow) -> int:
        """How many messages of ``row``'s lane, ``row`` first, one call may carry (:meth:`send_group`)."""
        return 1

    async def send_group(self, rows: list[OutboxRow]) -> Attempt:
        """Send consecutive messages of one lane in one call (only when :meth:`group_limit` allows it)."""
        raise NotImplementedError

    async def prepare(self, uow: UnitOfWork, rows: list[OutboxRow]) -> list[OutboxRow]:
        """What :meth:`send` will need of the database, read in the transaction that claims ``rows`` (one
        transaction fewer per delivery) and carried in ``OutboxRow.prepared``. Reads (at most a first signing
        key is made), nothing that fails the claim: whatever it cannot read, :meth:`send` reads itself."""
        return rows

    def dead_effect(self, row: OutboxRow, error: str) -> Effect | None:
        """What giving up on ``row`` changes (applied in the transaction that marks it dead)."""
        return None

    async def close(self) -> None:
        return None
