"""Normalisation: names, identifiers, phones, birth dates, sex."""

from __future__ import annotations

import pytest

from ltfu.domain.matching.normalise import BirthDate, birth_date, identifier_value, name_tokens, phone_e164, sex_code


def test_names_lose_case_accents_punctuation_and_titles() -> None:
    assert name_tokens("Mrs. Wanjikũ  wa-Kamau") == ("WANJIKU", "WA", "KAMAU")
    assert name_tokens("mama otieno") == ("OTIENO",)
    assert name_tokens("Dr  AKINYI O.") == ("AKINYI",)
    assert name_tokens(None) == ()
    assert name_tokens("   ") == ()


@pytest.mark.parametrize("junk", ["0000000", "N/A", "n/a", "NONE", "11111111", "123456789", "", "  ", "-", "xxxx"])
def test_junk_identifiers_are_ignored(junk: str) -> None:
    assert identifier_value(junk) is None


def test_real_identifiers_are_kept_without_separators() -> None:
    assert identifier_value("mohr13k16yl12") == "MOHR13K16YL12"
    assert identifier_value("2345 6781") == "23456781"
    assert identifier_value("27-345-618") == "27345618"
    assert identifier_value("12345678") is None  # a run of digits is a placeholder


def test_phones_become_e164_with_the_default_region() -> None:
    assert phone_e164("0712 345 678") == "+254712345678"
    assert phone_e164("+254712345678") == "+254712345678"
    assert phone_e164("0772 123 456", "UG") == "+256772123456"


@pytest.mark.parametrize("junk", ["0000", "N/A", "12", "abc", None, "0000000000"])
def test_junk_phones_are_none(junk: str | None) -> None:
    assert phone_e164(junk) is None


def test_birth_dates_keep_their_precision() -> None:
    assert birth_date("1990-05-17") == BirthDate(1990, 5, 17, "day")
    assert birth_date("1990-01-01") == BirthDate(1990, 1, 1, "year")  # the EMR's placeholder day
    assert birth_date("1990") == BirthDate(1990, 1, 1, "year")
    assert birth_date("1990-05") == BirthDate(1990, 1, 1, "year")
    assert birth_date("1990-05-17", estimated=True).precision == "year"
    assert birth_date("1990-02-30") is None
    assert birth_date("soon") is None
    assert birth_date("1800-01-01") is None


def test_sex_codes() -> None:
    assert sex_code("female") == "F"
    assert sex_code("M") == "M"
    assert sex_code("unknown") is None
    assert sex_code(None) is None
