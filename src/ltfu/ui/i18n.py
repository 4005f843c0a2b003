"""The dashboard in the operator's language: English, Swahili, Nepali or French.

Texts are gettext messages (English msgids). Templates use Jinja2's i18n extension (``{% trans %}``,
``_()``); Python code marks a text with :func:`N_` and returns a :class:`Msg` when it has
parameters, and the templates translate it at render time (``|t``). The catalogues are the ``.po``
files in ``ltfu/ui/locale/<lang>/LC_MESSAGES/messages.po`` (shipped in the wheel), compiled in memory
at first use, so a plain ``pip install`` needs no build step. Refresh them after changing a text:
see docs/translations.md for the two ``pybabel`` commands (tests/ui/test_ui_i18n.py fails while a
text is missing from a catalogue or untranslated).

The language comes from the ``ltfu_lang`` cookie (set by the picker on every page), else from the
browser's ``Accept-Language``, else English. Numbers and dates are formatted with Babel for that
locale. Outcome and method names come from :mod:`ltfu.domain.outcomes`, the words the CHT app shows.
"""

from __future__ import annotations

import gettext
import io
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

from babel.core import negotiate_locale
from babel.dates import format_date, format_skeleton
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, format_percent
from babel.support import Translations

from ltfu.domain.outcomes import LANGUAGES, method_label, outcome_label

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"
COOKIE = "ltfu_lang"
DEFAULT = "en"
# How each language names itself in the picker.
NATIVE_NAMES = {"en": "English", "sw": "Kiswahili", "ne": "नेपाली", "fr": "Français"}


def N_(message: str) -> str:  # noqa: N802 (the gettext convention for "translate later")
    """Mark ``message`` for extraction; it is translated where it is shown."""
    return message


def NC_(context: str, message: str) -> str:  # noqa: N802
    """:func:`N_` for a message with a gettext context (shown with ``pgettext(context, message)``)."""
    return message


# The context of the Task states' names: a state ("Requested", "Cancelled") is not the same word as
# a column or a count in every language.
STATE_CONTEXT = "task state"


@dataclass(frozen=True)
class Msg:
    """A text translated at render time: a msgid and its named ``%(name)s`` parameters.

    A parameter that is itself a :class:`Msg` is translated too.
    """

    id: str
    params: dict[str, Any] = field(default_factory=dict)


def catalogue_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def translations(language: str) -> gettext.NullTranslations:
    """The language's catalogue (English's holds the msgids themselves). Fuzzy entries are not used."""
    if language not in LANGUAGES:
        return gettext.NullTranslations()
    with catalogue_path(language).open("rb") as fh:
        catalog = read_po(fh, locale=language, domain=DOMAIN)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(fp=buf, domain=DOMAIN)


def _accept_language(header: str) -> list[str]:
    """Language tags of an ``Accept-Language`` header, most preferred first (q=0 dropped)."""
    ranked = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and tag != "*" and quality > 0:
            ranked.append((-quality, position, tag.replace("-", "_")))
    return [tag for _, _, tag in sorted(ranked)]


def choose_language(cookie: str | None, accept_language: str | None) -> str:
    """The picker's choice if it is one of ours, else the browser's best match, else English."""
    if cookie in LANGUAGES:
        return cookie
    if accept_language:
        found = negotiate_locale(_accept_language(accept_language[:1000]), list(LANGUAGES), sep="_")
        if found:
            return found.split("_")[0]
    return DEFAULT


class Locale:
    """Translation and formatting for one language, as the templates and the routes use them."""

    def __init__(self, language: str) -> None:
        self.language = language if language in LANGUAGES else DEFAULT
        self._t = translations(self.language)

    def gettext(self, message: str) -> str:
        return self._t.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self._t.ngettext(singular, plural, n)

    def pgettext(self, context: str, message: str) -> str:
        return self._t.pgettext(context, message)

    def state(self, code: str, labels: dict[str, str]) -> str:
        """A Task state's name (``labels``: state -> English msgid)."""
        return self.pgettext(STATE_CONTEXT, labels[code]) if code in labels else code

    def t(self, value: Any) -> Any:
        """A :class:`Msg` translated (with its parameters); anything else as it is."""
        if isinstance(value, Msg):
            params = {k: self.t(v) for k, v in value.params.items()}
            text = self.gettext(value.id)
            return text % params if params else text
        return value

    def number(self, value: float | None, digits: int = 1) -> str:
        if value is None:
            return "—"
        if isinstance(value, int) and digits == 0:
            return format_decimal(value, locale=self.language)
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return format_decimal(value, format=pattern, locale=self.language)

    def count(self, value: int) -> str:
        return format_decimal(value, locale=self.language)

    def percent(self, share: float | None) -> str:
        """``share`` (0-1) as a whole percentage."""
        return "—" if share is None else format_percent(share, locale=self.language)

    def day(self, value: date | None) -> str:
        return "" if value is None else format_date(value, "medium", locale=self.language)

    def short_day(self, value: date) -> str:
        return format_skeleton("MMMd", value, locale=self.language)

    def when(self, value: datetime | None) -> str:
        """An instant (UTC) as the locale writes a date, with a 24-hour time."""
        if value is None:
            return ""
        return f"{format_date(value, 'medium', locale=self.language)} {value.strftime('%H:%M')}"

    def outcome(self, code: str) -> str:
        return outcome_label(code, self.language)

    def method(self, code: str) -> str:
        return method_label(code, self.language)
