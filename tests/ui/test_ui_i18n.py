"""The dashboard's languages: complete catalogues, language choice, locale formats, no English left.

The catalogue check extracts the texts from the sources as ``pybabel extract`` does and requires
each one, translated, in every catalogue (no fuzzy, no stale entry, the same ``%(name)s``
placeholders). The page checks render /ui pages in Swahili, Nepali and French and look for English:
a text node that is an English message (or an English outcome name) fails, and so does any literal
text in a template that does not go through gettext.
"""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from ltfu.domain.outcomes import LANGUAGES, METHOD_LABELS, OUTCOME_LABELS
from ltfu.ui.i18n import LOCALE_DIR, Locale, catalogue_path, choose_language
from tests.ui.conftest import ARTIFACTS, UiServer, new_page, screenshot

REPO = Path(__file__).resolve().parents[2]
UI = REPO / "src" / "ltfu" / "ui"
TRANSLATED = [lang for lang in LANGUAGES if lang != "en"]
# LTFU_SCREENSHOT_DIR=/work/notes/screenshots keeps the translated pages' pictures out of the repo
SCREENSHOTS = Path(os.environ.get("LTFU_SCREENSHOT_DIR") or ARTIFACTS)
PLACEHOLDER = re.compile(r"%\((\w+)\)s")
# Words that are the same in the translation as in English (names, codes, loanwords).
SAME_EVERYWHERE = {"CHT", "CHT %(kind)s", "p90"}
SAME_IN = {
    "fr": {
        "Action",
        "Code",
        "Destination",
        "Pages",
        "Patient",
        "Programme",
        "%(grade)s · score %(score)s · %(bits)s bits",
    },
    "sw": set(),
    "ne": set(),
}


def _extracted() -> set[str]:
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n", "trim_blocks": "True", "lstrip_blocks": "True"}}
    keywords = {
        "_": None,
        "gettext": None,
        "ngettext": (1, 2),
        "pgettext": ((1, "c"), 2),
        "N_": None,
        "NC_": ((1, "c"), 2),
    }
    found = set()
    for _file, _line, message, _comments, context in extract_from_dir(
        str(UI), method_map, options_map=options, keywords=keywords
    ):
        found.add((context, message[0] if isinstance(message, tuple) else message))
    return found


def _key(m) -> tuple[str | None, str]:  # noqa: ANN001 (babel Message)
    return (m.context, m.id if isinstance(m.id, str) else m.id[0])


def _catalogue(lang: str):  # noqa: ANN202 (babel Catalog)
    with catalogue_path(lang).open("rb") as fh:
        return read_po(fh, locale=lang)


def test_every_text_of_the_sources_is_in_every_catalogue_translated() -> None:
    extracted = _extracted()
    assert {
        (None, "Cases"),
        (None, "Task completed"),
        (None, "%(num)s case"),
        ("task state", "Requested"),
        ("date column", "Requested"),
        (None, "Requested"),
    } <= extracted
    template_ids = {_key(m) for m in _read_template() if m.id}
    assert template_ids == extracted, "messages.pot is stale: run pybabel extract (see ltfu/ui/i18n.py)"
    for lang in LANGUAGES:
        catalogue = _catalogue(lang)
        messages = {_key(m): m for m in catalogue if m.id}
        assert set(messages) == extracted, (
            f"{lang}: missing {extracted - set(messages)}, stale {set(messages) - extracted}"
        )
        for (_ctx, key), m in messages.items():
            strings = m.string if isinstance(m.string, tuple) else (m.string,)
            assert all(s.strip() for s in strings), f"{lang}: untranslated {key!r}"
            assert not m.fuzzy, f"{lang}: fuzzy {key!r}"
            ids = m.id if isinstance(m.id, tuple) else (m.id,)
            wanted = set(PLACEHOLDER.findall(" ".join(ids)))
            for s in strings:
                assert set(PLACEHOLDER.findall(s)) == wanted, f"{lang}: placeholders of {key!r}: {s!r}"
                assert s.count("%%") == key.count("%%"), f"{lang}: %% of {key!r}"
            if lang != "en" and key not in SAME_EVERYWHERE | SAME_IN[lang]:
                assert strings[0] != ids[0], f"{lang}: {key!r} left in English"


