"""The JSON shape of a transaction or batch Bundle, checked before anything reads it.

Every wrong JSON type (``entry`` not an array, an entry not an object, ``request.method`` a number,
...) is a 400 OperationOutcome naming the exact element, never a crash further in.
"""

from __future__ import annotations

from typing import Any

from ltfu.fhir.outcome import FhirError

_ENTRY_STRINGS = ("fullUrl",)
_REQUEST_STRINGS = ("method", "url", "ifNoneExist", "ifMatch", "ifNoneMatch", "ifModifiedSince")
_JSON = {dict: "an object", list: "an array", str: "a string"}


def _expect(value: Any, kind: type, where: str) -> None:
    if not isinstance(value, kind):
        raise FhirError.of("structure", f"{where} must be {_JSON[kind]}", where)


def check_bundle_shape(bundle: dict[str, Any]) -> None:
    """Raise a 400 FhirError at the first element of ``bundle`` with the wrong JSON type."""
    if "entry" not in bundle or bundle["entry"] is None:
        return
    _expect(bundle["entry"], list, "Bundle.entry")
    for i, entry in enumerate(bundle["entry"]):
        where = f"Bundle.entry[{i}]"
        _expect(entry, dict, where)
        for name in _ENTRY_STRINGS:
            if name in entry:
                _expect(entry[name], str, f"{where}.{name}")
        if "resource" in entry:
            _expect(entry["resource"], dict, f"{where}.resource")
        if "request" not in entry:
            raise FhirError.of("required", "Each entry needs request.method and request.url", f"{where}.request")
        _expect(entry["request"], dict, f"{where}.request")
        for name in _REQUEST_STRINGS:
            if name in entry["request"]:
                _expect(entry["request"][name], str, f"{where}.request.{name}")
