"""The Mango (``_find``) subset the mediator and the PoC use, evaluated over the ``_all_docs`` order."""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson

from .http import CouchError

_MISSING = object()
NO_INDEX_WARNING = "No matching index found, create an index to optimize query time."


def _bad(reason: str, error: str = "invalid_operator") -> CouchError:
    return CouchError(400, error, reason)


def field_value(doc: Any, path: str) -> Any:
    cur = doc
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


def _rank(v: Any) -> int:
    if v is None:
        return 0
    if v is False:
        return 1
    if v is True:
        return 2
    if isinstance(v, int | float):
        return 3
    if isinstance(v, str):
        return 4
    if isinstance(v, list):
        return 5
    return 6


def collate(a: Any, b: Any) -> int:
    """CouchDB view collation (strings compared by code point, close enough to ICU for ids/codes)."""
    ra, rb = _rank(a), _rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if ra in (3, 4):
        return (a > b) - (a < b)
    if ra == 5:
        for x, y in zip(a, b, strict=False):
            c = collate(x, y)
            if c:
                return c
        return (len(a) > len(b)) - (len(a) < len(b))
    if ra == 6:
        return collate(list(a.items()), list(b.items()))
    return 0


def _type_name(v: Any) -> str:
    return ["null", "boolean", "boolean", "number", "string", "array", "object"][_rank(v)]


def _match_op(op: str, arg: Any, value: Any) -> bool:
    if op == "$exists":
        return (value is not _MISSING) == bool(arg)
    if value is _MISSING:
        return False
    if op == "$eq":
        return collate(value, arg) == 0
    if op == "$ne":
        return collate(value, arg) != 0
    if op == "$gt":
        return collate(value, arg) > 0
    if op == "$gte":
        return collate(value, arg) >= 0
    if op == "$lt":
        return collate(value, arg) < 0
    if op == "$lte":
        return collate(value, arg) <= 0
    if op in ("$in", "$nin", "$all"):
        if not isinstance(arg, list):
            raise _bad(f"Invalid operator: {op} requires an array")
        if op == "$all":
            return isinstance(value, list) and all(any(collate(v, a) == 0 for v in value) for a in arg)
        hit = any(collate(value, a) == 0 for a in arg) or (
            isinstance(value, list) and any(collate(v, a) == 0 for v in value for a in arg)
        )
        return hit if op == "$in" else not hit
    if op == "$type":
        return _type_name(value) == arg
    if op == "$regex":
        if not isinstance(arg, str):
            raise _bad("Invalid operator: $regex requires a string")
        return isinstance(value, str) and re.search(arg, value) is not None
    if op == "$size":
        return isinstance(value, list) and len(value) == arg
    if op == "$mod":
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and isinstance(arg, list)
            and len(arg) == 2
            and value % arg[0] == arg[1]
        )
    if op == "$elemMatch":
        return isinstance(value, list) and any(_matches_value(arg, v) for v in value)
    if op == "$allMatch":
        return isinstance(value, list) and bool(value) and all(_matches_value(arg, v) for v in value)
    if op == "$not":
        return not _matches_value(arg, value)
    raise _bad(f"Invalid operator: {op}")


def _matches_value(cond: Any, value: Any) -> bool:
    """``cond`` applied to one value: operators, a nested selector, or implicit ``$eq``."""
    if isinstance(cond, dict) and cond:
        if all(k.startswith("$") for k in cond):
            return all(
                matches(value, {k: v}) if k in ("$and", "$or", "$nor") else _match_op(k, v, value)
                for k, v in cond.items()
            )
        if value is _MISSING:
            return False
        return matches(value, cond)
    return _match_op("$eq", cond, value)


def matches(doc: Any, selector: Any) -> bool:
    if not isinstance(selector, dict):
        raise _bad("Selector must be a JSON object", "bad_request")
    for key, cond in selector.items():
        if key == "$and":
            if not isinstance(cond, list) or not all(matches(doc, s) for s in cond):
                return False
        elif key == "$or":
            if not isinstance(cond, list) or not any(matches(doc, s) for s in cond):
                return False
        elif key == "$nor":
            if not isinstance(cond, list) or any(matches(doc, s) for s in cond):
                return False
        elif key == "$not":
            if matches(doc, cond):
                return False
        elif key.startswith("$"):
            if not _match_op(key, cond, doc):
                return False
        elif not _matches_value(cond, field_value(doc, key)):
            return False
    return True


def project(doc: dict, fields: list[str] | None) -> dict:
    if not fields:
        return doc
    out: dict = {}
    for f in fields:
        v = field_value(doc, f)
        if v is _MISSING:
            continue
        parts = f.split(".")
        cur = out
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = v
    return out


def _encode_bookmark(last_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([last_id])).decode().rstrip("=")


def _decode_bookmark(bookmark: str) -> str | None:
    if not bookmark or bookmark == "nil":
        return None
    try:
        pad = "=" * (-len(bookmark) % 4)
        value = orjson.loads(base64.urlsafe_b64decode(bookmark + pad))
        return str(value[0])
    except (ValueError, IndexError, TypeError) as exc:
        raise _bad("Invalid bookmark value", "invalid_bookmark") from exc


def find(ids: list[str], get_doc: Any, query: Any) -> dict:
    """Run ``query`` over docs in ``_id`` order (``ids`` sorted, ``get_doc(id)``)."""
    if not isinstance(query, dict) or "selector" not in query:
        raise _bad("Missing required key: selector", "missing_required_key")
    selector = query["selector"]
    limit = query.get("limit", 25)
    skip = query.get("skip", 0)
    if not isinstance(limit, int) or limit < 0 or not isinstance(skip, int) or skip < 0:
        raise _bad("limit and skip must be non-negative integers", "bad_request")
    sort = query.get("sort")
    descending = False
    if sort:
        if not isinstance(sort, list):
            raise _bad("Invalid sort: sort must be an array", "bad_request")
        for s in sort:
            name, direction = (s, "asc") if isinstance(s, str) else next(iter(dict(s).items()))
            if name != "_id":
                raise _bad(
                    "No index exists for this sort, try indexing by the sort fields.", "no_usable_index"
                )
            descending = direction == "desc"
    fields = query.get("fields")
    after = _decode_bookmark(query.get("bookmark") or "")
    ordered = list(reversed(ids)) if descending else ids
    docs: list[dict] = []
    last_id = after
    skipped = 0
    for doc_id in ordered:
        if after is not None and (doc_id >= after if descending else doc_id <= after):
            continue
        doc = get_doc(doc_id)
        if doc is None or not matches(doc, selector):
            continue
        if skipped < skip:
            skipped += 1
            continue
        if len(docs) >= limit:
            break
        docs.append(project(doc, fields))
        last_id = doc_id
    result: dict[str, Any] = {"docs": docs, "bookmark": _encode_bookmark(last_id) if last_id else "nil"}
    result["warning"] = NO_INDEX_WARNING
    return result
