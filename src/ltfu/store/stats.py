"""Whole-system figures for operators and the demo summary: cases, stage times, deliveries, matching."""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.store import tallies
from ltfu.store.cht_index import ALL
from ltfu.store.schema import cases, cht_name_tokens


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _median_seconds(pairs: list[tuple[str | None, str | None]]) -> float | None:
    spans = [(b - a).total_seconds() for a, b in ((_ts(x), _ts(y)) for x, y in pairs) if a and b and b >= a]
    return round(statistics.median(spans), 3) if spans else None


#: the stage-time medians are of the newest cases (by request time): a median over every stored case
#: would read them all, and the recent ones say how the loop runs now
MEDIAN_WINDOW = 10_000


async def loop_stats(conn: AsyncConnection) -> dict[str, Any]:
    """Counts over every case and delivery (kept by triggers: ``store/tallies.py``, the same whatever the
    store holds); stage-time medians over the newest ``MEDIAN_WINDOW``."""
    counted = await tallies.read(conn, "cases")
    by_status = {status: n for (status,), n in tallies.summed(counted, 0)}
    by_outcome = {outcome: n for (outcome,), n in tallies.summed(counted, 2) if outcome is not None}
    reached = [sum(t.n for t in counted if tallies.flag(t.key[p])) for p in (4, 5, 6)]
    rows = (await conn.execute(select(cases.c.created_at, cases.c.sent_to_cht_at, cases.c.first_attempt_at,
                                      cases.c.closed_at).order_by(cases.c.created_at.desc(), cases.c.case_id.desc())
                               .limit(MEDIAN_WINDOW))).all()
    deliveries: dict[str, dict[str, int]] = {}
    for (dest, status), n in tallies.summed(await tallies.read(conn, "outbox"), 0, 1):
        deliveries.setdefault(dest or "", {})[status or ""] = n
    matching: dict[str, int] = dict.fromkeys(MATCH_ROUTES, 0)
    for (matched_by, status, business), n in tallies.summed(counted, 3, 0, 1):
        matching[_match_route(matched_by, status or "", business)] += n
    # the persons indexed, as the matcher's name weights count them (kept with every change): no count over them
    indexed = (await conn.execute(select(cht_name_tokens.c.persons).where(cht_name_tokens.c.token == ALL))).scalar()
    attempts = {result: n for (result,), n in tallies.summed(await tallies.read(conn, "attempts"), 0)}
    return {
        "cases": sum(by_status.values()),
        "by_status": by_status,
        "by_outcome": by_outcome,
        "reached": {"cht": reached[0], "attempted": reached[1], "closed": reached[2]},
        "median_window": min(len(rows), MEDIAN_WINDOW),
        "median_seconds": {
            "request_to_cht": _median_seconds([(r.created_at, r.sent_to_cht_at) for r in rows]),
            "request_to_first_attempt": _median_seconds([(r.created_at, r.first_attempt_at) for r in rows]),
            "request_to_close": _median_seconds([(r.created_at, r.closed_at) for r in rows]),
        },
        "deliveries": deliveries,
        "attempts": attempts,
        "matching": matching,
        "cht_index": {"persons": int(indexed or 0)},
    }


#: how each case found its CHT person; the values partition the cases
MATCH_ROUTES = ("known", "identifier", "score", "created", "reviewed", "in_review", "unassignable")


def _match_route(matched_by: str | None, status: str, business: str | None) -> str:
    if business == "unassignable":
        return "unassignable"
    if matched_by == "review":
        return "in_review" if status in ("requested", "received") else "reviewed"
    return matched_by if matched_by in MATCH_ROUTES else "known"
