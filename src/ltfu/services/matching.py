"""Match an incoming patient against the CHT person index (read-only)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from ltfu.domain.matching import MatchConfig, MatchResult, Person, match, query_keys
from ltfu.settings import Settings
from ltfu.store.uow import UnitOfWork


@lru_cache(maxsize=8)
def _config(overrides: tuple[tuple[str, float], ...]) -> MatchConfig:
    return MatchConfig().with_overrides(dict(overrides))


def match_config(settings: Settings) -> MatchConfig:
    """The weights and thresholds in force (``LTFU_MATCH_WEIGHTS`` over the defaults)."""
    return _config(tuple(sorted(settings.match_weights.items())))


async def find_matches(uow: UnitOfWork, incoming: Person, *, excluded: Iterable[str] = ()) -> MatchResult:
    """Candidates from the blocking keys (and by CHT id when the patient carries one), graded."""
    cfg = match_config(uow.settings)
    found, overflow = await uow.cht_index.candidates(query_keys(incoming), cfg.block_cap)
    by_id = [v for k, v in incoming.identifiers if k == "cht_id"]
    if by_id:
        have = {p.id for p in found}
        found.extend(p for p in await uow.cht_index.persons(by_id) if p.id not in have)
    freqs = await uow.cht_index.frequencies(incoming.tokens)
    return match(incoming, found, freqs.get, cfg, excluded=excluded, overflow=bool(overflow))
