"""HTTP plumbing shared by the routes: bounded body reading, media types, JSON/FHIR responses."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
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
    """The request body, refusing more than ``max_body_bytes`` without reading it all."""
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


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
    return str(request.base_url).rstrip("/") + "/fhir"


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
                         {"method": request.method, "path": request.url.path},
                         {"status": status, "body": {"stored": ref}})
    set_property(resource.get("resourceType", "resource"), ref)
