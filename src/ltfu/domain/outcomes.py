"""Follow-up outcomes and contact methods: our codes, the WHO SMART HIV codes, and the rules."""

from __future__ import annotations

from dataclasses import dataclass

WHO_SYSTEM = "http://smart.who.int/hiv/CodeSystem/HIVConcepts"


@dataclass(frozen=True)
class Concept:
    code: str  # our local code
    display: str
    who: str | None  # WHO SMART HIV code


OUTCOMES: dict[str, Concept] = {
    c.code: c
    for c in (
        Concept("returning-to-care", "Returning to care", "HIV.H.DE24"),
        Concept("already-returned", "Already returned to care", "HIV.H.DE24"),
        Concept("refused", "Refused to return", "HIV.H.DE27"),
        Concept("not-located", "Not located", "HIV.H.DE28"),
        Concept("self-transferred", "Self-transferred out", "HIV.H.DE25"),
        Concept("hospitalized", "Hospitalized", "HIV.H.DE26"),
        Concept("deceased", "Died (reported)", "HIV.H.DE29"),
        Concept("moved", "Moved from catchment area", "HIV.H.DE30"),
    )
}

METHODS: dict[str, Concept] = {
    c.code: c
    for c in (
        Concept("home-visit", "Home visit", "HIV.H.DE14"),
        Concept("sms", "Text message", "HIV.H.DE15"),
        Concept("phone", "Phone", "HIV.H.DE16"),
    )
}

# The languages of the CHW app and the dashboard: English first (the source), then Swahili, Nepali
# and French. Drafted without a native reviewer (docs/translations.md).
LANGUAGES = ("en", "sw", "ne", "fr")

# What a person reads for each outcome and method, per language: the dashboard shows these, and the
# CHT follow-up form offers the same words as its choices (cht-config/xlsforms/app/ltfu_follow_up/
# choices.csv, lists ``outcome`` and ``method``; tests/cht_config/test_translations.py keeps them equal).
OUTCOME_LABELS: dict[str, dict[str, str]] = {
    "returning-to-care": {
        "en": "Will return to care (new appointment)",
        "sw": "Atarudi kwenye huduma (miadi mpya)",
        "ne": "उपचारमा फर्कनुहुनेछ (नयाँ भेट)",
        "fr": "Va revenir aux soins (nouveau rendez-vous)",
    },
    "already-returned": {
        "en": "Already back in care",
        "sw": "Tayari amerudi kwenye huduma",
        "ne": "उपचारमा फर्किसक्नुभएको",
        "fr": "Déjà revenu aux soins",
    },
    "refused": {"en": "Refuses to return", "sw": "Anakataa kurudi", "ne": "फर्कन अस्वीकार", "fr": "Refuse de revenir"},
    "not-located": {"en": "Not located", "sw": "Hajapatikana", "ne": "भेटिनुभएन", "fr": "Non retrouvé"},
    "self-transferred": {
        "en": "Transferred to another facility",
        "sw": "Amehamia kituo kingine",
        "ne": "अर्को स्वास्थ्य संस्थामा सरुवा",
        "fr": "Transféré dans un autre établissement",
    },
    "hospitalized": {"en": "Hospitalized", "sw": "Amelazwa hospitalini", "ne": "अस्पतालमा भर्ना", "fr": "Hospitalisé"},
    "moved": {"en": "Moved away", "sw": "Amehama", "ne": "बसाइँ सर्नुभयो", "fr": "A déménagé"},
    "deceased": {"en": "Deceased", "sw": "Amefariki", "ne": "मृत्यु भइसकेको", "fr": "Décédé"},
}
METHOD_LABELS: dict[str, dict[str, str]] = {
    "phone": {"en": "Phone call", "sw": "Kupiga simu", "ne": "फोन कल", "fr": "Appel téléphonique"},
    "sms": {"en": "SMS", "sw": "Ujumbe mfupi (SMS)", "ne": "एसएमएस", "fr": "SMS"},
    "home-visit": {"en": "Home visit", "sw": "Kutembelea nyumbani", "ne": "घर भेट", "fr": "Visite à domicile"},
}


def outcome_label(code: str, language: str) -> str:
    """The outcome as a person reads it in ``language`` (English for a language we do not have)."""
    labels = OUTCOME_LABELS.get(code)
    return labels.get(language, labels["en"]) if labels else code


def method_label(code: str, language: str) -> str:
    labels = METHOD_LABELS.get(code)
    return labels.get(language, labels["en"]) if labels else code


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
