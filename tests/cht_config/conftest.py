"""Fixtures that drive the node tooling of `cht-config/` (cht-conf, cht-conf-test-harness).

The project is copied to a temporary folder (its `node_modules` linked, not copied) so that the
build never rewrites files of the work tree. The tooling comes from `scripts/setup-cht-tooling.sh`;
without it these tests fail with that hint rather than skip, so CI cannot pass silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "cht-config"
CHT_ACTIONS = [
    "compile-app-settings",
    "convert-app-forms",
    "convert-contact-forms",
    "validate-app-forms",
    "validate-contact-forms",
]
# Kenya: the routine and the dates of the harness tests are local dates.
TOOL_ENV = {"TZ": "Africa/Nairobi", "NO_COLOR": "1", "FORCE_COLOR": "0"}


@dataclass
class Run:
    args: list[str]
    returncode: int
    output: str
    seconds: float


def run_tool(args: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> Run:
    started = time.monotonic()
    proc = subprocess.run(
        args,
        cwd=cwd,
        env={**os.environ, **TOOL_ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Run(args, proc.returncode, proc.stdout, time.monotonic() - started)


def _require_tooling() -> None:
    hint = "run scripts/setup-cht-tooling.sh first"
    if not (CONFIG_DIR / "node_modules" / ".bin" / "cht").exists():
        pytest.fail(f"cht-config/node_modules is missing: {hint}", pytrace=False)
    if shutil.which("xsltproc") is None:
        pytest.fail(f"xsltproc is missing: {hint}", pytrace=False)
    if not (Path("/usr/lib/chromium/chromium").exists() or shutil.which("chromium")):
        pytest.fail(f"chromium is missing: {hint}", pytrace=False)


@pytest.fixture(scope="session")
def cht_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy of cht-config/ with its node_modules linked in."""
    _require_tooling()
    project = tmp_path_factory.mktemp("cht") / "cht-config"
    shutil.copytree(
        CONFIG_DIR, project, ignore=shutil.ignore_patterns("node_modules", "app_settings.json", "*.xml.swp")
    )
    (project / "node_modules").symlink_to(CONFIG_DIR / "node_modules", target_is_directory=True)
    return project


@pytest.fixture(scope="session")
def cht_build(cht_project: Path) -> Run:
    """`cht --no-check compile-app-settings convert-* validate-*` on the scratch copy."""
    return run_tool(
        [str(cht_project / "node_modules" / ".bin" / "cht"), "--no-check", *CHT_ACTIONS],
        cwd=cht_project,
        timeout=240,
    )


@pytest.fixture(scope="session")
def built_project(cht_project: Path, cht_build: Run) -> Path:
    if cht_build.returncode != 0:
        pytest.fail(f"cht build failed (rc {cht_build.returncode}):\n{cht_build.output[-6000:]}", pytrace=False)
    return cht_project


@pytest.fixture(scope="session")
def harness_run(built_project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    """The mocha suite of cht-config/test in cht-conf-test-harness; reports exported as JSON."""
    export_dir = tmp_path_factory.mktemp("harness-export")
    run = run_tool(
        [str(built_project / "node_modules" / ".bin" / "mocha"), "--reporter", "spec"],
        cwd=built_project,
        timeout=280,
        env={"LTFU_HARNESS_EXPORT_DIR": str(export_dir)},
    )
    return run, export_dir
