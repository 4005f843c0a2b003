"""One JSON log line per request, and a request id on every log line written while it is handled.

The line has the method, the route *template*, the status and the time taken, the request id
(``X-Request-ID`` if the caller sent one, else new; echoed in the response) and OpenHIM's
``X-OpenHIM-TransactionID``. Never the query string or a body: those can carry patient data.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ltfu.logs import request_ids
from ltfu.metrics import route_template, routing_copy

log = logging.getLogger("ltfu.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _header(scope: Scope, name: bytes) -> str | None:
    value = next((v for k, v in scope["headers"] if k == name), None)
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    return text if _SAFE_ID.match(text) else None


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ids = {"request_id": _header(scope, b"x-request-id") or uuid.uuid4().hex}
        transaction = _header(scope, b"x-openhim-transactionid")
        if transaction:
            ids["transaction_id"] = transaction
        token = request_ids.set(ids)
        before = routing_copy(scope)
        status = 500
        start = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", ids["request_id"].encode())]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            ms = round((time.perf_counter() - start) * 1000, 1)
            log.info("%s %s %s %sms", scope["method"], route_template(scope, before), status, ms)
            request_ids.reset(token)
