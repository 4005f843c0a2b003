"""The dashboard in real headless Chromium (Debian's), JavaScript off: filters, timeline, retry, scoping.

Screenshots of every page go to test-artifacts/ui/.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from tests.ui.conftest import CLINIC_A, UiServer, new_page, screenshot
from tests.ui.seed import EXPECTED_STATES, PATIENTS


def count(page: Any) -> int:
    text = page.locator("#case-count").inner_text()
    m = re.match(r"(\d+) case", text)
    assert m, text
    return int(m.group(1))


def column(page: Any, label: str) -> list[str]:
    return page.locator(f"table.cases td[data-label='{label}']").all_inner_texts()


def test_case_list_filters(ui_server: UiServer, browser: Any) -> None:
    page = new_page(browser)
    page.goto(ui_server.url + "/ui/cases")
    assert page.title() == "Cases · LTFU dashboard"
    assert count(page) == len(PATIENTS)
    screenshot(page, "01-cases-all")

    page.select_option("#f-state", "completed")
    page.click("button:text('Apply filters')")
    assert count(page) == EXPECTED_STATES["completed"]
    assert set(column(page, "State")) == {"Completed"}
    assert "state=completed" in page.url

    page.select_option("#f-facility", label="Siaya Health Centre")
    page.click("button:text('Apply filters')")
    assert count(page) == 1  # B-2001 is B's only completed case
    assert column(page, "Patient") == ["B-2001"]
    screenshot(page, "02-cases-filtered")

    page.goto(ui_server.url + "/ui/cases")
    page.select_option("#f-outcome", "not-located")
    page.click("button:text('Apply filters')")
    assert column(page, "Patient") == ["A-1002"]  # A-1007 and B-2002 are unsuccessful attempts, no outcome

    page.goto(ui_server.url + "/ui/cases")
    page.select_option("#f-state", "open")
    page.select_option("#f-chw", "chw-b-01")
    page.click("button:text('Apply filters')")
    assert column(page, "Patient") == ["B-2002"]

    page.goto(ui_server.url + "/ui/cases")
    page.fill("#f-q", "A-1003")
    page.press("#f-q", "Enter")
    assert column(page, "Patient") == ["A-1003"]
    assert column(page, "Outcome") == ["Refuses to return"]

    page.goto(ui_server.url + "/ui/cases?age=8-14")
    assert count(page) == 0  # every seeded request is from today
    page.goto(ui_server.url + "/ui/cases?age=0-7&from=2000-01-01&to=2999-12-31")
    assert count(page) == len(PATIENTS)
    page.goto(ui_server.url + "/ui/cases?to=2000-01-01")
    assert count(page) == 0
    page.context.close()


def test_case_timeline(ui_server: UiServer, browser: Any) -> None:
    page = new_page(browser)
    page.goto(ui_server.url + "/ui/cases?q=A-1002")
    page.click("text=REQ-A-1002")
    assert page.locator("h1").inner_text() == "Case REQ-A-1002"
    events = page.locator("ol.timeline > li").all_inner_texts()
    text = "\n".join(events)
    assert "Request received from the facility" in events[0]
    attempts = [e for e in events if "CHW follow-up attempt" in e]
    assert len(attempts) == 2 and all("Home visit" in e and "Not located" in e for e in attempts)
    assert "Mary Atieno" in attempts[0]
    assert "Task completed" in text
    assert "Follow-up sent to CHT" in text and "queued" in text  # no CHT configured in this test
    assert re.search(r"Notification event \d+ to the facility", text)
    page.click("details summary >> nth=0")
    screenshot(page, "03-case-timeline")
    assert page.locator("a", has_text="ServiceRequest/").get_attribute("href").startswith("/fhir/ServiceRequest/")
    page.goto(ui_server.url + "/ui/cases/" + ui_server.seeded.cases["A-1006"])
    assert "Request withdrawn by the facility" in page.locator("ol.timeline").inner_text()
    assert "Task cancelled" in page.locator("ol.timeline").inner_text()
    page.context.close()


def test_retry_dead_delivery_changes_its_state(ui_server: UiServer, browser: Any) -> None:
    org_b = ui_server.seeded.orgs["B"]
    dead = ui_server.outbox(destination="notify", status="dead", organization=org_b)
    assert len(dead) >= 3, dead  # one event per Task change of B's cases
    page = new_page(browser)
    page.goto(ui_server.url + "/ui/deliveries")
    screenshot(page, "04-deliveries")
    assert "error" in page.locator("table.subs").inner_text()  # B's subscription went to error

    ui_server.callbacks.b_ok = True  # the facility fixed its receiver
    target = dead[-1]["id"]  # the oldest dead row (list is newest first)
    row = page.locator(f"#delivery-{target}")
    assert "dead" in row.inner_text()
    row.locator("a.button").click()
    assert page.locator("h1").inner_text() == f"Retry delivery #{target}"
    screenshot(page, "05-retry-confirm")
    page.click(f"button:text('Yes, retry delivery #{target}')")
    assert page.locator(".notice.ok").inner_text().startswith("1 delivery queued again")
    def delivered() -> bool:
        return next(r for r in ui_server.outbox(organization=org_b) if r["id"] == target)["status"] == "done"

    ui_server.wait("the retried row to be delivered", delivered)

    page.goto(ui_server.url + "/ui/deliveries?state=dead")
    assert page.locator(f"#delivery-{target}").count() == 0
    page.select_option("#r-facility", org_b)
    page.click("button:text('Retry all dead deliveries')")
    remaining = len(dead) - 1
    assert f"{remaining} dead deliveries of Siaya Health Centre" in page.locator("form.confirm").inner_text()
    page.click(f"button:text('Yes, retry {remaining} deliveries')")
    assert page.locator(".notice.ok").inner_text().startswith(f"{remaining} deliveries queued again")
    ui_server.wait("B's notifications to be delivered", lambda: not ui_server.outbox(
        destination="notify", status="dead", organization=org_b) and not ui_server.outbox(
        destination="notify", status="pending", organization=org_b))
    page.goto(ui_server.url + "/ui/deliveries")
    assert "active" in page.locator("table.subs").inner_text()
    page.context.close()


def test_facility_client_sees_only_its_facility(ui_server: UiServer, browser: Any) -> None:
    page = new_page(browser, CLINIC_A)
    page.goto(ui_server.url + "/ui/cases")
    assert "Kisumu County Referral" in page.locator(".who").inner_text()
    assert count(page) == sum(1 for p in PATIENTS if p[1] == "A")
    assert all(p.startswith("A-") for p in column(page, "Patient"))
    assert page.locator("#f-facility").count() == 0  # nothing to choose from
    screenshot(page, "06-cases-facility-client")

    other = ui_server.seeded.cases["B-2001"]
    response = page.goto(ui_server.url + f"/ui/cases/{other}")
    assert response.status == 404
    assert "B-2001" not in page.content() and "Imani" not in page.content()
    screenshot(page, "07-other-facility-case-404")
    # Asking for the other facility by query parameter gives nothing either.
    page.goto(ui_server.url + f"/ui/cases?facility={ui_server.seeded.orgs['B']}")
    assert count(page) == 0
    page.goto(ui_server.url + f"/ui/programme?facility={ui_server.seeded.orgs['B']}")
    assert "0 cases requested" in page.locator(".summary").inner_text()
    page.context.close()


def test_programme_view_and_csv(ui_server: UiServer, browser: Any) -> None:
    page = new_page(browser)
    page.goto(ui_server.url + "/ui/programme")
    funnel = page.locator("#table-funnel tbody tr").all_inner_texts()
    assert [re.split(r"\t", r)[:2] for r in funnel] == [
        ["Requested", "12"], ["Reached CHT", "7"], ["Attempted by a CHW", "7"], ["Patient reached", "3"],
        ["Returning to care", "2"]]
    assert page.locator("svg#chart-funnel > title").text_content().startswith("Follow-up funnel")
    assert page.locator("svg#chart-funnel rect.bar").count() == 5
    assert page.locator("svg.chart").count() == 5
    screenshot(page, "08-programme")
    with page.expect_download() as info:
        page.click("a.csv >> nth=0")
    rows = list(csv.reader(io.StringIO(info.value.path().read_text())))
    assert rows[0] == ["Stage", "Cases", "Share of requested (%)"]
    assert rows[1:3] == [["Requested", "12", "100.0"], ["Reached CHT", "7", "58.3"]]
    page.context.close()

    phone = new_page(browser, phone=True)
    phone.goto(ui_server.url + "/ui/programme")
    screenshot(phone, "09-programme-phone")
    phone.goto(ui_server.url + "/ui/cases")
    screenshot(phone, "10-cases-phone")
    phone.context.close()


def test_accessible_basics(ui_server: UiServer, browser: Any) -> None:
    """Labels on every control, a skip link first in tab order, no horizontal scroll on a phone."""
    for path in ("/ui/cases", "/ui/deliveries", "/ui/programme",
                 f"/ui/cases/{ui_server.seeded.cases['A-1002']}"):
        page = new_page(browser, js=True, phone=True)
        page.goto(ui_server.url + path)
        unlabelled = page.evaluate("""() => [...document.querySelectorAll('input:not([type=hidden]), select')]
            .filter(e => !(e.labels && e.labels.length)).map(e => e.name)""")
        assert unlabelled == [], (path, unlabelled)
        assert page.evaluate("document.documentElement.lang") == "en"
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), path
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.keyboard.press("Enter")
        assert page.evaluate("location.hash") == "#main"
        svgs_without_title = page.evaluate(
            "() => [...document.querySelectorAll('svg.chart')].filter(s => !s.querySelector('title')).length")
        assert svgs_without_title == 0
        page.context.close()
