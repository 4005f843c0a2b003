"""Field comparisons in log2 weights (Fellegi–Sunter). Missing on either side weighs 0."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rapidfuzz.distance import JaroWinkler

from ltfu.domain.matching.config import MatchConfig
from ltfu.domain.matching.records import FieldScore, Person

Frequency = Callable[[str], float | None]


@dataclass(frozen=True)
class Score:
    weight: float
    fields: tuple[FieldScore, ...]
    given_exact: bool  # the candidate's given name agrees exactly (in the chosen order)
    swapped: bool
    strong: bool  # an exact day-precision birth date or a phone not shared in the household agrees


def _part(
    incoming: tuple[str, ...], candidate: tuple[str, ...], freq: Frequency, cfg: MatchConfig, name: str
) -> FieldScore:
    if not incoming or not candidate:
        return FieldScore(name, "missing", cfg.name_missing_weight, " ".join(incoming), " ".join(candidate))
    best = FieldScore(name, "disagree", cfg.name_disagree_weight, " ".join(incoming), " ".join(candidate))
    for a in incoming:
        for b in candidate:
            if a == b:
                weight = cfg.name_exact_weight(freq(a))
                if best.level != "exact" or weight > best.weight:
                    best = FieldScore(name, "exact", weight, best.incoming, best.candidate)
                continue
            if best.level == "exact":
                continue
            similarity = JaroWinkler.similarity(a, b, score_cutoff=cfg.name_near_jw)
            if similarity >= cfg.name_close_jw and best.weight < cfg.name_close_weight:
                best = FieldScore(name, "close", cfg.name_close_weight, best.incoming, best.candidate)
            elif similarity >= cfg.name_near_jw and best.weight < cfg.name_near_weight:
                best = FieldScore(name, "near", cfg.name_near_weight, best.incoming, best.candidate)
    return best


def compare_names(
    incoming: Person, candidate: Person, freq: Frequency, cfg: MatchConfig
) -> tuple[FieldScore, FieldScore, bool]:
    """(given, family, swapped): the better of straight and given↔family swapped."""
    straight = (
        _part(incoming.given, candidate.given, freq, cfg, "given"),
        _part(incoming.family, candidate.family, freq, cfg, "family"),
    )
    swapped = (
        _part(incoming.family, candidate.given, freq, cfg, "given"),
        _part(incoming.given, candidate.family, freq, cfg, "family"),
    )
    if sum(f.weight for f in swapped) - cfg.swap_penalty > sum(f.weight for f in straight):
        return swapped[0], swapped[1], True
    return straight[0], straight[1], False


def compare_birth(incoming: Person, candidate: Person, cfg: MatchConfig) -> FieldScore:
    a, b = incoming.birth, candidate.birth
    if a is None or b is None:
        return FieldScore("birthDate", "missing", 0.0, a.iso if a else "", b.iso if b else "")
    shown = (a.iso, b.iso)
    if a.precision == "day" and b.precision == "day":
        if a == b:
            return FieldScore("birthDate", "day", cfg.dob_exact_weight, *shown)
        if a.days_apart(b) <= 366:
            return FieldScore("birthDate", "near", cfg.dob_near_weight, *shown)
        return FieldScore("birthDate", "disagree", cfg.dob_disagree_weight, *shown)
    if a.year == b.year:
        return FieldScore("birthDate", "year", cfg.dob_year_weight, *shown)
    if abs(a.year - b.year) <= 1:
        return FieldScore("birthDate", "near", cfg.dob_near_weight, *shown)
    return FieldScore("birthDate", "disagree", cfg.dob_disagree_weight, *shown)


def compare_sex(incoming: Person, candidate: Person, cfg: MatchConfig) -> FieldScore:
    a, b = incoming.sex, candidate.sex
    if a is None or b is None:
        return FieldScore("sex", "missing", 0.0, a or "", b or "")
    if a == b:
        return FieldScore("sex", "agree", cfg.sex_agree_weight, a, b)
    return FieldScore("sex", "disagree", cfg.sex_disagree_weight, a, b)


def compare_phone(incoming: Person, candidate: Person, cfg: MatchConfig) -> FieldScore:
    """Agreement on a phone the candidate shares with a household member weighs little (it is the family's)."""
    if not incoming.phones or not candidate.phones:
        return FieldScore("phone", "missing", 0.0, " ".join(incoming.phones), " ".join(candidate.phones))
    shown = (" ".join(incoming.phones), " ".join(candidate.phones))
    common = set(incoming.phones) & set(candidate.phones)
    if not common:
        return FieldScore("phone", "disagree", cfg.phone_disagree_weight, *shown)
    if common - candidate.household_phones:
        return FieldScore("phone", "exact", cfg.phone_agree_weight, *shown)
    return FieldScore("phone", "household", cfg.phone_household_weight, *shown)


def compare_place(incoming: Person, candidate: Person, cfg: MatchConfig) -> FieldScore | None:
    if incoming.unit_code and candidate.unit_code:
        if incoming.unit_code == candidate.unit_code:
            return FieldScore("place", "unit", cfg.unit_agree_weight, incoming.unit_code, candidate.unit_code)
        return FieldScore("place", "other-unit", 0.0, incoming.unit_code, candidate.unit_code)
    if incoming.facility_code and candidate.facility_code:
        level, weight = (
            ("facility", cfg.facility_agree_weight)
            if incoming.facility_code == candidate.facility_code
            else ("other-facility", 0.0)
        )
        return FieldScore("place", level, weight, incoming.facility_code, candidate.facility_code)
    return None


def score(incoming: Person, candidate: Person, freq: Frequency, cfg: MatchConfig) -> Score:
    given, family, swapped = compare_names(incoming, candidate, freq, cfg)
    birth = compare_birth(incoming, candidate, cfg)
    phone = compare_phone(incoming, candidate, cfg)
    fields = [given, family, birth, compare_sex(incoming, candidate, cfg), phone]
    place = compare_place(incoming, candidate, cfg)
    if place is not None:
        fields.append(place)
    return Score(
        weight=sum(f.weight for f in fields) - (cfg.swap_penalty if swapped else 0.0),
        fields=tuple(fields),
        given_exact=given.level == "exact",
        swapped=swapped,
        strong=birth.level == "day" or phone.level == "exact",
    )
