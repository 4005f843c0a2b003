"""``ltfu match``, ``ltfu cht sync`` and ``ltfu facilities link/show`` (SQLite; the CHT emulator for sync)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltfu.cli import app as cli
from ltfu.services.cht_index import index_docs
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.matching.test_match_api import PEOPLE, PLACES


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("LTFU_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LTFU_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    settings = Settings()

    async def seed() -> None:
        db = Database(settings)
        await db.upgrade()
        async with unit_of_work(db) as uow:
            await index_docs(uow, PLACES + PEOPLE)
            await uow.resources.create(
                {
                    "resourceType": "Organization",
                    "id": "org-k",
                    "name": "Kisumu CRH",
                    "identifier": [{"system": "urn:mfl", "value": "13939"}],
                },
                "org-k",
            )
        await db.dispose()

    asyncio.run(seed())
    return settings


def test_match_prints_candidates_with_the_why(cli_env: Settings, tmp_path: Path) -> None:
    patient = tmp_path / "p.json"
    patient.write_text(
        json.dumps(
            {
                "resourceType": "Patient",
                "name": [{"family": "Otieno", "given": ["Grace"]}],
                "gender": "female",
                "birthDate": "1988-11-23",
                "telecom": [{"system": "phone", "value": "0722000111"}],
            }
        )
    )
    result = CliRunner().invoke(cli, ["match", str(patient)])
    assert result.exit_code == 0, result.output
    assert "1. grace" in result.output and "grade=certain" in result.output
    assert "birthDate" in result.output and "+13.5" in result.output
    bundle = CliRunner().invoke(cli, ["match", str(patient), "--json", "--count", "1"])
    assert json.loads(bundle.output)["entry"][0]["resource"]["id"] == "grace"
    patient.write_text(json.dumps({"resourceType": "Patient", "gender": "female"}))
    refused = CliRunner().invoke(cli, ["match", str(patient)])
    assert refused.exit_code == 2 and "neither a usable name" in refused.output


def test_facilities_link_and_show(cli_env: Settings) -> None:
    run = CliRunner().invoke
    shown = run(cli, ["facilities", "show", "org-k"])
    assert "cu1" in shown.output  # by link_facility_code = the Organization's identifier
    linked = run(cli, ["facilities", "link", "org-k", "area1", "nowhere"])
    assert linked.exit_code == 0, linked.output
    assert "2 place(s) linked" in linked.output and "nowhere" in linked.output
    assert "area1" in run(cli, ["facilities", "show", "org-k"]).output
    assert run(cli, ["facilities", "link", "org-missing", "cu1"]).exit_code == 1
