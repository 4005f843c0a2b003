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


CRASH_BODY = orjson.dumps(FhirError([Issue("exception", "Internal error; see the server log")], 500).outcome())
CRASH_START = {
    "type": "http.response.start",
    "status": 500,
    "headers": [
        (b"content-type", b"application/fhir+json; charset=utf-8"),
        (b"content-length", str(len(CRASH_BODY)).encode()),
    ],
}


def report_crash(exc: BaseException, scope: Scope, original: Scope) -> None:
    """Log an unexpected exception: its type, where it happened and the route template (never the path)."""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f"{os.path.basename(frame.filename)}:{frame.lineno}" if frame else "?"
    log.error(
        "unhandled %s at %s on %s %s",
        type(exc).__name__,
        where,
        scope["method"],
        route_template(scope, original),
        exc_info=exc if os.environ.get("LTFU_DEBUG_TRACEBACKS") else None,
    )


async def send_crash(send: Send) -> None:
    """The 500 OperationOutcome (no message, no trace: both can carry request data)."""
    await send({**CRASH_START, "headers": list(CRASH_START["headers"])})
    await send({"type": "http.response.body", "body": CRASH_BODY})


class CrashGuardMiddleware:
    """The crash guard for other ASGI apps (the API's pipeline, :mod:`ltfu.api.asgi`, has it inline)."""

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
            report_crash(exc, scope, original)
            if not started:
                await send_crash(send)
