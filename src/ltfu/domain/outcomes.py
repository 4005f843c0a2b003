"""Follow-up outcomes and contact methods: our codes, the WHO SMART HIV codes, and the rules."""

from __future__ import annotations

from dataclasses import dataclass

WHO_SYSTEM = "http://smart.who.int/hiv/CodeSystem/HIVConcepts"


@dataclass(frozen=True)
class Concept:
    code: str  # our local code
    display: str
    who: str | None  # WHO SMART HIV code


OUTCOMES: dict[str, Concept] = {c.code: c for c in (
    Concept("returning-to-care", "Returning to care", "HIV.H.DE24"),
    Concept("already-returned", "Already returned to care", "HIV.H.DE24"),
    Concept("refused", "Refused to return", "HIV.H.DE27"),
    Concept("not-located", "Not located", "HIV.H.DE28"),
    Concept("self-transferred", "Self-transferred out", "HIV.H.DE25"),
    Concept("hospitalized", "Hospitalized", "HIV.H.DE26"),
    Concept("deceased", "Died (reported)", "HIV.H.DE29"),
    Concept("moved", "Moved from catchment area", "HIV.H.DE30"),
)}

METHODS: dict[str, Concept] = {c.code: c for c in (
    Concept("home-visit", "Home visit", "HIV.H.DE14"),
    Concept("sms", "Text message", "HIV.H.DE15"),
    Concept("phone", "Phone", "HIV.H.DE16"),
)}

# Encounter.class (v3-ActCode) by contact method.
METHOD_CLASS = {"home-visit": ("HH", "home health"), "phone": ("VR", "virtual"), "sms": ("VR", "virtual")}

# CHT form values (snake_case choice names) → our codes.
CHT_OUTCOME = {k.replace("-", "_"): k for k in OUTCOMES}
CHT_METHOD = {"home_visit": "home-visit", "phone": "phone", "sms": "sms"}


def outcome_from_cht(value: str | None) -> str | None:
    return CHT_OUTCOME.get((value or "").strip().lower())


def method_from_cht(value: str | None) -> str | None:
    return CHT_METHOD.get((value or "").strip().lower())


def is_final(outcome: str, attempt_no: int, max_attempts: int) -> bool:
    """Every outcome ends the case except ``not-located`` before the last allowed attempt."""
    return outcome != "not-located" or attempt_no >= max_attempts
