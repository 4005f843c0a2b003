"""Deterministic rules: identifier agreement first, vetoes before any score."""

from __future__ import annotations

from dataclasses import dataclass

from ltfu.domain.matching.config import MatchConfig
from ltfu.domain.matching.records import UNIQUE_KINDS, Person


@dataclass(frozen=True)
class IdentifierEvidence:
    agreeing: tuple[str, ...]  # kinds with an equal value
    conflicting: tuple[str, ...]  # unique kinds present on both sides with different values only


NO_EVIDENCE = IdentifierEvidence((), ())


def identifiers(incoming: Person, candidate: Person) -> IdentifierEvidence:
    shared = {k for k, _ in incoming.identifiers} & {k for k, _ in candidate.identifiers}
    if not shared:
        return NO_EVIDENCE
    agreeing, conflicting = [], []
    for kind in sorted(shared):
        mine, theirs = set(incoming.identifier(kind)), set(candidate.identifier(kind))
        if not theirs:
            continue
        if mine & theirs:
            agreeing.append(kind)
        elif kind in UNIQUE_KINDS:
            conflicting.append(kind)
    return IdentifierEvidence(tuple(agreeing), tuple(conflicting))


def demographic_veto(incoming: Person, candidate: Person, cfg: MatchConfig) -> str | None:
    """Why these two cannot be one person whatever their names say: ``sex`` or ``birth-date``."""
    if incoming.sex and candidate.sex and incoming.sex != candidate.sex:
        return "sex"
    a, b = incoming.birth, candidate.birth
    if a is not None and b is not None:
        if a.precision == "day" and b.precision == "day" and a.days_apart(b) > cfg.dob_veto_years * 365.25:
            return "birth-date"
        if abs(a.year - b.year) > cfg.dob_veto_years + 1:
            return "birth-date"
    return None


def demographics_disagree(incoming: Person, candidate: Person) -> bool:
    """For an identifier match: sex contradicts or birth years more than one apart (eCHIS's details mismatch)."""
    if incoming.sex and candidate.sex and incoming.sex != candidate.sex:
        return True
    a, b = incoming.birth, candidate.birth
    return a is not None and b is not None and abs(a.year - b.year) > 1
