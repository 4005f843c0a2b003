"""Pure rules: Task state machine, outcome finality, retry policy."""

from __future__ import annotations

import pytest

from ltfu.delivery.retry import RetryPolicy, Verdict, classify
from ltfu.domain import task_states
from ltfu.domain.outcomes import CHT_OUTCOME, OUTCOMES, is_final, method_from_cht, outcome_from_cht


@pytest.mark.parametrize(("current", "target", "path"), [
    ("requested", "received", ["received"]),
    ("requested", "completed", ["received", "in-progress", "completed"]),
    ("received", "completed", ["in-progress", "completed"]),
    ("in-progress", "in-progress", []),
    ("requested", "rejected", ["rejected"]),
    ("on-hold", "failed", ["failed"]),
    ("accepted", "cancelled", ["cancelled"]),
])
def test_paths(current: str, target: str, path: list[str]) -> None:
    assert task_states.path_to(current, target) == path


@pytest.mark.parametrize(("current", "target"), [
    ("completed", "in-progress"), ("cancelled", "requested"), ("failed", "completed"), ("completed", "completed"),
    ("in-progress", "requested"), ("in-progress", "rejected"),
])
def test_illegal(current: str, target: str) -> None:
    with pytest.raises(task_states.IllegalTransition):
        task_states.path_to(current, target)


def test_outcomes_map_every_cht_choice_and_not_located_waits_for_the_last_attempt() -> None:
    assert set(CHT_OUTCOME.values()) == set(OUTCOMES)
    assert outcome_from_cht("Returning_To_Care") == "returning-to-care" and outcome_from_cht("x") is None
    assert method_from_cht("home_visit") == "home-visit" and method_from_cht("fax") is None
    assert not is_final("not-located", 1, 2) and is_final("not-located", 2, 2)
    assert all(is_final(o, 1, 2) for o in OUTCOMES if o != "not-located")


def test_classify() -> None:
    assert classify(204) is Verdict.OK and classify(410) is Verdict.DEAD
    assert {classify(s) for s in (408, 429, 500, 503, None)} == {Verdict.RETRY}
    assert {classify(s) for s in (400, 401, 404, 409)} == {Verdict.PERMANENT}


def test_retry_budget_is_met_even_with_the_shortest_jitter() -> None:
    p = RetryPolicy()  # 10 s → 6 h, 72 h
    shortest_total = sum(p._base(i) * 0.5 for i in range(1, p.max_attempts))
    assert shortest_total >= 72 * 3600
    waits = [p.next_step(Verdict.RETRY, n) for n in range(p.max_attempts)]
    assert all(w is not None and 5 <= w <= 6 * 3600 for w in waits[:-1]) and waits[-1] is None
    assert p.next_step(Verdict.PERMANENT, 0) is not None and p.next_step(Verdict.PERMANENT, 2) is None
    assert p.next_step(Verdict.DEAD, 0) is None
    tiny = RetryPolicy(0.3, 1.5)  # test settings: a long budget of short waits must not overflow
    assert tiny.next_step(Verdict.RETRY, 10_000) is not None


def test_cht_client_paces_requests() -> None:
    import asyncio
    import time

    from ltfu.cht.client import ChtClient

    async def run() -> float:
        client = ChtClient("http://127.0.0.1:9", None, None, max_rate_per_s=50)
        start = time.monotonic()
        for _ in range(11):
            await client._pace()
        return time.monotonic() - start

    assert asyncio.run(run()) >= 10 / 50 * 0.95  # 11 requests at 50/s span at least 200 ms
