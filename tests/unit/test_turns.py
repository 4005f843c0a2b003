"""``ltfu.turns``: long work gives way to the other requests it finds running; a small request never waits.

The clock and ``asyncio.sleep`` are replaced: what is checked is which waits a turn asks for, not how long
anything takes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from ltfu import turns


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    state: dict[str, object] = {"now": 1000.0, "others": 0.0, "sleeps": []}
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        state["sleeps"].append(delay)  # type: ignore[union-attr]
        state["now"] = float(state["now"]) + float(state["others"]) + delay  # what the loop ran meanwhile
        await real_sleep(0)

    monkeypatch.setattr(turns.time, "perf_counter", lambda: state["now"])
    monkeypatch.setattr(turns.asyncio, "sleep", sleep)
    monkeypatch.setattr(turns, "_last", 0.0)
    monkeypatch.setattr(turns, "_polite_until", 0.0)
    yield state


async def _work(state: dict[str, object], turns_taken: int, long: bool) -> None:
    if long:
        turns.long_work()
    for _ in range(turns_taken):
        state["now"] = float(state["now"]) + turns.TURN_S  # a slice of work
        await turns.turn()


async def test_long_work_waits_for_the_others_it_finds_running(clock: dict[str, object]) -> None:
    clock["others"] = 0.002  # each loop iteration runs 2 ms of other requests
    await asyncio.create_task(_work(clock, 3, long=True))
    assert clock["sleeps"] == [0, turns.WAIT_S] * 3


async def test_long_work_alone_takes_bare_turns(clock: dict[str, object]) -> None:
    await asyncio.create_task(_work(clock, 3, long=True))
    assert clock["sleeps"] == [0, 0, 0]


async def test_a_small_request_never_waits(clock: dict[str, object]) -> None:
    clock["others"] = 0.002
    await asyncio.create_task(_work(clock, 3, long=False))
    assert clock["sleeps"] == [0, 0, 0]


async def test_long_work_ends_with_its_task(clock: dict[str, object]) -> None:
    clock["others"] = 0.002
    await asyncio.create_task(_work(clock, 1, long=True))
    clock["sleeps"].clear()  # type: ignore[union-attr]
    await asyncio.create_task(_work(clock, 2, long=False))  # another request's task, later
    assert clock["sleeps"] == [0, 0]
