"""Password checks (security findings H3, M1): argon2 off the event loop, a dummy hash for unknown names,
backoff per client name and per address, failures in /metrics, no stale credentials in any process."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from argon2 import PasswordHasher

from ltfu.api.app import create_app
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.conftest import ADMIN_PASSWORD, _truncate
from tests.support.server import ServerThread

LTFU = str(Path(sys.executable).with_name("ltfu"))


class Verifications:
    """Every argon2 verification the process runs: the hash checked and the thread it ran on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        real = PasswordHasher.verify

        def spy(hasher: PasswordHasher, hash: str | bytes, password: str | bytes) -> Any:
            self.calls.append((hash if isinstance(hash, str) else hash.decode(), threading.current_thread().name))
            return real(hasher, hash, password)

        monkeypatch.setattr(PasswordHasher, "verify", spy)


def _reset(settings: Settings) -> None:
    async def run() -> None:
        db = Database(settings)
        await db.upgrade()
        await _truncate(db)
        await db.dispose()

    asyncio.run(run())


@pytest.fixture
def running(settings: Settings) -> Iterator[ServerThread]:
    _reset(settings)
    with ServerThread(create_app(settings)) as srv:
        srv.thread.name = "uvicorn-loop"
        yield srv


def _stored_hashes(settings: Settings) -> set[str]:
    async def run() -> set[str]:
        db = Database(settings)
        async with unit_of_work(db) as uow:
            hashes = {(await uow.clients.lookup(c.name)).password_hash for c in await uow.clients.list()}
        await db.dispose()
        return hashes

    return asyncio.run(run())


def test_unknown_user_is_verified_against_a_dummy_hash_off_the_loop(
    running: ServerThread, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = Verifications(monkeypatch)
    r = requests.get(running.url + "/fhir/Patient", auth=("nobody-here", "some-password"), timeout=10)
    assert r.status_code == 401
    assert len(seen.calls) == 1, "an unknown name must cost one argon2 verification, like a wrong password"
    dummy, thread = seen.calls[0]
    assert dummy.startswith("$argon2id$") and dummy not in _stored_hashes(settings)
    assert thread != "uvicorn-loop"

    r = requests.get(running.url + "/fhir/Patient", auth=("admin", "wrong-password"), timeout=10)
    assert r.status_code == 401
    assert len(seen.calls) == 2 and seen.calls[1][1] != "uvicorn-loop"
    assert seen.calls[1][0] in _stored_hashes(settings)
    # The dummy hash has our parameters: same cost as a real one.
    assert dummy.split("$")[3] == seen.calls[1][0].split("$")[3]


def test_verified_credentials_are_not_hashed_again(running: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = Verifications(monkeypatch)
    for _ in range(3):
        assert requests.get(running.url + "/fhir/Patient", auth=("admin", ADMIN_PASSWORD), timeout=10).ok
    assert len(seen.calls) == 1


@pytest.fixture
def strict(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url,
        data_dir=tmp_path,
        admin_password=ADMIN_PASSWORD,
        workers=False,
        auth_max_failures=3,
        auth_max_failures_per_address=6,
        auth_backoff_s=30,
        auth_lockout_max_s=60,
    )


def test_failures_back_off_per_name_with_retry_after(strict: Settings) -> None:
    _reset(strict)
    with ServerThread(create_app(strict)) as srv:
        admin = requests.Session()
        admin.auth = ("admin", ADMIN_PASSWORD)
        assert admin.get(srv.url + "/fhir/Patient", timeout=10).ok  # verified before the attack
        codes = [
            requests.get(srv.url + "/fhir/Patient", auth=("admin", f"guess-{i}"), timeout=10).status_code
            for i in range(3)
        ]
        assert codes == [401, 401, 401]
        r = requests.get(srv.url + "/fhir/Patient", auth=("admin", "guess-3"), timeout=10)
        assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 30
        assert r.json()["issue"][0]["code"] == "throttled"
        # While the name is locked even the right password is not checked (no guess is confirmed) ...
        token = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
        fresh = requests.get(srv.url + "/fhir/Patient", headers={"Authorization": f"basic {token}"}, timeout=10)
        assert fresh.status_code == 429
        # ... but a client whose credentials were verified before keeps working.
        metrics = admin.get(srv.url + "/metrics", timeout=10)
        assert metrics.status_code == 200
        lines = {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in metrics.text.splitlines()
            if line.startswith("ltfu_auth_failures_total")
        }
        assert lines['ltfu_auth_failures_total{reason="bad_credentials"}'] >= 3
        assert lines['ltfu_auth_failures_total{reason="throttled"}'] >= 2


def test_failures_back_off_per_address(strict: Settings) -> None:
    _reset(strict)
    with ServerThread(create_app(strict)) as srv:
        codes = [
            requests.get(srv.url + "/fhir/Patient", auth=(f"user-{i}", "pw-guess-1"), timeout=10).status_code
            for i in range(7)
        ]
    assert codes[:6] == [401] * 6  # every name is new: only the address counts
    assert codes[6] == 429


# --------------------------------------------------------------------------- another process changes a client


def _cli(settings: Settings, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LTFU_DATABASE_URL": str(settings.database_url),
        "LTFU_DATA_DIR": str(settings.data_dir),
    }
    return subprocess.run(
        [LTFU, "clients", *args],
        input=(password + "\n") if password else None,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_remove_role_and_password_changes_apply_at_once_in_another_process(
    running: ServerThread, settings: Settings
) -> None:
    url = running.url
    added = _cli(settings, "add", "fb", "--facility", "org-b", "--password-stdin", password="fb-password-1")
    assert added.returncode == 0, added.stderr
    assert requests.get(url + "/fhir/Patient", auth=("fb", "fb-password-1"), timeout=10).status_code == 200
    assert requests.get(url + "/metrics", auth=("fb", "fb-password-1"), timeout=10).status_code == 403

    # Role change: the same credentials are admin on the very next request.
    assert _cli(settings, "add", "fb", "--admin", "--password-stdin", password="fb-password-1").returncode == 0
    assert requests.get(url + "/metrics", auth=("fb", "fb-password-1"), timeout=10).status_code == 200

    # Password change: the old one stops working at once.
    assert _cli(settings, "add", "fb", "--admin", "--password-stdin", password="fb-password-2").returncode == 0
    assert requests.get(url + "/fhir/Patient", auth=("fb", "fb-password-1"), timeout=10).status_code == 401
    assert requests.get(url + "/fhir/Patient", auth=("fb", "fb-password-2"), timeout=10).status_code == 200

    # Removal: the next request is refused.
    assert _cli(settings, "remove", "fb").returncode == 0
    assert requests.get(url + "/fhir/Patient", auth=("fb", "fb-password-2"), timeout=10).status_code == 401
