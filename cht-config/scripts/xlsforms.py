#!/usr/bin/env python3
"""Build the XLSForm workbooks of this cht-conf project from their CSV sources.

cht-conf converts only ``.xlsx`` files, which are binary and impossible to review in a diff.
The forms are therefore written as one folder per form under ``xlsforms/<app|contact>/<form>/``
holding ``survey.csv``, ``choices.csv`` and ``settings.csv`` (the three XLSForm sheets), and this
script writes ``forms/<app|contact>/<form>.xlsx`` from them. The output is byte-for-byte
deterministic (fixed zip timestamps, inline strings), so ``--check`` can tell whether the
committed workbooks match their sources.

Place forms (``clinic``, ``health_center``, ``district_hospital``) share one template,
``xlsforms/contact/PLACE_TYPE-create`` / ``PLACE_TYPE-edit``; ``xlsforms/contact/place-types.csv``
lists the types and, per language, the phrases substituted for ``PLACE_NEW::<lang>``,
``PLACE_EDIT::<lang>`` and ``PLACE_NAME_OF::<lang>`` (whole phrases, not one noun: "New household"
and "Kaya mpya" do not put the adjective in the same place). ``PLACE_TYPE`` becomes the type.

Every text column exists in English, Swahili, Nepali and French (``label::en``, ``label::sw``,
``label::ne``, ``label::fr``; the same for ``hint`` and ``constraint_message``);
``tests/cht_config/test_translations.py`` fails when one is missing.

``--calendar bikram-sambat`` gives every ``date`` question the ``bikram-sambat`` appearance (Nepal:
the CHW picks a Bikram Sambat date, the form still saves the Gregorian ``YYYY-MM-DD``);
``ltfu cht-config build --calendar bikram-sambat`` runs it on a deployment's copy.

Standard library only: ``python3 scripts/xlsforms.py [--check] [--calendar C]`` from the project folder.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

SHEETS = ("survey", "choices", "settings")
CALENDARS = ("gregorian", "bikram-sambat")
FIXED_TIME = (2024, 1, 1, 0, 0, 0)

CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    "{sheets}</Types>"
)
SHEET_TYPE = '<Override PartName="/xl/worksheets/sheet{n}.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'  # noqa: E501
ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="xl/workbook.xml"/></Relationships>'
)
WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    "<sheets>{sheets}</sheets></workbook>"
)
WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    "{rels}</Relationships>"
)
SHEET_REL = '<Relationship Id="rId{n}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet{n}.xml"/>'  # noqa: E501


def _column(index: int) -> str:
    name = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        name = chr(65 + rem) + name
    return name


def _sheet_xml(rows: list[list[str]]) -> str:
    out = [
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
    ]
    for r, row in enumerate(rows, start=1):
        cells = []
        for c, value in enumerate(row):
            if value == "":
                continue
            text = escape(value)
            space = ' xml:space="preserve"' if value != value.strip() else ""
            cells.append(f'<c r="{_column(c)}{r}" t="inlineStr"><is><t{space}>{text}</t></is></c>')
        out.append(f'<row r="{r}">{"".join(cells)}</row>')
    out.append("</sheetData></worksheet>")
    return "".join(out)


def workbook_bytes(sheets: dict[str, list[list[str]]]) -> bytes:
    """A minimal, deterministic .xlsx holding the given sheets (name -> rows of strings)."""
    names = list(sheets)
    parts = {
        "[Content_Types].xml": CONTENT_TYPES.format(
            sheets="".join(SHEET_TYPE.format(n=i) for i in range(1, len(names) + 1))
        ),
        "_rels/.rels": ROOT_RELS,
        "xl/workbook.xml": WORKBOOK.format(
            sheets="".join(
                f'<sheet name="{escape(name)}" sheetId="{i}" r:id="rId{i}"/>' for i, name in enumerate(names, start=1)
            )
        ),
        "xl/_rels/workbook.xml.rels": WORKBOOK_RELS.format(
            rels="".join(SHEET_REL.format(n=i) for i in range(1, len(names) + 1))
        ),
    }
    for i, name in enumerate(names, start=1):
        parts[f"xl/worksheets/sheet{i}.xml"] = _sheet_xml(sheets[name])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for part, text in parts.items():
            info = zipfile.ZipInfo(part, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, text.encode("utf-8"))
    return buf.getvalue()


def _read_csv(path: Path, substitutions: dict[str, str]) -> list[list[str]]:
    text = path.read_text(encoding="utf-8")
    for key, value in substitutions.items():
        text = text.replace(key, value)
    return [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]


def _with_calendar(survey: list[list[str]], calendar: str) -> list[list[str]]:
    """The survey rows with the calendar's appearance on every ``date`` question."""
    if calendar == "gregorian" or not survey:
        return survey
    head = survey[0]
    if "appearance" not in head:
        head = [*head, "appearance"]
    type_col, app_col = head.index("type"), head.index("appearance")
    rows = [head]
    for row in survey[1:]:
        row = row + [""] * (len(head) - len(row))
        if row[type_col].strip() == "date" and calendar not in row[app_col].split():
            row[app_col] = " ".join([*row[app_col].split(), calendar])
        rows.append(row)
    return rows


def _form_sheets(folder: Path, substitutions: dict[str, str], calendar: str) -> dict[str, list[list[str]]]:
    sheets = {
        sheet: _read_csv(folder / f"{sheet}.csv", substitutions)
        for sheet in SHEETS
        if (folder / f"{sheet}.csv").exists()
    }
    if "survey" in sheets:
        sheets["survey"] = _with_calendar(sheets["survey"], calendar)
    return sheets


def planned_workbooks(project: Path, calendar: str = "gregorian") -> dict[Path, bytes]:
    """Every workbook this project's CSV sources produce: target path -> bytes."""
    plan: dict[Path, bytes] = {}
    src_root = project / "xlsforms"
    for kind in ("app", "contact"):
        kind_dir = src_root / kind
        if not kind_dir.is_dir():
            continue
        for folder in sorted(p for p in kind_dir.iterdir() if p.is_dir()):
            if folder.name.startswith("PLACE_TYPE-"):
                continue
            plan[project / "forms" / kind / f"{folder.name}.xlsx"] = workbook_bytes(_form_sheets(folder, {}, calendar))
    place_types = src_root / "contact" / "place-types.csv"
    if place_types.exists():
        with place_types.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                for action in ("create", "edit"):
                    template = src_root / "contact" / f"PLACE_TYPE-{action}"
                    subs = {"PLACE_TYPE": row["type"]}
                    for column, value in row.items():
                        phrase, _, lang = column.partition("::")
                        if lang:
                            subs[f"PLACE_{phrase.upper()}::{lang}"] = value
                    target = project / "forms" / "contact" / f"{row['type']}-{action}.xlsx"
                    plan[target] = workbook_bytes(_form_sheets(template, subs, calendar))
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--check", action="store_true", help="fail if a committed workbook is stale")
    parser.add_argument("--calendar", choices=CALENDARS, default="gregorian", help="calendar of the date questions")
    args = parser.parse_args(argv)
    stale = []
    for target, data in planned_workbooks(args.project, args.calendar).items():
        if target.exists() and target.read_bytes() == data:
            continue
        if args.check:
            stale.append(str(target.relative_to(args.project)))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            print(f"wrote {target.relative_to(args.project)}")
    if stale:
        print("stale workbooks (run scripts/xlsforms.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
