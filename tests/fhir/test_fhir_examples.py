"""Every curated official R4 example of our types validates (tests/fixtures/r4-examples, CC0)."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest

from ltfu.fhir.outcome import FhirError
from ltfu.fhir.validation import SUPPORTED_TYPES, parse_json, validate

EXAMPLES = Path(__file__).parent.parent / "fixtures" / "r4-examples"
FILES = sorted(EXAMPLES.glob("*.json"))
# Official examples the validator rejects on purpose, with the issue it must give.
REJECTED = {
    # entry 7 is a Parameters resource: a Bundle we accept holds only SUPPORTED_TYPES
    "Bundle-bundle-transaction.json": ("not-supported", "Bundle.entry[7].resource.resourceType"),
}


def test_the_sample_covers_every_supported_type() -> None:
    types = {f.name.split("-", 1)[0] for f in FILES}
    assert types == SUPPORTED_TYPES | {"Bundle"}
    assert len(FILES) >= 170


@pytest.mark.parametrize("path", [f for f in FILES if f.name not in REJECTED], ids=lambda f: f.stem)
def test_official_example_validates_unchanged(path: Path) -> None:
    resource = parse_json(path.read_bytes())
    before = copy.deepcopy(resource)
    assert validate(resource, path.name.split("-", 1)[0]) is resource
    assert resource == before


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_official_example_rejected_on_purpose(name: str) -> None:
    resource = orjson.loads((EXAMPLES / name).read_bytes())
    with pytest.raises(FhirError) as info:
        validate(resource, resource["resourceType"])
    assert [(i.code, i.expression[0]) for i in info.value.issues] == [REJECTED[name]]
