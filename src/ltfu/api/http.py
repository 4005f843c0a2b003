"""HTTP plumbing shared by the routes: bounded body reading, media types, JSON/FHIR responses."""

from __future__ import annotations

import functools
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ltfu.fhir.outcome import FhirError, Issue
from ltfu.fhir.validation import parse_json
from ltfu.openhim.envelope import in_openhim_request, record_orchestration, set_property

FHIR_JSON = "application/fhir+json; charset=utf-8"
ACCEPTED_BODY_TYPES = ("application/fhir+json", "application/json", "application/json+fhir", "text/json")


class JSONResponse(Response):
    """orjson-rendered JSON (the stdlib encoder is several times slower on our payloads)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON


def fhir_error_response(err: FhirError) -> FhirResponse:
    return FhirResponse(err.outcome(), status_code=err.status, headers=err.headers or None)


async def read_body(request: Request) -> bytes:
    """The request body, refusing more than ``max_body_bytes`` without reading it all.

    Read from ``receive`` as ``request.stream()`` does, without its async generator (the body is read once:
    nothing reads it again through the request)."""
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    receive = request.receive
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif kind == "http.disconnect":
            raise ClientDisconnect()


def _too_large(limit: int) -> FhirError:
    issue = Issue("too-long", f"Request body exceeds the limit of {limit} bytes", kind="body-too-large")
    return FhirError([issue], 413)


def check_media_type(request: Request) -> None:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype and ctype not in ACCEPTED_BODY_TYPES:
        raise FhirError(
            [Issue("not-supported", f"Unsupported Content-Type {ctype!r}; send application/fhir+json",
                   kind="unsupported-media-type")], 415
        )


async def json_body(request: Request) -> Any:
    """Read, check the media type of, and parse a JSON body (FhirError on any problem)."""
    check_media_type(request)
    body = await read_body(request)
    if not body.strip():
        raise FhirError.of("required", "The request has no body")
    return parse_json(body)


def prefer_return(request: Request) -> str:
    """``Prefer: return=minimal|representation|OperationOutcome`` (default representation)."""
    for part in request.headers.get("prefer", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == "return" and value in ("minimal", "representation", "OperationOutcome"):
            return value
    return "representation"


def fhir_base(request: Request) -> str:
    """Absolute base of the FHIR API as the client sees it (for Location and paging links)."""
    public = request.app.state.settings.public_url
    if public:
        return public.rstrip("/") + "/fhir"
    scope = request.scope
    host = next((v for k, v in scope["headers"] if k == b"host"), None)
    root = scope.get("app_root_path", scope.get("root_path", ""))
    server = scope.get("server")
    return _base_url(scope.get("scheme", "http"), host, tuple(server) if server is not None else None, root)


@functools.lru_cache(maxsize=64)  # bounded: the Host header is the client's
def _base_url(scheme: str, host: bytes | None, server: tuple[str, int] | None, root: str) -> str:
    """Starlette's ``request.base_url`` for these parts of a scope, ``/fhir`` added (a URL built per request,
    several microseconds, otherwise)."""
    scope = {"type": "http", "scheme": scheme, "server": server, "root_path": root, "path": root,
             "headers": [] if host is None else [(b"host", host)]}
    return str(Request(scope).base_url).rstrip("/") + "/fhir"


def query_string(request: Request) -> str:
    """``request.url.query`` without building the URL."""
    return request.scope.get("query_string", b"").decode().partition("#")[0]


def nudge_workers(request: Request) -> None:
    """Work was just committed to the outbox: wake this process's delivery worker."""
    runtime = request.app.state.runtime
    if runtime is not None:
        runtime.nudge()


def report_write(request: Request, resource: dict[str, Any], status: int) -> None:
    """For an OpenHIM transaction: the store write as an orchestration, key ids as properties."""
    if not in_openhim_request():
        return  # nothing records them: spare building them (a tenth of the route's own CPU)
    ref = f"{resource.get('resourceType')}/{resource.get('id')}"
    record_orchestration(f"ltfu store: {request.method} {resource.get('resourceType')}",
                         {"method": request.method, "path": request.scope["path"]},
                         {"status": status, "body": {"stored": ref}})
    set_property(resource.get("resourceType", "resource"), ref)
