"""The request pipeline (api/asgi.py): what its one layer promises beyond the routes it calls, and the
literal-route table giving the route Starlette's walk would give."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, Router

from ltfu.api.asgi import LiteralRouter, Pipeline, literal_routes
from ltfu.settings import Settings


def _scope(path: str, headers: list[tuple[bytes, bytes]] | None = None, method: str = "GET") -> dict:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers or [],
        "scheme": "http",
        "server": ("t", 80),
        "client": ("c", 1),
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }


def _call(app: Any, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[dict, bytes]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(_scope(path, headers), receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def _crash(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("Wanjiku Otieno")


async def _silent(scope: Any, receive: Any, send: Any) -> None:
    return None


def _pipeline(inner: Any, **settings: Any) -> Pipeline:
    return Pipeline(inner, db=None, settings=Settings(**settings), authenticator=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("inner", [_crash, _silent], ids=["raises", "sends-nothing"])
def test_a_broken_route_answers_500_outcome_with_the_request_id(inner: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        start, body = _call(_pipeline(inner), "/health", [(b"x-request-id", b"rid-1")])
    assert start["status"] == 500
    assert orjson.loads(body)["resourceType"] == "OperationOutcome" and b"Wanjiku" not in body
    assert (b"x-request-id", b"rid-1") in start["headers"]
    assert not any("Wanjiku" in r.getMessage() for r in caplog.records)
    assert any(r.name == "ltfu.access" and r.getMessage().startswith("GET unmatched 500 ") for r in caplog.records)


async def _reads_body(scope: Any, receive: Any, send: Any) -> None:
    await Request(scope, receive).body()
    await PlainTextResponse("read")(scope, receive, send)


def test_a_client_that_leaves_before_its_body_is_no_crash(caplog: pytest.LogCaptureFixture) -> None:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    with caplog.at_level(logging.INFO):
        asyncio.run(_pipeline(_reads_body)(_scope("/health", method="POST"), receive, send))
    assert sent == []  # nobody to answer
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)
    assert any(r.name == "ltfu.access" and r.getMessage().startswith("POST unmatched 499 ") for r in caplog.records)


def test_through_openhim_the_500_is_enveloped_and_the_request_id_on_the_envelope() -> None:
    start, body = _call(
        _pipeline(_crash, openhim_envelope="auto"),
        "/health",
        [(b"x-openhim-transactionid", b"tx-1"), (b"x-request-id", b"rid-2")],
    )
    assert dict(start["headers"])[b"content-type"] == b"application/json+openhim"
    assert (b"x-request-id", b"rid-2") in start["headers"]
    doc = orjson.loads(body)
    assert doc["response"]["status"] == 500 and doc["status"] == "Failed"
    assert orjson.loads(doc["response"]["body"])["resourceType"] == "OperationOutcome"


class _Refusal(ValueError):
    pass


def _raising(exc: Exception, *, after_start: bool = False) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if after_start:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise exc

    return app


def test_the_apps_exception_handlers_answer_as_starlette_would_pick_them() -> None:
    """By HTTP status first for an HTTPException, else by the exception's class or its nearest base."""

    async def by_status(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("teapot", status_code=418)

    async def by_class(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse(f"{type(exc).__name__} at {request.url.path}", status_code=400)

    handlers = {418: by_status, HTTPException: by_class, ValueError: by_class}

    def call(inner: Any) -> tuple[dict, bytes]:
        app = Pipeline(inner, db=None, settings=Settings(), authenticator=None, handlers=handlers)  # type: ignore[arg-type]
        return _call(app, "/health")

    assert call(_raising(HTTPException(418)))[1] == b"teapot"
    assert call(_raising(HTTPException(404)))[1] == b"HTTPException at /health"
    start, body = call(_raising(_Refusal("no")))
    assert (start["status"], body) == (400, b"_Refusal at /health")
    assert call(_raising(KeyError("x")))[0]["status"] == 500  # no handler: the crash guard's
    # too late to answer: the response had started, nothing more is sent
    sent = _call(Pipeline(_raising(_Refusal("late"), after_start=True), db=None, settings=Settings(),  # type: ignore[arg-type]
                          authenticator=None, handlers=handlers), "/health")
    assert sent[0]["status"] == 200 and sent[1] == b""


def test_an_unsafe_request_id_is_replaced() -> None:
    start, _ = _call(_pipeline(_crash), "/health", [(b"x-request-id", b"<script>")])
    rid = dict(start["headers"])[b"x-request-id"]
    assert rid != b"<script>" and len(rid) == 32


async def by_id(request: Request) -> PlainTextResponse:
    return PlainTextResponse("by_id " + request.path_params["id"])


async def literal(request: Request) -> PlainTextResponse:
    return PlainTextResponse("literal")


def test_a_literal_route_behind_a_pattern_that_matches_it_is_left_to_the_walk() -> None:
    router = Router(
        [
            Route("/x/{id}", by_id, methods=["GET"]),
            Route("/x/new", literal, methods=["GET", "POST"]),
            Route("/y", literal, methods=["GET"]),
        ]
    )
    table = literal_routes(router.routes)
    assert ("/x/new", "GET") not in table  # the walk gives /x/{id} for GET /x/new
    assert table[("/x/new", "POST")].route.path == "/x/new" and table[("/y", "GET")].route.path == "/y"
    app = LiteralRouter(router)
    assert _call(app, "/x/new")[1] == b"by_id new"
    assert _call(app, "/y")[1] == b"literal"


async def by_type(request: Request) -> PlainTextResponse:
    s = request.scope
    return PlainTextResponse(f"by_type {request.path_params['type']} {s['root_path']} {s['route'].path}")


def test_known_parameter_values_under_a_mount_go_where_the_walk_goes() -> None:
    router = Router(
        [
            Route("/m/{type}", literal, methods=["POST"]),  # before the mount: the walk gives it POST /m/A
            Mount("/m", routes=[Route("/B", literal, methods=["GET"]), Route("/{type}", by_type, methods=["GET"])]),
        ]
    )
    table = literal_routes(router.routes, {"type": {"A", "B"}})
    assert table[("/m/A", "GET")].params == {"type": "A"} and table[("/m/A", "GET")].root_path == "/m"
    assert table[("/m/B", "GET")].route.path == "/B"  # the literal comes first in the mount
    assert table[("/m/A", "POST")].route.path == "/m/{type}" and table[("/m/A", "POST")].mount is None
    assert ("/m/C", "GET") not in table  # not a known value: walked
    app = LiteralRouter(router, {"type": {"A", "B"}})
    assert _call(app, "/m/A")[1] == b"by_type A /m /{type}"
    assert _call(app, "/m/C")[1] == b"by_type C /m /{type}"
    assert _call(app, "/m/B")[1] == b"literal"


def test_the_apps_route_table_dispatches_as_the_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every entry of the app's table gives the route, path parameters and root path that Starlette's own
    walk gives the same request (recorded at the route, without running it)."""
    from ltfu.api.app import create_app

    app = create_app(Settings())
    table_router = app.build_middleware_stack().app
    assert isinstance(table_router, LiteralRouter)
    assert ("/mediator/service-request", "POST") in table_router.table
    assert table_router.table[("/fhir/ServiceRequest", "POST")].params == {"type": "ServiceRequest"}
    seen: list[tuple[Any, ...]] = []

    async def record(route: Route, scope: dict, receive: Any, send: Any) -> None:
        seen.append((route, scope["path_params"], scope.get("root_path", ""), scope["endpoint"]))

    monkeypatch.setattr(Route, "handle", record)
    for path, method in table_router.table:
        for router in (app.router, table_router):
            scope = {**_scope(path, method=method), "app": app}
            asyncio.run(router(scope, None, None))
        walked, tabled = seen[-2:]
        assert tabled == walked, (path, method)
    assert len(seen) == 2 * len(table_router.table) > 100
