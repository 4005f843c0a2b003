"""The failed-login backoff on its own, with a fake clock."""

from __future__ import annotations

from ltfu.api.login_backoff import FailureBackoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_free_failures_then_doubling_waits_up_to_the_cap() -> None:
    clock = Clock()
    b = FailureBackoff(3, base_s=1.0, max_s=5.0, forget_s=100.0, clock=clock)
    for _ in range(2):
        b.failed("k")
        assert b.wait("k") == 0
    waits = []
    for _ in range(4):
        b.failed("k")
        waits.append(b.wait("k"))
    assert waits == [1.0, 2.0, 4.0, 5.0]
    clock.now += 4.5
    assert b.wait("k") == 0.5
    assert b.wait("other") == 0


def test_success_clears_and_quiet_keys_are_forgotten() -> None:
    clock = Clock()
    b = FailureBackoff(1, base_s=10.0, max_s=60.0, forget_s=100.0, clock=clock)
    b.failed("a")
    b.failed("b")
    assert b.wait("a") == 10.0
    b.succeeded("a")
    assert b.wait("a") == 0
    clock.now += 101
    b.failed("b")  # after a long quiet spell it starts afresh: first wait again
    assert b.wait("b") == 10.0


def test_memory_is_bounded() -> None:
    clock = Clock()
    b = FailureBackoff(1, base_s=10.0, max_keys=3, clock=clock)
    for key in "abcd":
        b.failed(key)
    assert b.wait("a") == 0  # the oldest key was dropped
    assert all(b.wait(k) == 10.0 for k in "bcd")
