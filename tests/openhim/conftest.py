"""Fixtures for the OpenHIM tests: the core fake on loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from openhim_fake import ROOT_EMAIL, ROOT_PASSWORD, FakeOpenHIM
from openhim_servers import LoopbackServer


@dataclass
class RunningFake:
    core: FakeOpenHIM
    api: LoopbackServer
    router: LoopbackServer

    @property
    def api_url(self) -> str:
        return self.api.url

    @property
    def router_url(self) -> str:
        return self.router.url


@pytest.fixture
def start_fake() -> Iterator[Callable[..., RunningFake]]:
    """``start_fake(flavour="8", **kw)`` → a fake core with API and router servers, stopped after the test."""
    servers: list[LoopbackServer] = []

    def start(flavour: str = "8", *, with_root: bool = True, **kw: Any) -> RunningFake:
        core = FakeOpenHIM(flavour=flavour, **kw)
        if with_root:
            core.add_user(ROOT_EMAIL, ROOT_PASSWORD)
        api = LoopbackServer(core.api_app).start()
        servers.append(api)
        router = LoopbackServer(core.router_app).start()
        servers.append(router)
        return RunningFake(core, api, router)

    yield start
    for server in servers:  # ask all to exit first: their shutdowns overlap
        server.server.should_exit = True
    for server in servers:
        server.stop()
