"""FHIR search parameters we support: definitions, value extraction for the index, query parsing.

Pure functions; the SQL side lives in ``ltfu.store.search``.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

from ltfu.fhir.outcome import FhirError, Issue

Kind = Literal["token", "reference", "date", "string"]


@dataclass(frozen=True)
class ParamDef:
    kind: Kind
    paths: tuple[str, ...]
    target: str | None = None  # for reference params restricted to one type (e.g. ``patient``)


def _p(kind: Kind, *paths: str, target: str | None = None) -> ParamDef:
    return ParamDef(kind, paths, target)


_IDENT = _p("token", "identifier")

SEARCH_PARAMS: dict[str, dict[str, ParamDef]] = {
    "Patient": {
        "identifier": _IDENT,
        "name": _p("string", "name.family", "name.given", "name.text"),
        "family": _p("string", "name.family"),
        "given": _p("string", "name.given"),
        "birthdate": _p("date", "birthDate"),
        "gender": _p("token", "gender"),
        "organization": _p("reference", "managingOrganization"),
        "active": _p("token", "active"),
    },
    "Organization": {
        "identifier": _IDENT,
        "name": _p("string", "name", "alias"),
        "endpoint": _p("reference", "endpoint"),
        "active": _p("token", "active"),
    },
    "Endpoint": {
        "identifier": _IDENT,
        "name": _p("string", "name"),
        "organization": _p("reference", "managingOrganization"),
        "status": _p("token", "status"),
        "connection-type": _p("token", "connectionType"),
    },
    "Practitioner": {
        "identifier": _IDENT,
        "name": _p("string", "name.family", "name.given", "name.text"),
        "active": _p("token", "active"),
    },
    "ServiceRequest": {
        "identifier": _IDENT,
        "subject": _p("reference", "subject"),
        "patient": _p("reference", "subject", target="Patient"),
        "requester": _p("reference", "requester"),
        "performer": _p("reference", "performer"),
        "based-on": _p("reference", "basedOn"),
        "status": _p("token", "status"),
        "intent": _p("token", "intent"),
        "priority": _p("token", "priority"),
        "code": _p("token", "code"),
        "requisition": _p("token", "requisition"),
        "authored": _p("date", "authoredOn"),
        "occurrence": _p("date", "occurrenceDateTime", "occurrencePeriod"),
    },
    "Task": {
        "identifier": _IDENT,
        "focus": _p("reference", "focus"),
        "based-on": _p("reference", "basedOn"),
        "subject": _p("reference", "for"),
        "patient": _p("reference", "for", target="Patient"),
        "owner": _p("reference", "owner"),
        "requester": _p("reference", "requester"),
        "status": _p("token", "status"),
        "business-status": _p("token", "businessStatus"),
        "group-identifier": _p("token", "groupIdentifier"),
        "code": _p("token", "code"),
        "intent": _p("token", "intent"),
        "authored-on": _p("date", "authoredOn"),
        "modified": _p("date", "lastModified"),
    },
    "Encounter": {
        "identifier": _IDENT,
        "based-on": _p("reference", "basedOn"),
        "subject": _p("reference", "subject"),
        "patient": _p("reference", "subject", target="Patient"),
        "participant": _p("reference", "participant.individual"),
        "status": _p("token", "status"),
        "class": _p("token", "class"),
        "type": _p("token", "type"),
        "date": _p("date", "period"),
    },
    "Observation": {
        "identifier": _IDENT,
        "encounter": _p("reference", "encounter"),
        "subject": _p("reference", "subject"),
        "patient": _p("reference", "subject", target="Patient"),
        "based-on": _p("reference", "basedOn"),
        "performer": _p("reference", "performer"),
        "status": _p("token", "status"),
        "code": _p("token", "code"),
        "value-concept": _p("token", "valueCodeableConcept"),
        "date": _p("date", "effectiveDateTime", "effectivePeriod", "effectiveInstant"),
    },
    "Subscription": {
        "status": _p("token", "status"),
        "type": _p("token", "channel.type"),
        "url": _p("token", "channel.endpoint"),
        "criteria": _p("string", "criteria"),
    },
    "Appointment": {
        "identifier": _IDENT,
        "status": _p("token", "status"),
        "actor": _p("reference", "participant.actor"),
        "patient": _p("reference", "participant.actor", target="Patient"),
        "date": _p("date", "start"),
        "service-type": _p("token", "serviceType"),
    },
}

# Parameters handled by the search engine itself rather than the index.
RESULT_PARAMS = {"_count", "_summary", "_total", "_sort", "_include", "_revinclude", "_format",
                 "_elements", "_cursor", "_totalMethod", "_pretty"}
SPECIAL_PARAMS = {"_id", "_lastUpdated"}

MIN_INSTANT = "0001-01-01T00:00:00.000000Z"
MAX_INSTANT = "9999-12-31T23:59:59.999999Z"


# --------------------------------------------------------------------------- extraction

def _walk(node: Any, parts: tuple[str, ...], at: int, out: list[Any]) -> None:
    """Append to ``out`` the non-null values at ``parts[at:]`` below ``node`` (lists are flattened)."""
    while True:
        if isinstance(node, list):
            for item in node:
                if item is not None:
                    if at == len(parts):
                        out.append(item)
                    else:
                        _walk(item, parts, at, out)
            return
        if at == len(parts):
            out.append(node)
            return
        if not isinstance(node, dict):
            return
        node = node.get(parts[at])
        if node is None:
            return
        at += 1


def values_at(resource: dict[str, Any], path: str) -> list[Any]:
    out: list[Any] = []
    _walk(resource, tuple(path.split(".")), 0, out)
    return out


def normalise_reference(ref: str) -> str:
    """``http://x/fhir/Patient/1/_history/2`` and ``Patient/1`` both become ``Patient/1``."""
    if "://" in ref:
        ref = urlsplit(ref).path
    elif ref.count("/") == 1 and ref[0] != "/" and ref[-1] != "/":
        return ref  # ``Type/id``, nearly every reference: nothing to normalise
    parts = [p for p in ref.split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return "/".join(parts[-2:]) if len(parts) >= 2 else ref


def _tokens(value: Any) -> list[tuple[str | None, str]]:
    if isinstance(value, bool):
        return [(None, "true" if value else "false")]
    if isinstance(value, str):
        return [(None, value)]
    if isinstance(value, dict):
        if "coding" in value or "text" in value and "system" not in value:
            return [(c.get("system"), c["code"]) for c in value.get("coding", []) if c.get("code")]
        if "value" in value:  # Identifier, ContactPoint
            return [(value.get("system"), str(value["value"]))]
        if "code" in value:  # Coding
            return [(value.get("system"), value["code"])]
    return []


_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<time>\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def instant(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@lru_cache(maxsize=4096)  # a defaulter list repeats its dates; the ranges are pure functions of the text
def date_range(text: str) -> tuple[str, str]:
    """The instant range a FHIR date/dateTime/instant covers; timezone-less values are taken as UTC."""
    if len(text) == 27 and text[26] == "Z" and text[19] == "." and text[10] == "T" and text[4] == "-":
        # An instant as we write them (``now_instant``: every Task and case stamp, each one new to the cache):
        # it is its own range once it parses
        datetime.fromisoformat(text[:26])
        return text, text
    m = _DATE_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a FHIR date: {text!r}")
    y = int(m["y"])
    if not m["m"]:
        return instant(datetime(y, 1, 1, tzinfo=UTC)), instant(datetime(y, 12, 31, 23, 59, 59, 999999, UTC))
    mo = int(m["m"])
    if not m["d"]:
        last = calendar.monthrange(y, mo)[1]
        return (instant(datetime(y, mo, 1, tzinfo=UTC)),
                instant(datetime(y, mo, last, 23, 59, 59, 999999, UTC)))
    d = int(m["d"])
    if not m["time"]:
        return (instant(datetime(y, mo, d, tzinfo=UTC)),
                instant(datetime(y, mo, d, 23, 59, 59, 999999, UTC)))
    tz = m["tz"] or "Z"
    dt = datetime.fromisoformat(f"{m['y']}-{m['m']}-{m['d']}T{m['time']}{'+00:00' if tz == 'Z' else tz}")
    precise = "." in m["time"]
    seconds = m["time"].count(":") == 2
    hi = dt if precise else dt + (timedelta(seconds=1) if seconds else timedelta(minutes=1)) - timedelta(
        microseconds=1
    )
    return instant(dt), instant(hi)


def _dates(value: Any) -> list[tuple[str, str]]:
    try:
        if isinstance(value, str):
            return [date_range(value)]
        if isinstance(value, dict) and ("start" in value or "end" in value):
            lo = date_range(value["start"])[0] if value.get("start") else MIN_INSTANT
            hi = date_range(value["end"])[1] if value.get("end") else MAX_INSTANT
            return [(lo, hi)]
    except ValueError:
        return []
    return []


class IndexRow(NamedTuple):
    param: str
    system: str | None
    value: str
    value_hi: str | None = None


# Per resource type, each parameter's (name, kind, target, paths split once): index_rows runs for every
# resource written (a 10,000-defaulter list: 30,000 of them).
_PLANS: dict[str, tuple[tuple[str, Kind, str | None, tuple[tuple[str, ...], ...]], ...]] = {
    res_type: tuple((name, p.kind, p.target, tuple(tuple(path.split(".")) for path in p.paths))
                    for name, p in defs.items())
    for res_type, defs in SEARCH_PARAMS.items()
}


def _sort_key(row: IndexRow) -> tuple[str, str, str]:
    return row[0], row[1] or "", row[2]


def index_rows(resource: dict[str, Any]) -> list[IndexRow]:
    """Every index row for a resource, from the parameter definitions of its type."""
    rows: set[IndexRow] = set()
    add = rows.add
    for name, kind, target, paths in _PLANS.get(resource.get("resourceType", ""), ()):
        values: list[Any] = []
        for parts in paths:
            _walk(resource, parts, 0, values)
        for value in values:
            if kind == "token":
                for s, v in _tokens(value):
                    add(IndexRow(name, s, v[:512]))
            elif kind == "reference":
                ref = value.get("reference") if isinstance(value, dict) else None
                if ref:
                    ref = normalise_reference(ref)
                    if target is None or ref.startswith(target + "/"):
                        add(IndexRow(name, None, ref[:512]))
            elif kind == "date":
                for lo, hi in _dates(value):
                    add(IndexRow(name, None, lo, hi))
            elif isinstance(value, str):  # string
                add(IndexRow(name, None, value.lower()[:512]))
    return sorted(rows, key=_sort_key)


# --------------------------------------------------------------------------- query parsing

@dataclass(frozen=True)
class Criterion:
    """One ``name[:modifier]=v1,v2`` term: the values are OR-ed; criteria are AND-ed."""

    param: str
    kind: Kind | Literal["id", "lastUpdated"]
    modifier: str | None
    values: tuple[Any, ...]
    target: str | None = None


@dataclass
class SearchQuery:
    res_type: str
    criteria: list[Criterion] = field(default_factory=list)
    count: int = 50
    summary_count: bool = False
    total: bool = True
    descending: bool = False
    includes: list[tuple[str, str, str | None]] = field(default_factory=list)  # (type, param, target)
    revincludes: list[tuple[str, str]] = field(default_factory=list)  # (type, param)
    cursor: int | None = None
    ignored: list[str] = field(default_factory=list)
    echo: list[tuple[str, str]] = field(default_factory=list)  # params used, for the self link
    facility: str | None = None  # a facility client's Organization id: only that facility's data


_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MAX_COUNT = 1000


def _bad(diag: str, param: str) -> FhirError:
    return FhirError([Issue("invalid", diag, (param,), kind="invalid-search")], 400)


def _parse_token(raw: str) -> tuple[str | None, str | None, bool]:
    """-> (system, code, system_given). ``|v`` = no system; ``s|`` = any code in s."""
    if "|" in raw:
        system, code = raw.split("|", 1)
        return (system or None, code or None, True)
    return (None, raw, False)


def _parse_date(raw: str, param: str) -> tuple[str, str, str]:
    prefix = raw[:2] if raw[:2] in _PREFIXES and not raw[:2].isdigit() else "eq"
    text = raw[2:] if raw[:2] in _PREFIXES else raw
    try:
        lo, hi = date_range(text)
    except ValueError:
        raise _bad(f"Invalid date value {raw!r} for search parameter {param}", param) from None
    return prefix, lo, hi


def parse_search(res_type: str, params: list[tuple[str, str]], *, strict: bool = False,
                 default_count: int = 50) -> SearchQuery:
    """Parse query parameters; unknown ones are ignored (or a 400 with ``strict``)."""
    q = SearchQuery(res_type, count=default_count)
    defs = SEARCH_PARAMS.get(res_type, {})
    for key, raw in params:
        name, _, modifier = key.partition(":")
        modifier = modifier or None
        if name == "_count":
            try:
                q.count = max(0, min(int(raw), MAX_COUNT))
            except ValueError:
                raise _bad(f"_count must be a whole number, got {raw!r}", "_count") from None
            if q.count == 0:
                q.summary_count = True
        elif name == "_summary":
            if raw == "count":
                q.summary_count = True
            elif raw not in ("false", "true", "data", "text"):
                raise _bad(f"Unsupported _summary value {raw!r}", "_summary")
        elif name == "_total":
            q.total = raw != "none"
        elif name == "_sort":
            if raw.lstrip("-") not in ("_lastUpdated", "_id") and strict:
                raise _bad(f"Unsupported _sort {raw!r}: use _lastUpdated or -_lastUpdated", "_sort")
            q.descending = raw.startswith("-")
        elif name == "_cursor":
            try:
                q.cursor = int(raw)
            except ValueError:
                raise _bad("Invalid paging cursor", "_cursor") from None
            continue
        elif name == "_include":
            for item in raw.split(","):
                parts = item.split(":")
                if len(parts) < 2 or parts[0] != res_type or parts[1] not in SEARCH_PARAMS.get(parts[0], {}):
                    q.ignored.append(key)
                    continue
                q.includes.append((parts[0], parts[1], parts[2] if len(parts) > 2 else None))
        elif name == "_revinclude":
            for item in raw.split(","):
                parts = item.split(":")
                pdef = SEARCH_PARAMS.get(parts[0], {}).get(parts[1]) if len(parts) >= 2 else None
                if pdef is None or pdef.kind != "reference":
                    q.ignored.append(key)
                    continue
                q.revincludes.append((parts[0], parts[1]))
        elif name in RESULT_PARAMS:
            pass
        elif name == "_id":
            q.criteria.append(Criterion(name, "id", modifier, tuple(v for v in raw.split(",") if v)))
        elif name == "_lastUpdated":
            q.criteria.append(Criterion(name, "lastUpdated", modifier, (_parse_date(raw, name),)))
        elif name in defs:
            pdef = defs[name]
            if modifier and modifier not in ("exact", "contains", "missing", "not"):
                if strict:
                    raise _bad(f"Unsupported modifier :{modifier} on {name}", key)
                q.ignored.append(key)
                continue
            q.criteria.append(_criterion(name, pdef, modifier, raw))
        else:
            if strict:
                raise _bad(f"Unknown search parameter {name!r} for {res_type}", key)
            q.ignored.append(key)
            continue
        if name not in ("_cursor",):
            q.echo.append((key, raw))
    return q


def _criterion(name: str, pdef: ParamDef, modifier: str | None, raw: str) -> Criterion:
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise _bad(f":missing takes true or false, got {raw!r}", name)
        return Criterion(name, pdef.kind, modifier, (raw == "true",))
    parts = [v for v in _split_values(raw) if v != ""]
    if not parts:
        raise _bad(f"Empty value for search parameter {name}", name)
    if pdef.kind == "token":
        values: tuple[Any, ...] = tuple(_parse_token(v) for v in parts)
    elif pdef.kind == "reference":
        values = tuple(_parse_reference(v, pdef) for v in parts)
    elif pdef.kind == "date":
        values = tuple(_parse_date(v, name) for v in parts)
    else:
        values = tuple(v.lower() for v in parts)
    return Criterion(name, pdef.kind, modifier, values, pdef.target)


def _split_values(raw: str) -> list[str]:
    """Split on commas not escaped with a backslash, and unescape ``\\,`` ``\\|`` ``\\$``."""
    out, cur, esc = [], [], False
    for ch in raw:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _parse_reference(raw: str, pdef: ParamDef) -> str:
    ref = normalise_reference(raw)
    if "/" not in ref:
        return f"{pdef.target}/{ref}" if pdef.target else "*/" + ref
    return ref
