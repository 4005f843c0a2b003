"""A notification Bundle carrying several events (issue 14: a facility's due events go out together)."""

from __future__ import annotations

from ltfu.delivery.notifier import notification_bundle
from ltfu.fhir.systems import Systems


def _task(version: str, status: str) -> dict:
    return {"resourceType": "Task", "id": "t-1", "status": status, "meta": {"versionId": version}}


def test_every_version_of_a_resource_stays_in_the_history_bundle() -> None:
    """Two events of one Task (received, then completed): each event's version is in the Bundle, so the
    receiver sees the final state (keeping only the first copy of ``Task/t-1`` showed it still received)."""
    events = [{"event": n, "timestamp": "2026-01-01T00:00:00Z", "focus": f"Task/t-1/_history/{v}",
               "resources": [_task(v, status)]} for n, v, status in ((7, "2", "received"), (8, "3", "completed"))]
    bundle = notification_bundle("http://x/fhir", Systems("http://x"), "s-1", "active", "event-notification", 8,
                                 events, "s-1-7-8")
    tasks = [e["resource"] for e in bundle["entry"][1:]]
    assert [(t["meta"]["versionId"], t["status"]) for t in tasks] == [("2", "received"), ("3", "completed")]
    numbers = [next(x["valueString"] for x in p["part"] if x["name"] == "event-number")
               for p in bundle["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event"]
    assert numbers == ["7", "8"]


def test_a_resource_shared_by_one_event_appears_once() -> None:
    task = _task("2", "received")
    events = [{"event": 1, "timestamp": "2026-01-01T00:00:00Z", "focus": "Task/t-1/_history/2",
               "resources": [task, dict(task)]}]
    bundle = notification_bundle("http://x/fhir", Systems("http://x"), "s-1", "active", "event-notification", 1,
                                 events, "s-1-1")
    assert len(bundle["entry"]) == 2
