"""The fast path (compiled R4 schema, ltfu.fhir.fast_path) never accepts what the R4B models refuse.

Every check compares ``validate(r)`` with ``validate(r, fast=False)`` (walk + models, as before the fast
path): the same outcome, valid or the same OperationOutcome. Inputs: the official R4 examples, the
generators of test_fhir_validation_props.py, and mutations of valid resources aimed at what the R4 JSON
schema does not say (calendar dates, choice types, 32-bit integers, Unicode whitespace, required
primitives given as extensions, uuid/url/base64 formats). ``LTFU_FAST_PATH_EXAMPLES`` sets the depth.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltfu.fhir import fast_path, validation
from ltfu.fhir.bindings import ELEMENTS
from ltfu.fhir.outcome import FhirError
from ltfu.fhir.validation import SUPPORTED_TYPES, validate
from tests.fhir.test_fhir_validation_props import json_values, resources

ROOT = Path(__file__).parent.parent.parent
EXAMPLES = sorted((ROOT / "tests" / "fixtures" / "r4-examples").glob("*.json"))
SEEDS = [
    orjson.loads(p.read_bytes()) for p in EXAMPLES if p.name.split("-", 1)[0] in SUPPORTED_TYPES | {"Bundle"}
]
N = int(os.environ.get("LTFU_FAST_PATH_EXAMPLES", "300"))
SETTINGS = settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "http://example.org/mrn", "value": "M1"}],
    "name": [{"family": "Otieno", "given": ["Akinyi"]}],
    "gender": "female",
    "birthDate": "1990-02-13",
    "telecom": [{"system": "phone", "value": "+254700000001"}],
}
SERVICE_REQUEST = {
    "resourceType": "ServiceRequest",
    "identifier": [{"system": "http://example.org/sr", "value": "M1"}],
    "status": "active",
    "intent": "order",
    "subject": {"reference": "Patient/p1"},
    "requester": {"reference": "Organization/o1"},
    "occurrencePeriod": {"start": "2026-11-20", "end": "2026-12-30"},
}

UUID1 = "urn:uuid:3fa85f64-5717-1562-b3fc-2c963f66afa6"
WS = ["\u0085", "\u00a0", "\ufeff", "\u2028", "\u180e", "\u200b", "\x1c", "\x0b", "\t", "\n", " "]
TRICKY = st.one_of(
    st.sampled_from([
        "2023-02-29", "2024-02-29", "2023-02-30", "2023-04-31", "0001-01-01", "9999-12-31", "2023-00",
        "2023-13", "2023-01-01T10:00:00Z", "2023-01-01T10:00Z", "2023-01-01T10:00:00", "2023-02-30T10:00:00Z",
        "2016-12-31T23:59:60Z", "2016-02-30T23:59:60Z", "2023-01-01T10:00:00.1234567890+14:00",
        "2023-01-01T10:00:00-14:00", "2023-01-01T24:00:00Z", "10:00:00", "24:00:00", "23:59:60", "10:00",
        "urn:uuid:3fa85f64-5717-4562-b3fc-2c963f66afa6", "urn:uuid:3fa85f64-5717-1562-b3fc-2c963f66afa6",
        "urn:uuid:3FA85F64-5717-4562-B3FC-2C963F66AFA6", "3fa85f64-5717-4562-b3fc-2c963f66afa6",
        "http://example.org/x", "https://", "mailto:a@b.c", "Patient/1", "/Patient/1", "foo", "urn:oid:1.2.3",
        "QUJD", "AAA=", "====", "QQ==", "QQ", " QUJD ", "<div>x</div>", "<div xmlns=\"http://www.w3.org/1999/xhtml\"/>",
        "a", "a b", "a  b", " a", "a ", "1", "-0", "1.0", "true", "male", "active", "order", "x" * 65,
    ]),
    st.builds(lambda w, t: t.format(w=w), st.sampled_from(WS), st.sampled_from(["{w}", "a{w}", "{w}a", "a{w}b"])),
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, 1.0, 0.5, -0.0, 1e300, 1e-7]),
    st.booleans(),
    st.none(),
    st.just({}),
    st.just([]),
    st.just({"extension": [{"url": "http://example.org/e", "valueString": "x"}]}),
    st.just({"id": "e1"}),
    json_values,
)


def _siblings() -> dict[str, list[str]]:
    """Choice-type names sharing a stem in some definition (valueString -> valueBoolean, valueQuantity...)."""
    out: dict[str, set[str]] = {}
    for elements in ELEMENTS.values():
        names = [k for k in elements if not k.startswith("_")]
        for k in names:
            stem = next((k[:i] for i, ch in enumerate(k) if ch.isupper()), k)
            same = [o for o in names if o != k and o.startswith(stem) and len(o) > len(stem) and o[len(stem)].isupper()]
            if same and len(k) > len(stem):
                out.setdefault(k, set()).update(same)
    return {k: sorted(v) for k, v in out.items()}


SIBLINGS = _siblings()
KEYS = sorted({k for e in ELEMENTS.values() for k in e})


def outcome(resource: Any, fast: bool) -> Any:
    try:
        validate(copy.deepcopy(resource), "Bundle" if _is_bundle(resource) else None, fast=fast)
    except FhirError as exc:
        return exc.outcome()
    return "valid"


def _is_bundle(resource: Any) -> bool:
    return isinstance(resource, dict) and resource.get("resourceType") == "Bundle"


def same(resource: Any) -> str:
    fast, slow = outcome(resource, True), outcome(resource, False)
    assert fast == slow, orjson.dumps(resource)[:2000]
    return fast if isinstance(fast, str) else "invalid"


def _nodes(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _nodes(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _nodes(v, (*path, i))
    return out


def _at(resource: Any, path: tuple) -> Any:
    for part in path:
        resource = resource[part]
    return resource


def mutate(resource: dict, data: st.DataObject) -> dict:
    def tricky() -> Any:  # a copy: the st.just() constants must not be changed by a later mutation
        return copy.deepcopy(data.draw(TRICKY))

    resource = copy.deepcopy(resource)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _nodes(resource)[1:]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent, key = _at(resource, path[:-1]), path[-1]
        node = parent[key]
        how = data.draw(st.sampled_from(["replace", "delete", "sibling", "add", "wrap", "unwrap", "extension"]))
        if how == "replace":
            parent[key] = tricky()
        elif how == "delete" and isinstance(parent, dict):
            del parent[key]
        elif how == "sibling" and isinstance(parent, dict) and key in SIBLINGS:
            other = data.draw(st.sampled_from(SIBLINGS[key]))
            parent[other] = copy.deepcopy(node) if data.draw(st.booleans()) else tricky()
        elif how == "add" and isinstance(node, dict):
            node[data.draw(st.sampled_from(KEYS))] = tricky()
        elif how == "wrap":
            parent[key] = [node]
        elif how == "unwrap" and isinstance(node, list) and node:
            parent[key] = node[0]
        elif how == "extension" and isinstance(parent, dict) and isinstance(key, str) and not key.startswith("_"):
            del parent[key]
            parent["_" + key] = tricky()
    return resource


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_official_examples_agree(path: Path) -> None:
    same(orjson.loads(path.read_bytes()))


def test_the_fast_path_takes_the_common_resources() -> None:
    """Not vacuous: plain valid resources are accepted without the models."""
    for resource in (PATIENT, SERVICE_REQUEST):
        rt = resource["resourceType"]
        walk = validation._Walk()
        walk.object(resource, validation._SPECS[rt], rt, 0)
        assert not walk.issues and not walk.doubt
        assert fast_path.accepts(rt, resource)
    taken = sum(fast_path.accepts(s["resourceType"], s) for s in SEEDS if s["resourceType"] in SUPPORTED_TYPES)
    assert taken >= len([s for s in SEEDS if s["resourceType"] in SUPPORTED_TYPES]) // 2


@pytest.mark.parametrize(
    "resource",
    [
        {**PATIENT, "birthDate": "2023-02-29"},  # matches the schema's pattern, not the calendar
        {**PATIENT, "deceasedBoolean": True, "deceasedDateTime": "2020"},  # choice given twice
        {**PATIENT, "multipleBirthInteger": 2**31},  # beyond 32 bits
        {**PATIENT, "language": "en\u0085"},  # U+0085 is whitespace to the models, not to ECMA-262 \s
        {**PATIENT, "link": [{"other": {"reference": "Patient/p2"}}]},  # required primitive link.type
        {**PATIENT, "link": [{"other": {"reference": "Patient/p2"}, "_type": {"id": "x"}}]},
        {**PATIENT, "extension": [{"url": "http://example.org/e", "valueUuid": UUID1}]},  # the models want v4
        {**SERVICE_REQUEST, "occurrenceDateTime": "2026-11-20"},
        {**SERVICE_REQUEST, "occurrencePeriod": {"start": "2026-11-20T10:00:00"}},  # a time without a zone
    ],
)
def test_known_gaps_of_the_official_schema_go_to_the_models(resource: dict) -> None:
    assert not fast_path.accepts(resource["resourceType"], resource) or _walk_doubts(resource)
    same(resource)


def _walk_doubts(resource: dict) -> bool:
    rt = resource["resourceType"]
    walk = validation._Walk()
    walk.object(resource, validation._SPECS[rt], rt, 0)
    return bool(walk.issues) or walk.doubt


@SETTINGS
@given(st.sampled_from(SEEDS + [PATIENT, SERVICE_REQUEST]), st.data())
def test_mutated_valid_resources_agree(seed: dict, data: st.DataObject) -> None:
    same(mutate(seed, data))


@SETTINGS
@given(resources)
def test_generated_resources_agree(resource: dict) -> None:
    same(resource)


# `make test` fetches it there (scripts/fetch-fhir-schema.sh); LTFU_FHIR_SCHEMA points elsewhere.
SCHEMA = Path(os.environ.get("LTFU_FHIR_SCHEMA") or ROOT / ".cache" / "fhir-schema" / "package" / "fhir.schema.json")


@pytest.mark.skipif(not SCHEMA.exists(), reason=f"no FHIR schema at {SCHEMA}: run scripts/fetch-fhir-schema.sh")
def test_generated_schema_is_reproducible() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_fast_schema.py"), str(SCHEMA)], check=True, capture_output=True
    )
    assert out.stdout == (ROOT / "src" / "ltfu" / "fhir" / "fast_schema.json").read_bytes()


def test_the_models_spell_each_checked_primitive_alike() -> None:
    """fast_path checks a date, url... with Extension.value[x]'s annotation: every other element agrees."""
    import importlib
    import types
    import typing

    def spelling(annotation: Any) -> str:  # without the Optional[...] and List[...] around it
        while typing.get_origin(annotation) in (typing.Union, types.UnionType, list):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        return repr(annotation)

    from fhir.resources.R4B.extension import Extension

    expected = {p: spelling(Extension.model_fields["value" + p[0].upper() + p[1:]].annotation)
                for p in fast_path.SEMANTIC_PRIMITIVES}
    checked = 0
    for name, elements in ELEMENTS.items():
        module, _, backbone = name.partition("_")
        try:
            mod = importlib.import_module(f"fhir.resources.R4B.{module.lower()}")
        except ImportError:
            continue
        model = getattr(mod, module + "".join(p[0].upper() + p[1:] for p in backbone.split("_") if p), None)
        if model is None:
            continue
        fields = {(f.alias or n): f for n, f in model.model_fields.items()}
        for key, typ in elements.items():
            typ = typ.removesuffix("[]")
            if typ in expected and key in fields:
                got = spelling(fields[key].annotation)
                assert got == expected[typ], (name, key, got)
                checked += 1
    assert checked > 50
