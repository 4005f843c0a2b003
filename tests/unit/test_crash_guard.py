"""The crash guard's 500: an OperationOutcome for the client, and a log line without ids or message."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from ltfu.api.crash_guard import CrashGuardMiddleware


async def _boom(request: Request) -> None:
    raise RuntimeError(f"value of {request.path_params['id']}: Wanjiku Otieno")


def _call(app: Starlette, path: str) -> tuple[int, dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": [], "scheme": "http", "server": ("t", 80), "client": ("c", 1),
             "http_version": "1.1", "asgi": {"version": "3.0"}}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], orjson.loads(body)


def test_crash_answers_outcome_and_logs_the_route_template_only(caplog: pytest.LogCaptureFixture) -> None:
    app = Starlette(routes=[Route("/fhir/Patient/{id}", _boom)])
    app.add_middleware(CrashGuardMiddleware)
    with caplog.at_level(logging.ERROR, logger="ltfu.api"):
        status, body = _call(app, "/fhir/Patient/pat-7731")
    assert status == 500 and body["resourceType"] == "OperationOutcome"
    assert "Wanjiku" not in orjson.dumps(body).decode()
    line = "\n".join(r.getMessage() for r in caplog.records)
    assert "RuntimeError" in line and "/fhir/Patient/{id}" in line
    assert "pat-7731" not in line and "Wanjiku" not in line
