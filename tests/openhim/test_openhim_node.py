"""Keep the fake honest: the official Node library openhim-mediator-utils must work against it.

0.4.x authenticates with Basic (core 7.1+/8.x style), 0.2.x with the legacy token headers (the only
scheme core 7.0 enables by default). Both register ltfu's own registration document, fetch its config,
receive a console change through heartbeats and install the default channels.

The npm packages are installed by scripts/setup-openhim-tooling.sh (run here when needed; idempotent).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from openhim_fake import ROOT_EMAIL, ROOT_PASSWORD

from ltfu.openhim import mediator
from ltfu.openhim.client import OpenHIMClient
from ltfu.settings import Settings

NODE_DIR = Path(__file__).parent / "node"
SETUP = Path(__file__).parents[2] / "scripts" / "setup-openhim-tooling.sh"


@pytest.fixture(scope="module")
def node_tooling() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js/npm not installed: the openhim-mediator-utils check needs them")
    subprocess.run(["bash", str(SETUP)], check=True, timeout=300)
    return NODE_DIR


@pytest.mark.parametrize(
    ("flavour", "utils", "scheme"),
    [("7.0", "0.2", "token"), ("7.1", "0.4", "basic"), ("8", "0.4", "basic"), ("8", "0.2", "token")],
)
async def test_openhim_mediator_utils_against_the_fake(
    node_tooling: Path, start_fake, tmp_path: Path, flavour: str, utils: str, scheme: str
) -> None:
    fake = start_fake(flavour)
    registration = mediator.registration(Settings(openhim_mediator_url="http://ltfu:8000"))
    config_file = tmp_path / "mediator.json"
    config_file.write_text(json.dumps(registration))
    env = {
        "PATH": __import__("os").environ["PATH"],
        "OPENHIM_API_URL": fake.api_url,
        "OPENHIM_USERNAME": ROOT_EMAIL,
        "OPENHIM_PASSWORD": ROOT_PASSWORD,
        "UTILS": utils,
        "MEDIATOR_CONFIG": str(config_file),
    }
    # The fake serves from its own thread, so a blocking subprocess call is fine here.
    proc = subprocess.run(
        ["node", "check-utils.js"], cwd=node_tooling, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [s.get("step") for s in steps[:-1]] == [
        "authenticate",
        "registerMediator",
        "fetchConfig",
        "heartbeat",
        "installChannels",
        "coreHeartbeat",
    ]
    # What the library did is what the fake recorded, in the library's scheme.
    api = [e for e in fake.core.api_log if "scheme" in e]
    assert api and {e["scheme"] for e in api} == {scheme}
    assert not any(e["basic"] and e["token"] for e in fake.core.api_log)
    assert fake.core.mediators[mediator.URN]["config"]["chtForm"] == "changed_by_console"
    # ... and our Python client works against the very same core state.
    async with OpenHIMClient(fake.api_url, ROOT_EMAIL, ROOT_PASSWORD) as client:
        config = await client.heartbeat(mediator.URN, 1.0, want_config=True)
        assert client.scheme == ("token" if flavour == "7.0" else "basic")
    assert config is not None and config["chtForm"] == "changed_by_console"
