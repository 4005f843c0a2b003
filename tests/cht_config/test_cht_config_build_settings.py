"""`build_app_settings`: the deployment's mediator URL and credential key in the outbound push."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltfu.cht.config_build import ConfigBuildError, build_app_settings

from .conftest import CONFIG_DIR


def _outbound(path: Path) -> dict:
    return json.loads(path.read_text())["outbound"]


def test_writes_destination_into_a_copy(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    written = build_app_settings(CONFIG_DIR, "https://openhim.example.org:5000/ltfu/", "ltfu-outbound", out_dir=out)

    assert written == out / "app_settings" / "base_settings.json"
    for entry in _outbound(written).values():
        assert entry["destination"]["base_url"] == "https://openhim.example.org:5000/ltfu"
        assert entry["destination"]["auth"] == {
            "type": "basic",
            "username": "cht",
            "password_key": "ltfu-outbound",
        }
    paths = sorted(e["destination"]["path"] for e in _outbound(written).values())
    assert paths == ["/cht/follow-up", "/cht/patient", "/mediator/encounter"]  # + the PoC encounter push
    assert json.loads(written.read_text())["transitions"]["mark_for_outbound"] is True
    # the rest is untouched, the source project too, and no node_modules were copied
    source = json.loads((CONFIG_DIR / "app_settings" / "base_settings.json").read_text())
    result = json.loads(written.read_text())
    assert {k: v for k, v in result.items() if k != "outbound"} == {k: v for k, v in source.items() if k != "outbound"}
    assert (out / "tasks.js").read_text() == (CONFIG_DIR / "tasks.js").read_text()
    assert not (out / "node_modules").exists()


def test_updates_compiled_settings_and_is_idempotent(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "app_settings").mkdir(parents=True)
    settings = {
        "outbound": {
            "x": {
                "relevant_to": "true",
                "destination": {"base_url": "http://a", "path": "/cht/x"},
                "mapping": {"id": "doc._id"},
            }
        }
    }
    (project / "app_settings" / "base_settings.json").write_text(json.dumps(settings))
    (project / "app_settings.json").write_text(json.dumps({**settings, "tasks": {"rules": "r"}}))

    build_app_settings(project, "http://mediator:8000", "key.1", username="openhim-client")
    first = (project / "app_settings.json").read_text()
    build_app_settings(project, "http://mediator:8000", "key.1", username="openhim-client")

    assert (project / "app_settings.json").read_text() == first
    compiled = json.loads(first)
    assert compiled["tasks"] == {"rules": "r"}
    assert compiled["outbound"]["x"]["destination"] == {
        "base_url": "http://mediator:8000",
        "path": "/cht/x",
        "auth": {"type": "basic", "username": "openhim-client", "password_key": "key.1"},
    }


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("ftp://mediator", "k"),
        ("mediator:8000", "k"),
        ("http://user:pw@mediator", "k"),
        ("http://mediator?x=1", "k"),
        ("http://mediator", ""),
        ("http://mediator", "has space"),
        ("http://mediator", "a/b"),
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, url: str, key: str) -> None:
    with pytest.raises(ConfigBuildError):
        build_app_settings(CONFIG_DIR, url, key, out_dir=tmp_path / "o")


def test_rejects_a_folder_that_is_no_project(tmp_path: Path) -> None:
    with pytest.raises(ConfigBuildError):
        build_app_settings(tmp_path, "http://mediator", "k")
