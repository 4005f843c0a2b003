"""The CHW side of the loop in cht-conf-test-harness (cht-core 4.11 in Debian chromium):
see cht-config/test/ltfu-follow-up.spec.js for the scenarios."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import Run

SCENARIOS = [
    "an incoming INTEROP_FOLLOW_UP record shows a phone task for the CHW",
    "outcome returning_to_care: the report is linked to the patient and carries the case",
    "outcome deceased: the report is linked to the patient and carries the case",
    "an unsuccessful phone attempt schedules a home visit; its outcome closes the case",
    "a cancel record for the case withdraws the task",
    "the task expires at the due_date sent by the mediator",
    "a CHW created through the users API (no role field) gets the task and closes it",
    "a report whose dates arrive as numbers (UTC midnight, as CHT stores them) keeps its dates west of Greenwich",
]


def test_harness_suite_passes(harness_run: tuple[Run, Path]) -> None:
    run, _ = harness_run
    assert run.returncode == 0, run.output[-8000:]
    passing = re.search(r"^\s*(\d+) passing", run.output, re.M)
    assert passing and int(passing.group(1)) >= 20, run.output[-4000:]
    assert not re.search(r"^\s*\d+ failing", run.output, re.M)
    assert not re.search(r"^\s*\d+ pending", run.output, re.M)
    for scenario in SCENARIOS:
        assert scenario in run.output, f"scenario not run: {scenario}"


def test_harness_exported_every_outcome(harness_run: tuple[Run, Path]) -> None:
    _, export_dir = harness_run
    names = {p.stem for p in export_dir.glob("*.json")}
    outcomes = {
        "returning_to_care",
        "already_returned",
        "refused",
        "not_located",
        "self_transferred",
        "hospitalized",
        "moved",
        "deceased",
    }
    assert {f"follow-up-{o}" for o in outcomes} <= names
    assert "person-patient" in names
