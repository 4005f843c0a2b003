"""Normalisation of what both sides call a name, a phone, a birth date or an identifier.

Done once, on the way into the index and on the incoming patient, so the comparisons see the same forms:
upper-case ASCII name tokens without titles, E.164 phones, birth dates with their precision, and no junk
identifiers (``0000…``, ``N/A``, one repeated digit) — siblings have been merged through a fake shared
birth-certificate number elsewhere.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

import phonenumbers

# Titles and kinship prefixes that are not part of a person's name ("Mama Otieno" is a teknonym).
TITLES = frozenset(
    {
        "MR",
        "MRS",
        "MS",
        "MISS",
        "DR",
        "PROF",
        "REV",
        "SR",
        "JR",
        "MAMA",
        "BABA",
        "MZEE",
        "BI",
        "BW",
        "MWALIMU",
        "SIR",
        "MADAM",
        "NA",
        "NONE",
        "UNKNOWN",
    }
)
_NON_LETTER = re.compile(r"[^A-Z]+")
_E164 = re.compile(r"^\+[1-9]\d{7,14}$")
_JUNK_WORDS = frozenset({"NA", "N/A", "NONE", "NULL", "NIL", "UNKNOWN", "-", "0", "X", "TBD", "NOTAVAILABLE"})


def name_tokens(text: str | None) -> tuple[str, ...]:
    """``"Mrs. Wanjikũ  wa-Kamau"`` → ``("WANJIKU", "WA", "KAMAU")``: accents, punctuation and titles gone."""
    if not text:
        return ()
    ascii_text = text if text.isascii() else unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    ascii_text = ascii_text.upper()
    tokens = [t for t in _NON_LETTER.split(ascii_text) if t]
    return tuple(t for t in tokens if t not in TITLES and len(t) > 1)


def identifier_value(raw: str | None) -> str | None:
    """A comparable identifier value, or None for a missing or junk one (never an error)."""
    if raw is None:
        return None
    value = re.sub(r"[\s\-./]", "", str(raw)).upper()
    if not value or value in _JUNK_WORDS or str(raw).strip().upper() in _JUNK_WORDS:
        return None
    if len(set(value)) == 1:  # 0000000, 1111111, XXXX
        return None
    if value.isdigit() and value in "0123456789" * 2:  # 123456789 and such
        return None
    return value


def phone_e164(raw: str | None, default_region: str = "KE") -> str | None:
    """``"0712 345 678"`` → ``"+254712345678"`` (default region KE, as CHT's phone library does); junk → None.

    A number already in E.164 form (CHT stores phones so, having validated them on entry) is taken as it is:
    parsing costs ~0.1 ms, too much for a million-person index build.
    """
    if not raw:
        return None
    raw = str(raw)
    if _E164.match(raw):
        return raw if len(set(raw[4:])) > 1 else None
    try:
        number = phonenumbers.parse(str(raw), default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class BirthDate:
    """A birth date and how much of it is known: ``day`` (a real date), ``year`` (year-only or ``YYYY-01-01``)."""

    year: int
    month: int
    day: int
    precision: str  # "day" | "year"

    @property
    def iso(self) -> str:
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}" if self.precision == "day" else f"{self.year:04d}"

    def days_apart(self, other: BirthDate) -> int:
        return abs((date(self.year, self.month, self.day) - date(other.year, other.month, other.day)).days)


def birth_date(raw: str | None, *, estimated: bool = False) -> BirthDate | None:
    """Parse ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``; ``YYYY-01-01`` and estimated dates count as year-only."""
    if not raw:
        return None
    match = re.match(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?", str(raw).strip())
    if not match:
        return None
    year, month, day = int(match[1]), int(match[2] or 1), int(match[3] or 1)
    try:
        date(year, month, day)
    except ValueError:
        return None
    if year < 1890 or year > 2200:
        return None
    precise = match[3] is not None and not estimated and (month, day) != (1, 1)
    return BirthDate(year, month if precise else 1, day if precise else 1, "day" if precise else "year")


def sex_code(raw: str | None) -> str | None:
    """FHIR gender or CHT sex → ``"M"``/``"F"``; anything else (other, unknown) → None."""
    value = (raw or "").strip().lower()
    return {"male": "M", "m": "M", "female": "F", "f": "F"}.get(value)
