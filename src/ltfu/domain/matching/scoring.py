"""Field comparisons in log2 weights (Fellegi–Sunter). Missing on either side weighs 0."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rapidfuzz.distance import JaroWinkler

from ltfu.domain.matching.config import MatchConfig
from ltfu.domain.matching.normalise import BirthDate
from ltfu.domain.matching.records import FieldScore, Person

Frequency = Callable[[str], float | None]


@dataclass(frozen=True)
class Score:
    weight: float
    fields: tuple[FieldScore, ...]
    names_agree: bool  # given name exact, family name and birth date not contradicted (see score)
    swapped: bool
    strong: bool  # evidence beyond names: see :func:`score`


def _token(a: str, candidate: tuple[str, ...], freq: Frequency, cfg: MatchConfig) -> tuple[str, float]:
    """The best level of one incoming name token against the candidate's tokens."""
    if a in candidate:
        return "exact", cfg.name_exact_weight(freq(a))
    similarity = max(JaroWinkler.similarity(a, b, score_cutoff=cfg.name_near_jw) for b in candidate)
    if similarity >= cfg.name_close_jw:
        return "close", cfg.name_close_weight
    if similarity >= cfg.name_near_jw:
        return "near", cfg.name_near_weight
    return "disagree", cfg.name_disagree_weight


def _part(
    incoming: tuple[str, ...], candidate: tuple[str, ...], freq: Frequency, cfg: MatchConfig, name: str
) -> FieldScore:
    """A name part (given or family): its best token decides the level; further exact tokens add part of
    their weight, a further token both sides have and disagree on takes some off (Mary Wanjiku ≠ Mary Njeri)."""
    shown = (" ".join(incoming), " ".join(candidate))
    if not incoming or not candidate:
        return FieldScore(name, "missing", cfg.name_missing_weight, *shown)
    levels = sorted((_token(a, candidate, freq, cfg) for a in incoming), key=lambda lw: -lw[1])
    level, weight = levels[0]
    for other_level, other_weight in levels[1:]:
        if other_level == "exact":
            weight += other_weight * cfg.name_extra_token_factor
        elif other_level == "disagree" and len(candidate) > 1:
            weight += cfg.name_extra_mismatch_weight
            level = TOKEN_CONFLICT.get(level, level)
    return FieldScore(name, level, weight, *shown)


# A part whose best token agrees while another token both sides have disagrees (Lucy Mwende ≠ Grace Mwende):
# the level says so, and such names never agree enough for ``certain``.
TOKEN_CONFLICT = {"exact": "exact-other-differs", "close": "close-other-differs", "near": "near-other-differs"}


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


def _birth_level(a: BirthDate, b: BirthDate, cfg: MatchConfig) -> tuple[str, float]:
    years = abs(a.year - b.year)
    if a.precision == "day" and b.precision == "day":
        if a == b:
            return "day", cfg.dob_exact_weight
        if years == 1 and (a.month, a.day) == (b.month, b.day):
            return "shifted", cfg.dob_shifted_weight
        if years == 0:
            return "other-day", cfg.dob_other_day_weight
        return "disagree", cfg.dob_disagree_weight
    if years == 0:
        return "year", cfg.dob_year_weight
    if years == 1:
        return "near", cfg.dob_near_weight
    return "disagree", cfg.dob_disagree_weight


def compare_birth(incoming: Person, candidate: Person, cfg: MatchConfig) -> FieldScore:
    """Levels: ``day`` (same date, both precise), ``shifted`` (same day and month, year ±1: a mis-typed year),
    ``year`` (same year where one side is year-only), ``near`` (a year apart, one side year-only),
    ``other-day`` (same year, another day, both precise), ``disagree``."""
    a, b = incoming.birth, candidate.birth
    if a is None or b is None:
        return FieldScore("birthDate", "missing", 0.0, a.iso if a else "", b.iso if b else "")
    return FieldScore("birthDate", *_birth_level(a, b, cfg), a.iso, b.iso)


def compare_sex(incoming: Person, candidate: Person, cfg: MatchConfig) -> FieldScore:
    a, b = incoming.sex, candidate.sex
    if a is None or b is None:
        return FieldScore("sex", "missing", 0.0, a or "", b or "")
    if a == b:
        return FieldScore("sex", "agree", cfg.sex_agree_weight, a, b)
    return FieldScore("sex", "disagree", cfg.sex_disagree_weight, a, b)


