"""`ltfu clients add` takes the password from a file, standard input or a prompt, never needing it on the
command line (finding L1); a short LTFU_ADMIN_PASSWORD stops `ltfu serve` with a clear message."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltfu.cli import app
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.support.server import free_port

LTFU = str(Path(sys.executable).with_name("ltfu"))


def _env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {"LTFU_DATABASE_URL": db_url, "LTFU_DATA_DIR": str(tmp_path), "LTFU_ADMIN_PASSWORD": ""}


def _authenticates(db_url: str, name: str, password: str) -> bool:
    async def run() -> bool:
        db = Database(Settings(database_url=db_url))
        async with unit_of_work(db) as uow:
            ok = await uow.clients.authenticate(name, password) is not None
        await db.dispose()
        return ok

    return asyncio.run(run())


@pytest.fixture
def env(db: Database, db_url: str, tmp_path: Path) -> dict[str, str]:
    return _env(db_url, tmp_path)


def test_password_from_a_file(env: dict[str, str], db_url: str, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-a-file-1\nignored second line\n")
    result = CliRunner().invoke(
        app, ["clients", "add", "fa", "--facility", "org-a", "--password-file", str(secret)], env=env
    )
    assert result.exit_code == 0, result.output
    assert _authenticates(db_url, "fa", "from-a-file-1")


def test_password_from_stdin_and_from_the_prompt(env: dict[str, str], db_url: str) -> None:
    result = CliRunner().invoke(
        app, ["clients", "add", "fa", "--facility", "org-a", "--password-stdin"], input="from-stdin-1\n", env=env
    )
    assert result.exit_code == 0, result.output
    assert _authenticates(db_url, "fa", "from-stdin-1")
    result = CliRunner().invoke(
        app, ["clients", "add", "fb", "--admin"], input="prompted-pw-1\nprompted-pw-1\n", env=env
    )
    assert result.exit_code == 0, result.output
    assert "prompted-pw-1" not in result.output  # hidden input
    assert _authenticates(db_url, "fb", "prompted-pw-1")


def test_the_legacy_option_still_works_with_a_warning(env: dict[str, str], db_url: str) -> None:
    result = CliRunner().invoke(app, ["clients", "add", "fa", "--admin", "--password", "legacy-pw-1"], env=env)
    assert result.exit_code == 0 and "deprecated" in result.output
    assert _authenticates(db_url, "fa", "legacy-pw-1")


def test_refusals(env: dict[str, str], tmp_path: Path) -> None:
    short = CliRunner().invoke(app, ["clients", "add", "fa", "--admin", "--password-stdin"], input="short\n", env=env)
    assert short.exit_code == 2 and "at least 8 characters" in short.output
    secret = tmp_path / "pw"
    secret.write_text("from-a-file-1\n")
    both = CliRunner().invoke(
        app,
        ["clients", "add", "fa", "--admin", "--password-stdin", "--password-file", str(secret)],
        input="x-password-1\n",
        env=env,
    )
    assert both.exit_code == 2 and "one way only" in both.output
    missing = CliRunner().invoke(
        app, ["clients", "add", "fa", "--admin", "--password-file", str(tmp_path / "no")], env=env
    )
    assert missing.exit_code == 2


def test_serve_refuses_a_short_admin_password(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LTFU_DATA_DIR": str(tmp_path),
        "LTFU_DATABASE_URL": "",
        "LTFU_ADMIN_PASSWORD": "tooshort-1",
        "LTFU_PORT": str(free_port()),
    }
    try:
        result = subprocess.run([LTFU, "serve"], env=env, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("ltfu serve started with a short LTFU_ADMIN_PASSWORD")
    assert result.returncode == 2
    assert "LTFU_ADMIN_PASSWORD must have at least 12 characters" in result.stderr.replace("\n", " ")
    assert "tooshort-1" not in result.stdout + result.stderr
