"""Validation of incoming FHIR R4 resources: JSON parsing, FHIR JSON rules, required bindings, models.

``validate`` checks a parsed resource in two passes and reports every problem it finds as one
``Issue`` of a single ``FhirError``:

1. A walk guided by the element types of the official R4 JSON schema (``bindings.py``): the codes of
   required bindings (``status``, ``intent``, ``gender``, ``Identifier.use``... in nested datatypes
   too), and the FHIR JSON rules that ``fhir.resources`` does not apply: no ``null`` (except the
   placeholders that align a primitive array with its ``_element`` array), no empty strings, arrays
   or objects, JSON booleans and numbers where FHIR wants them (the models coerce ``"true"`` and
   ``"3"``), objects where FHIR wants objects (the models parse a string holding JSON), no
   whitespace in ``uri``, ``id`` of at most 64 characters, ``contained`` types that exist in R4.
2. ``fhir.resources.R4B`` model validation: unknown elements, cardinality, required elements,
   primitive formats (dates, ids, codes...), choice-type exclusivity. Its errors become issues
   with a FHIRPath ``expression`` (``Patient.name[0].given[1]``).

Between the two, the fast path (``fast_path``): when the walk found nothing, a Rust-compiled validator of
the official R4 JSON schema, trimmed to our types and tightened with what the R4B models check beyond it,
accepts a valid resource in a few microseconds instead of the models' ~50-200. Whatever it does not
accept goes through the models as before, so the issues a client sees do not depend on it.

Issue codes: ``structure`` (not an object, wrong JSON type, unknown element, null/empty, choice
conflict), ``required`` (missing element, missing ``resourceType``), ``value`` (bad code, bad
primitive format), ``not-supported`` (resource type we do not accept), ``invalid`` (resource type
differs from the one the URL names).

HTTP status: always **400**. FHIR http.html gives 400 to a resource that "could not be parsed or
failed basic FHIR validation rules" and 422 to one that violates "applicable FHIR profiles or server
business rules". Everything checked here is base-specification validity (syntax, structure,
datatypes, cardinality, required bindings), so it is 400; business rules (our profiles, state
machine) live in the services and use 422/409.

Diagnostics never echo element values, except the offending code of a required binding (shortened),
so no PHI ends up in logs or OperationOutcomes.

The caller keeps the dict it passed: the model instance is thrown away (serialising it is ~3x the
cost of validating).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import re
from typing import Any

import fhir_core.constraints
import orjson

from ltfu.fhir import fast_path
from ltfu.fhir.bindings import BINDINGS, ELEMENTS, R4_RESOURCE_TYPES
from ltfu.fhir.outcome import FhirError, Issue

# Must happen before any fhir.resources model class is built (fhir-core's default is 255).
fhir_core.constraints.TYPES_ID_MAX_LENGTH = 64

__all__ = ["MAX_ISSUES", "SUPPORTED_TYPES", "parse_json", "validate"]

log = logging.getLogger(__name__)

SUPPORTED_TYPES: frozenset[str] = frozenset({
    "Organization", "Endpoint", "Patient", "Practitioner", "ServiceRequest", "Task",
    "Encounter", "Observation", "Subscription", "Appointment",
})
#: At most this many issues are reported (plus one saying how many more there were).
MAX_ISSUES = 100
#: Objects nested deeper than this are refused before model validation (real resources use < 15).
MAX_DEPTH = 48
_STATUS = 400
_COLLECT = 2 * MAX_ISSUES  # issues gathered before merely counting (a 10 MiB body can hold 10^6 problems)

# --- element kinds, compiled once from bindings.ELEMENTS ---------------------------------------------
# _SEM: a string primitive whose validity its pattern does not settle (dates...), see fast_path.
_BOOL, _INT, _DEC, _STR, _CODE, _URI, _ID, _XHTML, _SEM, _OBJ, _RES, _ENTRY = range(12)
_PRIMITIVE_KIND = {
    "boolean": _BOOL, "integer": _INT, "positiveInt": _INT, "unsignedInt": _INT, "decimal": _DEC,
    "code": _CODE, "uri": _URI, "url": _URI, "canonical": _URI, "id": _ID, "xhtml": _XHTML,
    "string": _STR, "markdown": _STR, "date": _SEM, "dateTime": _SEM, "instant": _SEM, "time": _SEM,
    "base64Binary": _SEM, "oid": _STR, "uuid": _SEM,
}
_EXPECTED = {
    _BOOL: "a JSON boolean (true or false)", _INT: "a JSON number without a fraction",
    _DEC: "a JSON number", _OBJ: "a JSON object", _RES: "a JSON object (a resource)",
    _ENTRY: "a JSON object (a resource)",
}
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_WS_RE = re.compile(r"\s")

# definition name -> JSON element name -> (kind, argument, is_array); argument is the element's own
# spec dict for objects, the allowed codes (frozenset) for bound codes, else None.
Spec = dict[str, tuple[int, Any, bool]]


def _compile() -> dict[str, Spec]:
    specs: dict[str, Spec] = {name: {} for name in ELEMENTS}
    for name, elements in ELEMENTS.items():
        spec = specs[name]
        for key, typ in elements.items():
            many = typ.endswith("[]")
            typ = typ.removesuffix("[]")
            if typ in _PRIMITIVE_KIND:
                kind = _PRIMITIVE_KIND[typ]
                codes = BINDINGS.get(name, {}).get(key)
                # arg: a code's allowed codes; for the other primitives that fast_path checks, their name
                arg = frozenset(codes) if codes else typ if typ in fast_path.SEMANTIC_PRIMITIVES else None
                spec[key] = (kind, arg, many)
            elif typ == "Resource":  # Bundle.entry.resource is limited to the types we accept
                spec[key] = (_ENTRY if (name, key) == ("Bundle_Entry", "resource") else _RES, None, many)
            else:
                spec[key] = (_OBJ, specs[typ], many)
    return specs


_SPECS = _compile()


# --- paths -----------------------------------------------------------------------------------------
# A path is a linked list of tuples (parent, key) built while walking; rendered only on error.
Path = tuple[Any, str | int] | str


def _render(path: Path) -> str:
    parts: list[str | int] = []
    while isinstance(path, tuple):
        path, key = path
        parts.append(key)
    out = [path]
    for key in reversed(parts):
        if isinstance(key, int):
            out.append(f"[{key}]")
        else:
            # FHIRPath reaches a primitive's extensions through the element itself: _birthDate -> birthDate
            out.append("." + (key[1:] if key.startswith("_") and len(key) > 1 else key))
    return "".join(out)


def _short(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _literal(value: str) -> str:
    """A client's value inside an ``add`` template (those are ``str.format``-ed): braces escaped."""
    return _short(value).replace("{", "{{").replace("}", "}}")


