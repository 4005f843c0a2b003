"""``/metrics``: the series the issue lists, with values that follow the database."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from ltfu import metrics
from tests.ui.conftest import CLINIC_A, UiServer
from tests.ui.seed import EXPECTED_STATES


def scrape(server: UiServer) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    r = server.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(series: dict, name: str, **labels: str) -> float:
    return series[name][tuple(sorted(labels.items()))]


def test_metrics_series(ui_server: UiServer) -> None:
    ui_server.get("/ui/cases")
    ui_server.get("/ui/cases/does-not-exist")
    ui_server.get("/no/such/path")
    m = scrape(ui_server)
    # requests by route *template* and status, and latency histograms
    assert value(m, "ltfu_http_requests_total", method="GET", route="/ui/cases", status="200") >= 1
    assert value(m, "ltfu_http_requests_total", method="GET", route="/ui/cases/{case_id}", status="404") >= 1
    assert value(m, "ltfu_http_requests_total", method="POST", route="/cht/follow-up", status="201") >= 8
    assert value(m, "ltfu_http_requests_total", method="GET", route="unmatched", status="404") >= 1
    assert not any("does-not-exist" in str(k) for k in m["ltfu_http_requests_total"])
    assert value(m, "ltfu_http_request_duration_seconds_count", method="GET", route="/ui/cases") >= 1
    # cases by state, from the database
    for state, n in EXPECTED_STATES.items():
        assert value(m, "ltfu_cases", state=state) == n
    # outbox depth and oldest due age per destination: CHT is not configured, so its rows wait
    cht_pending = len(ui_server.outbox(destination="cht", status="pending"))
    assert cht_pending == 11  # 12 follow-ups less the one the cancel superseded
    assert value(m, "ltfu_outbox_depth", destination="cht", status="pending") == cht_pending
    assert value(m, "ltfu_outbox_oldest_due_age_seconds", destination="cht") > 0
    dead = len(ui_server.outbox(destination="notify", status="dead"))
    assert value(m, "ltfu_outbox_depth", destination="notify", status="dead") == dead
    # counters the worker and the CHT routes feed exist from the start
    for result in ("ok", "retry", "dead"):
        assert ("ltfu_delivery_attempts_total" in m
                and (("destination", "notify"), ("result", result)) in m["ltfu_delivery_attempts_total"])
    assert (("kind", "follow-up"), ("result", "recorded")) in m["ltfu_cht_push_receipts_total"]
    assert "ltfu_delivery_failures_total" in m and "ltfu_delivery_latency_seconds_count" in m
    # worker liveness
    assert value(m, "ltfu_worker_up", worker="delivery") == 1
    assert value(m, "ltfu_worker_up", worker="sweeper") == 1
    assert value(m, "ltfu_worker_last_beat_age_seconds", worker="delivery") < 30
    assert "process_cpu_seconds_total" in m


def test_metrics_are_for_admins_only(ui_server: UiServer) -> None:
    assert ui_server.get("/metrics", auth=CLINIC_A).status_code == 403
    assert ui_server.get("/metrics", auth=("admin", "wrong")).status_code == 401


def test_counter_helpers() -> None:
    before = metrics.DELIVERY_ATTEMPTS.labels("cht", "retry")._value.get()
    fail_before = metrics.DELIVERY_FAILURES.labels("cht", "http_5xx")._value.get()
    metrics.observe_delivery("cht", "retry", 503, 120)
    assert metrics.DELIVERY_ATTEMPTS.labels("cht", "retry")._value.get() == before + 1
    assert metrics.DELIVERY_FAILURES.labels("cht", "http_5xx")._value.get() == fail_before + 1
    unreachable = metrics.DELIVERY_FAILURES.labels("notify", "unreachable")._value.get()
    metrics.observe_delivery("notify", "retry", None, None)
    assert metrics.DELIVERY_FAILURES.labels("notify", "unreachable")._value.get() == unreachable + 1
    ok_fail = sum(metrics.DELIVERY_FAILURES.labels("notify", r)._value.get() for r in metrics.FAILURE_REASONS)
    metrics.observe_delivery("notify", "ok", 200, 5)
    assert sum(metrics.DELIVERY_FAILURES.labels("notify", r)._value.get() for r in metrics.FAILURE_REASONS) == ok_fail
    pushes = metrics.CHT_PUSH_RECEIPTS.labels("follow-up", "duplicate")._value.get()
    metrics.count_cht_push("follow-up", "duplicate")
    assert metrics.CHT_PUSH_RECEIPTS.labels("follow-up", "duplicate")._value.get() == pushes + 1
    assert re.match(r"^[a-z_]+$", metrics.HTTP_REQUESTS._name)
