"""CHT API responses: JSON or text errors by ``Accept``, login redirects, CouchDB-style errors."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response

BASIC_REALM = 'Basic realm="Medic Web Services"'


class ApiError(Exception):
    """An error with a numeric code, rendered like cht-core's ``serverUtils.error``."""

    def __init__(self, code: int, message: Any, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class PublicError(ApiError):
    """cht-core's PublicError: a 500 ``Server error`` whose ``details`` is the message."""

    def __init__(self, message: str) -> None:
        super().__init__(500, "Server error", message)


class CouchError(Exception):
    """A CouchDB error body ``{"error", "reason"}`` (proxied ``/medic`` calls)."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """An ``/api`` answer: express labels JSON ``application/json; charset=utf-8``."""
    resp = Response(orjson.dumps(body), status_code=status, headers=headers)
    resp.headers["content-type"] = "application/json; charset=utf-8"
    return resp


def _accept_entries(header: str) -> list[tuple[str, float, int]]:
    out = []
    for i, part in enumerate(header.split(",")):
        bits = [b.strip() for b in part.split(";")]
        if not bits[0]:
            continue
        q = 1.0
        for b in bits[1:]:
            if b.startswith("q="):
                try:
                    q = float(b[2:])
                except ValueError:
                    q = 0.0
        out.append((bits[0].lower(), q, i))
    return out


def _match(candidate: str, media: str) -> int:
    """Specificity of ``media`` matching ``candidate`` (-1: no match)."""
    ctype, csub = candidate.split("/")
    mtype, _, msub = media.partition("/")
    if media == candidate:
        return 2
    if mtype == ctype and msub == "*":
        return 1
    if media in ("*/*", "*"):
        return 0
    return -1


def wants_json(request: Request) -> bool:
    """Express ``req.accepts(['text', 'json']) === 'json'``."""
    header = request.headers.get("accept")
    if not header:
        return False
    best: tuple[float, int, int, int] | None = None
    choice = None
    for pos, candidate in enumerate(("text/plain", "application/json")):
        for media, q, order in _accept_entries(header):
            spec = _match(candidate, media)
            if spec < 0 or q <= 0:
                continue
            key = (q, spec, -order, -pos)
            if best is None or key > best:
                best, choice = key, candidate
    return choice == "application/json"


def respond(request: Request, code: int, message: Any, details: Any = None) -> Response:
    if wants_json(request):
        body: dict[str, Any] = {"code": code, "error": message}
        if details is not None:
            body["details"] = details
        return json_response(body, code)
    if isinstance(message, dict) and "message" in message:
        message = message["message"]
    if not isinstance(message, str):
        message = orjson.dumps(message).decode()
    if details is not None:
        message += ": " + orjson.dumps(details).decode()
    return Response(message, status_code=code, media_type="text/plain")


def error_response(request: Request, err: ApiError, *, redirect_humans: bool = True) -> Response:
    if err.code == 401:
        return not_logged_in(request, redirect_humans=redirect_humans)
    return respond(request, err.code, err.message, err.details)


def server_error(request: Request, details: Any = None) -> Response:
    return respond(request, 500, "Server error", details)


def is_client_human(request: Request) -> bool:
    ua = request.headers.get("user-agent")
    if not ua:
        return False
    if ua.startswith("Dalvik/"):
        return not ("medic.gateway" in ua or ".collect.android" in ua)
    return True


def not_logged_in(request: Request, *, redirect_humans: bool = True) -> Response:
    """cht-core 5.2 as recorded: only a client that prefers JSON gets the 401; a human client (any
    other ``Accept``, ``*/*`` included) gets express's ``res.redirect`` to the login page."""
    if wants_json(request):
        return json_response({"code": 401, "error": "unauthorized"}, 401)
    if redirect_humans and is_client_human(request):
        url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        location = "/medic/login?" + urlencode({"redirect": url})
        headers = {"location": location, "set-cookie": "login=force; Path=/; SameSite=Lax",
                   "vary": "Accept"}
        if _prefers_html(request):
            return Response(f"<p>Found. Redirecting to {location}</p>", 302, headers=headers,
                            media_type="text/html")
        return Response(f"Found. Redirecting to {location}", 302, headers=headers, media_type="text/plain")
    headers = {"www-authenticate": BASIC_REALM}
    return Response("not logged in", 401, headers=headers, media_type="text/plain")


def _prefers_html(request: Request) -> bool:
    """Express ``res.format({text, html})``: the first of text/plain, text/html the client accepts best."""
    best: tuple[float, int, int, int] | None = None
    choice = None
    for pos, candidate in enumerate(("text/plain", "text/html")):
        for media, q, order in _accept_entries(request.headers.get("accept") or "*/*"):
            spec = _match(candidate, media)
            if spec < 0 or q <= 0:
                continue
            key = (q, spec, -order, -pos)
            if best is None or key > best:
                best, choice = key, candidate
    return choice == "text/html"


def couch_response(request: Request, body: Any, status: int = 200) -> Response:
    """CouchDB answers JSON, labelled ``application/json`` only when the client accepts it."""
    accept = request.headers.get("accept", "")
    media = "application/json" if "application/json" in accept else "text/plain; charset=utf-8"
    return Response(orjson.dumps(body) + b"\n", status_code=status, media_type=media)


def couch_error(request: Request, err: CouchError) -> Response:
    return couch_response(request, {"error": err.error, "reason": err.reason}, err.status)