def _phone_level(incoming: Person, candidate: Person, cfg: MatchConfig) -> tuple[str, float]:
    if not incoming.phones or not candidate.phones:
        return "missing", 0.0
    common = set(incoming.phones) & set(candidate.phones)
    if not common:
        return "disagree", cfg.phone_disagree_weight
    if common - candidate.household_phones:
        return "exact", cfg.phone_agree_weight
    return "household", cfg.phone_household_weight


def compare_phone(incoming: Person, candidate: Person, cfg: MatchConfig) -> FieldScore:
    """Agreement on a phone the candidate shares with a household member weighs little (it is the family's)."""
    return FieldScore(
        "phone", *_phone_level(incoming, candidate, cfg), " ".join(incoming.phones), " ".join(candidate.phones)
    )


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


def _part_bound(
    incoming: tuple[str, ...], candidate: tuple[str, ...], exact: dict[str, tuple[float, float]], cfg: MatchConfig
) -> float:
    """At least :func:`_part`'s weight, without string distances: a token not found exactly counts at the
    best non-exact level. _part = the best token's weight plus what each other token adds (h), so it is at
    most max over tokens b of (u_b − h_b) + Σ h, with u ≥ a token's weight and h ≥ what it adds; ``exact``
    gives (u, h) of each incoming token found exactly."""
    if not incoming or not candidate:
        return cfg.name_missing_weight
    other = max(cfg.name_close_weight, cfg.name_near_weight, cfg.name_disagree_weight)
    mismatch = max(0.0, cfg.name_extra_mismatch_weight) if len(candidate) > 1 else 0.0
    total, best = 0.0, -float("inf")
    for a in incoming:
        u, h = exact[a] if a in candidate else (other, mismatch)
        total += h
        if u - h > best:
            best = u - h
    return best + total


def bounder(incoming: Person, freq: Frequency, cfg: MatchConfig) -> Callable[[Person], float]:
    """:func:`weight_bound` for one incoming patient, what depends on it alone worked out once (the matcher
    bounds every candidate of a block)."""
    exact = {}
    for a in incoming.tokens:
        u = cfg.name_exact_weight(freq(a))
        exact[a] = (u, max(0.0, u * cfg.name_extra_token_factor))
    given, family, birth = incoming.given, incoming.family, incoming.birth
    births: dict[BirthDate, float] = {}

    def bound(candidate: Person) -> float:
        straight = _part_bound(given, candidate.given, exact, cfg) + _part_bound(family, candidate.family, exact, cfg)
        swapped = _part_bound(family, candidate.given, exact, cfg) + _part_bound(given, candidate.family, exact, cfg)
        weight = max(straight, swapped - cfg.swap_penalty) + _phone_level(incoming, candidate, cfg)[1]
        other = candidate.birth
        if birth is not None and other is not None:
            b = births.get(other)
            if b is None:
                b = births[other] = _birth_level(birth, other, cfg)[1]
            weight += b
        if candidate.sex and incoming.sex:
            weight += cfg.sex_agree_weight if candidate.sex == incoming.sex else cfg.sex_disagree_weight
        if incoming.unit_code or incoming.facility_code:
            place = compare_place(incoming, candidate, cfg)
            weight += place.weight if place is not None else 0.0
        return weight

    return bound


def weight_bound(incoming: Person, candidate: Person, freq: Frequency, cfg: MatchConfig) -> float:
    """An upper bound of ``score(...).weight`` at a fraction of its cost (names by exact tokens only, the
    other fields as :func:`score` compares them): the matcher skips scoring a candidate whose bound cannot
    reach a grade. A new name level must keep ``_part_bound`` above ``_part`` (tests/matching check it)."""
    return bounder(incoming, freq, cfg)(candidate)


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
        # certain needs the given name exact (or within a typo when the birth day and an own phone agree too:
        # a twin shares the day and the household phone, not an own phone), the family name and the birth
        # date not contradicted
        names_agree=(
            given.level == "exact" or (given.level == "close" and birth.level == "day" and phone.level == "exact")
        )
        and family.level not in ("disagree", "missing")
        and not family.level.endswith("-other-differs")
        and birth.level not in ("disagree", "other-day"),
        swapped=swapped,
        # an exact birth date, an own phone, or a birth year/shifted date together with the household phone
        strong=birth.level == "day"
        or phone.level == "exact"
        or (birth.level in ("year", "shifted") and phone.level == "household"),
    )
