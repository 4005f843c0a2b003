"""`ltfu openhim setup` against the fake: plan, apply, idempotency, drift repair, dry run, CLI."""

from __future__ import annotations

import copy
import json

import pytest
from openhim_fake import ROOT_EMAIL, ROOT_PASSWORD
from pydantic import SecretStr
from typer.testing import CliRunner

from ltfu.openhim import mediator
from ltfu.openhim.cli import app as cli_app
from ltfu.openhim.client import OpenHIMClient
from ltfu.openhim.setup import ClientSpec, SetupError, apply_setup, plan_setup
from ltfu.settings import Settings

ALL_CHANNELS = sorted([mediator.CHANNEL_MEDIATOR, mediator.CHANNEL_FHIR, mediator.CHANNEL_CHT])


def _settings(fake) -> Settings:
    return Settings(
        openhim_url=fake.api_url,
        openhim_username=ROOT_EMAIL,
        openhim_password=SecretStr(ROOT_PASSWORD),
        openhim_mediator_url="http://ltfu:8000",
    )


SPECS = [
    ClientSpec("facility-a", (mediator.FACILITY_ROLE,), "pw-a"),
    ClientSpec("cht", (mediator.CHT_ROLE,), "pw-cht"),
]


def _kinds(plan) -> list[tuple[str, str]]:
    return [(a.kind, a.target) for a in plan.actions]


@pytest.mark.parametrize("flavour", ["7.0", "8"])
async def test_setup_provisions_then_is_a_noop(start_fake, flavour: str) -> None:
    fake = start_fake(flavour)
    settings = _settings(fake)
    async with OpenHIMClient(fake.api_url, ROOT_EMAIL, ROOT_PASSWORD) as client:
        plan = await plan_setup(client, settings, SPECS)
        assert ("create-client", "facility-a") in _kinds(plan)
        assert sorted(plan.install) == ALL_CHANNELS
        assert fake.core.channels == [] and fake.core.clients == []  # planning only reads
        await apply_setup(client, plan)
        assert sorted(c["name"] for c in fake.core.channels) == ALL_CHANNELS
        assert {c["clientID"]: c["roles"] for c in fake.core.clients} == {
            "facility-a": [mediator.FACILITY_ROLE],
            "cht": [mediator.CHT_ROLE],
        }
        again = await plan_setup(client, settings, SPECS)
        assert not again.changes, [str(a) for a in again.actions]
        before = copy.deepcopy((fake.core.channels, fake.core.clients))
        await apply_setup(client, again)
        assert (fake.core.channels, fake.core.clients) == before
    mediator_channel = next(c for c in fake.core.channels if c["name"] == mediator.CHANNEL_MEDIATOR)
    route = mediator_channel["routes"][0]
    assert (route["host"], route["port"], route["pathTransform"]) == ("ltfu", 8000, r"s/^\/mediator//")
    assert fake.core.transform_path("/mediator/service-request", route["pathTransform"]) == "/service-request"


async def test_setup_repairs_drift_and_keeps_operator_changes(start_fake) -> None:
    fake = start_fake("8")
    settings = _settings(fake)
    async with OpenHIMClient(fake.api_url, ROOT_EMAIL, ROOT_PASSWORD) as client:
        await apply_setup(client, await plan_setup(client, settings, SPECS))
        fhir = next(c for c in fake.core.channels if c["name"] == mediator.CHANNEL_FHIR)
        fhir["allow"] = ["someone-else"]
        fhir["methods"] = ["GET"]
        fhir["timeout"] = 30000  # an operator's choice we must keep
        fhir["routes"][0]["port"] = 9999
        fhir["routes"].append({"name": "audit copy", "type": "http", "host": "audit", "port": 80, "primary": False})
        fake.core.clients[0]["passwordHash"] = "0" * 128  # password changed in the console
        plan = await plan_setup(client, settings, SPECS)
        assert ("update-channel", mediator.CHANNEL_FHIR) in _kinds(plan)
        assert ("update-client", "facility-a") in _kinds(plan)
        await apply_setup(client, plan)
        assert not (await plan_setup(client, settings, SPECS)).changes
    fhir = next(c for c in fake.core.channels if c["name"] == mediator.CHANNEL_FHIR)
    assert fhir["allow"] == ["someone-else", mediator.FACILITY_ROLE]
    assert set(fhir["methods"]) >= {"GET", "POST", "PUT"}
    assert fhir["timeout"] == 30000
    assert [(r["name"], r["port"]) for r in fhir["routes"]] == [("ltfu", 8000), ("audit copy", 80)]
    fake.core.validate_channel(fhir)


