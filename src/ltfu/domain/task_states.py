"""The Task state machine of a follow-up case (DESIGN §4)."""

from __future__ import annotations

TERMINAL = frozenset({"completed", "failed", "cancelled", "rejected", "entered-in-error"})

_ALLOWED: dict[str, frozenset[str]] = {
    "requested": frozenset({"received", "rejected", "cancelled"}),  # CHT may refuse before any ack
    "received": frozenset({"accepted", "in-progress", "rejected", "cancelled"}),
    "accepted": frozenset({"in-progress", "cancelled", "failed"}),
    "in-progress": frozenset({"completed", "failed", "on-hold", "cancelled"}),
    "on-hold": frozenset({"in-progress", "cancelled"}),
}
# The states a case can leave (every one not terminal); expiry may end a case in any of them.
OPEN = tuple(sorted(_ALLOWED))
_EXPIRY = frozenset(OPEN)


class IllegalTransition(ValueError):
    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"A Task cannot go from {current!r} to {target!r}")
        self.current = current
        self.target = target


def can_move(current: str, target: str) -> bool:
    if current == target:
        return current not in TERMINAL
    if target == "failed" and current in _EXPIRY:
        return True
    return target in _ALLOWED.get(current, frozenset())


def check(current: str, target: str) -> None:
    if not can_move(current, target):
        raise IllegalTransition(current, target)


def path_to(current: str, target: str) -> list[str]:
    """The states to pass through to reach ``target``: the shortest legal path.

    A CHW's report can arrive before CHT's acknowledgement was recorded, or report a final outcome on
    the first attempt; the Task then walks ``requested → received → in-progress → completed``.
    """
    if current == target:
        check(current, target)
        return []
    frontier: list[list[str]] = [[current]]
    seen = {current}
    while frontier:
        path = frontier.pop(0)
        for nxt in sorted(_ALLOWED.get(path[-1], frozenset()) | ({"failed"} if path[-1] in _EXPIRY else set())):
            if nxt == target:
                return [*path[1:], nxt]
            if nxt not in seen and nxt not in TERMINAL:
                seen.add(nxt)
                frontier.append([*path, nxt])
    raise IllegalTransition(current, target)
