"""Match an incoming patient against the CHT person index (read-only)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from ltfu.domain.matching import MatchConfig, MatchResult, Person, match, query_keys
from ltfu.fhir.match_patient import match_bundle, patient_from_person, person_from_patient
from ltfu.fhir.systems import Systems
from ltfu.settings import Settings
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
    auto-linked (``cht-duplicate``)."""
    cfg = match_config(uow.settings)
    by_id = [v for k, v in incoming.identifiers if k == "cht_id"]
    block = await uow.cht_index.block(query_keys(incoming), incoming.tokens, cfg.block_cap, by_id)
    found = block.persons
    flagged = await uow.duplicates.flagged_among(p.id for p in found if p.id)
    partners = {i for ids in flagged.values() for i in ids} - {p.id for p in found}
    if partners:  # a flagged duplicate's other records are compared too: the reviewer sees them side by side
        found = [*found, *await uow.cht_index.persons(sorted(partners))]
        flagged = await uow.duplicates.flagged_among(p.id for p in found if p.id)
    return match(
        incoming, found, block.frequencies.get, cfg, excluded=excluded, overflow=bool(block.overflow),
        duplicates=flagged,
    )


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
