"""Weights (log2, Fellegi–Sunter) and thresholds. Every number here can be overridden from settings.

Agreement weight ``log2(m/u)``, disagreement ``log2((1-m)/(1-u))``; ``m`` the chance a field agrees on a
true match, ``u`` on a random pair. Exact name agreement uses the name's own frequency in the index for
``u`` (a rare name agreeing says more than Otieno agreeing). Starting values: reference/matching.md §6.3,
then tuned with ``bench/matching.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any


def fs_weight(m: float, u: float) -> float:
    return math.log2(m / u)


@dataclass(frozen=True)
class MatchConfig:
    # names (per given / family part, after the best of straight and swapped)
    name_exact_m: float = 0.80
    name_u_floor: float = 1e-5  # rarest name frequency counted (a singleton in 1e5)
    name_u_default: float = 0.01  # frequency when the index knows none
    name_close_jw: float = 0.94
    name_close_weight: float = 3.3
    name_near_jw: float = 0.88
    name_near_weight: float = 0.7
    name_disagree_weight: float = -5.0
    name_extra_token_factor: float = 0.5  # a second exact token (Mary *Wanjiku*) adds half its weight
    # a further token both sides have, disagreeing (Lucy Mwende vs Grace Mwende): a name disagreement like any
    # other (was −1.5, which let a shared middle name plus a relative's phone auto-link a sibling)
    name_extra_mismatch_weight: float = -5.0
    name_missing_weight: float = 0.0
    swap_penalty: float = 0.5  # a swapped given/family is slightly weaker evidence than straight
    # birth date
    dob_exact_weight: float = 13.5  # same day, day precision on both sides
    dob_shifted_weight: float = 5.0  # same day and month, year ±1 (both precise)
    dob_year_weight: float = 4.0  # same year where one side is year-only
    dob_near_weight: float = 1.0  # a year apart where one side is year-only
    dob_other_day_weight: float = -1.0  # same year, another day (both precise)
    dob_disagree_weight: float = -6.0
    dob_veto_years: int = 5  # both day precision and further apart → certainly not
    # sex
    sex_agree_weight: float = 1.0
    sex_disagree_weight: float = -4.6
    # phone (E.164)
    phone_agree_weight: float = 12.5
    phone_household_weight: float = 4.0  # capped: the phone is shared with another household member
    phone_disagree_weight: float = -1.3
    # place
    unit_agree_weight: float = 5.1
    facility_agree_weight: float = 3.1
    # identifier
    identifier_agree_weight: float = 20.0
    # classification
    prior: float = 0.5  # share of incoming patients expected to be in CHT
    # The prior odds of one indexed person: ``prior / population`` (every indexed person, not the block: the
    # weights compare against the whole index, and the blocking keys must not move a score), plus this, measured
    # with bench/match_tune.py (docs §5): positive, the starting weights being conservative for a true match
    # (a typo, a year-only date, a relative's phone all weigh less than an exact field). Was −6 over the block.
    calibration_bits: float = 6.0
    # Thresholds chosen from the measured distribution (bench/match_tune.py, 1e5 and 1e6 persons, seed 13;
    # docs §5): ``certain`` is decided by the rules (names agree, strong evidence or certain_min_weight, the lead
    # over the runner-up) and p ≥ certain_p, which with a prior over the index now tells a rare name from a
    # common one (0.90 over the block linked 0.73% of absent patients to a namesake at 1e6).
    certain_p: float = 0.995
    probable_p: float = 0.90
    possible_p: float = 0.30  # review from here; 0.15 over the block (recall/review trade-off, docs §5)
    certain_min_weight: float = 19.0  # without an exact birth date or own phone, names and the rest must reach this
    margin_bits: float = 6.0  # the runner-up must be this far below for a certain grade
    block_cap: int = 2000  # most candidates per blocking key; more is reported, never silently dropped

    def name_exact_weight(self, frequency: float | None) -> float:
        u = max(frequency if frequency else self.name_u_default, self.name_u_floor)
        return fs_weight(self.name_exact_m, min(u, self.name_exact_m / 2))

    def with_overrides(self, overrides: dict[str, Any]) -> MatchConfig:
        """A copy with the given fields replaced; an unknown name is an error (a typo must not pass silently)."""
        known = {f.name: f.type for f in fields(self)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f"unknown match setting(s): {', '.join(unknown)}")
        cast = {k: (int(v) if known[k] in ("int", int) else float(v)) for k, v in overrides.items()}
        return replace(self, **cast)
