"""Last line of defence: an unexpected exception becomes a 500 OperationOutcome.

The log line names the exception type and where it happened, never its message or a stack
trace: both can carry request data (PHI). Set LTFU_DEBUG_TRACEBACKS=1 on a developer machine to
get the full trace.
"""

from __future__ import annotations

import logging
import os
import traceback

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ltfu.fhir.outcome import FhirError, Issue
from ltfu.metrics import route_template, routing_copy

log = logging.getLogger("ltfu.api")


class CrashGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        original = routing_copy(scope)
        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - this is the catch-all by design
            frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            where = f"{os.path.basename(frame.filename)}:{frame.lineno}" if frame else "?"
            # The route template, not the path: a path carries ids.
            log.error("unhandled %s at %s on %s %s", type(exc).__name__, where, scope["method"],
                      route_template(scope, original),
                      exc_info=exc if os.environ.get("LTFU_DEBUG_TRACEBACKS") else None)
            if started:
                return
            body = orjson.dumps(FhirError([Issue("exception", "Internal error; see the server log")], 500).outcome())
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/fhir+json; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