def _read_template():  # noqa: ANN202
    with (LOCALE_DIR / "messages.pot").open("rb") as fh:
        return read_po(fh)


def test_templates_have_no_literal_text_outside_gettext() -> None:
    allowed = {"#", "—", "·", "›", "←", "→", "/fhir", "$status", ",", ".", ":", "(", ")", ";"}
    for template in sorted((UI / "templates").glob("*.html")):
        source = template.read_text(encoding="utf-8")
        text = re.sub(r"{{.*?}}|{%.*?%}|{#.*?#}", " ", source, flags=re.S)
        for attribute in re.findall(r'\b(?:aria-label|title|alt|placeholder|data-label)="([^"]*)"', text):
            assert not re.search(r"[A-Za-z]", attribute), f"{template.name}: literal attribute {attribute!r}"
        words = re.sub(r"<[^>]*>", " ", text).split()
        literal = [
            w
            for w in words
            if w not in allowed
            and re.search(r"[A-Za-z]", w)
            and not re.fullmatch(r"(ServiceRequest|Task|Patient|Organization)/", w)
        ]
        assert not literal, f"{template.name}: text outside gettext: {literal}"


@pytest.mark.parametrize(
    ("cookie", "header", "expected"),
    [
        ("sw", "fr-FR,fr;q=0.9", "sw"),
        (None, "fr-FR,fr;q=0.9,en;q=0.5", "fr"),
        (None, "ne-NP", "ne"),
        (None, "de-DE,sw-KE;q=0.8,en;q=0.5", "sw"),
        (None, "en;q=0.2,ne;q=0.9", "ne"),
        (None, "ne;q=0,fr;q=0.1", "fr"),
        (None, "de", "en"),
        ("xx", ";;;,q=,*", "en"),
        (None, None, "en"),
    ],
)
def test_language_choice(cookie: str | None, header: str | None, expected: str) -> None:
    assert choose_language(cookie, header) == expected


def test_numbers_and_dates_follow_the_locale() -> None:
    from datetime import UTC, date, datetime

    assert Locale("en").number(1234.56) == "1,234.6"
    assert Locale("fr").number(1234.56).replace("\u202f", " ").replace("\xa0", " ") == "1 234,6"
    assert Locale("en").percent(0.634) == "63%"
    assert Locale("fr").percent(0.634).replace("\xa0", " ").replace("\u202f", " ") == "63 %"
    assert Locale("en").day(date(2026, 3, 2)) == "Mar 2, 2026"
    assert Locale("sw").day(date(2026, 3, 2)) == "2 Mac 2026"
    assert Locale("fr").when(datetime(2026, 12, 1, 9, 5, tzinfo=UTC)) == "1 déc. 2026 09:05"
    assert "मार्च" in Locale("ne").day(date(2026, 3, 2))
    assert Locale("ne").outcome("deceased") == OUTCOME_LABELS["deceased"]["ne"]
    assert Locale("sw").method("home-visit") == METHOD_LABELS["home-visit"]["sw"]


