"""The fast way to accept a valid resource: a compiled JSON Schema instead of the R4B models.

``validation.validate`` runs its schema-guided walk first (the FHIR JSON rules, required bindings, depth),
then, when the walk found nothing, asks ``accepts``: a Rust-compiled validator (``jsonschema-rs``) of
``fast_schema.json`` — the official R4 JSON schema, trimmed to the types we accept and tightened with what
the R4B models check beyond it (see scripts/gen_fast_schema.py). Only when it says no does the resource
go through the models, so a client's errors are the ones the models and the walk report, unchanged.

What the schema cannot say, the walk asks ``primitive_ok`` for: a date must exist in the calendar, a
``uuid`` be a version-4 UUID, a ``url`` parse, a ``base64Binary`` decode, a ``decimal`` be one. Those run
the very pydantic types that the models use for the element (cached: defaulter lists repeat dates).

The invariant — the fast path accepts only what the models accept — is checked by
tests/fhir/test_fhir_fast_path.py (official examples, the property generators, mutations).
"""

from __future__ import annotations

import functools
import importlib.resources
import typing
from typing import Any

import jsonschema_rs
import orjson
from pydantic import TypeAdapter

__all__ = ["SEMANTIC_PRIMITIVES", "accepts", "primitive_ok"]

#: Primitives whose validity the schema's pattern does not settle (checked with the models' own types).
SEMANTIC_PRIMITIVES = frozenset({"date", "dateTime", "instant", "time", "uuid", "url", "base64Binary", "decimal"})


@functools.cache
def _definitions() -> dict[str, Any]:
    raw = importlib.resources.files("ltfu.fhir").joinpath("fast_schema.json").read_bytes()
    return orjson.loads(raw)


@functools.cache
def _validator(resource_type: str) -> Any:
    doc = _definitions()
    if resource_type not in doc["definitions"]:
        return None
    return jsonschema_rs.Draft6Validator(
        {"$schema": doc["$schema"], "$ref": f"#/definitions/{resource_type}", "definitions": doc["definitions"]},
        validate_formats=False,
    )


def accepts(resource_type: str, resource: dict) -> bool:
    """True when ``resource`` is valid by the tightened schema; False when it is not or it cannot tell."""
    validator = _validator(resource_type)
    if validator is None:
        return False
    try:
        return bool(validator.is_valid(resource))
    except Exception:  # a value jsonschema-rs cannot read (a huge int...): let the models decide
        return False


@functools.cache
def _adapter(primitive: str) -> TypeAdapter:
    """The annotation R4B's models use for ``primitive`` (every model spells a primitive the same way)."""
    from fhir.resources.R4B.extension import Extension

    field = Extension.model_fields["value" + primitive[0].upper() + primitive[1:]]
    inner = [a for a in typing.get_args(field.annotation) if a is not type(None)]
    return TypeAdapter(inner[0] if len(inner) == 1 else field.annotation)


@functools.lru_cache(maxsize=4096)
def _check(primitive: str, kind: type, value: Any) -> bool:
    try:
        _adapter(primitive).validate_python(value)
    except Exception:
        return False
    return True


def primitive_ok(primitive: str, value: Any) -> bool:
    """Whether the R4B models accept ``value`` (already of the right JSON type) as a ``primitive``."""
    if type(value) is str and len(value) > 256:  # keep long values (base64 data) out of the cache
        return _check.__wrapped__(primitive, str, value)
    return _check(primitive, type(value), value)
