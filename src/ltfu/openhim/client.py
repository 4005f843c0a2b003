"""Async client of the OpenHIM core API (port 8080), for core 7.0 to 8.x.

Authentication (``auth_mode="auto"``): every request first goes with HTTP Basic only. On 401 the client
fetches the user's salt (``GET /authenticate/:email``) and retries with the legacy ``auth-*`` token
headers; a 404 there means bad credentials (in 7.2+ also: a user created with a plain password has no
token passport, so only Basic can work). The scheme that worked is kept. Basic and token headers are
never sent together (7.2+ treats any ``auth-*`` header as token-only). Core's clock is learnt from the
``ts`` of the salt response, so ``auth-ts`` stays inside core's ±10 s window even when clocks differ.

TLS is verified by default; ``verify_tls=False`` is for a self-signed development core only. A private
CA can be trusted through ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from yarl import URL

from ltfu.openhim.auth import basic_header, js_iso, parse_js_iso, token_headers

log = logging.getLogger(__name__)

AuthMode = Literal["auto", "basic", "token"]


class OpenHIMError(Exception):
    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class AuthenticationFailed(OpenHIMError):
    """Core rejected the credentials with every scheme it allows."""


class Forbidden(OpenHIMError):
    """Authenticated but not allowed (the user needs the ``admin`` group)."""


class NotFound(OpenHIMError):
    pass


class RegistrationRejected(OpenHIMError):
    """400 from ``POST /mediators``: our registration body is invalid. Retrying cannot help."""


@dataclass
class Response:
    status: int
    text: str
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.text) if self.text else None


def quote_urn(urn: str) -> str:
    """Core ``unescape()``s the urn path parameter: escape anything outside ``[A-Za-z0-9:._-]``."""
    return quote(urn, safe=":._-")


class OpenHIMClient:
    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        verify_tls: bool = True,
        auth_mode: AuthMode = "auto",
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self.verify_tls = verify_tls
        self.auth_mode: AuthMode = auth_mode
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self.scheme: Literal["basic", "token"] | None = "token" if auth_mode == "token" else None
        self._salt: str | None = None
        self._clock_offset_s = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> OpenHIMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # A cookie jar would carry core's koa session cookie between calls: not needed, and dropped.
            self._session = aiohttp.ClientSession(timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    # -- transport ---------------------------------------------------------------------------

    async def _send(self, method: str, path: str, body: Any, auth_headers: dict[str, str]) -> Response:
        headers = {"Accept": "application/json", **auth_headers}
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        url = URL(self.base_url + path, encoded=True)
        async with self._http().request(
            method, url, data=data, headers=headers, ssl=None if self.verify_tls else False
        ) as resp:
            text = await resp.text(errors="replace")
            return Response(resp.status, text, {k.lower(): v for k, v in resp.headers.items()})

    def _now_for_core(self) -> str:
        return js_iso(datetime.fromtimestamp(self._clock() + self._clock_offset_s, UTC))

    async def fetch_salt(self) -> None:
        """``GET /authenticate/:email`` (public). Learns the salt and core's clock."""
        sent = self._clock()
        resp = await self._send("GET", "/authenticate/" + quote(self.username, safe="@"), None, {})
        received = self._clock()
        if resp.status == 404:
            raise AuthenticationFailed(
                f"OpenHIM rejected user {self.username!r}: Basic failed and the user has no token "
                "credentials (unknown user or wrong password)",
                404,
                resp.text,
            )
        if resp.status != 200:
            raise OpenHIMError(f"GET /authenticate answered {resp.status}", resp.status, resp.text)
        doc = resp.json() or {}
        salt = doc.get("salt")
        if not salt:
            raise OpenHIMError("GET /authenticate answered without a salt", resp.status, resp.text)
        self._salt = salt
        ts = doc.get("ts")
        if ts:
            try:
                server = parse_js_iso(ts).timestamp()
                self._clock_offset_s = server - (sent + received) / 2
            except ValueError:
                log.warning("OpenHIM returned an unparsable ts %r; using the local clock", ts)

    async def request(self, method: str, path: str, body: Any = None) -> Response:
        """Send an authenticated API request; raises only on authentication failure."""
        if self.scheme != "token" and self.auth_mode in ("auto", "basic"):
            resp = await self._send(method, path, body, basic_header(self.username, self._password))
            if resp.status != 401:
                if self.scheme is None:
                    log.info("OpenHIM API: using HTTP Basic authentication")
                self.scheme = "basic"
                return resp
            if self.auth_mode == "basic":
                raise AuthenticationFailed("OpenHIM rejected the Basic credentials", 401, resp.text)
        # Legacy token scheme (core 7.0 default; deprecated but available through 8.x).
        if self._salt is None:
            await self.fetch_salt()
        resp = await self._send(method, path, body, self._token())
        if resp.status == 401:
            await self.fetch_salt()  # the salt may have changed (password reset), and the clock drifted
            resp = await self._send(method, path, body, self._token())
        if resp.status == 401:
            self.scheme = "token" if self.auth_mode == "token" else None
            raise AuthenticationFailed("OpenHIM rejected the credentials (Basic and token)", 401, resp.text)
        if self.scheme != "token":
            log.info("OpenHIM API: using the legacy token authentication")
        self.scheme = "token"
        return resp

    def _token(self) -> dict[str, str]:
        assert self._salt is not None
        return token_headers(self.username, self._password, self._salt, self._now_for_core())

    async def _checked(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,)) -> Response:
        resp = await self.request(method, path, body)
        if resp.status in ok:
            return resp
        if resp.status == 403:
            raise Forbidden(
                f"{method} {path}: user {self.username!r} is not allowed (needs the admin group)",
                403,
                resp.text,
            )
        if resp.status == 404:
            raise NotFound(f"{method} {path}: not found", 404, resp.text)
        raise OpenHIMError(f"{method} {path} answered {resp.status}: {resp.text[:500]}", resp.status, resp.text)

    # -- API ---------------------------------------------------------------------------------

    async def about(self) -> dict[str, Any]:
        return (await self._checked("GET", "/about")).json() or {}

    async def register(self, mediator: dict[str, Any]) -> None:
        """``POST /mediators``: 201 when created, updated or (same/lower version) ignored."""
        resp = await self.request("POST", "/mediators", mediator)
        if resp.status == 201:
            return
        if resp.status == 400:
            raise RegistrationRejected(f"OpenHIM rejected the registration: {resp.text}", 400, resp.text)
        if resp.status == 403:
            raise Forbidden(f"user {self.username!r} may not register mediators (needs admin)", 403, resp.text)
        raise OpenHIMError(f"POST /mediators answered {resp.status}: {resp.text[:500]}", resp.status, resp.text)

    async def heartbeat(self, urn: str, uptime_s: float, *, want_config: bool = False) -> dict[str, Any] | None:
        """``POST /mediators/:urn/heartbeat``. Returns the config core sent, if any.

        Core answers with the config when it changed since the last beat or when ``config: true`` is sent;
        otherwise with an empty body (or the literal ``OK`` when no config is stored). 404 → ``NotFound``:
        the mediator was deleted and must register again.
        """
        body: dict[str, Any] = {"uptime": uptime_s}
        if want_config:
            body["config"] = True
        resp = await self._checked("POST", f"/mediators/{quote_urn(urn)}/heartbeat", body)
        text = resp.text.strip()
        if not text or text == "OK":
            return None
        try:
            doc = json.loads(text)
        except ValueError:
            log.warning("OpenHIM heartbeat answered a non-JSON body: %.200s", text)
            return None
        return doc if isinstance(doc, dict) else None

    async def get_mediator(self, urn: str) -> dict[str, Any]:
        return (await self._checked("GET", f"/mediators/{quote_urn(urn)}")).json()

    async def install_channels(self, urn: str, names: list[str]) -> None:
        """``POST /mediators/:urn/channels``. Not idempotent: a duplicate name is a 500 in core."""
        await self._checked("POST", f"/mediators/{quote_urn(urn)}/channels", names, ok=(201,))

    async def channels(self) -> list[dict[str, Any]]:
        return (await self._checked("GET", "/channels")).json() or []

    async def get_metadata(self) -> dict[str, list[dict[str, Any]]]:
        doc = (await self._checked("GET", "/metadata")).json()
        if isinstance(doc, list):
            doc = doc[0] if doc else {}
        return doc or {}

    async def post_metadata(self, doc: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """``POST /metadata`` (upsert). Always 201; each item carries its own status: check them."""
        return (await self._checked("POST", "/metadata", doc, ok=(201,))).json() or []
