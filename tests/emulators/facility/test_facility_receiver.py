"""The facility's notification receiver against a small stand-in of the mediator's notifier:
handshake, events in order, duplicates, gaps, late events, the counter, HAPI PUTs, auth header,
Standard Webhooks signatures (skew, replay, rotation), going down for a while, and recovering
missing events with ``$events``."""

from __future__ import annotations

import json
import time
from typing import Any

import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ltfu.delivery.notifier import signature_headers
from ltfu.emulators.facility import FacilityError
from ltfu.emulators.facility.ledger import Ledger, outcome_of
from ltfu.store.callbacks import new_signing_secret
from tests.emulators.facility.fac_support import TOKEN, facility, notification, post, task
from tests.support.server import ServerThread

SUB = "sub-kisumu"


def sub_report(report: dict[str, Any], sub: str = SUB) -> dict[str, Any]:
    return next(s for s in report["subscriptions"] if s["subscription"] == f"Subscription/{sub}")


class StandIn:
    """What the mediator's notifier does, reduced: one event at a time per subscription, in order,
    re-posted after a short pause until the callback answers 2xx. ``skip`` drops event numbers
    (never sent: a mediator bug the facility must notice); ``$events`` serves every event."""

    def __init__(self, callback: str) -> None:
        self.callback = callback
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.attempts: list[int] = []

    def add(self, t: dict[str, Any]) -> int:
        self.events.append((len(self.events) + 1, t))
        return len(self.events)

    def deliver(self, numbers: list[int], skip: set[int] = frozenset(), deadline_s: float = 20.0) -> None:  # type: ignore[assignment]
        for n in numbers:
            if n in skip:
                continue
            body = notification("event-notification", SUB, len(self.events), [self.events[n - 1]])
            deadline = time.monotonic() + deadline_s
            while True:
                status = post(self.callback, body).status_code
                self.attempts.append(status)
                if 200 <= status < 300:
                    break
                assert time.monotonic() < deadline, f"event {n} never acknowledged (last {status})"
                time.sleep(0.1)

    def app(self) -> Starlette:
        async def events(request: Request) -> JSONResponse:
            since = int(request.query_params.get("eventsSinceNumber", 1))
            until = int(request.query_params.get("eventsUntilNumber", len(self.events)))
            chosen = [e for e in self.events if since <= e[0] <= until]
            bundle = notification("query-event", request.path_params["id"], len(self.events), chosen)
            return JSONResponse(bundle, media_type="application/fhir+json")

        return Starlette(routes=[Route("/fhir/Subscription/{id}/$events", events, methods=["GET"])])


def test_handshake_events_duplicates_gaps_and_order() -> None:
    with facility() as (fac, callback, _):
        assert post(callback, notification("handshake", SUB, 0)).status_code == 200
        for n in (1, 2, 3):
            r = post(callback, notification("event-notification", SUB, n, [(n, task(f"t{n}", 1, "requested",
                                                                                     "awaiting-cht"))]))
            assert r.status_code == 200, r.text
        # the same event again (the acknowledgement was lost): a duplicate, still 200
        assert post(callback, notification("event-notification", SUB, 3, [(3, task("t3", 1, "requested",
                                                                                    "awaiting-cht"))])).ok
        # 4 skipped: event 5 shows the gap; 4 arriving afterwards is out of order and closes it
        assert post(callback, notification("event-notification", SUB, 5, [(5, task("t1", 2, "received",
                                                                                    "received-by-cht"))])).ok
        report = fac.report()
        s = sub_report(report)
        assert (s["handshakes"], s["events_received"], s["unique_events"], s["duplicates"]) == (1, 5, 4, 1)
        assert s["gaps_seen"] == 1 and s["gap_log"][0]["missing"] == [4, 4] and s["missing"] == [4]
        assert post(callback, notification("event-notification", SUB, 5, [(4, task("t2", 2, "received",
                                                                                    "received-by-cht"))])).ok
        # the counter says 7 events exist: 6 and 7 are owed
        assert post(callback, notification("heartbeat", SUB, 7)).ok
        report = fac.report()
        s = sub_report(report)
        assert s["out_of_order"] == 1 and s["missing"] == [6, 7] and s["highest_event"] == 5
        assert (report["duplicates"], report["out_of_order"], report["gaps"], report["missing_events"]) == (1, 1, 1, 2)
        assert report["tasks"]["by_status"] == {"received": 2, "requested": 1}
        assert report["tasks"]["by_business_status"] == {"received-by-cht": 2, "awaiting-cht": 1}
        # a second subscription is counted on its own
        assert post(callback, notification("event-notification", "other", 1, [(1, task("x", 1, "requested",
                                                                                        "awaiting-cht"))])).ok
        assert sub_report(fac.report(), "other")["duplicates"] == 0


