"""CHT outbound push semantics in Python: ``relevant_to``, ``mapping`` and the payload hash.

Behaviour follows cht-core's documented outbound push (``shared-libs/outbound``, see
``reference/cht-tooling.md`` §3):

* ``relevant_to`` and every ``expr`` run as JavaScript in a fresh context whose only extra global is
  ``doc`` (plus a do-nothing ``console``, which V8 contexts have). We use QuickJS (quickjs-ng); there is
  no ``Intl`` and error texts differ from V8, everything else matched node's ``vm`` in our tests.
* A mapping value is a path string (required) or ``{path|expr, optional}``; ``expr`` wins when truthy.
  Paths are read like object-path 0.11 ``get({doc}, path)``: own properties only, array indexes, the
  ``length`` of strings and arrays, ``null`` on the way gives ``undefined``.
* Destination keys are dotted paths written like object-path ``set``: integer segments are numbers,
  a missing parent becomes ``[]`` when the next segment is an integer, else ``{}``.
* ``payload_hash`` is sha256 of the keys-sorted JSON (sorted by UTF-16 code unit; arrays serialised
  as JSON.stringify does, objects inside arrays keep their order) — the dedupe hash CHT stores.

JavaScript ``undefined`` is :data:`UNDEFINED` here; it is never part of a returned payload.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

import quickjs

__all__ = [
    "UNDEFINED",
    "JsError",
    "OutboundMappingError",
    "eval_js",
    "is_relevant",
    "js_json",
    "map_outbound",
    "payload_hash",
]


class _Undefined:
    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "undefined"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Any = _Undefined()


class _Opaque:
    """A JS value JSON cannot carry (function, symbol): defined, but dropped by JSON.stringify."""

    def __init__(self, js_type: str) -> None:
        self.js_type = js_type

    def __repr__(self) -> str:
        return f"<js {self.js_type}>"


class _Hole:
    """An array hole left by ``set`` past the end of an array (serialised as ``null``)."""

    def __repr__(self) -> str:
        return "<hole>"


_HOLE = _Hole()


class JsArray(list):
    """A JS array during ``set``: may carry named properties that JSON drops."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.named: dict[str, Any] = {}


class JsError(Exception):
    """A JavaScript exception thrown while evaluating ``relevant_to`` or an ``expr``."""


class OutboundMappingError(Exception):
    """The doc cannot be mapped (CHT then queues the push and retries it later)."""


# ---------------------------------------------------------------------------------------------------
# JavaScript evaluation

_WRAPPER = """
var doc = JSON.parse(%(doc)s);
globalThis.console = {log: function () {}, info: function () {}, warn: function () {},
  error: function () {}, debug: function () {}};
(function (src) {
  var v;
  try {
    v = (0, eval)(src);
  } catch (e) {
    return JSON.stringify({e: String(e)});
  }
  var t = typeof v;
  var out = {t: t, b: !!v};
  if (t !== 'undefined' && t !== 'function' && t !== 'symbol' && t !== 'bigint') {
    try { out.j = JSON.stringify(v); } catch (e) { return JSON.stringify({e: String(e)}); }
  }
  return JSON.stringify(out);
})(%(src)s)
"""

JS_TIME_LIMIT_S = 1.0
JS_MEMORY_LIMIT = 64 * 1024 * 1024


def _run(source: str, doc: Any) -> dict[str, Any]:
    ctx = quickjs.Context()
    ctx.set_time_limit(JS_TIME_LIMIT_S)
    ctx.set_memory_limit(JS_MEMORY_LIMIT)
    script = _WRAPPER % {"doc": json.dumps(js_json(doc)), "src": json.dumps(source)}
    try:
        raw = ctx.eval(script)
    except quickjs.JSException as exc:  # time or memory limit, or a syntax error in the wrapper
        raise JsError(str(exc).splitlines()[0]) from exc
    result = json.loads(raw)
    if "e" in result:
        raise JsError(result["e"])
    return result