class _Texts(HTMLParser):
    """The text nodes and the user-visible attributes of a page (not inside <style> or <script>)."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script"):
            self._skip += 1
        for name, value in attrs:
            if name in ("aria-label", "title", "alt", "placeholder", "data-label") and value:
                self.texts.append(value.strip())

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.texts.append(" ".join(data.split()))


def _english_patterns(lang: str) -> list[re.Pattern[str]]:
    """Every English text that has a different translation in ``lang``, as a whole-text pattern."""
    english = []
    for m in _catalogue(lang):
        if not m.id:
            continue
        ids = m.id if isinstance(m.id, tuple) else (m.id,)
        strings = m.string if isinstance(m.string, tuple) else (m.string,)
        english += [i for i, s in zip(ids, strings, strict=False) if i != s]
    english += [
        labels["en"] for labels in (*OUTCOME_LABELS.values(), *METHOD_LABELS.values()) if labels[lang] != labels["en"]
    ]
    patterns = []
    for text in english:
        parts = PLACEHOLDER.split(text)
        regex = "".join(re.escape(re.sub(r"\s+", " ", p)) if i % 2 == 0 else ".+?" for i, p in enumerate(parts))
        patterns.append(re.compile(regex))
    return patterns


PAGES = [
    "/ui/cases",
    "/ui/programme",
    "/ui/deliveries",
    "/ui/cases?state=bogus&from=x",
    "/ui/review",
    "/ui/review?status=all",
]


@pytest.mark.parametrize("lang", TRANSLATED)
def test_no_english_is_left_in_a_translated_page(ui_server: UiServer, lang: str) -> None:
    # every case's timeline (requests, attempts, cancellations, deliveries in every state)
    pages = [*PAGES, *(f"/ui/cases/{case_id}" for case_id in ui_server.seeded.cases.values())]
    # a delivery's retry page (dead: the confirmation; else "nothing to retry"), a facility's bulk retry
    rows = ui_server.outbox()
    assert rows
    pages += [f"/ui/deliveries/{r['id']}/retry" for r in (rows[0], *ui_server.outbox(status="dead")[:1])]
    pages.append(f"/ui/deliveries/retry?facility={ui_server.seeded.orgs['B']}")
    patterns = _english_patterns(lang)
    for path in pages:
        r = ui_server.get(path, cookies={"ltfu_lang": lang})
        assert r.status_code == 200, (path, r.status_code)
        assert r.headers["content-language"] == lang
        assert f'<html lang="{lang}">' in r.text
        parser = _Texts()
        parser.feed(r.text)
        left = [t for t in parser.texts for p in patterns if p.fullmatch(t)]
        assert not left, f"{lang} {path}: English left: {sorted(set(left))}"


def test_the_same_page_in_english_has_those_texts(ui_server: UiServer) -> None:
    """The check above is not vacuous: the English page is full of the texts it looks for."""
    patterns = _english_patterns("sw")
    r = ui_server.get("/ui/programme")
    assert r.headers["content-language"] == "en"
    parser = _Texts()
    parser.feed(r.text)
    hits = {t for t in parser.texts for p in patterns if p.fullmatch(t)}
    assert len(hits) > 30, hits


def test_csv_headers_follow_the_language_and_numbers_stay_plain(ui_server: UiServer) -> None:
    r = ui_server.get("/ui/programme/funnel.csv", cookies={"ltfu_lang": "fr"})
    assert r.status_code == 200
    header, first = r.text.splitlines()[:2]
    assert header == "Étape,Dossiers,Part des demandes (%)"
    assert re.fullmatch(r"Demandés,\d+,100\.0", first), first


def test_the_picker_sets_a_cookie_and_goes_back(ui_server: UiServer) -> None:
    r = ui_server.get("/ui/language", params={"lang": "ne", "next": "/ui/programme?facility=x"})
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/programme?facility=x"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("ltfu_lang=ne;") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    for evil in ("https://evil.example/ui", "//evil.example/ui", "/fhir/Patient", "javascript:alert(1)"):
        r = ui_server.get("/ui/language", params={"lang": "sw", "next": evil})
        assert r.headers["location"] == "/ui/cases", evil
    r = ui_server.get("/ui/language", params={"lang": "xx", "next": "/ui/cases"})
    assert "set-cookie" not in r.headers


def _no_english_headings(page: Any) -> None:
    body = page.inner_text("main")
    for english in ("Cases", "Programme", "Outcome", "Facility", "Requested", "Apply filters", "Download CSV"):
        assert not re.search(rf"(?m)^{re.escape(english)}\b", body), english


def test_swahili_chosen_with_the_picker(ui_server: UiServer, browser: Any) -> None:
    page = new_page(browser)
    page.goto(ui_server.url + "/ui/cases?state=open")
    assert page.locator("h1").inner_text() == "Cases"
    page.select_option("#lang-pick", "sw")
    page.click("form.lang button")
    assert page.url.endswith("/ui/cases?state=open")  # back where the choice was made
    assert page.locator("html").get_attribute("lang") == "sw"
    assert page.locator("h1").inner_text() == "Kesi"
    assert re.match(r"Kesi \d+ zinalingana na vichujio", page.locator("#case-count").inner_text())
    page.goto(ui_server.url + "/ui/cases")
    outcomes = set(page.locator("table.cases td[data-label='Matokeo']").all_inner_texts())
    assert {"Anakataa kurudi", "Atarudi kwenye huduma (miadi mpya)"} <= outcomes
    assert "Imesitishwa" in page.locator("table.cases").inner_text()  # a state badge
    _no_english_headings(page)
    screenshot(page, "i18n-sw-cases", SCREENSHOTS)

    page.goto(ui_server.url + "/ui/programme")  # the cookie keeps the choice
    assert page.locator("h1").inner_text() == "Programu"
    funnel = [r.split("\t")[0] for r in page.locator("#table-funnel tbody tr").all_inner_texts()]
    assert funnel == [
        "Zilizoombwa",
        "Imefika CHT",
        "Yamejaribiwa na mhudumu",
        "Mgonjwa amefikiwa",
        "Wanaorudi kwenye huduma",
    ]
    assert page.locator("svg#chart-funnel > title").text_content().startswith("Hatua za ufuatiliaji")
    assert "Atarudi kwenye huduma (miadi mpya)" in page.locator("#table-outcomes").inner_text()
    _no_english_headings(page)
    screenshot(page, "i18n-sw-programme", SCREENSHOTS)
    page.context.close()


def test_nepali_from_the_browser_language(ui_server: UiServer, browser: Any) -> None:
    page = new_page(browser, locale="ne-NP")
    page.goto(ui_server.url + "/ui/cases")
    assert page.locator("html").get_attribute("lang") == "ne"
    assert page.locator("h1").inner_text() == "केसहरू"
    assert re.match(r"\d+ केस", page.locator("#case-count").inner_text())
    requested = page.locator("table.cases td[data-label='अनुरोध मिति'] time").first.inner_text()
    assert re.search(r"[\u0900-\u097F]", requested), requested  # a Nepali month name
    outcomes = set(page.locator("table.cases td[data-label='नतिजा']").all_inner_texts())
    assert OUTCOME_LABELS["refused"]["ne"] in outcomes
    assert page.locator("#lang-pick option[selected]").inner_text() == "नेपाली"
    _no_english_headings(page)
    screenshot(page, "i18n-ne-cases", SCREENSHOTS)

    page.goto(ui_server.url + "/ui/programme")
    assert page.locator("h1").inner_text() == "कार्यक्रम"
    assert page.locator("svg#chart-funnel > title").text_content().startswith("फलोअपका चरणहरू")
    weeks = page.locator("#table-weeks tbody th").all_inner_texts()
    assert weeks and all(re.search(r"[\u0900-\u097F]", w) for w in weeks), weeks
    _no_english_headings(page)
    screenshot(page, "i18n-ne-programme", SCREENSHOTS)
    page.context.close()

    phone = new_page(browser, locale="ne-NP", phone=True)
    phone.goto(ui_server.url + "/ui/cases")
    assert phone.locator("h1").inner_text() == "केसहरू"
    screenshot(phone, "i18n-ne-cases-phone", SCREENSHOTS)
    phone.context.close()
