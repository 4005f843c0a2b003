"""Which person-creation endpoint a CHT version takes, from what ``GET /api/info`` says."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltfu.cht.client import ChtClient
from ltfu.cht.version import has_datasource_create, parse_version
from tests.emulators.cht.emu_support import ADMIN, make_config, serve


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("5.2.0", (5, 2, 0)), ("4.11.0-FR-cht-x", (4, 11, 0)), ("5.2", (5, 2, 0)), ("10.0.1", (10, 0, 1)),
     ("", None), ("unknown", None), (None, None), (5.2, None)],
)
def test_versions_parse(text: object, parsed: tuple[int, int, int] | None) -> None:
    assert parse_version(text) == parsed


def test_datasource_create_starts_at_5_2() -> None:
    assert not has_datasource_create((4, 21, 3))
    assert not has_datasource_create((5, 1, 9))
    assert has_datasource_create((5, 2, 0))
    assert has_datasource_create((6, 0, 0))


@pytest.mark.parametrize("version", ["4.11.0", "5.2.0"])
async def test_the_client_asks_cht_once_and_a_setting_wins(tmp_path: Path, version: str) -> None:
    async with serve(make_config(tmp_path, cht_version=version)) as run:
        client = ChtClient(run.url, *ADMIN)
        try:
            assert await client.version() == parse_version(version)
        finally:
            await client.close()
        pinned = ChtClient(run.url, *ADMIN, version="3.17.0")
        try:
            assert await pinned.version() == (3, 17, 0)
        finally:
            await pinned.close()

