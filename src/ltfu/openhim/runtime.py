"""The mediator's life with OpenHIM core: register until accepted, heartbeat, apply console config live.

``run_openhim(settings, stop)`` is started by the server when ``settings.openhim_url`` is set:

1. ``POST /mediators`` until 201, with exponential backoff (network errors, 5xx, 401/403 are retried
   and logged: the user may not be provisioned yet). 400 is a configuration error: it is logged and
   ``RegistrationRejected`` is raised, since retrying the same body cannot succeed.
2. If asked, installs the default channels that are missing (by name).
3. Heartbeat every ``settings.openhim_heartbeat_s``; the first beat and every ``config_every``-th ask
   for the config (``config: true``): core delivers a console change only once, so a lost response
   would otherwise lose it. A config from core is applied at once through ``LiveConfig``.
   404 (mediator deleted in the console) → register again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from pydantic import SecretStr, ValidationError

from ltfu.openhim import mediator
from ltfu.openhim.client import (
    AuthenticationFailed,
    Forbidden,
    NotFound,
    OpenHIMClient,
    OpenHIMError,
    RegistrationRejected,
)
from ltfu.settings import Settings

log = logging.getLogger(__name__)

_PROCESS_START = time.monotonic()

ConfigListener = Callable[[dict[str, Any]], None]


def _plain(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


class LiveConfig:
    """The settings OpenHIM may change at run time (the mediator's ``configDefs``).

    Applying a config from core mutates the ``Settings`` object in place (validated field by field,
    with the same rules as at start-up), so code that reads ``settings.cht_url`` etc. when it needs it
    sees the new value. Code that caches a value subscribes with ``subscribe(fn)``; ``fn`` receives
    ``{settings_field: new_value}`` with only the fields that changed.

    The effective value of each param is a function of core's latest config alone: a param that is
    absent, ``null`` or ``""`` (so secrets can stay out of OpenHIM), or whose value is invalid (logged),
    takes the value configured at start-up (environment / TOML).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._startup = {p.setting: getattr(settings, p.setting) for p in mediator.CONFIG_PARAMS}
        self._listeners: list[ConfigListener] = []
        self.applied: int = 0  # configs received from core (for /ready, metrics, tests)

    def subscribe(self, listener: ConfigListener) -> None:
        self._listeners.append(listener)

    def _validated(self, name: str, value: Any) -> Any:
        trial = self.settings.model_copy()
        type(self.settings).__pydantic_validator__.validate_assignment(trial, name, value)
        return getattr(trial, name)

    def apply(self, config: dict[str, Any]) -> dict[str, Any]:
        """Apply a full config object from core; returns the settings fields that changed."""
        self.applied += 1
        unknown = sorted(set(config) - set(mediator.CONFIG_BY_PARAM))
        if unknown:
            log.info("OpenHIM config: ignoring unknown params %s", ", ".join(unknown))
        changes: dict[str, Any] = {}
        foreign_cht = False  # the console named another CHT: the environment's password stays home
        for p in mediator.CONFIG_PARAMS:
            raw = config.get(p.param)
            wanted = self._startup[p.setting] if raw is None or raw == "" else raw
            if p.setting == "cht_password" and foreign_cht and wanted is self._startup[p.setting]:
                if wanted is not None:
                    log.warning("OpenHIM config names another CHT URL without its password: "
                                "the environment's CHT password is not sent there")
                wanted = None
            try:
                value = self._validated(p.setting, wanted)
            except ValidationError as exc:
                shown = "***" if p.type == "password" else raw
                log.warning(
                    "OpenHIM config: rejected %s=%r (%s); using the start-up value",
                    p.param,
                    shown,
                    exc.errors()[0]["msg"],
                )
                value = self._startup[p.setting]
            if p.setting == "cht_url":
                foreign_cht = value != self._startup["cht_url"]
            if _plain(value) != _plain(getattr(self.settings, p.setting)):
                setattr(self.settings, p.setting, value)
                changes[p.setting] = value
        if changes:
            log.info("OpenHIM config applied: %s", ", ".join(sorted(changes)))
            for listener in list(self._listeners):
                try:
                    listener(dict(changes))
                except Exception:  # a listener's bug must not stop the heartbeat
                    log.exception("OpenHIM config listener failed")
        return changes


async def _sleep(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop``; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


async def register_until_created(
    client: OpenHIMClient,
    body: dict[str, Any],
    stop: asyncio.Event,
    *,
    backoff_initial_s: float = 1.0,
    backoff_max_s: float = 60.0,
) -> bool:
    """Register until core answers 201. False if stopped first; raises ``RegistrationRejected`` on 400."""
    delay = backoff_initial_s
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            await client.register(body)
            log.info("Registered with OpenHIM as %s version %s", body["urn"], body["version"])
            return True
        except RegistrationRejected as exc:
            log.critical("OpenHIM rejected the mediator registration (fix the configuration): %s", exc.body)
            raise
        except (AuthenticationFailed, Forbidden) as exc:
            log.error("OpenHIM registration attempt %d: %s", attempt, exc)
        except (OpenHIMError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("OpenHIM registration attempt %d failed: %s", attempt, exc or type(exc).__name__)
        wait = delay * random.uniform(0.8, 1.2)
        delay = min(delay * 2, backoff_max_s)
        if await _sleep(stop, wait):
            break
    return False


async def run_openhim(
    settings: Settings,
    stop: asyncio.Event,
    *,
    live: LiveConfig | None = None,
    install_channels: bool = False,
    client: OpenHIMClient | None = None,
    config_every: int = 30,
    backoff_initial_s: float = 1.0,
    backoff_max_s: float = 60.0,
) -> None:
    """Register, optionally install missing default channels, then heartbeat until ``stop`` is set."""
    if not settings.openhim_url:
        raise ValueError("run_openhim needs settings.openhim_url")
    live = live or LiveConfig(settings)
    own_client = client is None
    if client is None:
        password = settings.openhim_password.get_secret_value() if settings.openhim_password else ""
        client = OpenHIMClient(
            settings.openhim_url, settings.openhim_username, password, verify_tls=settings.openhim_verify_tls
        )
    body = mediator.registration(settings)
    urn = body["urn"]

    async def register() -> bool:
        return await register_until_created(
            client, body, stop, backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s
        )

    try:
        if not await register():
            return
        if install_channels:
            from ltfu.openhim.setup import install_missing_default_channels

            try:
                installed = await install_missing_default_channels(client, settings)
                if installed:
                    log.info("Installed OpenHIM default channels: %s", ", ".join(installed))
            except (OpenHIMError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.error("Could not install the OpenHIM default channels: %s", exc)
        beat = 0
        want_config = True
        while not stop.is_set():
            try:
                config = await client.heartbeat(
                    urn, round(time.monotonic() - _PROCESS_START, 3), want_config=want_config
                )
                want_config = False
                if config is not None:
                    live.apply(config)
            except NotFound:
                log.warning("OpenHIM no longer knows mediator %s (deleted?): registering again", urn)
                if not await register():
                    return
                want_config = True
                continue
            except (AuthenticationFailed, Forbidden) as exc:
                log.error("OpenHIM heartbeat: %s", exc)
            except (OpenHIMError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("OpenHIM heartbeat failed: %s", exc or type(exc).__name__)
            beat += 1
            if beat % config_every == 0:
                want_config = True
            if await _sleep(stop, settings.openhim_heartbeat_s):
                break
    finally:
        if own_client:
            await client.close()
