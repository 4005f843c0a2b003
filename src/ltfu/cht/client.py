"""CHT API client (aiohttp): Basic auth in a header, JSON only, no redirects, TLS verified by default.

CHT answers a bad password to a "human" client with a 302 to its login page, so redirects are never
followed and ``Accept: application/json`` is always sent (reference/cht.md §1).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from ltfu.cht.doc_ids import doc_path
from ltfu.cht.version import parse_version

if TYPE_CHECKING:
    from ltfu.settings import Settings


@dataclass(frozen=True)
class ChtResponse:
    status: int
    body: Any  # parsed JSON, or the text when CHT answered something else
    latency_ms: int


class ChtClient:
    def __init__(self, url: str, username: str | None, password: str | None, *, verify_tls: bool = True,
                 timeout_s: float = 30.0, max_concurrency: int = 8, max_rate_per_s: float = 20.0,
                 version: str | None = None) -> None:
        self.url = url.rstrip("/")
        self._auth = aiohttp.BasicAuth(username, password or "") if username else None
        self._verify = verify_tls
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._limit = asyncio.Semaphore(max_concurrency)
        self._interval = 1.0 / max_rate_per_s
        self._next_slot = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._version = parse_version(version) if version else None

    @classmethod
    def from_settings(cls, settings: Settings) -> ChtClient:
        assert settings.cht_url
        return cls(settings.cht_url, settings.cht_username,
                   settings.cht_password.get_secret_value() if settings.cht_password else None,
                   verify_tls=settings.cht_verify_tls, timeout_s=settings.cht_timeout_s,
                   max_concurrency=settings.cht_max_concurrency, max_rate_per_s=settings.cht_max_rate_per_s,
                   version=settings.cht_version)

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, auth=self._auth,
                connector=aiohttp.TCPConnector(ssl=None if self._verify else False, limit=32),
                headers={"Accept": "application/json", "User-Agent": "ltfu-mediator"},
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    async def request(self, method: str, path: str, body: Any = None) -> ChtResponse:
        session = await self._client()
        data = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        async with self._limit:
            await self._pace()
            start = time.perf_counter()
            async with session.request(method, self.url + path, data=data, headers=headers,
                                       allow_redirects=False) as resp:
                raw = await resp.read()
                latency = int((time.perf_counter() - start) * 1000)
        try:
            parsed: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = raw[:500].decode("utf-8", "replace")
        return ChtResponse(resp.status, parsed, latency)

    async def _pace(self) -> None:
        """Space requests at least 1/rate apart (a CHT instance also serves the CHWs' phones)."""
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)

    async def version(self) -> tuple[int, int, int] | None:
        """The cht-core version: ``LTFU_CHT_VERSION`` when set, else ``GET /api/info`` (asked until it answers,
        then kept for the life of the client). None when CHT did not say (the caller retries later)."""
        if self._version is None:
            resp = await self.request("GET", "/api/info")
            if resp.status == 200 and isinstance(resp.body, dict):
                self._version = parse_version(resp.body.get("version"))
        return self._version

    async def create_record(self, record: dict[str, Any]) -> ChtResponse:
        return await self.request("POST", "/api/v2/records", record)

    async def get_doc(self, doc_id: str) -> ChtResponse:
        return await self.request("GET", doc_path(doc_id))

    async def get_person(self, person_id: str) -> ChtResponse:
        return await self.request("GET", doc_path(person_id))

    async def find(self, selector: dict[str, Any], limit: int = 5) -> ChtResponse:
        return await self.request("POST", "/medic/_find", {"selector": selector, "limit": limit})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
