"""``ltfu serve``/``ltfu worker`` collect garbage less often than Python's default and skip start-up objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ltfu.gc_tuning import tune_gc
from ltfu.settings import Settings


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_threshold_from_settings_and_start_up_objects_frozen(tmp_path) -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc(Settings(data_dir=tmp_path, gc_gen0_threshold=40_000))
    assert gc.get_threshold()[0] == 40_000
    assert gc.get_freeze_count() > 0


def test_zero_keeps_pythons_threshold(tmp_path) -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc(Settings(data_dir=tmp_path, gc_gen0_threshold=0))
    assert gc.get_threshold() == (700, 10, 10)
