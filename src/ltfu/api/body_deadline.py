"""A deadline for reading a request's body (pure ASGI middleware).

A client that sends its headers and then trickles the body would keep the request, and a place
under the server's connection cap, for as long as it likes. Every read of the body must finish
within ``seconds`` of the request's start; past that the request is answered 408 and the
connection closed. Reads after the body is complete (waiting for a disconnect) are not limited.
"""

from __future__ import annotations

import asyncio

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ltfu.fhir.outcome import FhirError, Issue


class BodyTooSlow(Exception):
    """The request body did not arrive before the deadline."""


class BodyDeadlineMiddleware:
    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        body_done = False
        started = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTooSlow from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, tracking_send)
        except BodyTooSlow:
            if started:
                return
            body = orjson.dumps(
                FhirError(
                    [Issue("timeout", f"The request body did not arrive within {self.seconds:g} s")], 408
                ).outcome()
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 408,
                    "headers": [
                        (b"content-type", b"application/fhir+json; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
