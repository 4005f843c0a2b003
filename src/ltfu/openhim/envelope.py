"""Answer in OpenHIM's mediator format (``application/json+openhim``) when the request came through core.

``OpenHIMEnvelopeMiddleware(app, settings)`` wraps an ASGI app (the API's pipeline does the same inline).
Whether a request is enveloped is decided per request from ``settings.openhim_envelope`` (which the console
may change at run time):

- ``auto``: when the request carries ``X-OpenHIM-TransactionID`` (core adds it to every routed request);
- ``always`` / ``never``.

The downstream response becomes::

    {"x-mediator-urn": ..., "status": "Successful" | "Completed" | "Failed" | ...,
     "response": {"status": 201, "headers": {...}, "body": "<string>", "timestamp": "...Z"},
     "orchestrations": [...], "properties": {"k": "v"}, "error"?: {...}}

Core requires every body to be a string (an object body breaks its message store) and reads only
``response.status`` (the HTTP status of our reply is ignored). HEAD requests, compressed or non-UTF-8
responses and non-HTTP scopes pass through untouched.

During an enveloped request, the rest of the code reports what it did upstream with
``record_orchestration(name, request, response)`` (a store write, a CHT call) and adds key facts with
``set_property(key, value)`` (case id, patient id). Outside such a request both are cheap no-ops.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from ltfu.openhim.auth import js_iso
from ltfu.openhim.mediator import URN
from ltfu.settings import Settings

CONTENT_TYPE = "application/json+openhim"
TRANSACTION_HEADER = b"x-openhim-transactionid"

# Values core accepts in the transaction's ``status`` (``Pending Async`` from 8.3).
TRANSACTION_STATUSES = frozenset(
    {"Processing", "Failed", "Completed", "Successful", "Completed with error(s)", "Pending Async"}
)

# Never copied into an orchestration: OpenHIM stores orchestrations and shows them in the console.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"})
REDACTED = "**redacted**"


@dataclass
class _Exchange:
    orchestrations: list[dict[str, Any]] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    status: str | None = None
    error: dict[str, str] | None = None
    open: bool = True


_current: ContextVar[_Exchange | None] = ContextVar("ltfu_openhim_exchange", default=None)


def _active() -> _Exchange | None:
    ex = _current.get()
    return ex if ex is not None and ex.open else None


def in_openhim_request() -> bool:
    """True while handling a request whose response will be enveloped."""
    return _active() is not None


def _now() -> str:
    return js_iso(datetime.now(UTC))


def body_text(body: Any) -> str:
    """Any body as the string OpenHIM needs: JSON for dicts/lists, UTF-8 or base64 for bytes."""
    if body is None:
        return ""
    if isinstance(body, str):
        return body
    if isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if isinstance(body, dict | list | int | float | bool):
        try:
            return orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # what orjson cannot say (an integer past 64 bits): the stdlib can
            return json.dumps(body, separators=(",", ":"), default=str)
    return str(body)


def _timestamp(value: Any) -> str:
    if value is None:
        return _now()
    if isinstance(value, datetime):
        return js_iso(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, int | float):
        return js_iso(datetime.fromtimestamp(value, UTC))
    return str(value)


def _headers(headers: Any) -> dict[str, str]:
    if not headers:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for k, v in items:
        name = (k.decode("latin-1") if isinstance(k, bytes) else str(k)).lower()
        # MongoDB field names: no "." nor leading "$" (core escapes only top-level headers).
        name = name.replace(".", "_").replace("$", "_")
        value = REDACTED if name in _SECRET_HEADERS else (v.decode("latin-1") if isinstance(v, bytes) else str(v))
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def orchestration(
    name: str,
    request: Mapping[str, Any],
    response: Mapping[str, Any] | None = None,
    *,
    error: str | BaseException | None = None,
    group: str | None = None,
) -> dict[str, Any]:
    """Normalise one upstream call into OpenHIM's orchestration shape (all bodies strings).

    ``request`` keys: ``method``, ``url`` (or ``host``/``port``/``path``/``querystring``), ``headers``,
    ``body``, ``timestamp``. ``response`` keys: ``status``, ``headers``, ``body``, ``timestamp``.
    Secret headers (Authorization, Cookie, ...) are redacted.
    """
    req: dict[str, Any] = {}
    url = request.get("url")
    if url:
        parts = urlsplit(str(url))
        req["host"] = parts.hostname or ""
        req["port"] = parts.port or (443 if parts.scheme == "https" else 80)
        req["path"] = parts.path or "/"
        req["querystring"] = parts.query
    for key in ("host", "path", "querystring"):
        if key in request:
            req[key] = str(request[key])
    if "port" in request and request["port"] is not None:
        req["port"] = int(request["port"])
    req["method"] = str(request.get("method", "GET")).upper()
    req["headers"] = _headers(request.get("headers"))
    req["body"] = body_text(request.get("body"))
    req["timestamp"] = _timestamp(request.get("timestamp"))
    orch: dict[str, Any] = {"name": str(name), "request": req}
    if group:
        orch["group"] = group
    if response is not None:
        status = response.get("status")
        orch["response"] = {
            "status": int(status) if status is not None else 0,
            "headers": _headers(response.get("headers")),
            "body": body_text(response.get("body")),
            "timestamp": _timestamp(response.get("timestamp")),
        }
    if error is not None:
        orch["error"] = {"message": str(error) or type(error).__name__}
    return orch


def record_orchestration(
    name: str,
    request: Mapping[str, Any],
    response: Mapping[str, Any] | None = None,
    *,
    error: str | BaseException | None = None,
    group: str | None = None,
) -> None:
    """Report an upstream call made while handling the current request (no-op outside one)."""
    ex = _active()
    if ex is None:
        return
    ex.orchestrations.append(orchestration(name, request, response, error=error, group=group))


def set_property(key: str, value: Any) -> None:
    """Add a key fact shown with the transaction in the console (values are strings)."""
    ex = _active()
    if ex is None or value is None:
        return
    name = str(key).replace(".", "_").replace("$", "_")  # stored as MongoDB field names
    ex.properties[name] = value if isinstance(value, str) else body_text(value)


def set_transaction_status(status: str) -> None:
    """Override the status core records (otherwise derived from the response status)."""
    if status not in TRANSACTION_STATUSES:
        raise ValueError(f"not an OpenHIM transaction status: {status!r}")
    ex = _active()
    if ex is not None:
        ex.status = status


def set_retryable_error(message: str) -> None:
    """Report a transient failure: core records it and queues the transaction for auto-retry."""
    ex = _active()
    if ex is not None:
        ex.error = {"message": message}


def derived_status(http_status: int) -> str:
    """What core computes for a primary route without secondaries."""
    if 200 <= http_status < 300:
        return "Successful"
    if http_status >= 500:
        return "Failed"
    return "Completed"


def response_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """ASGI response headers → OpenHIM ``response.headers`` (``set-cookie`` as a string array)."""
    out: dict[str, Any] = {}
    cookies: list[str] = []
    for k, v in raw:
        name = k.decode("latin-1").lower()
        value = v.decode("latin-1")
        if name == "content-length":
            continue  # core recomputes it; ours would describe the envelope anyway
        if name == "set-cookie":
            cookies.append(value)
        elif name in out:
            out[name] = f"{out[name]}, {value}"
        else:
            out[name] = value
    if cookies:
        out["set-cookie"] = cookies
    return out


def envelope(
    status: int,
    headers: dict[str, Any],
    body: str,
    *,
    orchestrations: list[dict[str, Any]] | None = None,
    properties: dict[str, str] | None = None,
    transaction_status: str | None = None,
    error: dict[str, str] | None = None,
    urn: str = URN,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "x-mediator-urn": urn,
        "status": transaction_status or derived_status(status),
        "response": {"status": status, "headers": headers, "body": body, "timestamp": _now()},
        "orchestrations": orchestrations or [],
        "properties": properties or {},
    }
    if error:
        doc["error"] = error
    return doc


def wanted(settings: Settings, method: str, has_transaction_header: bool) -> bool:
    """Whether this request's response is enveloped (``settings.openhim_envelope``, read per request)."""
    mode = settings.openhim_envelope
    if mode == "never" or method == "HEAD":
        return False
    return mode == "always" or has_transaction_header