def _source(expr: Any) -> str:
    """``vm.runInNewContext`` coerces a non-string source with String(): ``true`` -> ``'true'``."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, bool):
        return "true" if expr else "false"
    return js_json(expr)


def eval_js(expr: Any, doc: Any) -> Any:
    """Evaluate ``expr`` in a fresh context with only ``doc``; the value as JSON would carry it.

    Returns :data:`UNDEFINED` for ``undefined``; functions and symbols come back as opaque values
    (defined, dropped from JSON). Raises :class:`JsError` when the script throws.
    """
    res = _run(_source(expr), doc)
    if res["t"] == "undefined":
        return UNDEFINED
    if "j" not in res:
        return _Opaque(res["t"])
    return json.loads(res["j"])


def is_relevant(doc: dict, relevant_to: str) -> bool:
    """JS truthiness of ``relevant_to`` evaluated on the (hydrated) doc. Raises :class:`JsError`."""
    return bool(_run(_source(relevant_to), doc)["b"])


# ---------------------------------------------------------------------------------------------------
# object-path get/set


def _utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def _utf16_at(s: str, i: int) -> Any:
    units = s.encode("utf-16-le", "surrogatepass")
    if 0 <= i < len(units) // 2:
        return units[2 * i : 2 * i + 2].decode("utf-16-le", "surrogatepass")
    return UNDEFINED


_INT_KEY = re.compile(r"^(0|-?[1-9][0-9]*)$")


def _key(segment: str) -> int | str:
    """object-path's getKey: ``parseInt(k).toString() === k`` -> number."""
    if _INT_KEY.match(segment):
        n = int(segment)
        if abs(n) <= 2**53:
            return n
    return segment


def _get_own(obj: Any, key: int | str) -> Any:
    if obj is None or obj is UNDEFINED:
        return UNDEFINED
    if isinstance(obj, dict):
        return obj.get(str(key), UNDEFINED)
    if isinstance(obj, list):
        if isinstance(key, int):
            return obj[key] if 0 <= key < len(obj) else UNDEFINED
        if key == "length":
            return len(obj)
        if isinstance(obj, JsArray):
            return obj.named.get(key, UNDEFINED)
        return UNDEFINED
    if isinstance(obj, str):
        if key == "length":
            return _utf16_len(obj)
        if isinstance(key, int):
            return _utf16_at(obj, key)
    return UNDEFINED


def path_get(root: Any, path: str) -> Any:
    """``objectPath.get(root, path)`` (object-path 0.11)."""
    if not path:
        return root
    cur = root
    for segment in path.split("."):
        if cur is None or cur is UNDEFINED:
            return UNDEFINED
        cur = _get_own(cur, _key(segment))
        if cur is UNDEFINED:
            return UNDEFINED
    return cur


def path_set(target: dict, path: str, value: Any) -> None:
    """``objectPath.set(target, path, value)`` (object-path 0.11)."""
    if not path:
        return
    keys = [_key(s) for s in path.split(".")]
    obj: Any = target
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        current = _get_own(obj, key)
        if last:
            _assign(obj, key, value)
            return
        if current is UNDEFINED:
            current = JsArray() if isinstance(keys[i + 1], int) else {}
            if not _assign(obj, key, current):
                raise OutboundMappingError(f"TypeError: Cannot create property '{key}' on {_js_type(obj)}")
        obj = current


def _js_type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "object"


def _assign(obj: Any, key: int | str, value: Any) -> bool:
    if isinstance(obj, dict):
        obj[str(key)] = value
        return True
    if isinstance(obj, list):
        if isinstance(key, int) and key >= 0:
            while len(obj) <= key:
                obj.append(_HOLE)
            obj[key] = value
        elif key == "length":
            raise OutboundMappingError("RangeError: Invalid array length")
        elif isinstance(obj, JsArray):
            obj.named[str(key)] = value
        return True
    # a primitive: the assignment has no effect
    return False


# ---------------------------------------------------------------------------------------------------
# JSON as JavaScript writes it


def _is_array_index(k: str) -> bool:
    return bool(re.fullmatch(r"0|[1-9][0-9]*", k)) and int(k) < 2**32 - 1


def _js_order(d: dict) -> list[str]:
    """Own-key order of a JS object: array-index keys ascending, then the rest in insertion order."""
    idx = sorted((k for k in d if _is_array_index(k)), key=int)
    return idx + [k for k in d if not _is_array_index(k)]


