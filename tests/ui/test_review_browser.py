"""``/ui/review`` in real headless Chromium (JavaScript off): the queue, the side-by-side page, a decision."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ltfu.services import intake
from ltfu.services.cht_index import index_docs
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.matching.test_match_api import PEOPLE, PLACES
from tests.support.server import ServerThread
from tests.ui.conftest import ADMIN, build_app, new_page, screenshot
from tests.ui.test_ui_i18n import TRANSLATED, _english_patterns, _Texts

CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}


@pytest.fixture(scope="module")
def review_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp: Path = tmp_path_factory.mktemp("review-ui")
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'ltfu.db'}", data_dir=tmp, admin_password=ADMIN[1], workers=False
    )
    with ServerThread(build_app(settings)) as srv:
        s = requests.Session()
        s.auth = ADMIN
        s.put(
            srv.url + "/fhir/Endpoint/ep-a",
            json={
                "resourceType": "Endpoint",
                "id": "ep-a",
                "status": "active",
                "connectionType": CONN,
                "payloadType": [{"text": "Task"}],
                "address": "https://a.example/notify",
            },
        )
        s.put(
            srv.url + "/fhir/Organization/org-a",
            json={
                "resourceType": "Organization",
                "id": "org-a",
                "name": "A",
                "endpoint": [{"reference": "Endpoint/ep-a"}],
            },
        )
        patient = s.post(
            srv.url + "/fhir/Patient",
            json={"resourceType": "Patient", "gender": "female", "name": [{"family": "Otieno", "given": ["Grace"]}]},
        ).json()["id"]
        case = s.post(
            srv.url + "/fhir/ServiceRequest",
            json={
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "identifier": [{"system": "https://facility.example/ltfu-request", "value": "ui-1"}],
                "subject": {"reference": f"Patient/{patient}"},
                "requester": {"reference": "Organization/org-a"},
                "code": {
                    "coding": [{"system": "https://ltfu.example.org/fhir/CodeSystem/ltfu", "code": "ltfu-tracing"}]
                },
            },
        ).json()["id"]

        async def seed() -> str:
            db = Database(settings)
            async with unit_of_work(db) as uow:
                await index_docs(uow, PLACES + PEOPLE)
                sr = (await uow.resources.read("ServiceRequest", case)).resource
                p = (await uow.resources.read("Patient", patient)).resource
                decision = await intake.decide(uow, case, sr, p, "org-a")
                review_id = await intake.open_review(uow, case, "org-a", patient, decision)
            await db.dispose()
            return review_id

        review_id = asyncio.run(seed())
        yield srv.url, review_id


@pytest.mark.parametrize("lang", TRANSLATED)
def test_review_pages_have_no_english_left(review_server: tuple[str, str], lang: str) -> None:
    """The queue, the open item (every field, verdict, grade, action) and a refused decision, translated."""
    url, review_id = review_server
    patterns = _english_patterns(lang)
    s = requests.Session()
    s.auth = ADMIN
    s.cookies.set("ltfu_lang", lang)
    pages = [
        s.get(url + "/ui/review"),
        s.get(url + f"/ui/review/{review_id}"),
        s.get(url + "/ui/review?done=link"),
        s.get(url + "/ui/review?status=bogus"),
        s.get(url + "/ui/review/no-such-item"),
        s.post(url + f"/ui/review/{review_id}", data={"action": "link", "person": "nobody"}),
    ]
    assert [r.status_code for r in pages] == [200, 200, 200, 400, 404, 422]
    assert "data-verdict" in pages[1].text and 'name="action" value="defer"' in pages[1].text  # still open
    for r in pages:
        assert r.headers["content-language"] == lang
        parser = _Texts()
        parser.feed(r.text)
        left = [t for t in parser.texts for p in patterns if p.fullmatch(t)]
        assert not left, f"{lang} {r.request.method} {r.url}: English left: {sorted(set(left))}"
        assert not any(w in r.text for w in ("Decision recorded", "Link to", "Not done", "review item")), r.url


def test_flag_duplicates_keeps_the_item_open(review_server: tuple[str, str], browser: Any) -> None:
    """The two Graces are one woman recorded twice in CHT: flagged from the item page, listed on the queue for
    a CHT admin; the patient still waits for a decision."""
    url, review_id = review_server
    page = new_page(browser)
    page.goto(url + f"/ui/review/{review_id}")
    page.check("#flag-duplicate input[value='grace']")
    page.click("button:text('Flag as duplicates in CHT')")
    assert page.locator("h1").inner_text() == "Not done"  # one ticked is not a duplicate
    assert "Tick at least two of the candidates" in page.content()
    page.goto(url + f"/ui/review/{review_id}")
    page.check("#flag-duplicate input[value='grace']")
    page.check("#flag-duplicate input[value='grace2']")
    page.fill("#dup-note", "same woman, registered by two CHWs")
    page.click("button:text('Flag as duplicates in CHT')")
    assert page.url.endswith(f"/ui/review/{review_id}?done=flag-duplicate")
    assert page.locator("#flagged").is_visible()
    assert page.locator("#status").get_attribute("data-status") == "open"
    assert "admin · flagged as duplicates in CHT" in page.locator("#decisions").inner_text()
    assert page.locator("button:text('Defer')").count() == 1  # still to decide
    screenshot(page, "review-04-flagged")
    page.goto(url + "/ui/review")
    rows = page.locator("#duplicates tr[data-group]")
    assert rows.count() == 1
    listed = rows.first.locator("li[data-person]").all_inner_texts()
    assert [t.split(" · ")[0] for t in listed] == ["Grace Akinyi Otieno (grace)", "Grace Atieno Otieno (grace2)"]
    assert "Otieno household" in listed[0] and "Kanyawegi CU" in listed[0]
    assert "same woman, registered by two CHWs" in rows.first.inner_text()
    assert page.locator("#review-count").inner_text() == "1 item"
    screenshot(page, "review-05-duplicates")


@pytest.mark.parametrize("lang", TRANSLATED)
def test_duplicate_texts_are_translated(review_server: tuple[str, str], lang: str) -> None:
    url, review_id = review_server
    patterns = _english_patterns(lang)
    s = requests.Session()
    s.auth = ADMIN
    s.cookies.set("ltfu_lang", lang)
    pages = [
        s.get(url + "/ui/review"),
        s.get(url + f"/ui/review/{review_id}?done=flag-duplicate"),
        s.get(url + "/ui/review?done=resolve-duplicate"),
        s.post(url + f"/ui/review/{review_id}", data={"action": "flag-duplicate", "persons": "grace"}),
        s.post(url + "/ui/review/duplicates/no-such-group/resolve"),
    ]
    assert [r.status_code for r in pages] == [200, 200, 200, 422, 404]
    assert 'id="duplicates"' in pages[0].text and 'id="flagged"' in pages[1].text
    for r in pages:
        parser = _Texts()
        parser.feed(r.text)
        left = [t for t in parser.texts for p in patterns if p.fullmatch(t)]
        assert not left, f"{lang} {r.request.method} {r.url}: English left: {sorted(set(left))}"


def test_review_queue_side_by_side_and_link(review_server: tuple[str, str], browser: Any) -> None:
    url, review_id = review_server
    page = new_page(browser)
    page.goto(url + "/ui/review")
    assert page.title() == "Patient matching review · LTFU dashboard"
    assert page.locator("#review-count").inner_text() == "1 item"
    screenshot(page, "review-01-queue")
    page.click("text=Grace Otieno")
    assert page.url.endswith(f"/ui/review/{review_id}")
    headers = page.locator("th.candidate").all_inner_texts()
    assert any(h.startswith("Grace Akinyi Otieno") for h in headers)
    assert any(h.startswith("Grace Atieno Otieno") for h in headers)
    given = page.locator("tr[data-field='given'] td[data-verdict]").evaluate_all(
        "cells => cells.map(c => c.dataset.verdict)"
    )
    assert set(given) == {"agree"}  # the given name agrees with both Graces
    assert "Otieno household → Akinyi Area → Kanyawegi CU" in page.locator("td.lineage").first.inner_text()
    screenshot(page, "review-02-item")
    page.click("button:text('Link to Grace Akinyi Otieno')")
    assert page.url.endswith("/ui/review?done=link")
    assert "Decision recorded: linked." in page.content()
    assert page.locator("#review-count").inner_text() == "0 items"
    page.goto(url + f"/ui/review/{review_id}")
    assert page.locator("#status").inner_text() == "Linked"
    assert page.locator("#status").get_attribute("data-status") == "linked"
    assert "admin · linked grace" in page.locator("#decisions").inner_text()
    assert page.locator("button:text('Defer')").count() == 0  # decided: no more actions
    screenshot(page, "review-03-decided")


def test_duplicates_dealt_with_in_cht(review_server: tuple[str, str], browser: Any) -> None:
    url, _ = review_server
    page = new_page(browser)
    page.goto(url + "/ui/review")
    page.click("#duplicates button:text('Dealt with in CHT')")
    assert page.url.endswith("/ui/review?done=resolve-duplicate")
    assert "Decision recorded: marked as dealt with in CHT." in page.content()
    assert page.locator("#duplicates").count() == 0
