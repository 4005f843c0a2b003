"""Official R4 examples (hl7.fhir.r4.examples 4.0.1, CC0; tests/fixtures/r4-examples) of every type
we serve go through create and read unchanged, except ``id``, ``meta`` and header values (write-only
secrets, read back as ``Name: ***``). An example that is not an acceptable callback is refused."""

from __future__ import annotations

import json
from pathlib import Path

from ltfu.fhir.validation import SUPPORTED_TYPES
from ltfu.services.notifications import masked
from tests.conftest import Api

EXAMPLES = Path(__file__).parents[1] / "fixtures" / "r4-examples"
# A FHIR REST Endpoint is a callback ltfu may call: this one's header line is not an HTTP header.
REFUSED = {"Endpoint-example.json": "Endpoint.header"}


def _examples() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*.json") if p.name.split("-", 1)[0] in SUPPORTED_TYPES)


def _strip(resource: dict) -> dict:
    out = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    if "header" in out:
        out["header"] = masked(out["header"])
    if "header" in out.get("channel", {}):
        out["channel"] = {**out["channel"], "header": masked(out["channel"]["header"])}
    return out


def test_every_example_round_trips(server: Api) -> None:
    paths = _examples()
    assert len(paths) >= 150
    failures = []
    for path in paths:
        original = json.loads(path.read_text())
        created = server.post(f"/fhir/{original['resourceType']}", json=original)
        if path.name in REFUSED:
            outcome = created.json()
            if created.status_code != 422 or outcome["issue"][0]["expression"] != [REFUSED[path.name]]:
                failures.append((path.name, created.status_code, created.text[:300]))
            continue
        if created.status_code != 201:
            failures.append((path.name, created.status_code, created.text[:300]))
            continue
        read = server.get(f"/fhir/{original['resourceType']}/{created.json()['id']}").json()
        if _strip(read) != _strip(original):
            failures.append((path.name, "changed", sorted(set(_strip(read)) ^ set(_strip(original)))))
    assert failures == []
