"""The API's request pipeline: one pure-ASGI layer between the server and the router.

Every HTTP request passes, from the outside in:

1. a request id (``X-Request-ID`` if the caller sent a safe one, else new; echoed in the response) on every
   log line written while it is handled, and one access line (logger ``ltfu.access``) when it is answered:
   method, route *template*, the status the client got, the time taken, and OpenHIM's
   ``X-OpenHIM-TransactionID``. Never the query string or a body: those can carry patient data;
2. the OpenHIM envelope (:mod:`ltfu.openhim.envelope`) when the request came through core: 401s too;
3. Prometheus metrics (:func:`ltfu.metrics.observe_request`): 401s and 500s too, with the status before
   enveloping;
4. the crash guard (:mod:`ltfu.api.crash_guard`): an unexpected exception becomes a 500 OperationOutcome;
5. HTTP Basic authentication (:mod:`ltfu.api.auth`), then the policy's say on who acts and whether that
   role may use this part of the API (:mod:`ltfu.api.access`);
6. the body deadline (:mod:`ltfu.api.body_deadline`);
7. the app's exception handlers (FhirError, HTTPException), as Starlette's ExceptionMiddleware would call them;

then the router, where routes with a literal path (``/mediator/service-request``...), and those whose path
parameters take known values (``/fhir/{type}`` for each type we serve), are found in a table instead of trying
every route's pattern in turn (the same route the walk would find: the table is built by asking the walk).

These were seven stacked middlewares, each wrapping ``send`` (some ``receive`` too) in a closure of its own
and scanning the headers for its own, on every request: here the headers are read once and ``send``
wrapped once.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.convertors import StringConvertor
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ltfu.api.access import actor_for
from ltfu.api.auth import OPEN_PATHS, Authenticator
from ltfu.api.body_deadline import BodyTooSlow, send_too_slow, timed_receive
from ltfu.api.crash_guard import report_crash, send_crash
from ltfu.api.mediator_routes import PREFIXES, error_body
from ltfu.fhir.outcome import FhirError
from ltfu.logs import request_ids
from ltfu.metrics import observe_request, route_template, routing_copy
from ltfu.openhim.envelope import TRANSACTION_HEADER, close_exchange, open_exchange, send_enveloped, wanted
from ltfu.settings import Settings
from ltfu.store.db import Database

log = logging.getLogger("ltfu.access")
crash_log = logging.getLogger("ltfu.api")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
FHIR_JSON = b"application/fhir+json; charset=utf-8"


def _safe_id(value: bytes | None) -> str | None:
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    return text if _SAFE_ID.match(text) else None


CLIENT_CLOSED = 499
Handlers = Mapping[Any, Callable[..., Any]]  # exception class or HTTP status -> handler(request, exc)


class _Reply:
    """The ``send`` the inner layers get: notes the status, captures the response when it is enveloped, and
    adds the request id to what goes out to the client."""

    __slots__ = ("send", "request_id", "capture", "started", "status", "sent_status", "start", "chunks")

    def __init__(self, send: Send, request_id: bytes, capture: bool) -> None:
        self.send = send
        self.request_id = request_id
        self.capture = capture
        self.started = False
        self.status = 500  # what the app answered (metrics)
        self.sent_status = 500  # what the client got (the access line)
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            self.status = message["status"]
            if self.capture:
                self.start = message
                return
        elif self.capture:
            if kind == "http.response.body":
                self.chunks.append(bytes(message.get("body", b"")))
            return
        await self.out(message)

    async def out(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.sent_status = message["status"]
            message["headers"] = [*message.get("headers", []), (b"x-request-id", self.request_id)]
        await self.send(message)


async def _send_outcome(send: Send, err: FhirError, *, mediator: bool = False) -> None:
    """An error answered by the pipeline itself: an OperationOutcome, or the PoC's error shape on its routes."""
    if mediator:
        body, headers = error_body(err), [(b"content-type", b"application/json")]
    else:
        body = orjson.dumps(err.outcome())
        headers = [(b"content-type", FHIR_JSON)]
        headers += [(k.lower().encode(), v.encode()) for k, v in (err.headers or {}).items()]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Pipeline:
    """The layers above the router, in one coroutine per request (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        db: Database,
        settings: Settings,
        authenticator: Authenticator,
        handlers: Handlers | None = None,
    ) -> None:
        self.app = app
        self.db = db
        self.settings = settings
        self.auth = authenticator
        self.body_timeout_s = settings.body_timeout_s
        handlers = handlers or {}
        self.by_status = {k: v for k, v in handlers.items() if isinstance(k, int)}
        self.by_class = {k: v for k, v in handlers.items() if not isinstance(k, int)}

    def _handler(self, exc: Exception) -> Any:
        """The app's handler for ``exc``, as Starlette's ExceptionMiddleware picks it (None: a crash)."""
        if isinstance(exc, HTTPException) and exc.status_code in self.by_status:
            return self.by_status[exc.status_code]
        return next((self.by_class[c] for c in type(exc).__mro__ if c in self.by_class), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        authorization = request_id = transaction = openhim_client = None
        via_core = False
        for name, value in scope["headers"]:  # the first of each, as the client sent them
            if name == b"authorization":
                authorization = value if authorization is None else authorization
            elif name == b"x-request-id":
                request_id = value if request_id is None else request_id
            elif name == TRANSACTION_HEADER:
                via_core = True
                transaction = value if transaction is None else transaction
            elif name == b"x-openhim-clientid":
                openhim_client = value if openhim_client is None else openhim_client
        rid = _safe_id(request_id) or os.urandom(16).hex()
        ids = {"request_id": rid}
        tx = _safe_id(transaction)
        if tx:
            ids["transaction_id"] = tx
        token = request_ids.set(ids)
        original = routing_copy(scope)
        enveloped = wanted(self.settings, scope["method"], via_core)
        reply = _Reply(send, rid.encode(), enveloped)
        try:
            if enveloped:
                exchange, exchange_token = open_exchange()
            try:
                await self._handle(scope, receive, reply, original, authorization, openhim_client)
            finally:
                observe_request(scope, original, reply.status, time.perf_counter() - began)
                if enveloped:
                    close_exchange(exchange, exchange_token)
            if enveloped:
                await send_enveloped(reply.out, reply.start, reply.chunks, exchange)
        finally:
            ms = round((time.perf_counter() - began) * 1000, 1)
            log.info("%s %s %s %sms", scope["method"], route_template(scope, original), reply.sent_status, ms)
            request_ids.reset(token)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        reply: _Reply,
        original: Scope,
        authorization: bytes | None,
        openhim_client: bytes | None,
    ) -> None:
        path = scope["path"]
        try:
            if path not in OPEN_PATHS:
                try:
                    client = await self.auth.authenticate(scope, authorization)
                except FhirError as err:
                    await _send_outcome(reply, err)
                    return
                state = scope.setdefault("state", {})
                state["client"] = client
                try:
                    state["actor"] = await actor_for(
                        self.db, client, openhim_client.decode("latin-1") if openhim_client else None, path
                    )
                except FhirError as err:
                    await _send_outcome(reply, err, mediator=path.startswith(PREFIXES))
                    return
            deadline = asyncio.get_running_loop().time() + self.body_timeout_s
            timed = timed_receive(receive, deadline)
            try:
                await self.app(scope, timed, reply)
            except BodyTooSlow:
                if not reply.started:
                    await send_too_slow(reply, self.body_timeout_s)
            except ClientDisconnect:
                # the client left before its body was read: nothing was stored, nobody is left to answer, and
                # it is not a crash; 499 (nginx's "client closed request") on the access line and in metrics
                reply.status = reply.sent_status = CLIENT_CLOSED
                return
            except Exception as exc:
                handler = self._handler(exc)
                if handler is None or reply.started:  # unhandled, or too late to answer: the crash guard's
                    raise
                response = handler(Request(scope, timed), exc)
                if inspect.isawaitable(response):
                    response = await response
                exc.__traceback__ = None  # a reused exception instance would pile up tracebacks
                await response(scope, timed, reply)
        except Exception as exc:  # noqa: BLE001 - the crash guard: the catch-all by design
            report_crash(exc, scope, original)
            if not reply.started:
                await send_crash(reply)
            return
        if not reply.started:
            crash_log.error("no response from %s %s", scope["method"], route_template(scope, original))
            await send_crash(reply)


@dataclass(frozen=True, slots=True)
class Resolved:
    """Where Starlette's walk takes a request: the route, its path parameters and, when the route sits under a
    ``Mount``, that mount and the ``root_path`` it gives."""

    route: Route
    params: dict[str, Any]
    mount: Mount | None = None
    root_path: str = ""


def _walk(routes: list[BaseRoute], probe: Scope) -> Resolved | None:
    """What the walk in order finds first for ``probe``, through one level of ``Mount``; None when it ends
    anywhere else (a mount of another kind of app, a partial match only)."""
    for route in routes:
        match, child = route.matches(probe)
        if match is not Match.FULL:
            continue
        if type(route) is Route:
            return Resolved(route, child["path_params"])
        inner = route.app if type(route) is Mount else None
        # a plain router (a subclass may only add what a path without a trailing slash never meets)
        if not isinstance(inner, Router) or inner.middleware_stack != inner.app or child["path_params"]:
            return None
        found = _walk(inner.routes, {**probe, **child})
        if found is None or found.mount is not None:
            return None
        return Resolved(found.route, found.params, route, child["root_path"])
    return None


def _concrete(path: str, route: Route, known: Mapping[str, Iterable[str]]) -> list[str]:
    """The paths ``route`` matches when each of its parameters takes one of its ``known`` values."""
    names = list(route.param_convertors)
    if any(n not in known or not isinstance(route.param_convertors[n], StringConvertor) for n in names):
        return []
    return [path + route.path_format.format(**dict(zip(names, values, strict=True)))
            for values in itertools.product(*(sorted(known[n]) for n in names))]


def literal_routes(
    routes: list[BaseRoute], known: Mapping[str, Iterable[str]] | None = None
) -> dict[tuple[str, str], Resolved]:
    """(path, method) -> where the walk takes it, for the routes with a literal path, and those whose parameters
    all have ``known`` values (``/fhir/{type}`` for each type), under one level of ``Mount`` too: exactly what the
    walk in order finds first (it is asked), else the path is left to the walk."""
    if any(not isinstance(r, Route | Mount) for r in routes):
        return {}  # a Host or other route may match on more than path and method: walk
    known = known or {}
    candidates: list[tuple[str, Route]] = []
    for route in routes:
        if type(route) is Route:
            candidates += [(p, route) for p in _concrete("", route, known)]
        elif type(route) is Mount and isinstance(route.app, Router):
            for inner in route.app.routes:
                if type(inner) is Route:
                    candidates += [(p, inner) for p in _concrete(route.path, inner, known) if not p.endswith("/")]
    table: dict[tuple[str, str], Resolved] = {}
    for path, route in candidates:
        for method in route.methods or ():
            found = _walk(routes, {"type": "http", "path": path, "root_path": "", "method": method})
            if found is not None and found.route is route:
                table[(path, method)] = found
    return table


class LiteralRouter:
    """The router, with a table lookup before the walk (see :func:`literal_routes`)."""

    def __init__(self, router: Router, known: Mapping[str, Iterable[str]] | None = None) -> None:
        self.router = router
        self.table = literal_routes(router.routes, known)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            found = self.table.get((scope["path"], scope["method"]))
            if found is not None:  # what Router.app (and Mount.matches) do with a full match
                scope.setdefault("router", self.router)
                if found.mount is not None:
                    scope["app_root_path"] = scope.get("app_root_path", "")
                    scope["root_path"] = found.root_path
                route = scope["route"] = found.route
                scope["endpoint"] = route.endpoint
                scope["path_params"] = {**scope.get("path_params", {}), **found.params}
                await route.handle(scope, receive, send)
                return
        await self.router(scope, receive, send)


class Api(Starlette):
    """Starlette with :class:`Pipeline` as its middleware stack (middleware added with ``add_middleware``
    goes around it). Starlette's outermost ServerErrorMiddleware is left out: the crash guard answers; and its
    ExceptionMiddleware too: the pipeline calls the app's exception handlers. ``route_params``: the values path
    parameters are known to take, for the route table (:func:`literal_routes`)."""

    def __init__(
        self,
        *,
        pipeline: Callable[[ASGIApp, Handlers], ASGIApp],
        route_params: Mapping[str, Iterable[str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._pipeline = pipeline
        self._route_params = route_params

    def build_middleware_stack(self) -> ASGIApp:
        handlers = {k: v for k, v in self.exception_handlers.items() if k not in (500, Exception)}
        app = self._pipeline(LiteralRouter(self.router, self._route_params), handlers)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app
