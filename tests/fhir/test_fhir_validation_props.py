"""Property tests: parse_json + validate only ever raise FhirError, whatever the input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltfu.fhir.bindings import BINDINGS, ELEMENTS
from ltfu.fhir.outcome import FhirError
from ltfu.fhir.validation import SUPPORTED_TYPES, parse_json, validate

EXAMPLES = Path(__file__).parent.parent / "fixtures" / "r4-examples"
SEEDS = [orjson.loads(p.read_bytes()) for p in sorted(EXAMPLES.glob("*.json")) if p.stat().st_size < 6000]
TYPES = sorted(SUPPORTED_TYPES | {"Bundle", "Medication", "SubscriptionTopic", "MedicinalProduct", "X"})
KEYS = sorted({k for e in ELEMENTS.values() for k in e} | {"resourceType", "foo", "_foo", ""})
CODES = sorted({c for b in BINDINGS.values() for codes in b.values() for c in codes})
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(CODES),
    st.sampled_from(TYPES),
    st.sampled_from(["2024-05-02", "2024-05-02T08:00:00+03:00", "urn:uuid:x", "<div/>"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=5),
    ),
    max_leaves=25,
)
resources = st.builds(
    lambda rt, body: {**body, "resourceType": rt},
    st.sampled_from(TYPES),
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6),
)


def check(value: Any, expected_type: str | None = None) -> None:
    before = copy.deepcopy(value)
    try:
        assert validate(value, expected_type) is value
    except FhirError as exc:
        assert exc.status == 400 and exc.issues
        for issue in exc.issues:
            assert issue.code in {"structure", "required", "value", "invalid", "not-supported"}
            assert issue.diagnostics
        orjson.dumps(exc.outcome())  # renders
    assert value == before, "validate must not change its input"


@SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes(body: bytes) -> None:
    try:
        value = parse_json(body)
    except FhirError as exc:
        assert exc.status == 400 and exc.issues[0].code == "structure"
        return
    check(value)


@SETTINGS
@given(json_values, st.sampled_from([None, *TYPES]))
def test_arbitrary_json_values(value: Any, expected_type: str | None) -> None:
    check(value, expected_type)


@SETTINGS
@given(resources)
def test_resource_shaped_values(value: dict) -> None:
    check(value)
    check(parse_json(json.dumps(value).encode()))  # stdlib: orjson refuses ints beyond 64 bits


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*path, i))
    return out


@SETTINGS
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_official_examples(seed: dict, data: st.DataObject) -> None:
    """One element of a valid official example replaced (or removed): still only FhirError."""
    resource = copy.deepcopy(seed)
    path = data.draw(st.sampled_from(_paths(resource)[1:]))
    parent = resource
    for part in path[:-1]:
        parent = parent[part]
    if isinstance(parent, dict) and data.draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(json_values)
    check(resource)