# --- pass 1: schema-guided walk --------------------------------------------------------------------
class _Walk:
    __slots__ = ("issues", "dropped", "fatal", "entry_types", "doubt")

    def __init__(self, entry_types: frozenset[str] | None = SUPPORTED_TYPES) -> None:
        self.issues: list[tuple[str, str, str]] = []  # (code, expression, diagnostics)
        self.dropped = 0  # issues past _COLLECT: counted, not rendered
        self.fatal = False  # the models must not see this input (they could crash on it)
        self.entry_types = entry_types  # what Bundle.entry.resource may hold (None: any R4 type)
        self.doubt = False  # a primitive the fast path cannot vouch for: the models must look (no issue)

    def add(self, code: str, path: Path, text: str) -> None:
        if len(self.issues) >= _COLLECT:
            self.dropped += 1
            return
        expr = _render(path)
        self.issues.append((code, expr, text.format(expr=expr)))

    def resource(self, node: dict, path: Path, depth: int, allowed: frozenset[str] | None) -> None:
        rt = node.get("resourceType")
        if rt is None:
            self.add("required", (path, "resourceType"), "{expr} is missing: every resource needs one")
            self.fatal = True
            return
        if type(rt) is not str:
            self.add("structure", (path, "resourceType"), "{expr} must be a JSON string")
            self.fatal = True
            return
        if allowed is not None and rt not in allowed:
            self.add("not-supported", (path, "resourceType"),
                     f"Resource type '{_literal(rt)}' is not supported here (at {{expr}})")
            self.fatal = True
            return
        if rt not in R4_RESOURCE_TYPES or not _r4b_has(rt):
            self.add("not-supported", (path, "resourceType"),
                     f"'{_literal(rt)}' is not a FHIR R4 resource type supported by this server (at {{expr}})")
            self.fatal = True
            return
        spec = _SPECS.get(rt)
        if spec is None:  # a contained resource of a type we do not model: generic JSON rules only
            self.json(node, path, depth)
        else:
            self.object(node, spec, path, depth)

    def object(self, node: dict, spec: Spec, path: Path, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.add("structure", path, "{expr} is nested too deeply")
            self.fatal = True
            return
        if not node:
            self.add("structure", path, "{expr} is an empty object: omit the element instead")
            return
        for key, value in node.items():
            entry = spec.get(key)
            if entry is None:  # resourceType, or an unknown element (the model reports it)
                continue
            kind, arg, many = entry
            if not many:
                if type(value) is str and value and (
                    kind == _STR or (kind == _CODE and (arg is None or value in arg))
                ):
                    continue  # the common case, without a call
                self.value(value, kind, arg, (path, key), depth)
            elif type(value) is not list:
                if value is None:
                    self.add("structure", (path, key), "{expr} is null: omit the element instead")
                else:
                    self.add("structure", (path, key), "{expr} must be a JSON array")
                    if kind in (_OBJ, _RES):
                        self.fatal = True
            elif not value:
                self.add("structure", (path, key), "{expr} is an empty array: omit the element instead")
            else:
                here = (path, key)
                for i, item in enumerate(value):
                    if item is None:
                        if not self._aligned(node, key, i, kind):
                            self.add("structure", (here, i), "{expr} is null: FHIR JSON allows null in "
                                     "an array only to align a primitive with its _element extension")
                    else:
                        self.value(item, kind, arg, (here, i), depth)

    @staticmethod
    def _aligned(node: dict, key: str, i: int, kind: int) -> bool:
        """A null in a primitive array is a placeholder when the sibling _array has something there."""
        if key.startswith("_"):
            partner = node.get(key[1:])
        elif kind in (_OBJ, _RES):
            return False
        else:
            partner = node.get("_" + key)
        return type(partner) is list and i < len(partner) and partner[i] is not None

    def value(self, value: Any, kind: int, arg: Any, path: Path, depth: int) -> None:
        t = type(value)
        if kind >= _OBJ:
            if t is not dict:
                self.add("structure", path, "{expr} is null: omit the element instead" if value is None
                         else f"{{expr}} must be {_EXPECTED[kind]}")
                self.fatal = True
            elif kind == _OBJ:
                self.object(value, arg, path, depth + 1)
            else:
                self.resource(value, path, depth + 1, self.entry_types if kind == _ENTRY else None)
        elif t is str:
            if not value:
                self.add("value", path, "{expr} is an empty string: omit the element instead")
            elif kind == _CODE:
                if arg is not None and value not in arg:
                    allowed = " | ".join(sorted(arg)) if len(arg) <= 12 else f"{len(arg)} codes of R4"
                    self.add("value", path, f"'{_literal(value)}' is not a valid code for {{expr}} "
                                            f"(required binding; allowed: {allowed})")
            elif kind == _URI:
                if _WS_RE.search(value):
                    self.add("value", path, "{expr} is not a valid uri: it must not contain whitespace")
                elif arg is not None and not fast_path.primitive_ok(arg, value):
                    self.doubt = True
            elif kind == _SEM:
                if not fast_path.primitive_ok(arg, value):
                    self.doubt = True
            elif kind == _ID:
                if not _ID_RE.fullmatch(value):
                    self.add("value", path, "{expr} is not a valid id: 1-64 characters from A-Z a-z 0-9 - .")
            elif kind == _XHTML:
                if not value.lstrip().startswith("<div"):
                    self.add("value", path, "{expr} must be an XHTML <div> element")
            elif kind <= _DEC:
                self.add("structure", path, f"{{expr}} must be {_EXPECTED[kind]}, not a string")
        elif value is None:
            self.add("structure", path, "{expr} is null: omit the element instead")
        elif kind == _BOOL:
            if t is not bool:
                self.add("structure", path, f"{{expr}} must be {_EXPECTED[kind]}")
        elif kind == _INT:
            if t is not int:
                self.add("structure", path, f"{{expr}} must be {_EXPECTED[kind]}")
        elif kind == _DEC:
            if t is not int and t is not float:
                self.add("structure", path, f"{{expr}} must be {_EXPECTED[kind]}")
            elif not fast_path.primitive_ok("decimal", value):
                self.doubt = True
        else:
            self.add("structure", path, "{expr} must be a JSON string")
            if t is dict or t is list:
                self.fatal = True  # the models would try to read it as something else

    def json(self, value: Any, path: Path, depth: int) -> None:
        """FHIR JSON rules that hold everywhere (no null, no empty values), for unmodelled content."""
        if depth > MAX_DEPTH:
            self.add("structure", path, "{expr} is nested too deeply")
            self.fatal = True
        elif value is None:
            self.add("structure", path, "{expr} is null: omit the element instead")
        elif type(value) is dict:
            if not value:
                self.add("structure", path, "{expr} is an empty object: omit the element instead")
            for key, item in value.items():
                if type(item) is list and item:
                    here = (path, key)
                    for i, x in enumerate(item):
                        if x is not None or not self._aligned(value, key, i, _STR):
                            self.json(x, (here, i), depth + 1)
                else:
                    self.json(item, (path, key), depth + 1)
        elif type(value) is list:
            if not value:
                self.add("structure", path, "{expr} is an empty array: omit the element instead")
            for i, item in enumerate(value):
                self.json(item, (path, i), depth + 1)
        elif value == "":
            self.add("value", path, "{expr} is an empty string: omit the element instead")


@functools.cache
def _r4b_has(resource_type: str) -> bool:
    """R4 resource types that fhir.resources R4B still models (R4B dropped e.g. MedicinalProduct)."""
    try:
        return importlib.util.find_spec(f"fhir.resources.R4B.{resource_type.lower()}") is not None
    except (ImportError, ValueError):
        return False


# --- pass 2: fhir.resources R4B models ---------------------------------------------------------------
@functools.cache
def _model(resource_type: str) -> Any:
    module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    return getattr(module, resource_type)


_CHOICE_RE = re.compile(r"\[([^\]]*)\]")
_FORMAT_TEXT = {
    "Date": "not a valid FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)",
    "DateTime": "not a valid FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD or date and time with seconds "
                "and a time zone)",
    "Instant": "not a valid FHIR instant (date and time with seconds and a time zone)",
    "Time": "not a valid FHIR time (hh:mm:ss)",
    "Decimal": "not a valid decimal",
}
_FORMAT_RE = re.compile(r"(\w+) value string does not match spec regex")
_TYPE_ERRORS = {"model_type", "list_type", "dict_type", "json_invalid", "json_type",
                "model_validation_format", "string_unicode", "is_instance_of", "model_attributes_type"}


def _loc_path(root: Path, loc: tuple) -> Path:
    path = root
    for part in loc:
        if isinstance(part, int):
            path = (path, part)
        elif part == "root" or not part:
            continue
        else:
            if part.endswith("__ext"):
                part = "_" + part[:-5]
            elif part.endswith("_fhir"):
                part = part[:-5]
            path = (path, part)
    return path


def _choice_names(msg: str) -> list[str]:
    found = _CHOICE_RE.search(msg)
    return [n.strip().strip("'\"") for n in found.group(1).split(",")] if found else []


def _model_issues(err: Any, resource: dict, root: str) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for e in err.errors(include_url=False):
        typ = e.get("type", "")
        loc = e.get("loc", ())
        msg = str(e.get("msg", ""))
        data = e.get("input")
        path = _loc_path(root, loc)
        expr = _render(path)
        if typ in ("missing", "model_field_validation.missing"):
            out.append(("required", expr, f"{expr} is required but missing"))
        elif typ == "extra_forbidden":
            if _known_element(resource, loc):
                continue  # fhir.resources refuses some valid elements (_valueString in an extension)
            key = _short(str(loc[-1]) if loc else "", 64)
            expr = _render(_loc_path(root, loc[:-1])) + "." + key
            out.append(("structure", expr, f"Unknown element '{key}' at {expr}"))
        elif "but got multiple" in msg:
            names = [n for n in _choice_names(msg) if isinstance(data, dict) and n in data]
            target = _render((path, names[0])) if names else expr
            listed = ", ".join(names) or "the choice types"
            choice = _common_prefix(_choice_names(msg)) or "the element"
            text = f"Only one of {listed} may be present: {choice}[x] is a single choice"
            out.append(("structure", target, text))
        elif "Expect any of field value" in msg:
            names = _choice_names(msg)
            prefix = _common_prefix(names)
            target = _render((path, prefix)) if prefix else expr
            out.append(("required", target, f"{target}[x] is required but missing"))
        elif typ in _TYPE_ERRORS or typ.endswith("_type"):
            out.append(("structure", expr, f"{expr} has the wrong JSON type ({_clean(msg, data)})"))
        else:
            fmt = _FORMAT_RE.search(msg)
            text = _FORMAT_TEXT.get(fmt.group(1), "invalid") if fmt else _clean(msg, data)
            out.append(("value", expr, f"{expr} is {text}" if fmt else f"{expr} is invalid: {text}"))
    return out


def _known_element(resource: dict, loc: tuple) -> bool:
    """Whether ``loc`` names an element that R4 defines (so the model's "extra" error is its own bug)."""
    node: Any = resource
    spec: Spec | None = _SPECS.get(resource.get("resourceType"))  # type: ignore[arg-type]
    last = len(loc) - 1
    try:
        for n, part in enumerate(loc):
            if isinstance(part, int):
                node = node[part]
            else:
                if spec is None or part not in spec:
                    return False
                if n == last:
                    return True
                kind, arg, _ = spec[part]
                node = node[part]
                spec = arg if kind == _OBJ else None
            if spec is None and type(node) is dict and "resourceType" in node:
                spec = _SPECS.get(node["resourceType"])
    except (KeyError, IndexError, TypeError):
        return False
    return False


def _common_prefix(names: list[str]) -> str:
    if not names:
        return ""
    first, last = min(names), max(names)
    n = 0
    while n < len(first) and n < len(last) and first[n] == last[n]:
        n += 1
    prefix = first[:n]
    while prefix and prefix[-1].isupper():  # valueAddress/valueAge -> value, not valueA
        prefix = prefix[:-1]
    return prefix


def _clean(msg: str, data: Any) -> str:
    """The pydantic message without the ``Value error,`` prefix and without echoing the input."""
    msg = msg.removeprefix("Value error, ").strip()
    if isinstance(data, str) and len(data) >= 3 and data in msg:
        msg = msg.replace(data, "…")
    return _short(msg, 200)


# --- public API ------------------------------------------------------------------------------------
def parse_json(body: bytes | bytearray | memoryview | str) -> Any:
    """Parse a request body with orjson; a body that is not UTF-8 JSON raises FhirError(structure, 400)."""
    if isinstance(body, (bytes, bytearray)) and body[:3] == b"\xef\xbb\xbf":
        body = body[3:]  # a UTF-8 byte-order mark: RFC 8259 lets parsers ignore it
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        text = str(exc)
        what = "UTF-8" if "UTF-8" in text or "surrogate" in text else "JSON"
        issue = Issue("structure", f"The request body is not valid {what}: {text}", kind="invalid-json")
        raise FhirError([issue], _STATUS) from None
    except TypeError:
        raise FhirError([Issue("structure", "The request body is not valid JSON", kind="invalid-json")],
                        _STATUS) from None


def validate(resource: Any, expected_type: str | None = None, *, fast: bool = True) -> dict:
    """Check that ``resource`` is a valid FHIR R4 resource of a type we accept; return it unchanged.

    ``expected_type`` is the type the URL names (``POST /fhir/Patient``); a body of another type is
    an ``invalid`` issue. Types: SUPPORTED_TYPES; a ``Bundle`` only when asked for with
    ``expected_type="Bundle"`` (so a store never takes one by accident): its entries' resources must be
    SUPPORTED_TYPES and are validated too (``Bundle.entry[2].resource.status``). To validate a batch
    entry by entry, call ``validate(entry["resource"])`` for each instead.

    Raises FhirError (status 400, see the module docstring) listing every problem found (at most
    MAX_ISSUES, then one issue counting the rest). Never raises anything else for JSON-like input.

    A resource that the walk finds clean and the compiled schema accepts (``fast_path``) is returned
    without running the models; ``fast=False`` always runs them (the tests compare both).
    """
    if type(resource) is not dict:
        raise FhirError([Issue("structure", "A FHIR resource must be a JSON object", kind="not-json-object")], _STATUS)
    rt = resource.get("resourceType")
    if rt is None:
        raise FhirError([Issue("required", "resourceType is missing: every resource needs one",
                               ("resourceType",), kind="resource-type-missing")], _STATUS)
    if type(rt) is not str:
        raise FhirError([Issue("structure", "resourceType must be a JSON string", ("resourceType",),
                               kind="resource-type-missing")], _STATUS)
    if expected_type is not None and rt != expected_type:
        raise FhirError([Issue("invalid", f"The resource is a '{_short(rt)}', but this request expects "
                                          f"a '{expected_type}'", ("resourceType",), kind="wrong-resource-type")],
                        _STATUS)
    if rt not in SUPPORTED_TYPES and not (rt == "Bundle" and expected_type == "Bundle"):
        raise FhirError([Issue("not-supported", f"Resource type '{_short(rt)}' is not supported "
                                                f"(supported: {', '.join(sorted(SUPPORTED_TYPES))})",
                               ("resourceType",), kind="unsupported-resource-type")], _STATUS)

    walk = _Walk()
    walk.object(resource, _SPECS[rt], rt, 0)
    found = walk.issues
    if fast and not found and not walk.doubt and fast_path.accepts(rt, resource):
        return resource  # what the schema accepts, the models accept (tests/fhir/test_fhir_fast_path.py)
    extra = walk.dropped
    stopped = walk.fatal or len(found) > MAX_ISSUES  # enough to report: spare the (slow) models
    if not stopped:
        try:
            _model(rt).model_validate(resource)
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            if hasattr(exc, "errors"):
                seen: set[str] = set()
                lists: set[str] = set()
                for _, expr, _ in found:
                    _remember(expr, seen, lists)
                for issue in _model_issues(exc, resource, rt):
                    if len(found) >= _COLLECT:
                        extra += 1
                    elif _is_new(issue, seen, lists):
                        found.append(issue)
                        _remember(issue[1], seen, lists)
            else:
                found.append(_unexpected(rt, exc))
        except Exception as exc:  # a model bug must still be a 4xx, not a 500
            found.append(_unexpected(rt, exc))
    if not found:
        return resource
    issues = [Issue(code, text, (expr,), kind="invalid-resource") for code, expr, text in found[:MAX_ISSUES]]
    more = len(found) + extra - MAX_ISSUES
    if more > 0:
        prefix = "At least " if stopped else ""
        issues.append(Issue("structure", f"{prefix}{more} more problems were not reported"))
    raise FhirError(issues, _STATUS)


def _remember(expr: str, seen: set[str], lists: set[str]) -> None:
    seen.add(expr)
    for i, ch in enumerate(expr):
        if ch == "[":
            lists.add(expr[:i])


def _is_new(issue: tuple[str, str, str], seen: set[str], lists: set[str]) -> bool:
    """Whether a model issue adds to what was reported already (by the walk or the model)."""
    code, expr, text = issue
    if text.startswith("Unknown element"):  # always a problem of its own
        return True
    if expr in seen or (code == "structure" and expr in lists):  # same place / "bad list" of a bad item
        return False
    return not any(ch in ".[" and expr[:i] in seen for i, ch in enumerate(expr))  # inside a reported one


def _unexpected(rt: str, exc: Exception) -> tuple[str, str, str]:
    log.warning("fhir.resources failed on a %s: %s", rt, type(exc).__name__)  # its text may carry values (PHI)
    return ("structure", rt, f"The {rt} could not be validated ({type(exc).__name__})")
