"""Contract tests: our API client against the fake core, core-7.0 style (token only) to 8.x (Basic)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import aiohttp
import pytest
from openhim_fake import ROOT_EMAIL, ROOT_PASSWORD

from ltfu.openhim import mediator
from ltfu.openhim.auth import js_iso, token_headers
from ltfu.openhim.client import (
    AuthenticationFailed,
    Forbidden,
    NotFound,
    OpenHIMClient,
    OpenHIMError,
    RegistrationRejected,
)
from ltfu.settings import Settings


def _client(fake, email: str = ROOT_EMAIL, password: str = ROOT_PASSWORD, **kw) -> OpenHIMClient:
    return OpenHIMClient(fake.api_url, email, password, **kw)


def _never_both(fake) -> None:
    assert fake.core.api_log, "no API request reached the fake"
    assert not any(e["basic"] and e["token"] for e in fake.core.api_log), "Basic and auth-* sent together"


@pytest.mark.parametrize(
    ("flavour", "scheme"),
    [("7.0", "token"), ("7.1", "basic"), ("8", "basic")],
)
async def test_auto_auth_picks_the_scheme_core_accepts(start_fake, flavour: str, scheme: str) -> None:
    fake = start_fake(flavour)
    async with _client(fake) as client:
        about = await client.about()
        assert about["currentCoreVersion"]
        assert client.scheme == scheme
        await client.about()  # the scheme is remembered: no new probe
    _never_both(fake)
    if scheme == "token":
        paths = [(e["method"], e["path"], e.get("status")) for e in fake.core.api_log]
        assert paths == [
            ("GET", "/about", 401),  # Basic first: off by default in 7.0
            ("GET", f"/authenticate/{ROOT_EMAIL}", 200),
            ("GET", "/about", 200),
            ("GET", "/about", 200),
        ]
    else:
        assert not any(e["path"].startswith("/authenticate") for e in fake.core.api_log)


async def test_8x_user_created_with_plain_password_works_with_basic_only(start_fake) -> None:
    fake = start_fake("8", with_root=False)
    fake.core.add_user("ops@example.org", "s3cret", token_passport=False)
    async with _client(fake, "ops@example.org", "s3cret") as client:
        await client.about()
        assert client.scheme == "basic"
    async with _client(fake, "ops@example.org", "wrong") as client:
        with pytest.raises(AuthenticationFailed) as err:
            await client.about()
        assert err.value.status == 404  # no token passport: GET /authenticate is 404
    _never_both(fake)


async def test_8x_token_provider_user_uses_token_passport_for_basic(start_fake) -> None:
    fake = start_fake("8", with_root=False)
    fake.core.add_user(
        "instant@openhim.org", "instant101", local_passport=False, salt="c5f2a9fd7907e1a1c6658841426e6f5d"
    )
    async with _client(fake, "instant@openhim.org", "instant101") as client:
        await client.about()
        assert client.scheme == "basic"


async def test_8x_token_scheme_when_basic_disabled(start_fake) -> None:
    fake = start_fake("8", auth_types=["token"])
    async with _client(fake) as client:
        await client.about()
        assert client.scheme == "token"
    _never_both(fake)


@pytest.mark.parametrize("flavour", ["7.0", "7.1", "8"])
async def test_wrong_password_is_an_authentication_failure(start_fake, flavour: str) -> None:
    fake = start_fake(flavour)
    async with _client(fake, password="nope") as client:
        with pytest.raises(AuthenticationFailed):
            await client.about()
    _never_both(fake)


async def test_fake_enforces_the_auth_ts_window(start_fake) -> None:
    """The fake's ±10 s window (so the next test means something)."""
    fake = start_fake("7.0")
    salt = fake.core.users[ROOT_EMAIL].token_salt
    async with aiohttp.ClientSession() as s:
        for offset, expected in [(0, 200), (8, 200), (-8, 200), (12, 401), (-12, 401)]:
            ts = js_iso(datetime.fromtimestamp(time.time() + offset, UTC))
            async with s.get(fake.api_url + "/about", headers=token_headers(ROOT_EMAIL, ROOT_PASSWORD, salt, ts)) as r:
                assert r.status == expected, (offset, r.status)
        # a Python str(datetime) without "T"/zone is read as local time by core: only valid if local = UTC
        headers = token_headers(ROOT_EMAIL, ROOT_PASSWORD, salt, ts="")
        async with s.get(fake.api_url + "/about", headers=headers) as r:
            assert r.status == 401  # empty auth-ts


async def test_token_auth_survives_clock_skew(start_fake) -> None:
    """Core's clock 2 minutes ahead: our client learns it from /authenticate's ts."""
    fake = start_fake("7.0", clock_skew_s=120)
    salt = fake.core.users[ROOT_EMAIL].token_salt
    async with aiohttp.ClientSession() as s:
        naive = token_headers(ROOT_EMAIL, ROOT_PASSWORD, salt, js_iso(datetime.now(UTC)))
        async with s.get(fake.api_url + "/about", headers=naive) as r:
            assert r.status == 401  # the local clock is outside core's window
    async with _client(fake) as client:
        await client.about()
        assert client.scheme == "token"


