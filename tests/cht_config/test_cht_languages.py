"""The follow-up form in Swahili and Nepali, and the Bikram Sambat build for Nepal.

cht-config/test/ltfu-follow-up-languages.spec.js fills the form with the same answers in en, sw and
ne and checks the report fields are equal. It runs in the default build (with the rest of the
harness suite) and here again in a ``ltfu cht-config build --calendar bikram-sambat`` copy, where
cht-conf must accept the forms, converting the rebuilt workbooks must give the same XForms, every
date question shows the Bikram Sambat picker, and the reports still carry ISO dates, which the
mediator reads unchanged.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltfu.cht.config_build import ConfigBuildError, build_app_settings
from ltfu.cht.form_calendar import set_date_appearance
from ltfu.cht.inbound import parse_follow_up
from ltfu.cht.outbound_mapping import map_outbound
from ltfu.cli import app as cli_app

from .conftest import CONFIG_DIR, Run, _require_tooling, run_tool

LANGUAGE_SCENARIOS = [
    f"outcome {o}: the report filled in sw and in ne equals the one filled in en"
    for o in ("returning_to_care", "deceased", "refused", "not_located")
]
DATE_QUESTIONS = {
    "forms/app/ltfu_follow_up.xml": ["next_appointment_date", "moved_date", "death_date"],
    "forms/contact/person-create.xml": ["date_of_birth"],
    "forms/contact/person-edit.xml": ["date_of_birth"],
}


def _date_inputs(xform: str) -> dict[str, str | None]:
    found = {}
    for match in re.finditer(r'<input ref="/data/[^"]*/(\w+)"(?: appearance="([^"]*)")?', xform):
        found[match.group(1)] = match.group(2)
    return found


@pytest.fixture(scope="session")
def bs_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Bikram Sambat copy of cht-config/ made by the CLI, its node_modules linked in."""
    _require_tooling()
    out = tmp_path_factory.mktemp("cht-bs") / "cht-config"
    result = CliRunner().invoke(
        cli_app,
        ["cht-config", "build", "--calendar", "bikram-sambat", "--config-dir", str(CONFIG_DIR), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    (out / "app_settings.json").unlink(missing_ok=True)
    (out / "node_modules").symlink_to(CONFIG_DIR / "node_modules", target_is_directory=True)
    return out


@pytest.fixture(scope="session")
def bs_converted(bs_project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Run]:
    """The XForms as the build wrote them, then cht-conf's compile, convert and validate of the copy."""
    patched = {rel: (bs_project / rel).read_text() for rel in DATE_QUESTIONS}
    run = run_tool(
        [
            str(bs_project / "node_modules" / ".bin" / "cht"),
            "--no-check",
            "compile-app-settings",
            "convert-app-forms",
            "convert-contact-forms",
            "validate-app-forms",
            "validate-contact-forms",
        ],
        cwd=bs_project,
        timeout=240,
    )
    return patched, run


@pytest.fixture(scope="session")
def bs_harness(
    bs_project: Path, bs_converted: tuple[dict[str, str], Run], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Run, Path]:
    _, build = bs_converted
    assert build.returncode == 0, build.output[-6000:]
    export_dir = tmp_path_factory.mktemp("bs-export")
    run = run_tool(
        [
            str(bs_project / "node_modules" / ".bin" / "mocha"),
            "--no-config",
            "--require",
            "test/use-system-chromium.js",
            "--timeout",
            "60000",
            "--reporter",
            "spec",
            "test/ltfu-follow-up-languages.spec.js",
        ],
        cwd=bs_project,
        timeout=280,
        env={"LTFU_HARNESS_CALENDAR": "bikram-sambat", "LTFU_HARNESS_LANGUAGES_EXPORT_DIR": str(export_dir)},
    )
    return run, export_dir


def test_set_date_appearance_adds_removes_and_keeps_other_appearances() -> None:
    xform = (
        '<bind nodeset="/data/g/d" type="date"/><bind nodeset="/data/g/t" type="string"/>'
        '<input ref="/data/g/d" appearance="no-calendar"><label/></input><input ref="/data/g/t"><label/></input>'
    )
    bs = set_date_appearance(xform, "bikram-sambat")
    assert '<input ref="/data/g/d" appearance="no-calendar bikram-sambat">' in bs
    assert '<input ref="/data/g/t">' in bs
    assert set_date_appearance(bs, "bikram-sambat") == bs
    assert set_date_appearance(bs, "gregorian") == xform


def test_the_default_build_keeps_gregorian_dates() -> None:
    for rel, questions in DATE_QUESTIONS.items():
        inputs = _date_inputs((CONFIG_DIR / rel).read_text())
        for q in questions:
            assert "bikram-sambat" not in (inputs[q] or ""), (rel, q)


def test_build_rejects_an_unknown_calendar_and_an_empty_build(tmp_path: Path) -> None:
    with pytest.raises(ConfigBuildError, match="calendar"):
        build_app_settings(CONFIG_DIR, None, None, out_dir=tmp_path / "a", calendar="julian")
    with pytest.raises(ConfigBuildError, match="nothing to build"):
        build_app_settings(CONFIG_DIR, None, None, out_dir=tmp_path / "b")
    with pytest.raises(ConfigBuildError, match="both"):
        build_app_settings(CONFIG_DIR, "http://mediator", None, out_dir=tmp_path / "c", calendar="gregorian")
    result = CliRunner().invoke(
        cli_app,
        ["cht-config", "build", "--calendar", "julian", "--config-dir", str(CONFIG_DIR), "--out", str(tmp_path / "d")],
    )
    assert result.exit_code == 2


def test_the_bikram_sambat_build_changes_every_date_question_and_only_those(bs_project: Path) -> None:
    for rel, questions in DATE_QUESTIONS.items():
        before, after = _date_inputs((CONFIG_DIR / rel).read_text()), _date_inputs((bs_project / rel).read_text())
        for name, appearance in after.items():
            if name in questions:
                assert appearance is not None and "bikram-sambat" in appearance.split(), (rel, name)
            else:
                assert appearance == before[name], (rel, name)
    untouched = sorted(
        set(p.relative_to(bs_project) for p in (bs_project / "forms").rglob("*.xml"))
        - {Path(r) for r in DATE_QUESTIONS}
    )
    assert untouched
    for rel in untouched:
        assert (bs_project / rel).read_text() == (CONFIG_DIR / rel).read_text()
    assert (CONFIG_DIR / "forms" / "app" / "ltfu_follow_up.xml").read_text().count("bikram-sambat") == 0


def test_cht_conf_converts_the_bikram_sambat_workbooks_to_the_same_xforms(
    bs_project: Path, bs_converted: tuple[dict[str, str], Run]
) -> None:
    patched, run = bs_converted
    assert run.returncode == 0, run.output[-6000:]
    assert "All actions completed." in run.output
    for rel, text in patched.items():
        assert (bs_project / rel).read_text() == text, f"{rel}: the workbook and the XForm disagree"


def test_the_languages_scenarios_pass_in_the_default_build(harness_run: tuple[Run, Path]) -> None:
    run, _ = harness_run
    assert "LTFU follow-up in the CHW's language (Gregorian build)" in run.output
    for scenario in LANGUAGE_SCENARIOS:
        assert f"✔ {scenario}" in run.output, scenario


def test_the_languages_scenarios_pass_in_the_bikram_sambat_build(bs_harness: tuple[Run, Path]) -> None:
    run, _ = bs_harness
    assert run.returncode == 0, run.output[-8000:]
    assert "LTFU follow-up in the CHW's language (Bikram Sambat build)" in run.output
    for scenario in LANGUAGE_SCENARIOS:
        assert f"✔ {scenario}" in run.output, scenario
    assert re.search(r"^\s*4 passing", run.output, re.M)


def test_the_mediator_reads_iso_dates_from_the_nepali_bikram_sambat_reports(
    bs_project: Path, bs_harness: tuple[Run, Path]
) -> None:
    _, export_dir = bs_harness
    settings = json.loads((bs_project / "app_settings.json").read_text())
    mapping = settings["outbound"]["ltfu_follow_up"]["mapping"]
    expected = {"returning_to_care": ("next_appointment_date", "2025-03-07"), "deceased": ("death_date", "2025-02-27")}
    for outcome, (field, day) in expected.items():
        doc = json.loads((export_dir / f"follow-up-ne-{outcome}.json").read_text())
        payload = map_outbound(doc, mapping)
        assert payload[field] == day
        report = parse_follow_up(payload)
        got = report.next_appointment_date if field == "next_appointment_date" else report.details[field]
        assert got == day
    shutil.rmtree(export_dir)
