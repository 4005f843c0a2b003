"""run_openhim against the fake: registration with retry, heartbeat, live config, re-registration."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from openhim_fake import ROOT_EMAIL, ROOT_PASSWORD
from pydantic import SecretStr

from ltfu.openhim import mediator
from ltfu.openhim.client import RegistrationRejected
from ltfu.openhim.runtime import LiveConfig, run_openhim
from ltfu.settings import Settings


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll a condition (the runtime works in the background); fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _settings(fake, **kw) -> Settings:
    return Settings(
        openhim_url=fake.api_url,
        openhim_username=ROOT_EMAIL,
        openhim_password=SecretStr(ROOT_PASSWORD),
        openhim_heartbeat_s=0.05,
        openhim_mediator_url="http://127.0.0.1:9",
        **kw,
    )


def _beats(fake) -> list[dict]:
    return [e for e in fake.core.api_log if e["path"].endswith("/heartbeat") and e["method"] == "POST"]


# --- LiveConfig (no network) ---------------------------------------------------------------------


def test_live_config_applies_validates_and_notifies() -> None:
    settings = Settings(cht_url="https://cht.env", cht_password=SecretStr("from-env"), max_attempts=2)
    live = LiveConfig(settings)
    seen: list[dict] = []
    live.subscribe(seen.append)
    changes = live.apply(
        {"chtUrl": "https://cht.console/", "maxAttempts": 4, "notifyMode": "hapi", "chtPassword": "", "x": 1}
    )
    assert settings.cht_url == "https://cht.console"  # same validators as at start-up (trailing / stripped)
    assert settings.max_attempts == 4
    assert settings.notify_mode == "hapi"
    # "" keeps the environment's value, but never for another CHT: its password would go to that host
    assert settings.cht_password is None
    assert set(changes) == {"cht_url", "max_attempts", "notify_mode", "cht_password"}
    assert seen == [changes]
    # invalid values are refused one by one; a param that disappears goes back to the start-up value
    changes = live.apply({"maxAttempts": 0, "notifyMode": "carrier-pigeon", "chtPassword": "console-pw"})
    assert settings.max_attempts == 2 and settings.notify_mode == "backport"
    assert settings.cht_url == "https://cht.env"
    assert settings.cht_password.get_secret_value() == "console-pw"
    assert set(changes) == {"max_attempts", "notify_mode", "cht_url", "cht_password"}
    assert live.apply({"maxAttempts": 0, "notifyMode": "x", "chtPassword": "console-pw"}) == {}
    assert len(seen) == 2
    # the environment's own CHT (named or not) keeps the environment's password
    live.apply({"chtUrl": "https://cht.env", "chtPassword": ""})
    assert settings.cht_password.get_secret_value() == "from-env"


def test_default_config_registers_every_param_without_secrets() -> None:
    settings = Settings(cht_password=SecretStr("s3cret"), cht_url=None)
    config = mediator.default_config(settings)
    assert set(config) == {d["param"] for d in mediator.config_defs()}
    assert config["chtPassword"] == "" and config["chtUrl"] == ""
    assert "s3cret" not in str(mediator.registration(settings))


# --- run_openhim against the fake ----------------------------------------------------------------


async def test_registers_heartbeats_and_applies_console_config_live(start_fake) -> None:
    fake = start_fake("8")
    settings = _settings(fake)
    live = LiveConfig(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(run_openhim(settings, stop, live=live, config_every=1000))
    try:
        await until(lambda: mediator.URN in fake.core.mediators, what="registration")
        await until(lambda: len(_beats(fake)) >= 2, what="two heartbeats")
        first = fake.core.mediators[mediator.URN]
        assert first["_uptime"] >= 0
        assert live.applied == 1  # the first beat asks for the config (config: true)
        assert settings.cht_form == "interop_follow_up"
        fake.core.mediator_config_modified(mediator.URN, {**first["config"], "chtForm": "ltfu_follow_up"})
        await until(lambda: settings.cht_form == "ltfu_follow_up", what="console change applied")
        assert live.applied == 2
        # the core's heartbeat endpoint reports us up
        assert fake.core.mediators[mediator.URN]["_lastHeartbeat"] is not None
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert task.result() is None


async def test_periodic_config_request_recovers_a_lost_change(start_fake) -> None:
    fake = start_fake("8")
    settings = _settings(fake)
    stop = asyncio.Event()
    task = asyncio.create_task(run_openhim(settings, stop, config_every=3))
    try:
        await until(lambda: len(_beats(fake)) >= 1, what="first heartbeat")
        # a change whose delivery was "lost": stored, but not flagged as modified since the last beat
        m = fake.core.mediators[mediator.URN]
        m["config"] = {**m["config"], "followUpWindowDays": 21}
        await until(lambda: settings.follow_up_window_days == 21, what="periodic config: true")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_reregisters_when_core_forgets_the_mediator(start_fake) -> None:
    fake = start_fake("7.1")
    settings = _settings(fake)
    stop = asyncio.Event()
    task = asyncio.create_task(run_openhim(settings, stop))
    try:
        await until(lambda: len(_beats(fake)) >= 1, what="heartbeat")
        del fake.core.mediators[mediator.URN]  # deleted in the console
        await until(lambda: mediator.URN in fake.core.mediators, what="re-registration")
        registrations = [e for e in fake.core.api_log if e["path"] == "/mediators" and e["method"] == "POST"]
        assert [e["status"] for e in registrations] == [201, 201]
        assert any(e.get("status") == 404 for e in _beats(fake))
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_registration_is_retried_until_core_accepts(start_fake) -> None:
    fake = start_fake("8", with_root=False)  # the API user does not exist yet: 401
    settings = _settings(fake)
    stop = asyncio.Event()
    task = asyncio.create_task(run_openhim(settings, stop, backoff_initial_s=0.02, backoff_max_s=0.05))
    try:
        await until(lambda: sum(e["path"] == "/mediators" for e in fake.core.api_log) >= 3, what="retries")
        assert mediator.URN not in fake.core.mediators
        fake.core.add_user(ROOT_EMAIL, ROOT_PASSWORD)
        await until(lambda: mediator.URN in fake.core.mediators, what="registration after the user exists")
        await until(lambda: len(_beats(fake)) >= 1, what="heartbeat")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_registration_400_is_fatal(start_fake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = start_fake("8")
    monkeypatch.setattr(mediator, "package_version", lambda: "not-a-version")
    stop = asyncio.Event()
    with pytest.raises(RegistrationRejected, match="SemVer"):
        await asyncio.wait_for(run_openhim(_settings(fake), stop), 5)
    assert [e["status"] for e in fake.core.api_log if e["path"] == "/mediators"] == [400]


async def test_stop_during_backoff_ends_promptly(start_fake) -> None:
    fake = start_fake("8", with_root=False)
    stop = asyncio.Event()
    task = asyncio.create_task(run_openhim(_settings(fake), stop, backoff_initial_s=30))
    await until(lambda: any(e["path"] == "/mediators" for e in fake.core.api_log), what="first attempt")
    stop.set()
    await asyncio.wait_for(task, 2)


async def test_installs_missing_default_channels_when_asked(start_fake) -> None:
    fake = start_fake("8")
    settings = _settings(fake)
    for _ in range(2):  # the second start finds them and installs nothing (no 500 from core)
        stop = asyncio.Event()
        task = asyncio.create_task(run_openhim(settings, stop, install_channels=True))
        await until(lambda: len(_beats(fake)) >= 1, what="heartbeat")
        stop.set()
        await asyncio.wait_for(task, 5)
        fake.core.api_log.clear()
    assert sorted(c["name"] for c in fake.core.channels) == sorted(
        [mediator.CHANNEL_MEDIATOR, mediator.CHANNEL_FHIR, mediator.CHANNEL_CHT]
    )
