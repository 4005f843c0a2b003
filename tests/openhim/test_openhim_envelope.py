"""The application/json+openhim envelope middleware and the orchestration/property API."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from openhim_fake import FakeOpenHIM
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ltfu.openhim import envelope
from ltfu.openhim.envelope import (
    CONTENT_TYPE,
    OpenHIMEnvelopeMiddleware,
    in_openhim_request,
    record_orchestration,
    set_property,
    set_retryable_error,
    set_transaction_status,
)
from ltfu.openhim.mediator import URN
from ltfu.settings import Settings

TX = {"X-OpenHIM-TransactionID": "65f0c0ffee0000000000abcd"}


async def _create(request: Request) -> Response:
    body = await request.json()
    record_orchestration(
        "store: insert ServiceRequest",
        {"method": "POST", "url": "sqlite:///ltfu.db/ServiceRequest", "body": body},
        {"status": 201, "body": {"id": "sr-1"}},
    )
    record_orchestration(
        "CHT: create follow-up",
        {
            "method": "POST",
            "url": "https://cht.example.org/api/v2/records?x=1",
            "headers": {"Authorization": "Basic c2VjcmV0", "Content-Type": "application/json", "x.dot": "1"},
            "body": b'{"_meta":{"form":"interop_follow_up"}}',
        },
        {"status": 200, "headers": {"content-type": "application/json"}, "body": b"\xff\xfe"},
    )
    set_property("case id", "sr-1")
    set_property("patient.id", 42)
    response = JSONResponse({"id": "sr-1", "resourceType": "ServiceRequest"}, status_code=201)
    response.set_cookie("a", "1")
    response.set_cookie("b", "2")
    return response


async def _flag(request: Request) -> Response:
    assert in_openhim_request()
    set_transaction_status("Completed")
    set_retryable_error("CHT unavailable")
    return PlainTextResponse("later", status_code=503)


async def _binary(request: Request) -> Response:
    return Response(b"\x89PNG\r\n\x1a\n\xff", media_type="image/png")


async def _empty(request: Request) -> Response:
    return Response(status_code=204)


APP = Starlette(
    routes=[
        Route("/create", _create, methods=["POST"]),
        Route("/flag", _flag, methods=["GET"]),
        Route("/binary", _binary, methods=["GET"]),
        Route("/empty", _empty, methods=["GET", "HEAD"]),
    ]
)


async def call(app: Any, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> tuple:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    hdrs = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], hdrs, raw


def _mw(mode: str = "auto") -> tuple[OpenHIMEnvelopeMiddleware, Settings]:
    settings = Settings(openhim_envelope=mode)
    return OpenHIMEnvelopeMiddleware(APP, settings), settings


async def test_plain_response_without_openhim_header() -> None:
    app, _ = _mw("auto")
    status, headers, raw = await call(app, "POST", "/create", body=b'{"a":1}')
    assert status == 201
    assert headers["content-type"] == "application/json"
    assert json.loads(raw)["id"] == "sr-1"


async def test_enveloped_when_routed_by_openhim() -> None:
    app, _ = _mw("auto")
    status, headers, raw = await call(app, "POST", "/create", TX, b'{"a":1}')
    assert headers["content-type"] == CONTENT_TYPE
    assert int(headers["content-length"]) == len(raw)
    doc = json.loads(raw)
    assert FakeOpenHIM.store_problems(doc) == []
    assert doc["x-mediator-urn"] == URN
    assert doc["status"] == "Successful"
    inner = doc["response"]
    assert inner["status"] == 201 == status
    assert isinstance(inner["body"], str) and json.loads(inner["body"])["id"] == "sr-1"
    assert inner["headers"]["content-type"] == "application/json"
    assert "content-length" not in inner["headers"]
    cookies = inner["headers"]["set-cookie"]  # a string array, as core's setCookiesOnContext needs
    assert sorted(c.split("=", 1)[0] for c in cookies) == ["a", "b"]
    assert inner["timestamp"].endswith("Z")
    store, cht = doc["orchestrations"]
    assert store["name"] == "store: insert ServiceRequest"
    assert json.loads(store["request"]["body"]) == {"a": 1}
    assert json.loads(store["response"]["body"]) == {"id": "sr-1"}
    assert cht["request"]["host"] == "cht.example.org" and cht["request"]["port"] == 443
    assert cht["request"]["path"] == "/api/v2/records" and cht["request"]["querystring"] == "x=1"
    assert cht["request"]["headers"]["authorization"] == envelope.REDACTED
    assert "x_dot" in cht["request"]["headers"]
    assert cht["response"]["body"] == "//4="  # non-UTF-8 bytes travel as base64
    assert doc["properties"] == {"case id": "sr-1", "patient_id": "42"}


async def test_status_override_and_retryable_error() -> None:
    app, _ = _mw("auto")
    status, _, raw = await call(app, "GET", "/flag", TX)
    doc = json.loads(raw)
    assert FakeOpenHIM.store_problems(doc) == []
    assert doc["status"] == "Completed"
    assert doc["error"] == {"message": "CHT unavailable"}
    assert doc["response"]["status"] == 503 == status
    assert doc["response"]["body"] == "later"


@pytest.mark.parametrize(
    ("mode", "headers", "enveloped"),
    [
        ("never", TX, False),
        ("always", {}, True),
        ("auto", {"x-openhim-transactionid": "abc"}, True),
    ],
)
async def test_modes(mode: str, headers: dict, enveloped: bool) -> None:
    app, _ = _mw(mode)
    _, hdrs, _ = await call(app, "POST", "/create", headers, b"{}")
    assert (hdrs["content-type"] == CONTENT_TYPE) is enveloped


async def test_mode_follows_live_settings() -> None:
    app, settings = _mw("auto")
    settings.openhim_envelope = "never"  # what LiveConfig does when the console changes it
    _, hdrs, _ = await call(app, "POST", "/create", TX, b"{}")
    assert hdrs["content-type"] == "application/json"


async def test_binary_head_and_no_content() -> None:
    app, _ = _mw("always")
    _, hdrs, raw = await call(app, "GET", "/binary", TX)
    assert hdrs["content-type"] == "image/png" and raw.endswith(b"\xff")  # passed through untouched
    status, hdrs, raw = await call(app, "HEAD", "/empty", TX)
    assert status == 204 and hdrs.get("content-type") != CONTENT_TYPE
    status, hdrs, raw = await call(app, "GET", "/empty", TX)
    doc = json.loads(raw)
    assert status == 200 and doc["response"]["status"] == 204 and doc["response"]["body"] == ""


async def test_api_is_a_noop_outside_requests_and_isolated_between_them() -> None:
    record_orchestration("x", {"method": "GET", "url": "http://a/"}, {"status": 200})
    set_property("k", "v")
    set_transaction_status("Failed")
    assert not in_openhim_request()
    with pytest.raises(ValueError):
        set_transaction_status("Done")

    async def handler(request: Request) -> Response:
        n = request.path_params["n"]
        await asyncio.sleep(0)  # interleave the concurrent requests
        set_property("n", n)
        record_orchestration(f"call {n}", {"method": "GET", "url": f"http://up/{n}"}, {"status": 200})
        return PlainTextResponse(n)

    app = OpenHIMEnvelopeMiddleware(Starlette(routes=[Route("/{n}", handler)]), Settings())
    results = await asyncio.gather(*(call(app, "GET", f"/{i}", TX) for i in range(10)))
    for i, (_, _, raw) in enumerate(results):
        doc = json.loads(raw)
        assert doc["properties"] == {"n": str(i)}
        assert [o["name"] for o in doc["orchestrations"]] == [f"call {i}"]


def test_orchestration_requires_name_and_timestamp() -> None:
    o = envelope.orchestration("n", {"method": "get", "host": "h", "port": "81", "path": "/p", "body": [1]})
    assert o["request"]["method"] == "GET" and o["request"]["port"] == 81
    assert o["request"]["body"] == "[1]" and o["request"]["timestamp"].endswith("Z")
    assert "response" not in o
    assert FakeOpenHIM.store_problems({"orchestrations": [o]}) == []
    # the validator itself catches what core would choke on
    assert FakeOpenHIM.store_problems({"orchestrations": [{"name": "x", "request": {"body": {}}}]}) == [
        "orchestrations[0].request.timestamp missing",
        "orchestrations[0].request.body is not a string",
    ]
