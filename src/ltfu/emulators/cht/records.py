"""The records API's JSON-form path: ``_meta`` checks, form lookup, field conversion, validation."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from .app_settings import Settings
from .http import ApiError, PublicError

MESSAGES_EN = {
    "sys.missing_fields": "Missing or invalid fields: {fields}.",
    "sys.incorrect_type": "Incorrect type of field {key}, expected {expectedType}.",
    "sys.facility_not_found": "Facility not found.",
    "extra_fields": "Extra fields.",
    "sys.empty": "Message appears empty.",
}

_ISO = re.compile(
    r"^([+-]?\d{4,6})(?:-?(\d{2})(?:-?(\d{2}))?)?"
    r"(?:[T ](\d{2})(?::?(\d{2})(?::?(\d{2})(?:[.,](\d{1,9}))?)?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?$"
)
_DATE_NUMBER_STRING = re.compile(r"(\d{13,})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def local_zone(name: str | None) -> tzinfo:
    if name:
        return ZoneInfo(name)
    return datetime.now().astimezone().tzinfo or UTC


def moment_value(value: Any, zone: tzinfo) -> int | None:
    """``moment(value).valueOf()`` for the inputs a JSON client sends; ``None`` where moment is NaN."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return int(value) if value == value and abs(value) < 8.64e15 else None
    if not isinstance(value, str):
        return None
    m = _ISO.match(value.strip())
    if not m:
        return None
    year, month, day, hh, mm, ss, frac, offset = m.groups()
    try:
        micro = int((frac or "0")[:6].ljust(6, "0"))
        dt = datetime(
            int(year), int(month or 1), int(day or 1), int(hh or 0), int(mm or 0), int(ss or 0), micro
        )
    except ValueError:
        return None
    if offset:
        if offset == "Z":
            dt = dt.replace(tzinfo=UTC)
        else:
            sign = -1 if offset[0] == "-" else 1
            digits = offset[1:].replace(":", "")
            minutes = int(digits[:2]) * 60 + (int(digits[2:4]) if len(digits) >= 4 else 0)
            dt = dt.replace(tzinfo=timezone(sign * timedelta(minutes=minutes)))
    else:
        dt = dt.replace(tzinfo=zone)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def _empty(v: Any) -> bool:
    return v is None or v == ""


def _js_type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "object"


def validate(definition: dict, form_data: dict) -> list[dict]:
    errors: list[dict] = []
    missing: list[str] = []
    for key, field in (definition.get("fields") or {}).items():
        field = field if isinstance(field, dict) else {}
        value = form_data.get(key)
        if field.get("required") and value is None:
            missing.append(key)
        elif value is not None and not field.get("list"):
            ftype, vtype = field.get("type"), _js_type(value)
            if ftype == "integer" and not (vtype == "number" and float(value).is_integer()):
                errors.append({"code": "sys.incorrect_type", "ctx": {"expectedType": "integer", "key": key}})
            elif ftype == "string" and vtype != "string":
                errors.append({"code": "sys.incorrect_type", "ctx": {"expectedType": "string", "key": key}})
            elif ftype == "boolean" and vtype != "boolean":
                errors.append({"code": "sys.incorrect_type", "ctx": {"expectedType": "boolean", "key": key}})
            elif ftype == "complex" and vtype != "object":
                errors.append({"code": "sys.incorrect_type", "ctx": {"expectedType": "complex", "key": key}})
    if missing:
        errors.append({"code": "sys.missing_fields", "ctx": {"fields": missing}})
    return errors


def add_error(record: dict, error: dict | str) -> None:
    if isinstance(error, str):
        error = {"code": error}
    error = dict(error)
    if "message" not in error:
        ctx = {
            k: (",".join(str(x) for x in v) if isinstance(v, list) else v)
            for k, v in (error.pop("ctx", None) or {}).items()
        }
        template = MESSAGES_EN.get(error["code"], error["code"])
        try:
            error["message"] = template.format(**ctx)
        except (KeyError, IndexError):
            error["message"] = template
    record.setdefault("errors", []).append(error)


def _merge(key: list[str], record: dict, form_data: Any) -> None:
    """smsparser.merge: dotted keys build nested objects from nested input."""
    if len(key) > 1:
        head = key.pop(0)
        sub = form_data.get(head) if isinstance(form_data, dict) else None
        if sub:
            if not isinstance(record.get(head), dict):
                record[head] = {}
            _merge(key, record[head], sub)
    else:
        if isinstance(form_data, dict) and key[0] in form_data:
            record[key[0]] = form_data[key[0]]


def _sent_timestamp(ts: Any, zone: tzinfo) -> int | None:
    if isinstance(ts, bool):
        return None
    if isinstance(ts, int | float):
        return int(ts)
    if isinstance(ts, str):
        if _DATE_NUMBER_STRING.search(ts):
            try:  # Number(ts): the whole string must be numeric
                return int(float(ts.strip()))
            except ValueError:
                return None
        return moment_value(ts, zone)
    return None


def record_from_json(body: Any, settings: Settings, zone: tzinfo) -> dict:
    """``createRecordByJSON``: the data_record (no ``_id`` yet) or an :class:`ApiError`."""
    if not isinstance(body, dict) or _empty(body.get("_meta")):
        raise PublicError("Missing _meta property.")
    meta = body["_meta"]
    if not isinstance(meta, dict) or _empty(meta.get("form")):
        raise PublicError("Missing required field: form")
    if not isinstance(meta["form"], str):
        raise ApiError(500, "Server error")  # TypeError: options.form.toUpperCase is not a function
    options = dict(meta)
    options["form"] = options["form"].upper()
    data = {k: v for k, v in body.items() if k != "_meta"}
    definition = settings.forms.get(options["form"])
    if not isinstance(definition, dict):
        raise PublicError(f"Form not found: {options['form']}")
    declared = definition.get("fields") or {}
    corrected: dict[str, Any] = {}
    for k, v in data.items():
        field = declared.get(k)
        if isinstance(field, dict):
            if field.get("type") == "date":
                v = moment_value(v, zone)
            elif field.get("type") == "boolean" and not isinstance(v, bool) and v in (1, 0):
                v = bool(v)
        corrected[k.lower()] = v

    record: dict[str, Any] = {"type": "data_record"}
    if options.get("from") is not None:
        record["from"] = options["from"]
    record.update(
        {
            "form": options["form"],
            "errors": [],
            "tasks": [],
            "fields": {},
            "reported_date": int(time.time() * 1000),
            "sms_message": options,
        }
    )
    ts = _sent_timestamp(options.get("reported_date"), zone)
    if ts:
        record["reported_date"] = ts
    if definition.get("facility_reference"):
        val = corrected.get(definition["facility_reference"])
        record["refid"] = val.upper() if isinstance(val, str) else val
    for key in declared:
        _merge(key.split("."), record["fields"], corrected)
    for err in validate(definition, corrected):
        add_error(record, err)
    return record
