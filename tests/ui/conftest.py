"""Fixtures of the dashboard tests: one seeded server per module, headless Debian Chromium, screenshots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ltfu.api.app import create_app
from ltfu.metrics import MetricsMiddleware, metrics_route
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from ltfu.ui import routes as ui_routes
from tests.conftest import LOOPBACK
from tests.support.server import ServerThread
from tests.ui.seed import Seeded, seed

ADMIN = ("admin", "admin-secret-1")
CLINIC_A = ("clinic-a", "clinic-a-secret-1")
CLINIC_B = ("clinic-b", "clinic-b-secret-1")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def build_app(settings: Settings) -> Starlette:
    """The app as ``create_app`` builds it, plus the dashboard and metrics wiring (see docs/dashboard.md)."""
    app = create_app(settings)
    app.router.routes.extend([*ui_routes.routes, metrics_route])
    app.add_middleware(MetricsMiddleware)
    return app


class Callbacks:
    """The facilities' notification receivers: facility B answers its handshake, then 400 to every
    event until ``b_ok`` is set (events wait for a handshake, so B must have shaken hands)."""

    def __init__(self) -> None:
        self.b_ok = False
        self.received: dict[str, int] = {"A": 0, "B": 0}

    def app(self) -> Starlette:
        async def receive(request: Request) -> JSONResponse:
            key = request.path_params["key"]
            body = orjson.loads(await request.body())
            params = (body.get("entry") or [{}])[0].get("resource", {}).get("parameter") or []
            handshake = {"name": "type", "valueCode": "handshake"} in params
            if key == "B" and not self.b_ok and not handshake:
                return JSONResponse({"error": "facility B is refusing"}, status_code=400)
            self.received[key] += 1
            return JSONResponse({"ok": True})
        return Starlette(routes=[Route("/cb/{key}", receive, methods=["POST", "PUT"])])


@dataclass
class UiServer:
    url: str
    settings: Settings
    seeded: Seeded
    callbacks: Callbacks

    def get(self, path: str, auth: tuple[str, str] = ADMIN, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, auth=auth, timeout=30, allow_redirects=False, **kw)

    def post(self, path: str, auth: tuple[str, str] = ADMIN, **kw: Any) -> requests.Response:
        return requests.post(self.url + path, auth=auth, timeout=30, allow_redirects=False, **kw)

    def outbox(self, **params: str) -> list[dict[str, Any]]:
        r = self.get("/admin/outbox", params={"limit": "1000", **params})
        assert r.status_code == 200, r.text
        return r.json()["items"]

    def wait(self, what: str, predicate: Any, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)


class Api:
    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.auth = ADMIN

    def __getattr__(self, method: str) -> Any:
        fn = getattr(self.session, method)
        return lambda path, **kw: fn(self.url + path, timeout=30, **kw)


async def _add_clients(settings: Settings, orgs: dict[str, str]) -> None:
    db = Database(settings)
    async with unit_of_work(db) as uow:
        await uow.clients.upsert(CLINIC_A[0], CLINIC_A[1], is_admin=False, organization_id=orgs["A"])
        await uow.clients.upsert(CLINIC_B[0], CLINIC_B[1], is_admin=False, organization_id=orgs["B"])
        await uow.clients.upsert("no-facility", "no-facility-secret-1", is_admin=False, organization_id=None)
    await db.dispose()


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    tmp = tmp_path_factory.mktemp("ui")
    settings = Settings(database_url=f"sqlite:///{tmp / 'ltfu.db'}", data_dir=tmp, admin_password=ADMIN[1],
                        workers=True, poll_interval_s=0.1, retry_initial_s=0.05, retry_max_s=0.2,
                        retry_permanent_4xx=3, retry_budget_s=30, sweep_interval_s=3600,
                        callback_allowed_networks=LOOPBACK)  # the callback server listens on loopback
    callbacks = Callbacks()
    with ServerThread(callbacks.app()) as cb, ServerThread(build_app(settings)) as srv:
        seeded = seed(Api(srv.url), cb.url)
        asyncio.run(_add_clients(settings, seeded.orgs))
        server = UiServer(srv.url, settings, seeded, callbacks)
        # B shakes hands, then its events die after 3 tries each; A's are delivered.
        server.wait("facility B's notifications to die", lambda: not [
            r for r in server.outbox(destination="notify", status="pending", organization=seeded.orgs["B"])])
        server.wait("facility A's notifications to be delivered", lambda: not [
            r for r in server.outbox(destination="notify", status="pending", organization=seeded.orgs["A"])])
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one module: Playwright's sync API holds an event loop on this thread while it runs,
    so it must be closed before tests that run their own loop (asyncio.run, async tests)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed: run scripts/setup-browser-tooling.sh")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


def new_page(browser: Any, auth: tuple[str, str] = ADMIN, *, js: bool = False, phone: bool = False,
             locale: str = "en-US") -> Any:
    """A page in a fresh context; JavaScript off by default: the dashboard must work without it.
    ``locale`` is the browser's language (its Accept-Language)."""
    options: dict[str, Any] = {"http_credentials": {"username": auth[0], "password": auth[1]},
                               "java_script_enabled": js, "accept_downloads": True, "locale": locale}
    if phone:
        options.update(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                       has_touch=True)
    else:
        options.update(viewport={"width": 1280, "height": 900})
    return browser.new_context(**options).new_page()


def screenshot(page: Any, name: str, directory: Path = ARTIFACTS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5000, f"screenshot {name} looks empty"
    return path
