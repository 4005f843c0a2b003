"""The HTTP server of ``ltfu serve``: uvicorn with read deadlines and a cap on connections.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and answers 503 past
``limit_concurrency``, but sets no deadline on a request's headers: a client that opens a
connection and sends nothing, or trickles its headers a byte at a time (slowloris), would hold
its connection, and a place under the cap, forever. :class:`HeaderDeadlineProtocol` closes such a
connection. The body has its own deadline, in ASGI (:mod:`ltfu.api.body_deadline`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ltfu.settings import Settings


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """httptools protocol that closes a connection whose request headers are not complete in time.

    The clock starts when the connection opens and again at the first byte of each further
    request on it (between requests the keep-alive timeout applies).
    """

    header_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def server_config(app: Any, settings: Settings, host: str, port: int) -> uvicorn.Config:
    """The uvicorn configuration ``ltfu serve`` runs with (limits and deadlines from settings)."""
    protocol = type("LtfuHttpProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": settings.header_timeout_s})
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        timeout_keep_alive=settings.keep_alive_s,
        limit_concurrency=settings.limit_concurrency,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        server_header=False,
    )
