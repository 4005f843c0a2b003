"""Every text the CHW reads exists in English, Swahili, Nepali and French: no silent fallback to English.

Checked at the sources (the XLSForm CSVs, the place-type phrases, the ``messages-*.properties``
files, the app form title) and in the committed XForms cht-conf built from them (one ``<translation>``
per language, every text id in each). The outcome and method names are the same words in the
follow-up form's choices, in the contact summary and in :mod:`ltfu.domain.outcomes` (the dashboard).
"""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ltfu.domain.outcomes import CHT_METHOD, CHT_OUTCOME, LANGUAGES, METHOD_LABELS, OUTCOME_LABELS

from .conftest import CONFIG_DIR

XLSFORMS = CONFIG_DIR / "xlsforms"
SHEETS = sorted(p for p in XLSFORMS.rglob("*.csv") if p.name in ("survey.csv", "choices.csv", "settings.csv"))
XFORMS = sorted((CONFIG_DIR / "forms").rglob("*.xml"))
MESSAGES = {lang: CONFIG_DIR / "translations" / f"messages-{lang}.properties" for lang in LANGUAGES}
XF = "{http://www.w3.org/2002/xforms}"
# Keys of cht-core's own catalogue (shipped in en, sw, ne, fr by CHT) that the config uses.
CORE_KEYS = {
    "patient_id",
    "contact.sex",
    "contact.age",
    "person.field.phone",
    "contact.parent",
    "clinic.field.contact",
    "contact.sex.female",
    "contact.sex.male",
}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _messages(lang: str) -> dict[str, str]:
    out = {}
    for line in MESSAGES[lang].read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"messages-{lang}.properties: not key = value: {line!r}"
            out[key.strip()] = value.strip()
    return out


def _choice_labels(list_name: str) -> dict[str, dict[str, str]]:
    rows = _rows(XLSFORMS / "app" / "ltfu_follow_up" / "choices.csv")
    return {r["name"]: {lang: r[f"label::{lang}"] for lang in LANGUAGES} for r in rows if r["list_name"] == list_name}


def test_the_sources_exist() -> None:
    assert len(SHEETS) >= 12
    assert len(XFORMS) == 9  # ltfu_follow_up, person and 3 place types x create/edit


@pytest.mark.parametrize("sheet", SHEETS, ids=lambda p: str(p.relative_to(XLSFORMS)))
def test_every_form_text_has_the_four_languages(sheet: Path) -> None:
    rows = _rows(sheet)
    columns = list(rows[0]) if rows else []
    bases = {c.split("::")[0] for c in columns if "::" in c}
    for base in bases:
        assert {f"{base}::{lang}" for lang in LANGUAGES} <= set(columns), f"{sheet}: {base} lacks a language column"
        assert {c for c in columns if c.startswith(f"{base}::")} == {f"{base}::{lang}" for lang in LANGUAGES}
    missing = [
        f"row {n} {row.get('name') or row.get('list_name')}: {base}::{lang}"
        for n, row in enumerate(rows, start=2)
        for base in bases
        if row[f"{base}::en"].strip()
        for lang in LANGUAGES
        if not row[f"{base}::{lang}"].strip()
    ]
    assert not missing, f"{sheet.relative_to(CONFIG_DIR)}: untranslated {missing}"
    # and nothing translated whose English is empty (a stray text the English form would not show)
    stray = [
        f"row {n}: {base}::{lang}"
        for n, row in enumerate(rows, start=2)
        for base in bases
        if not row[f"{base}::en"].strip()
        for lang in LANGUAGES
        if row[f"{base}::{lang}"].strip()
    ]
    assert not stray, stray


def test_the_place_type_phrases_have_the_four_languages() -> None:
    rows = _rows(XLSFORMS / "contact" / "place-types.csv")
    assert {r["type"] for r in rows} == {"district_hospital", "health_center", "clinic"}
    for row in rows:
        for phrase in ("new", "edit", "name_of"):
            for lang in LANGUAGES:
                assert row[f"{phrase}::{lang}"].strip(), f"{row['type']}: {phrase}::{lang}"


def test_the_place_templates_use_only_translated_phrases() -> None:
    for action in ("create", "edit"):
        text = "".join(p.read_text(encoding="utf-8") for p in (XLSFORMS / "contact" / f"PLACE_TYPE-{action}").iterdir())
        assert "PLACE_NAME::" not in text
        for token in re.findall(r"PLACE_[A-Z_]+::(\w+)", text):
            assert token in LANGUAGES


