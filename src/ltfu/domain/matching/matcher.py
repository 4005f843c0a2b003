"""Decide among the candidates of one incoming patient: rules, vetoes, score, grade.

Order (reference/matching.md §6.2–6.3):
1. a unique identifier agreeing → ``certain``, unless sex or birth year disagree (``probable``,
   ``id-demographic-mismatch``), another unique identifier conflicts (``probable``) or several persons share
   it (``possible``, ``cht-duplicate``);
2. vetoes drop a candidate: a unique identifier with another value, contradicting sex, birth dates far apart;
3. Fellegi–Sunter weight plus the prior ``log2(π/n)`` gives a posterior ``p``; ``certain`` needs
   ``p ≥ certain_p``, the given name exact, an exact birth date or a non-household phone, and a runner-up
   ``margin_bits`` lower (twins and Wanjiku/Wanjiru otherwise auto-link); ``probable``/``possible`` by ``p``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace

from ltfu.domain.matching.config import MatchConfig
from ltfu.domain.matching.records import UNIQUE_KINDS, Candidate, FieldScore, MatchResult, Person
from ltfu.domain.matching.rules import demographic_veto, demographics_disagree, identifiers
from ltfu.domain.matching.scoring import Frequency, bounder, score

GRADES = ("certain", "probable", "possible")  # the match-grade codes we emit (certainly-not is never listed)


def _posterior(weight: float) -> float:
    if weight > 60:
        return 1.0
    if weight < -60:
        return 0.0
    odds = 2.0**weight
    return odds / (1.0 + odds)


def prior_log_odds(cfg: MatchConfig, population: int) -> float:
    """log2 of the prior odds that one indexed person is the patient: ``prior / population``, plus
    ``calibration_bits``. The weights compare against the whole index (a name's weight is its share of the
    indexed persons), so the prior is per indexed person, not per candidate of the block: the blocking keys
    only choose which persons are worth scoring, and the block's size must not move the score."""
    return math.log2(cfg.prior / max(population, 1)) + cfg.calibration_bits


def _grade_by_p(p: float, cfg: MatchConfig) -> str | None:
    if p >= cfg.probable_p:
        return "probable"
    if p >= cfg.possible_p:
        return "possible"
    return None


def match(
    incoming: Person,
    candidates: Iterable[Person],
    freq: Frequency,
    cfg: MatchConfig | None = None,
    *,
    excluded: Iterable[str] = (),
    overflow: bool = False,
    duplicates: Iterable[str] = (),
    population: int | None = None,
) -> MatchResult:
    """Grade every candidate; ``excluded`` ids (permanent "not a match" decisions) are never proposed;
    ``duplicates`` (persons a reviewer flagged as one human recorded twice in CHT) are never ``certain``,
    as persons sharing a unique identifier are not. ``population``: the persons indexed (the candidates
    were drawn from them); without it the candidates are the whole population."""
    cfg = cfg or MatchConfig()
    never = set(excluded)
    pool = _with_household_phones([c for c in candidates if c.id not in never])
    prior_bits = prior_log_odds(cfg, population if population is not None else len(pool))
    vetoed: list[tuple[str, str]] = []
    graded: list[Candidate] = []
    id_holders: dict[str, list[str]] = {}
    bound = bounder(incoming, freq, cfg)
    for person in pool:
        evidence = identifiers(incoming, person)
        if not evidence.agreeing:
            if evidence.conflicting:
                vetoed.append((person.id or "", "identifier-conflict:" + ",".join(evidence.conflicting)))
                continue
            veto = demographic_veto(incoming, person, cfg)
            if veto:
                vetoed.append((person.id or "", veto))
                continue
            # cannot reach a grade whatever its names score: never proposed, so not scored (speed only)
            if _posterior(bound(person) + 1e-9 + prior_bits) < cfg.possible_p:
                continue
        s = score(incoming, person, freq, cfg)
        unique_agree = [k for k in evidence.agreeing if k in UNIQUE_KINDS]
        id_fields = tuple(
            FieldScore("identifier", "equal", cfg.identifier_agree_weight, k, k) for k in evidence.agreeing
        )
        fields = s.fields + id_fields
        weight = s.weight + cfg.identifier_agree_weight * bool(evidence.agreeing)
        if evidence.agreeing:
            for kind in unique_agree:
                id_holders.setdefault(kind, []).append(person.id or "")
            reasons: tuple[str, ...] = ("identifier",)
            grade = "certain"
            if evidence.conflicting:
                grade, reasons = "probable", ("identifier-conflict",)
            elif demographics_disagree(incoming, person):
                grade, reasons = "probable", ("id-demographic-mismatch",)
            graded.append(Candidate(person, grade, weight, _posterior(weight + prior_bits), fields, reasons))
            continue
        p = _posterior(weight + prior_bits)
        if p >= cfg.certain_p and s.names_agree and (s.strong or s.weight >= cfg.certain_min_weight):
            graded.append(Candidate(person, "certain", weight, p, fields, ("score",)))
            continue
        grade_p = _grade_by_p(p, cfg)
        if grade_p:
            why = "names-not-certain" if p >= cfg.certain_p and not s.names_agree else "score"
            graded.append(Candidate(person, grade_p, weight, p, fields, (why,)))
    reasons: list[str] = ["block-overflow"] if overflow else []
    graded = _settle(graded, id_holders, cfg, reasons, set(duplicates))
    return MatchResult(tuple(graded), tuple(reasons), len(pool), tuple(vetoed))