def has_transaction_header(headers: Any) -> bool:
    return any(k.lower() == TRANSACTION_HEADER for k, _ in headers)


def open_exchange() -> tuple[_Exchange, Any]:
    """Start collecting orchestrations and properties for the current request (see :func:`close_exchange`)."""
    exchange = _Exchange()
    return exchange, _current.set(exchange)


def close_exchange(exchange: _Exchange, token: Any) -> None:
    exchange.open = False
    _current.reset(token)


async def send_enveloped(
    send: Any, start: dict[str, Any] | None, chunks: list[bytes], exchange: _Exchange, urn: str = URN
) -> None:
    """Send the captured downstream response (``start`` and its body ``chunks``) wrapped in the envelope."""
    if start is None:
        raise RuntimeError("the application sent no response")
    raw = b"".join(chunks)
    raw_headers = [(bytes(k), bytes(v)) for k, v in start.get("headers", [])]
    status = int(start["status"])
    encoded = any(k.lower() == b"content-encoding" for k, _ in raw_headers)
    # already enveloped (the middleware mounted twice) → as it is
    encoded = encoded or any(
        k.lower() == b"content-type" and CONTENT_TYPE.encode() in v.lower() for k, v in raw_headers
    )
    try:
        text = None if encoded else raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None:  # cannot be carried faithfully as a string: let it through as it is
        await send(start)
        await send({"type": "http.response.body", "body": raw})
        return
    headers = response_headers(raw_headers)
    if text and "content-type" not in headers:
        headers["content-type"] = "text/plain; charset=utf-8"
    doc = envelope(
        status,
        headers,
        text,
        orchestrations=exchange.orchestrations,
        properties=exchange.properties,
        transaction_status=exchange.status,
        error=exchange.error,
        urn=urn,
    )
    payload = orjson.dumps(doc)  # strings, numbers and containers only: nothing orjson refuses
    outer = status if 200 <= status < 600 and status not in (204, 304) else 200
    await send(
        {
            "type": "http.response.start",
            "status": outer,
            "headers": [
                (b"content-type", CONTENT_TYPE.encode()),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class OpenHIMEnvelopeMiddleware:
    """ASGI middleware: wrap responses into ``application/json+openhim`` (see module docstring).

    The API's own pipeline (:mod:`ltfu.api.asgi`) does this inline with the same functions.
    """

    def __init__(self, app: Any, settings: Settings, *, urn: str = URN) -> None:
        self.app = app
        self.settings = settings
        self.urn = urn

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not wanted(
            self.settings, scope.get("method", ""), has_transaction_header(scope.get("headers", ()))
        ):
            await self.app(scope, receive, send)
            return
        exchange, token = open_exchange()
        start: dict[str, Any] | None = None
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))

        try:
            await self.app(scope, receive, capture)
        finally:
            close_exchange(exchange, token)
        await send_enveloped(send, start, chunks, exchange, self.urn)
