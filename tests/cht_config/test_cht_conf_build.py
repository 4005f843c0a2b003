"""cht-conf accepts the project: compile, convert and validate all succeed, and the committed
generated files (XLSForm workbooks, XForms) match their sources."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import CONFIG_DIR, Run


def test_cht_compile_convert_validate_succeeds(cht_build: Run) -> None:
    assert cht_build.returncode == 0, cht_build.output[-6000:]
    assert "All actions completed." in cht_build.output
    assert "ERROR" not in cht_build.output


def test_compiled_app_settings(built_project: Path) -> None:
    settings = json.loads((built_project / "app_settings.json").read_text())
    assert settings["tasks"]["isDeclarative"] is True
    assert "INTEROP_FOLLOW_UP_CANCEL" in settings["tasks"]["rules"]
    assert settings["contact_summary"]
    forms = settings["forms"]
    assert forms["INTEROP_FOLLOW_UP"]["public_form"] is True
    assert forms["INTEROP_FOLLOW_UP_CANCEL"]["public_form"] is True
    assert {"patient_uuid", "case_ref", "due_date"} <= set(forms["INTEROP_FOLLOW_UP"]["fields"])
    assert settings["transitions"]["mark_for_outbound"] is True
    paths = {entry["destination"]["path"] for entry in settings["outbound"].values()}
    # + the PoC's Encounter push for its own `interop_follow_up` report shape (reference compatibility)
    assert paths == {"/cht/patient", "/cht/follow-up", "/mediator/encounter"}


def test_converted_forms_match_the_committed_xml(built_project: Path) -> None:
    converted = sorted(p.relative_to(built_project) for p in (built_project / "forms").rglob("*.xml"))
    assert Path("forms/app/ltfu_follow_up.xml") in converted
    assert Path("forms/contact/person-create.xml") in converted
    stale = [
        str(rel)
        for rel in converted
        if not (CONFIG_DIR / rel).exists() or (CONFIG_DIR / rel).read_text() != (built_project / rel).read_text()
    ]
    assert not stale, f"re-run `npx cht --no-check convert-app-forms convert-contact-forms` and commit: {stale}"


def test_xlsform_workbooks_match_their_csv_sources() -> None:
    proc = subprocess.run(
        [sys.executable, str(CONFIG_DIR / "scripts" / "xlsforms.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_follow_up_xform_links_the_report_to_the_patient() -> None:
    xml = (CONFIG_DIR / "forms" / "app" / "ltfu_follow_up.xml").read_text()
    assert '<bind nodeset="/data/patient_uuid" type="string" calculate="../inputs/contact/_id"/>' in xml
    assert '<bind nodeset="/data/patient_id" type="string" calculate="../inputs/contact/patient_id"/>' in xml
    assert 'id="ltfu_follow_up"' in xml