def test_task_versions_outcomes_and_hapi_puts() -> None:
    with facility() as (fac, callback, _):
        final = task("t1", 4, "completed", "outcome-recorded", outcome="returning-to-care")
        assert post(callback, notification("event-notification", SUB, 2, [(2, final)])).ok
        # an older version of the same Task arriving later does not undo the newer one
        assert post(callback, notification("event-notification", SUB, 2, [(1, task("t1", 3, "in-progress",
                                                                                    "attempt-unsuccessful"))])).ok
        # HAPI compatibility mode: PUT <endpoint>/Task/<id> with the Task as body
        assert post(callback + "/Task/t2", task("t2", 2, "failed", "expired"), method="PUT").ok
        assert post(callback + "/Task/t2", task("t2", 1, "requested", "awaiting-cht"), method="PUT").ok
        assert post(callback + "/Task/t3", task("t2", 1, "requested", "awaiting-cht"), method="PUT").status_code == 400
        report = fac.report()
        assert report["tasks"]["by_status"] == {"completed": 1, "failed": 1}
        assert report["outcomes"] == {"returning-to-care": 1}
        assert report["notifications"]["stale_task_versions"] == 2
        assert report["notifications"]["hapi_puts"] == 3
        tasks = {t["id"]: t for t in fac.tasks()}
        assert tasks["t1"]["outcome"] == "returning-to-care" and tasks["t1"]["version"] == 4
        assert [step["status"] for step in tasks["t2"]["timeline"]] == ["failed"]


def test_auth_header_signature_and_malformed_bodies() -> None:
    secret, other = new_signing_secret(), new_signing_secret()
    with facility(signing_secrets=[secret]) as (fac, callback, _):
        body = notification("event-notification", SUB, 1, [(1, task("t1", 1, "requested", "awaiting-cht"))])
        assert post(callback, body, token=None, secret=secret).status_code == 401
        assert post(callback, body, token="wrong", secret=secret).status_code == 401
        assert post(callback, body).status_code == 401  # no signature
        assert post(callback, body, signature="v1," + "A" * 44).status_code == 401
        assert post(callback, body, signature="garbage").status_code == 401
        assert post(callback, body, secret=other).status_code == 401
        assert fac.report()["events_received"] == 0
        assert post(callback, body, secret=secret).status_code == 200
        for bad in ({"resourceType": "Bundle", "entry": []}, {"resourceType": "Patient"}, [1, 2],
                    notification("event-notification", SUB, 1, [(1, None)]) | {"entry": [{"resource": {
                        "resourceType": "Parameters", "parameter": [{"name": "type", "valueCode": "heartbeat"}]}}]}):
            assert post(callback, bad, secret=secret).status_code == 400
        report = fac.report()
        n = report["notifications"]
        assert (n["unauthorized"], n["bad_signature"], n["malformed"], n["signature_ok"]) == (2, 4, 4, 5)
        assert report["events_received"] == 1


def test_signature_skew_and_replay_refused() -> None:
    secret = new_signing_secret()
    with facility(signing_secrets=[secret]) as (fac, callback, _):
        first = notification("event-notification", SUB, 2, [(1, task("t1", 1, "requested", "awaiting-cht"))])
        assert post(callback, first, secret=secret, age_s=301).status_code == 401  # older than 5 minutes
        # from the future (a margin for the time between signing and checking, which shrinks the lead)
        assert post(callback, first, secret=secret, age_s=-330).status_code == 401
        assert post(callback, first, secret=secret, age_s=240, msg_id="m-1").status_code == 200  # 4 min: fine
        # the same webhook-id again (a captured notification replayed): not taken a second time
        replay = post(callback, first, secret=secret, msg_id="m-1")
        assert replay.status_code == 200 and "duplicate" in replay.text
        # a replay with a changed body cannot keep the signature
        second = notification("event-notification", SUB, 2, [(2, task("t1", 2, "cancelled", "closed"))])
        forged = requests.post(callback, data=json.dumps(second).encode(), timeout=10, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json", "webhook-id": "m-2",
            "webhook-timestamp": replay.request.headers["webhook-timestamp"],
            "webhook-signature": replay.request.headers["webhook-signature"]})
        assert forged.status_code == 401
        report = fac.report()
        n = report["notifications"]
        assert (n["skewed"], n["replayed"], n["signature_ok"], n["bad_signature"]) == (2, 1, 1, 1)
        assert report["events_received"] == 1 and sub_report(report)["duplicates"] == 0