def _num(x: int | float) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int) and abs(x) <= 2**53:
        return str(x)
    f = float(x)
    if math.isnan(f) or math.isinf(f):
        return "null"
    if f == 0:
        return "0"
    if f.is_integer() and abs(f) < 2**53:
        return str(int(f))
    r = repr(f)
    sign = "-" if r.startswith("-") else ""
    r = r.lstrip("-")
    mant, _, exp_s = r.partition("e")
    exp = int(exp_s) if exp_s else 0
    int_part, _, frac = mant.partition(".")
    digits = (int_part + frac).lstrip("0")
    # position of the decimal point relative to the first significant digit
    point = len(int_part) + exp if int_part != "0" else exp - (len(frac) - len(frac.lstrip("0")))
    digits = digits.rstrip("0") or "0"
    k, n = len(digits), point
    if k <= n <= 21:
        s = digits + "0" * (n - k)
    elif 0 < n <= 21:
        s = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        s = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        s = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))
    return sign + s


def _str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def js_json(value: Any, *, sort_keys: bool = False) -> str:
    """``JSON.stringify(value)`` as V8 writes it (``sort_keys``: CHT's ``orderedStringify``)."""
    if value is None or value is _HOLE:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return _num(value)
    if isinstance(value, str):
        return _str(value)
    if isinstance(value, list):
        # CHT's orderedStringify hands arrays to plain JSON.stringify: no sorting below them
        items = []
        for v in value:
            items.append("null" if v is UNDEFINED or isinstance(v, _Opaque) else js_json(v))
        return "[" + ",".join(items) + "]"
    if isinstance(value, dict):
        keys = (
            sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
            if sort_keys
            else (_js_order(value))
        )
        parts = []
        for k in keys:
            v = value[k]
            if v is UNDEFINED or isinstance(v, _Opaque):
                continue
            # orderedStringify writes `"${k}"` unescaped; JSON.stringify escapes the key
            name = f'"{k}"' if sort_keys else _str(k)
            parts.append(name + ":" + js_json(v, sort_keys=sort_keys))
        return "{" + ",".join(parts) + "}"
    if value is UNDEFINED or isinstance(value, _Opaque):
        return "null"
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def payload_hash(payload: Any) -> str:
    """sha256 hex of CHT's ``orderedStringify(JSON.parse(JSON.stringify(payload)))``."""
    sanitised = json.loads(js_json(payload))
    return hashlib.sha256(js_json(sanitised, sort_keys=True).encode("utf-8", "surrogatepass")).hexdigest()


# ---------------------------------------------------------------------------------------------------
# mapping


def _js_string(v: Any) -> str:
    """``${err}`` / String(x) for the bits we put in error messages."""
    return v if isinstance(v, str) else js_json(v)


def map_outbound(doc: dict, mapping: dict, key: str = "outbound") -> dict:
    """Map a (hydrated) CHT doc to the outbound payload, as cht-core's ``mapDocumentToPayload``.

    ``key`` is the outbound config name used in error messages. Raises :class:`OutboundMappingError`.
    The result is JSON-ready (JS key order; use :func:`js_json` for the exact request body).
    """
    out: dict = {}
    doc_id = _js_string(doc.get("_id")) if isinstance(doc, dict) and "_id" in doc else "undefined"
    for dest in _js_order(mapping):
        conf = mapping[dest]
        if isinstance(conf, str):
            path, expr, required = conf, None, True
        elif isinstance(conf, dict):
            path, expr, required = conf.get("path"), conf.get("expr"), not conf.get("optional")
        else:  # a number/boolean/null config: no path, no expr
            path, expr, required = None, None, True
        if expr:
            try:
                value = eval_js(expr, doc)
            except JsError as exc:
                raise OutboundMappingError(
                    f"Mapping error for '{key}/{dest}' JS error on source document: '{doc_id}': {exc}"
                ) from exc
        elif path:
            if not isinstance(path, str):
                path = _js_string(path)
            value = path_get({"doc": doc}, path)
        else:
            raise OutboundMappingError(
                f"Mapping error for '{key}/{dest}' either 'expr' or 'path' is required: '{doc_id}'"
            )
        if required and value is UNDEFINED:
            problem = "expr evaluated to undefined" if expr else f"cannot find '{path}' on source document"
            raise OutboundMappingError(
                f"Mapping error for '{key}/{dest}' on source document '{doc_id}': {problem}"
            )
        if value is not UNDEFINED:
            path_set(out, dest, value)
    return json.loads(js_json(out))