@pytest.mark.parametrize("xform", XFORMS, ids=lambda p: p.name)
def test_every_built_xform_carries_the_four_translations(xform: Path) -> None:
    root = ET.parse(xform).getroot()
    itext = root.find(f".//{XF}itext")
    assert itext is not None, f"{xform.name} has no itext: rebuild with cht-conf"
    translations = {t.get("lang"): t for t in itext.findall(f"{XF}translation")}
    assert set(translations) == set(LANGUAGES), f"{xform.name}: {sorted(translations)}"

    def texts(lang: str) -> dict[str, str]:
        return {t.get("id"): "".join(t.itertext()).strip() for t in translations[lang].findall(f"{XF}text")}

    english = texts("en")
    assert english
    for lang in LANGUAGES[1:]:
        other = texts(lang)
        assert set(other) == set(english), f"{xform.name} [{lang}]: {set(english) ^ set(other)}"
        empty = sorted(k for k, v in other.items() if english[k] and not v)
        assert not empty, f"{xform.name} [{lang}] empty texts: {empty}"
    # every label, hint and constraint message of the body goes through itext, not a plain string
    body = root.find("{http://www.w3.org/1999/xhtml}body")
    for el in body.iter():
        if el.tag in (f"{XF}label", f"{XF}hint") and (el.text or "").strip():
            raise AssertionError(f"{xform.name}: literal {el.tag} {el.text!r} (no translation)")
    for bind in root.iter(f"{XF}bind"):
        message = bind.get("{http://openrosa.org/javarosa}constraintMsg")
        if message:
            assert message.startswith("jr:itext("), f"{xform.name}: untranslated constraint message {message!r}"


def test_the_message_files_have_the_same_keys_and_no_empty_value() -> None:
    catalogues = {lang: _messages(lang) for lang in LANGUAGES}
    english = set(catalogues["en"])
    for lang, messages in catalogues.items():
        assert set(messages) == english, f"messages-{lang}: {english ^ set(messages)}"
        assert not [k for k, v in messages.items() if not v], f"messages-{lang}: empty values"


def _used_keys() -> set[str]:
    keys: set[str] = set()
    tasks = (CONFIG_DIR / "tasks.js").read_text(encoding="utf-8")
    keys |= set(re.findall(r"'(task\.[a-z0-9_.]+)'", tasks))
    targets = (CONFIG_DIR / "targets.js").read_text(encoding="utf-8")
    keys |= set(re.findall(r"translation_key: '([a-z0-9_.]+)'", targets))
    summary = (CONFIG_DIR / "contact-summary.templated.js").read_text(encoding="utf-8")
    keys |= set(re.findall(r"label: '([a-z0-9_.]+)'", summary))
    # the card's status value is 'ltfu.status.' + the case state (open, not_located, cancelled or an outcome)
    assert "'ltfu.status.' + latestState.status" in summary
    keys |= {f"ltfu.status.{s}" for s in ("open", "not_located", "cancelled", *CHT_OUTCOME)}
    settings = json.loads((CONFIG_DIR / "app_settings" / "base_settings.json").read_text(encoding="utf-8"))
    for contact_type in settings["contact_types"]:
        keys |= {v for k, v in contact_type.items() if k.endswith("_key")}
    keys |= {role["name"] for role in settings["roles"].values()}
    forms = json.loads((CONFIG_DIR / "app_settings" / "forms.json").read_text(encoding="utf-8"))
    keys |= {f["meta"]["translation_key"] for f in forms.values()}
    return keys


def test_every_translation_key_the_config_uses_is_in_the_four_catalogues() -> None:
    used = _used_keys()
    assert {"task.ltfu.follow_up.phone.title", "target.ltfu.back_in_care", "ltfu.card.title"} <= used
    for lang in LANGUAGES:
        missing = sorted(used - CORE_KEYS - set(_messages(lang)))
        assert not missing, f"messages-{lang}.properties lacks {missing}"


def test_the_json_forms_label_every_field_in_the_four_languages() -> None:
    """The request and cancel records (JSON forms) as the Reports tab shows them."""
    forms = json.loads((CONFIG_DIR / "app_settings" / "forms.json").read_text(encoding="utf-8"))
    assert {"INTEROP_FOLLOW_UP", "INTEROP_FOLLOW_UP_CANCEL"} <= set(forms)
    for code, form in forms.items():
        for name, field in form["fields"].items():
            short = field["labels"]["short"]
            assert set(short) == set(LANGUAGES) and all(short.values()), f"{code}.{name}: {short}"


def test_the_app_enables_the_four_languages() -> None:
    settings = json.loads((CONFIG_DIR / "app_settings" / "base_settings.json").read_text(encoding="utf-8"))
    assert [(x["locale"], x["enabled"]) for x in settings["languages"]] == [(lang, True) for lang in LANGUAGES]


def test_the_app_form_title_has_the_four_languages() -> None:
    props = json.loads((CONFIG_DIR / "forms" / "app" / "ltfu_follow_up.properties.json").read_text(encoding="utf-8"))
    titles = {t["locale"]: t["content"] for t in props["title"]}
    assert set(titles) == set(LANGUAGES) and all(titles.values())


def test_outcome_names_are_the_same_in_the_form_the_summary_and_the_dashboard() -> None:
    choices = _choice_labels("outcome")
    assert set(choices) == set(CHT_OUTCOME)
    for lang in LANGUAGES:
        messages = _messages(lang)
        for name, code in CHT_OUTCOME.items():
            assert OUTCOME_LABELS[code][lang] == choices[name][lang], (lang, name)
            if name != "not_located":  # on the card that is a state of an open case: "Open, not located yet"
                assert messages[f"ltfu.status.{name}"] == choices[name][lang], (lang, name)


def test_method_names_are_the_same_in_the_form_and_the_dashboard() -> None:
    choices = _choice_labels("method")
    assert set(choices) == set(CHT_METHOD)
    for name, code in CHT_METHOD.items():
        assert METHOD_LABELS[code] == choices[name]
