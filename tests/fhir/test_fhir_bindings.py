"""The generated table (ltfu.fhir.bindings) is coherent and agrees with the fhir.resources R4B models."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltfu.fhir import bindings
from ltfu.fhir.validation import SUPPORTED_TYPES

ROOT = Path(__file__).parent.parent.parent
PRIMITIVES = {
    "boolean",
    "integer",
    "positiveInt",
    "unsignedInt",
    "decimal",
    "string",
    "markdown",
    "code",
    "id",
    "uri",
    "url",
    "canonical",
    "oid",
    "uuid",
    "date",
    "dateTime",
    "instant",
    "time",
    "base64Binary",
    "xhtml",
}


def test_every_element_type_is_known() -> None:
    for name, elements in bindings.ELEMENTS.items():
        for key, typ in elements.items():
            typ = typ.removesuffix("[]")
            assert typ in PRIMITIVES or typ == "Resource" or typ in bindings.ELEMENTS, (name, key, typ)


def test_bound_elements_are_codes() -> None:
    for name, bound in bindings.BINDINGS.items():
        for key, codes in bound.items():
            assert bindings.ELEMENTS[name][key].removesuffix("[]") == "code", (name, key)
            assert codes and len(set(codes)) == len(codes)


@pytest.mark.parametrize(
    ("element", "codes"),
    [
        ("Patient.gender", {"male", "female", "other", "unknown"}),
        ("Practitioner.gender", {"male", "female", "other", "unknown"}),
        (
            "ServiceRequest.status",
            {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"},
        ),
        (
            "ServiceRequest.intent",
            {
                "proposal",
                "plan",
                "directive",
                "order",
                "original-order",
                "reflex-order",
                "filler-order",
                "instance-order",
                "option",
            },
        ),
        ("ServiceRequest.priority", {"routine", "urgent", "asap", "stat"}),
        ("Task.priority", {"routine", "urgent", "asap", "stat"}),
        (
            "Task.status",
            {
                "draft",
                "requested",
                "received",
                "accepted",
                "rejected",
                "ready",
                "cancelled",
                "in-progress",
                "on-hold",
                "failed",
                "completed",
                "entered-in-error",
            },
        ),
        (
            "Task.intent",
            {
                "unknown",
                "proposal",
                "plan",
                "order",
                "original-order",
                "reflex-order",
                "filler-order",
                "instance-order",
                "option",
            },
        ),
        (
            "Encounter.status",
            {
                "planned",
                "arrived",
                "triaged",
                "in-progress",
                "onleave",
                "finished",
                "cancelled",
                "entered-in-error",
                "unknown",
            },
        ),
        (
            "Observation.status",
            {
                "registered",
                "preliminary",
                "final",
                "amended",
                "corrected",
                "cancelled",
                "entered-in-error",
                "unknown",
            },
        ),
        ("Subscription.status", {"requested", "active", "error", "off"}),
        ("Subscription_Channel.type", {"rest-hook", "websocket", "email", "sms", "message"}),
        (
            "Appointment.status",
            {
                "proposed",
                "pending",
                "booked",
                "arrived",
                "fulfilled",
                "cancelled",
                "noshow",
                "entered-in-error",
                "checked-in",
                "waitlist",
            },
        ),
        ("Endpoint.status", {"active", "suspended", "error", "off", "entered-in-error", "test"}),
        (
            "Bundle.type",
            {
                "document",
                "message",
                "transaction",
                "transaction-response",
                "batch",
                "batch-response",
                "history",
                "searchset",
                "collection",
            },
        ),
        ("Bundle_Request.method", {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"}),
        ("Identifier.use", {"usual", "official", "temp", "secondary", "old"}),
        ("Narrative.status", {"generated", "extensions", "additional", "empty"}),
    ],
)
def test_required_bindings(element: str, codes: set[str]) -> None:
    name, key = element.split(".")
    assert set(bindings.BINDINGS[name][key]) == codes


def test_extensible_binding_is_not_enforced() -> None:
    assert "language" not in bindings.BINDINGS.get("Expression", {})


@pytest.mark.parametrize("resource_type", sorted(SUPPORTED_TYPES | {"Bundle"}))
def test_r4_elements_exist_in_the_r4b_model(resource_type: str) -> None:
    """R4 and R4B agree on our resources' elements, so the R4B models accept every R4 element."""
    model = getattr(importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}"), resource_type)
    aliases = {f.alias or n for n, f in model.model_fields.items()}
    missing = set(bindings.ELEMENTS[resource_type]) - aliases
    assert not missing


# `make test` fetches it there (scripts/fetch-fhir-schema.sh); LTFU_FHIR_SCHEMA points elsewhere.
SCHEMA = Path(os.environ.get("LTFU_FHIR_SCHEMA") or ROOT / ".cache" / "fhir-schema" / "package" / "fhir.schema.json")


@pytest.mark.skipif(not SCHEMA.exists(), reason=f"no FHIR schema at {SCHEMA}: run scripts/fetch-fhir-schema.sh")
def test_generated_table_is_reproducible() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_bindings.py"), str(SCHEMA)],
        check=True,
        capture_output=True,
    )
    assert out.stdout == (ROOT / "src" / "ltfu" / "fhir" / "bindings.py").read_bytes()