def test_rotation_two_live_keys() -> None:
    old, new = new_signing_secret(), new_signing_secret()
    with facility(signing_secrets=[old]) as (fac, callback, _):
        body = notification("heartbeat", SUB, 0)
        both = signature_headers("h-1", json.dumps(body).encode(), [new, old])
        assert both["webhook-signature"].count("v1,") == 2
        r = requests.post(callback, data=json.dumps(body).encode(), timeout=10,
                          headers={"Authorization": f"Bearer {TOKEN}", **both})
        assert r.status_code == 200  # the facility still knows only the old key
        assert requests.post(fac.url + "/_facility/signing-secret", json={"secret": new}, timeout=10).ok
        assert post(callback, body, secret=new).status_code == 200
        assert post(callback, body, secret="whsec_" + "A" * 44).status_code == 401


def test_down_for_a_while_then_every_event_arrives_once() -> None:
    with facility() as (fac, callback, _):
        mediator = StandIn(callback)
        for i in range(1, 7):
            mediator.add(task(f"t{i}", 1, "requested", "awaiting-cht"))
        mediator.deliver([1, 2])
        fac.down(0.8)
        assert post(callback, notification("heartbeat", SUB, 2)).status_code == 503
        started = time.monotonic()
        mediator.deliver([3, 4, 5, 6])
        assert time.monotonic() - started >= 0.6  # event 3 waited for the facility to come back
        report = fac.report()
        assert 503 in mediator.attempts and report["notifications"]["refused_down"] >= 2
        s = sub_report(report)
        assert (s["unique_events"], s["duplicates"], s["gaps_seen"], s["missing_count"]) == (6, 0, 0, 0)
        # down until told otherwise, with another status
        fac.down(status=500)
        assert post(callback, notification("heartbeat", SUB, 6)).status_code == 500
        assert fac.info()["down"] is True
        fac.up()
        assert post(callback, notification("heartbeat", SUB, 6)).status_code == 200
        try:
            fac.down(seconds=-1)
            raise AssertionError("negative seconds accepted")
        except FacilityError as exc:
            assert exc.status == 400


def test_missing_events_are_recovered_with_events_operation() -> None:
    mediator = StandIn("")  # the callback is known once the facility runs
    with ServerThread(mediator.app()) as mediator_srv, facility(mediator_url=mediator_srv.url) as (fac, callback, _):
        mediator.callback = callback
        for i in range(1, 6):
            mediator.add(task(f"t{i}", 1, "requested", "awaiting-cht"))
        mediator.deliver([1, 2, 3, 4, 5], skip={2, 4})
        s = sub_report(fac.report())
        assert s["missing"] == [2, 4] and s["gaps_seen"] == 2
        assert fac.recover() == {"recovered": 2}
        report = fac.report()
        s = sub_report(report)
        assert s["missing"] == [] and s["unique_events"] == 5 and s["duplicates"] == 0
        assert report["tasks"]["count"] == 5 and report["notifications"]["recovered_events"] == 2
        assert fac.recover() == {"recovered": 0}


def test_ledger_unit_rules() -> None:
    ledger = Ledger()
    t = task("a", 1, "requested", "awaiting-cht")
    ledger.notification(notification("event-notification", "s", 3, [(1, t), (2, t), (3, t)]))
    ledger.notification(notification("event-notification", "s", 3, [(2, t)]))
    log = ledger.subscriptions["Subscription/s"]
    assert (log.received, log.duplicates, log.highest, log.missing()) == (4, 1, 3, [])
    assert outcome_of({"output": [{"type": {"text": "encounter"}, "valueReference": {"reference": "Encounter/1"}}]}) \
        is None
    no_status = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Task"}}]}
    for bad in ({"resourceType": "Bundle"}, no_status):
        try:
            ledger.notification(bad)
            raise AssertionError("accepted " + str(bad))
        except ValueError:
            pass
    assert TOKEN