async def test_token_salt_is_refetched_once_after_a_password_reset(start_fake) -> None:
    fake = start_fake("7.0")
    async with _client(fake) as client:
        await client.about()
        fake.core.add_user(ROOT_EMAIL, ROOT_PASSWORD)  # new random salt, same password
        await client.about()
    authenticates = [e for e in fake.core.api_log if e["path"].startswith("/authenticate")]
    assert len(authenticates) == 2


async def test_non_admin_is_forbidden(start_fake) -> None:
    fake = start_fake("8")
    fake.core.add_user("viewer@example.org", "pw", groups=("viewer",))
    async with _client(fake, "viewer@example.org", "pw") as client:
        with pytest.raises(Forbidden):
            await client.register(mediator.registration(Settings()))


@pytest.mark.parametrize("flavour", ["7.0", "8"])
async def test_our_registration_is_accepted_by_v7_and_v8_schemas(start_fake, flavour: str) -> None:
    fake = start_fake(flavour)
    settings = Settings(openhim_mediator_url="http://ltfu:8000")
    async with _client(fake) as client:
        await client.register(mediator.registration(settings))
        stored = await client.get_mediator(mediator.URN)
    assert stored["version"] == mediator.package_version()
    assert stored["endpoints"][0]["host"] == "ltfu" and stored["endpoints"][0]["port"] == 8000
    assert {c["name"] for c in stored["defaultChannelConfig"]} == {
        mediator.CHANNEL_MEDIATOR,
        mediator.CHANNEL_FHIR,
        mediator.CHANNEL_CHT,
    }
    assert all(c["methods"] for c in stored["defaultChannelConfig"])
    assert stored["config"]["chtPassword"] == ""  # secrets never leave the mediator


async def test_invalid_registration_is_rejected_with_cores_message(start_fake) -> None:
    fake = start_fake("8")
    body = mediator.registration(Settings())
    del body["name"]
    async with _client(fake) as client:
        with pytest.raises(RegistrationRejected) as err:
            await client.register(body)
    assert err.value.body == "Could not add Mediator via the API: ValidationError: name: Path `name` is required."
    body = mediator.registration(Settings())
    body["config"]["unknownParam"] = "x"
    async with _client(fake) as client:
        with pytest.raises(RegistrationRejected, match="No config definition found for parameter unknownParam"):
            await client.register(body)


async def test_reregistration_needs_a_higher_version_and_keeps_stored_config(start_fake) -> None:
    fake = start_fake("8")
    body = mediator.registration(Settings())
    body["version"] = "1.0.0"
    async with _client(fake) as client:
        await client.register(body)
        fake.core.mediator_config_modified(mediator.URN, {**body["config"], "chtForm": "console_form"})
        same = {**body, "description": "changed"}
        await client.register(same)  # 201, ignored
        assert fake.core.mediators[mediator.URN]["description"] == mediator.DESCRIPTION
        higher = {**body, "version": "1.1.0", "description": "changed"}
        higher["config"] = {**body["config"], "chtForm": "default_form"}
        await client.register(higher)
    stored = fake.core.mediators[mediator.URN]
    assert stored["description"] == "changed"
    assert stored["config"]["chtForm"] == "console_form"  # the operator's value wins


async def test_heartbeat_config_delivery(start_fake) -> None:
    fake = start_fake("8")
    body = mediator.registration(Settings())
    async with _client(fake) as client:
        await client.register(body)
        assert await client.heartbeat(mediator.URN, 1.0, want_config=True) == body["config"]
        assert await client.heartbeat(mediator.URN, 2.0) is None
        fake.core.mediator_config_modified(mediator.URN, {**body["config"], "maxAttempts": 3})
        got = await client.heartbeat(mediator.URN, 3.0)
        assert got is not None and got["maxAttempts"] == 3
        assert await client.heartbeat(mediator.URN, 4.0) is None  # delivered once
        fake.core.mediators[mediator.URN]["config"] = None
        assert await client.heartbeat(mediator.URN, 5.0, want_config=True) is None  # core answers "OK"
        del fake.core.mediators[mediator.URN]
        with pytest.raises(NotFound):
            await client.heartbeat(mediator.URN, 6.0)
    assert fake.core.api_log[-2]["status"] == 200


async def test_channel_install_is_not_idempotent_in_core(start_fake) -> None:
    fake = start_fake("7.1")
    async with _client(fake) as client:
        await client.register(mediator.registration(Settings()))
        await client.install_channels(mediator.URN, [mediator.CHANNEL_FHIR])
        with pytest.raises(OpenHIMError) as err:
            await client.install_channels(mediator.URN, [mediator.CHANNEL_FHIR])
        assert err.value.status == 500
        with pytest.raises(OpenHIMError) as err:
            await client.install_channels(mediator.URN, ["no such channel"])
        assert err.value.status == 400
        names = [c["name"] for c in await client.channels()]
    assert names == [mediator.CHANNEL_FHIR]