def _with_household_phones(pool: list[Person]) -> list[Person]:
    """Mark phones two members of one household share. Every holder of an incoming phone is in the pool
    (the phone is a blocking key), so this sees all the sharing that can matter for the phone comparison."""
    holders: dict[tuple[str, str], int] = {}
    for person in pool:
        if person.household_id:
            for phone in person.phones:
                holders[(person.household_id, phone)] = holders.get((person.household_id, phone), 0) + 1
    out = []
    for person in pool:
        shared = {ph for ph in person.phones if holders.get((person.household_id or "", ph), 0) > 1}
        out.append(replace(person, household_phones=person.household_phones | shared) if shared else person)
    return out


def _downgrade(candidate: Candidate, grade: str, reason: str) -> Candidate:
    return Candidate(
        candidate.person, grade, candidate.weight, candidate.probability, candidate.fields, (*candidate.reasons, reason)
    )


def _phone_weight(candidate: Candidate) -> float:
    return sum(f.weight for f in candidate.fields if f.field == "phone")


def _lead(top: Candidate, other: Candidate) -> float:
    """How far ``top`` is ahead of ``other``. Within one household the phone is left out: the phone a patient
    gives is often a relative's, so it tells which household, not which member (the names and the birth date
    must tell them apart)."""
    lead = top.weight - other.weight
    if top.person.household_id and top.person.household_id == other.person.household_id:
        lead -= _phone_weight(top) - _phone_weight(other)
    return lead


def _settle(
    graded: list[Candidate],
    id_holders: dict[str, list[str]],
    cfg: MatchConfig,
    reasons: list[str],
    flagged: set[str],
) -> list[Candidate]:
    """At most one ``certain``, and only when nothing else comes close; identifier duplicates and flagged
    duplicates → review."""
    shared = {pid for holders in id_holders.values() if len(holders) > 1 for pid in holders}
    shared |= {c.person_id for c in graded if c.person_id in flagged}
    if shared:
        reasons.append("cht-duplicate")
        graded = [_downgrade(c, "possible", "cht-duplicate") if c.person_id in shared else c for c in graded]
    graded.sort(key=lambda c: (c.grade != "certain", -c.weight, c.person_id))
    if not graded or graded[0].grade != "certain":
        return graded
    top, rest = graded[0], graded[1:]
    by_identifier = "identifier" in top.reasons
    close = [c for c in rest if c.grade == "certain" or (not by_identifier and _lead(top, c) < cfg.margin_bits)]
    if close:
        reasons.append("conflict")
        top = _downgrade(top, "probable", "conflict")
        rest = [_downgrade(c, "probable", "conflict") if c.grade == "certain" else c for c in rest]
    out = [top, *rest]
    out.sort(key=lambda c: (c.grade != "certain", -c.weight, c.person_id))
    return out
