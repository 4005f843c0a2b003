"""Match an incoming patient against the CHT person index (read-only)."""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from ltfu.domain.matching import MatchConfig, MatchResult, Person, match, query_keys
from ltfu.fhir.match_patient import match_bundle, patient_from_person, person_from_patient
from ltfu.fhir.systems import Systems
from ltfu.settings import Settings
from ltfu.store.index_size import indexed_persons
from ltfu.store.uow import UnitOfWork


@lru_cache(maxsize=8)
def _config(overrides: tuple[tuple[str, float], ...]) -> MatchConfig:
    return MatchConfig().with_overrides(dict(overrides))


def match_config(settings: Settings) -> MatchConfig:
    """The weights and thresholds in force (``LTFU_MATCH_WEIGHTS`` over the defaults)."""
    return _config(tuple(sorted(settings.match_weights.items())))


async def find_matches(uow: UnitOfWork, incoming: Person, *, excluded: Iterable[str] = ()) -> MatchResult:
    """Candidates from the blocking keys (and by CHT id when the patient carries one), graded. Persons a
    reviewer flagged as CHT duplicates of each other (still indexed) bring each other in and are never
    auto-linked (``cht-duplicate``). The prior is spread over every indexed person (``population``), not
    over the block: the score does not move with the blocking keys."""
    cfg = match_config(uow.settings)
    by_id = [v for k, v in incoming.identifiers if k == "cht_id"]
    block = await uow.cht_index.block(query_keys(incoming), incoming.tokens, cfg.block_cap, by_id)
    found, flagged = await _with_flagged_duplicates(uow, block.persons)
    population = max(await indexed_persons(uow.conn), len(found))
    return match(
        incoming, found, block.frequencies.get, cfg, excluded=excluded, overflow=bool(block.overflow),
        duplicates=flagged, population=population,
    )


# Open duplicate groups (``person → its partners``) per process, read again every DUPLICATES_TTL_S: matching
# pays no statement for them (most queries touch no group). A flag or a resolution in this process is seen at
# once (``forget_flagged_duplicates``); in another replica or worker within DUPLICATES_TTL_S.
DUPLICATES_TTL_S = 10.0
_open_groups: weakref.WeakKeyDictionary[Any, tuple[float, dict[str, frozenset[str]]]] = weakref.WeakKeyDictionary()


def forget_flagged_duplicates(db: Any) -> None:
    _open_groups.pop(db, None)


async def _open_duplicate_groups(uow: UnitOfWork) -> dict[str, frozenset[str]]:
    cached = _open_groups.get(uow.db)
    now = time.monotonic()
    if cached is None or now - cached[0] > DUPLICATES_TTL_S:
        cached = (now, await uow.duplicates.open_members())
        _open_groups[uow.db] = cached
    return cached[1]


async def _with_flagged_duplicates(uow: UnitOfWork, found: list[Person]) -> tuple[list[Person], set[str]]:
    """(the candidates plus the other indexed records of any flagged duplicate among them, the flagged ids).

    A person counts as flagged while another person of its group is still indexed (the index is read here,
    not cached: CHT's merge deletes the merged-away record and the sync drops it)."""
    groups = await _open_duplicate_groups(uow)
    hit = [p.id for p in found if p.id in groups]
    if not hit:
        return found, set()
    have = {p.id for p in found}
    partners = sorted({j for i in hit for j in groups[i]} - have)
    pool = [*found, *(await uow.cht_index.persons(partners) if partners else [])]
    ids = {p.id for p in pool}
    return pool, {i for i in ids if i and i in groups and groups[i] & ids}


async def match_patient(
    uow: UnitOfWork, patient: Any, *, only_certain: bool, count: int | None, base_url: str
) -> dict[str, Any]:
    """``Patient/$match``: read-only; a searchset of CHT persons projected as Patients, best first.

    IHE PDQm ITI-119: with ``onlyCertainMatches`` only a single ``certain`` match is returned, else none;
    no match is an empty Bundle; an overflowing block is a warning entry, never a silent empty answer.
    """
    settings = uow.settings
    systems = Systems(settings.base_url)
    incoming = person_from_patient(patient, systems, settings.match_identifiers, settings.match_default_region)
    result = await find_matches(uow, incoming)
    limit = min(count or settings.match_count_default, settings.match_count_max)
    chosen = list(result.candidates)
    if only_certain:
        certain = [c for c in chosen if c.grade == "certain"]
        chosen = certain if len(certain) == 1 else []
    chosen = chosen[:limit]
    places = await uow.cht_index.places(
        {i for c in chosen for i in (c.person.household_id, c.person.chw_area_id, c.person.unit_id) if i}
    )
    projected = [(c, patient_from_person(c.person, places, systems, settings.match_identifiers)) for c in chosen]
    warnings = []
    if "block-overflow" in result.reasons:
        warnings.append(
            "Some blocking keys matched too many CHT persons to compare; add an identifier, "
            "a birth date or a phone to narrow the search"
        )
    return match_bundle(projected, base_url, warnings)
