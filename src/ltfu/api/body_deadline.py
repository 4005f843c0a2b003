"""A deadline for reading a request's body (applied by the request pipeline, :mod:`ltfu.api.asgi`).

A client that sends its headers and then trickles the body would keep the request, and a place
under the server's connection cap, for as long as it likes. Every read of the body must finish
within ``seconds`` of the request's start; past that the request is answered 408 and the
connection closed. Reads after the body is complete (waiting for a disconnect) are not limited.
"""

from __future__ import annotations

import asyncio

import orjson
from starlette.types import Message, Receive, Send

from ltfu.fhir.outcome import FhirError, Issue


class BodyTooSlow(Exception):
    """The request body did not arrive before the deadline."""


def timed_receive(receive: Receive, deadline: float) -> Receive:
    """``receive`` with every read of the body bounded by ``deadline`` (event-loop time): BodyTooSlow past it."""
    body_done = False

    async def timed() -> Message:
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

    return timed


async def send_too_slow(send: Send, seconds: float) -> None:
    """The 408 answer, closing the connection."""
    body = orjson.dumps(
        FhirError([Issue("timeout", f"The request body did not arrive within {seconds:g} s")], 408).outcome()
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
