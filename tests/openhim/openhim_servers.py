"""Run ASGI apps on real loopback sockets (127.0.0.1, free port) in a background thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn


class LoopbackServer:
    """One uvicorn server in its own thread and event loop, so sync and async tests can both call it."""

    def __init__(self, app: Any, *, lifespan: str = "off") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, lifespan=lifespan, log_level="warning", access_log=False, proxy_headers=False)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"server-{self.port}", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self.sock]))
        except BaseException as exc:  # pragma: no cover - surfaced by start()
            self._error = exc

    def start(self, timeout_s: float = 10.0) -> LoopbackServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:  # readiness poll, not a timing assumption
            if self._error or not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start: {self._error!r}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