async def test_channel_installed_from_an_older_registration_is_aligned(start_fake) -> None:
    """Core installs the defaultChannelConfig it stored; if that is stale, setup fixes it in the same run."""
    fake = start_fake("8")
    settings = _settings(fake)
    old = mediator.registration(Settings(openhim_mediator_url="http://old-host:7000"))
    old["version"] = "999.0.0"  # core keeps this one: ours is lower and ignored
    async with OpenHIMClient(fake.api_url, ROOT_EMAIL, ROOT_PASSWORD) as client:
        await client.register(old)
        await apply_setup(client, await plan_setup(client, settings, []))
    hosts = {r["host"] for c in fake.core.channels for r in c["routes"]}
    assert hosts == {"ltfu"}


async def test_metadata_item_errors_are_reported(start_fake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = start_fake("8")
    from openhim_fake import ValidationFailed

    def refuse(collection, key, doc):
        raise ValidationFailed("Client validation failed")

    monkeypatch.setattr(fake.core, "_upsert", refuse)
    async with OpenHIMClient(fake.api_url, ROOT_EMAIL, ROOT_PASSWORD) as client:
        with pytest.raises(SetupError, match="Client validation failed"):
            await apply_setup(client, await plan_setup(client, _settings(fake), SPECS[:1]))


def test_client_spec_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ClientSpec.parse("f1", "r") == ClientSpec("f1", ("r",), None)
    assert ClientSpec.parse("f1:pa:ss", "r").password == "pa:ss"
    monkeypatch.setenv("F1_PW", "from-env")
    assert ClientSpec.parse("f1:env:F1_PW", "r").password == "from-env"
    with pytest.raises(ValueError):
        ClientSpec.parse("f1:env:MISSING_VAR_XYZ", "r")
    with pytest.raises(ValueError):
        ClientSpec.parse(":pw", "r")


def test_cli_dry_run_changes_nothing_then_setup_applies(start_fake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = start_fake("7.1")
    monkeypatch.setenv("LTFU_OPENHIM_URL", fake.api_url)
    monkeypatch.setenv("LTFU_OPENHIM_USERNAME", ROOT_EMAIL)
    monkeypatch.setenv("LTFU_OPENHIM_PASSWORD", ROOT_PASSWORD)
    monkeypatch.setenv("LTFU_OPENHIM_MEDIATOR_URL", "http://ltfu:8000")
    monkeypatch.setenv("FAC_PW", "pw-b")
    runner = CliRunner()
    args = ["setup", "--facility", "facility-b:env:FAC_PW", "--cht-client", "cht:pw-cht"]
    result = runner.invoke(cli_app, [*args, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "install-channel" in result.output and "create-client" in result.output
    assert "dry run" in result.output
    assert fake.core.channels == [] and fake.core.clients == [] and fake.core.mediators == {}
    assert all(e["method"] == "GET" for e in fake.core.api_log)
    result = runner.invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert sorted(c["name"] for c in fake.core.channels) == ALL_CHANNELS
    result = runner.invoke(cli_app, [*args, "--dry-run"])
    assert "nothing to change" in result.output
    result = runner.invoke(cli_app, ["registration"])
    assert json.loads(result.output)["urn"] == mediator.URN


def test_cli_needs_the_openhim_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LTFU_OPENHIM_URL", raising=False)
    result = CliRunner().invoke(cli_app, ["setup", "--dry-run"])
    assert result.exit_code == 2
