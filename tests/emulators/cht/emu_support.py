"""CHT emulator tests: real uvicorn servers on loopback, a real outbound receiver (aiohttp)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
from aiohttp import web

from ltfu.emulators.cht import ChtEmulatorConfig, create_app

FIXTURES = Path(__file__).parent / "fixtures"
CHT_CONFIG = Path(__file__).resolve().parents[3] / "cht-config"
ADMIN = ("medic", "emu-admin-pass-1")
CRED_KEY = "ltfu-mediator"
CRED_SECRET = "s3cret-for-cht"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


ADMIN_AUTH = {"Authorization": basic(*ADMIN), "Accept": "application/json"}


@dataclass
class Receiver:
    """A small outbound-push receiver: records requests, fails the first ``fail_next`` ones."""

    url: str = ""
    requests: list[dict] = field(default_factory=list)
    fail_next: int = 0
    fail_status: int = 503
    failures: int = 0

    def bodies(self, path: str) -> list[dict]:
        return [r["body"] for r in self.requests if r["path"] == path]


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if rec.fail_next > 0:
            rec.fail_next -= 1
            rec.failures += 1
            return web.Response(status=rec.fail_status, text="not now")
        rec.requests.append(
            {"path": request.path, "headers": dict(request.headers), "raw": body, "body": json.loads(body)}
        )
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    rec.url = f"http://127.0.0.1:{port}"
    try:
        yield rec
    finally:
        await runner.cleanup()


def settings_file(tmp_path: Path, base_url: str, mutate: Callable[[dict], None] | None = None) -> Path:
    settings = json.loads((FIXTURES / "app_settings.json").read_text())
    for conf in settings["outbound"].values():
        conf["destination"]["base_url"] = base_url
    if mutate:
        mutate(settings)
    path = tmp_path / "app_settings.json"
    path.write_text(json.dumps(settings))
    return path


def make_config(
    tmp_path: Path, base_url: str = "http://127.0.0.1:1", *, cht_config: bool = False, **overrides: Any
) -> ChtEmulatorConfig:
    """An emulator config on the test fixture's app_settings, or with ``cht_config`` on the real
    ``cht-config/`` project (outbound pointed at ``base_url`` the way ``ltfu cht-config build`` does,
    the mediator password in the vault, the mediator user with the project's ``ltfu_mediator`` role)."""
    mutate = overrides.pop("mutate", None)
    chw = overrides.pop("chw", {})
    kwargs: dict[str, Any] = {
        "admin_password": ADMIN[1],
        "credentials": {CRED_KEY: CRED_SECRET},
        "outbound_retry_interval_s": 300.0,
        "sentinel_delay_s": 0.0,
        "timezone": "Africa/Nairobi",
        "users": [{"username": "ltfu", "password": "Mediator-pass-1", "roles": ["data_entry"]}],
    }
    if cht_config:
        kwargs.update(
            app_settings_path=CHT_CONFIG,
            mediator_url=base_url,
            mediator_credential_key=CRED_KEY,
            mediator_password=CRED_SECRET,
            credentials={},
            users=[{"username": "ltfu", "password": "Mediator-pass-1", "roles": ["ltfu_mediator"]}],
        )
    else:
        kwargs["app_settings_path"] = settings_file(tmp_path, base_url, mutate)
    kwargs.update(overrides)
    config = ChtEmulatorConfig(**kwargs)
    config.chw.first_delay_s = 0.2
    config.chw.retry_delay_s = 0.2
    config.chw.jitter_s = 0.0
    for k, v in chw.items():
        setattr(config.chw, k, v)
    return config


@dataclass
class Running:
    url: str
    app: Any
    http: aiohttp.ClientSession

    @property
    def emu(self) -> Any:
        return self.app.state.emulator

    async def call(
        self,
        method: str,
        path: str,
        *,
        auth: tuple[str, str] | None = ADMIN,
        headers: dict | None = None,
        json_body: Any = None,
        data: Any = None,
        accept_json: bool = True,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        h = {}
        if auth:
            h["Authorization"] = basic(*auth)
        if accept_json:
            h["Accept"] = "application/json"
        if json_body is not None:
            data = json.dumps(json_body)
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        async with self.http.request(
            method, self.url + path, headers=h, data=data, allow_redirects=False
        ) as resp:
            raw = await resp.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode()
            return resp.status, body, resp.headers


@contextlib.asynccontextmanager
async def serve(config: ChtEmulatorConfig) -> AsyncIterator[Running]:
    app = create_app(config)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise RuntimeError("emulator did not start")
        await asyncio.sleep(0.02)
    async with aiohttp.ClientSession() as http:
        try:
            yield Running(f"http://127.0.0.1:{port}", app, http)
        finally:
            server.should_exit = True
            await task


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def seed_area(run: Running) -> dict:
    """district > health_center (CHW area) > clinic (household) + a CHW user + a patient."""
    status, body, _ = await run.call(
        "POST", "/api/v1/places", json_body={"name": "Kisumu District", "type": "district_hospital"}
    )
    assert status == 200, body
    district = body["id"]
    status, body, _ = await run.call(
        "POST",
        "/api/v1/places",
        json_body={
            "name": "Area 1",
            "type": "health_center",
            "parent": district,
            "contact": {"name": "Wanjiru CHW", "phone": "+254700000001", "role": "chw"},
        },
    )
    assert status == 200, body
    area, chw_contact = body["id"], body["contact"]["id"]
    status, body, _ = await run.call(
        "POST", "/api/v1/places", json_body={"name": "Household 1", "type": "clinic", "parent": area}
    )
    assert status == 200, body
    household = body["id"]
    status, body, _ = await run.call(
        "POST",
        "/api/v2/users",
        json_body=[
            {
                "username": "chw1",
                "password": "Chw-pass-2024",
                "roles": ["chw"],
                "place": area,
                "contact": chw_contact,
            }
        ],
    )
    assert status == 200 and "user" in body[0], body
    status, body, _ = await run.call(
        "POST",
        "/api/v1/people",
        json_body={
            "name": "Jane Doe",
            "sex": "female",
            "date_of_birth": "1990-01-01",
            "phone": "+254700000002",
            "role": "patient",
            "place": household,
        },
    )
    assert status == 200, body
    return {
        "district": district,
        "area": area,
        "household": household,
        "chw_contact": chw_contact,
        "patient": body["id"],
    }
