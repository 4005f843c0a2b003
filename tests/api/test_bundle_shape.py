"""Every wrong JSON type in a transaction or batch Bundle is a 400 naming the exact element."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api

GOOD = {"resource": {"resourceType": "Organization", "name": "X"}, "request": {"method": "POST", "url": "Organization"}}
CASES: list[tuple[Any, str]] = [
    (True, "Bundle.entry"), (12, "Bundle.entry"), ("x", "Bundle.entry"), ({"a": 1}, "Bundle.entry"),
    ([GOOD, 7], "Bundle.entry[1]"), ([[GOOD]], "Bundle.entry[0]"),
    ([{**GOOD, "request": "POST"}], "Bundle.entry[0].request"),
    ([{**GOOD, "request": {"method": 1, "url": "Organization"}}], "Bundle.entry[0].request.method"),
    ([{**GOOD, "request": {"method": "POST", "url": ["Organization"]}}], "Bundle.entry[0].request.url"),
    ([{**GOOD, "fullUrl": 5}], "Bundle.entry[0].fullUrl"),
    ([{**GOOD, "request": {"method": "POST", "url": "Organization", "ifNoneExist": {"identifier": "x"}}}],
     "Bundle.entry[0].request.ifNoneExist"),
    ([{**GOOD, "resource": "Organization"}], "Bundle.entry[0].resource"),
]


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_wrong_json_types_are_400_with_the_expression(server: Api, kind: str) -> None:
    for entry, expression in CASES:
        r = server.post("/fhir/", json={"resourceType": "Bundle", "type": kind, "entry": entry})
        assert r.status_code == 400, (entry, r.status_code, r.text[:200])
        issue = r.json()["issue"][0]
        assert issue["expression"] == [expression], (entry, issue)
