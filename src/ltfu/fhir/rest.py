"""Small FHIR REST conventions shared by the HTTP layer and Bundle processing."""

from __future__ import annotations

from ltfu.fhir.outcome import FhirError


def parse_etag(value: str | None) -> int | None:
    """``W/"3"``, ``"3"`` and ``3`` all mean version 3 (fhirpy sends it unquoted)."""
    if not value:
        return None
    v = value.strip().removeprefix("W/").strip('"')
    if not v.isdigit():
        raise FhirError.of("invalid", f"Cannot read the version in {value!r}; expected W/\"<versionId>\"")
    return int(v)
