"""Driving a running facility emulator over HTTP (the demo and end-to-end tests).

``FacilityClient`` is synchronous (standard library only; call it from threads or scripts);
``AsyncFacilityClient`` has the same methods as coroutines (aiohttp).

    fac = FacilityClient("http://127.0.0.1:5990")
    fac.register()                                  # Endpoint + Organization at the mediator
    fac.send_list(200, cht={"places": households})  # create the patients in CHT, send the list
    fac.wait(lambda r: r["tasks"]["terminal"] == 200, timeout=60)
    fac.report()                                    # what the facility saw
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import aiohttp


class FacilityError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"facility emulator answered {status}: {body}")
        self.status = status
        self.body = body


def _list_body(count: int | None, day: str | None, cht: dict[str, Any] | bool | None,
               population: dict[str, int] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {} if population is None else {"population": population}
    if count is not None:
        body["count"] = count
    if day is not None:
        body["day"] = day
    if cht is not None and cht is not False:
        body["cht"] = cht
    return body


class FacilityClient:
    def __init__(self, url: str, timeout_s: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            raise FacilityError(exc.code, parsed) from None

    def info(self) -> dict[str, Any]:
        return self._call("GET", "/_facility/info")

    def register(self) -> dict[str, Any]:
        """Register (or re-register) the facility at the mediator: ``{organization_id, endpoint_id, ...}``."""
        return self._call("POST", "/_facility/register", {})

    def send_list(
        self, count: int | None = None, *, day: str | None = None, cht: dict[str, Any] | bool | None = None,
        population: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """Send the day's defaulter list of ``count`` patients as one transaction. ``cht`` (``{"places":
        [household ids], "url"?, "username"?, "password"?}`` or ``True`` for the configured CHT) first
        creates the patients in CHT and puts their CHT ids in the Patients. ``population`` (``{"seed",
        "persons"}``) draws the patients from that seeded community instead, without CHT ids."""
        return self._call("POST", "/_facility/lists", _list_body(count, day, cht, population))

    def report(self) -> dict[str, Any]:
        return self._call("GET", "/_facility/report")

    def tasks(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_facility/tasks")

    def down(self, seconds: float | None = None, status: int = 503) -> dict[str, Any]:
        """Answer notifications with ``status`` for ``seconds`` (or until :meth:`up`)."""
        body: dict[str, Any] = {"status": status}
        if seconds is not None:
            body["seconds"] = seconds
        return self._call("POST", "/_facility/down", body)

    def up(self) -> dict[str, Any]:
        return self._call("POST", "/_facility/up", {})

    def recover(self) -> dict[str, Any]:
        """Fetch missing events with ``Subscription/$events``."""
        return self._call("POST", "/_facility/recover", {})

    def reset(self) -> dict[str, Any]:
        return self._call("POST", "/_facility/reset", {})

    def set_signing_secret(self, secret: str) -> dict[str, Any]:
        """Hand the emulator the signing secret the mediator issued for its subscription."""
        return self._call("POST", "/_facility/signing-secret", {"secret": secret})

    def wait(self, predicate: Callable[[dict[str, Any]], Any], timeout: float = 60.0, interval: float = 0.2) -> Any:
        """Poll the report until ``predicate(report)`` is truthy; its value (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self.report())
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError("facility report did not reach the expected state")
            time.sleep(interval)


class AsyncFacilityClient:
    def __init__(self, url: str, timeout_s: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> AsyncFacilityClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        async with self._session.request(method, self.url + path, json=body) as resp:
            raw = await resp.read()
            try:
                parsed = json.loads(raw or b"null")
            except ValueError:
                parsed = raw.decode(errors="replace")
            if resp.status >= 400:
                raise FacilityError(resp.status, parsed)
            return parsed

    async def info(self) -> dict[str, Any]:
        return await self._call("GET", "/_facility/info")

    async def register(self) -> dict[str, Any]:
        return await self._call("POST", "/_facility/register", {})

    async def send_list(
        self, count: int | None = None, *, day: str | None = None, cht: dict[str, Any] | bool | None = None
    ) -> dict[str, Any]:
        return await self._call("POST", "/_facility/lists", _list_body(count, day, cht))

    async def report(self) -> dict[str, Any]:
        return await self._call("GET", "/_facility/report")

    async def tasks(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/_facility/tasks")

    async def down(self, seconds: float | None = None, status: int = 503) -> dict[str, Any]:
        body: dict[str, Any] = {"status": status}
        if seconds is not None:
            body["seconds"] = seconds
        return await self._call("POST", "/_facility/down", body)

    async def up(self) -> dict[str, Any]:
        return await self._call("POST", "/_facility/up", {})

    async def recover(self) -> dict[str, Any]:
        return await self._call("POST", "/_facility/recover", {})

    async def reset(self) -> dict[str, Any]:
        return await self._call("POST", "/_facility/reset", {})

    async def wait(
        self, predicate: Callable[[dict[str, Any]], Any], timeout: float = 60.0, interval: float = 0.2
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(await self.report())
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError("facility report did not reach the expected state")
            await asyncio.sleep(interval)
