"""The calendar the CHW picks dates in: Gregorian (default) or Bikram Sambat (Nepal).

CHT shows a Bikram Sambat picker for a date question whose appearance is ``bikram-sambat`` (it does
so for every date question when the app language is Nepali, too). Whatever the picker, the form
saves the Gregorian ``YYYY-MM-DD``, so the reports the mediator receives, and the FHIR resources it
builds from them, carry ISO dates either way.

:func:`apply_calendar` sets the appearance on every date question of a cht-conf project, in the
XForms (``forms/**/*.xml``, what ``cht upload-*-forms`` sends) and, when the project builds its
workbooks from CSV (``scripts/xlsforms.py``), in the ``.xlsx`` too, so a later
``cht convert-*-forms`` keeps it. Applying ``gregorian`` removes it again.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CALENDARS = ("gregorian", "bikram-sambat")
BS_APPEARANCE = "bikram-sambat"
_DATE_BIND = re.compile(r'<bind nodeset="([^"]+)" type="date"')
_INPUT = r'<input ref="{ref}"(?: appearance="([^"]*)")?'


class CalendarError(ValueError):
    """Unknown calendar, or a project whose workbooks cannot be rebuilt."""


def set_date_appearance(xform: str, calendar: str) -> str:
    """The XForm text with the calendar's appearance on each date question's ``<input>``."""
    if calendar not in CALENDARS:
        raise CalendarError(f"calendar must be one of {', '.join(CALENDARS)}, got {calendar!r}")
    for ref in _DATE_BIND.findall(xform):

        def rewrite(match: re.Match[str], ref: str = ref) -> str:
            tokens = [t for t in (match.group(1) or "").split() if t != BS_APPEARANCE]
            if calendar == "bikram-sambat":
                tokens.append(BS_APPEARANCE)
            appearance = f' appearance="{" ".join(tokens)}"' if tokens else ""
            return f'<input ref="{ref}"{appearance}'

        xform = re.sub(_INPUT.format(ref=re.escape(ref)), rewrite, xform)
    return xform


def apply_calendar(project: Path, calendar: str) -> list[Path]:
    """Set the calendar of every date question of the project's forms; returns the XForms changed."""
    if calendar not in CALENDARS:
        raise CalendarError(f"calendar must be one of {', '.join(CALENDARS)}, got {calendar!r}")
    changed = []
    for path in sorted((project / "forms").rglob("*.xml")):
        text = path.read_text(encoding="utf-8")
        new = set_date_appearance(text, calendar)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    script = project / "scripts" / "xlsforms.py"
    if script.is_file() and (project / "xlsforms").is_dir():
        proc = subprocess.run(
            [sys.executable, str(script), "--project", str(project), "--calendar", calendar],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise CalendarError(f"scripts/xlsforms.py --calendar {calendar} failed: {proc.stderr.strip()[-500:]}")
    return changed
