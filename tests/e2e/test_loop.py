"""The whole loop with real processes: facility request → CHT record → CHW outcome → facility notified."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import Loop, wait_until

TERMINAL = {"completed", "failed", "rejected", "cancelled"}


def _prepare(loop: Loop, n: int) -> tuple[str, list[str]]:
    org = loop.register_facility()
    cht_ids = loop.seed_cht(n)
    for cid in cht_ids:  # CHT's outbound push brings each person in as a Patient
        wait_until(lambda cid=cid: loop.fhir("GET", "/fhir/Patient", params={"identifier": cid}).json()["total"] == 1,
                   20, f"Patient {cid} from CHT outbound push")
    return org, cht_ids


def _assert_notifications_exact(loop: Loop, n_cases: int) -> None:
    events = loop.receiver.events
    assert len(events) == 1, "one subscription for the facility"
    (numbers,) = events.values()
    assert numbers == list(range(1, len(numbers) + 1)), "in order, no gap, no duplicate"
    finals = loop.receiver.final_tasks()
    assert len(finals) == n_cases
    assert set(finals.values()) <= TERMINAL


def test_full_loop_exactly_once(tmp_path: Path, e2e_db: str) -> None:
    n = 12
    with Loop(tmp_path, e2e_db) as loop:
        org, cht_ids = _prepare(loop, n)
        case_ids = []
        for i, cid in enumerate(cht_ids):
            r = loop.request(org, cid, f"REQ-{i}")
            assert r.status_code == 201, r.text
            case_ids.append(r.json()["id"])
        wait_until(lambda: sum(v for k, v in loop.tasks_by_status().items() if k in TERMINAL) == n, 90,
                   "every case to end")
        wait_until(lambda: len(loop.receiver.final_tasks()) == n
                   and set(loop.receiver.final_tasks().values()) <= TERMINAL, 30, "the facility to hear of every end")
        _assert_notifications_exact(loop, n)
        assert loop.receiver.handshakes == 1
        for case_id in case_ids:
            assert loop.cht_records(case_id) == 1, "exactly one CHT record per case"
            enc = loop.fhir("GET", "/fhir/Encounter", params={"based-on": f"ServiceRequest/{case_id}"}).json()
            assert enc["total"] >= 1, "every attempt is an Encounter"
        # the cases and their outcomes are queryable as FHIR
        done = loop.fhir("GET", "/fhir/Task", params={"status": "completed", "_include": "Task:focus"}).json()
        assert done["total"] == loop.tasks_by_status().get("completed", 0)


def test_replays_create_nothing_new(tmp_path: Path) -> None:
    with Loop(tmp_path, f"sqlite:///{tmp_path / 'r.db'}") as loop:
        org, (cid,) = _prepare(loop, 1)
        first = loop.request(org, cid, "REQ-R")
        again = [loop.request(org, cid, "REQ-R") for _ in range(2)]
        assert first.status_code == 201 and [r.status_code for r in again] == [200, 200]
        assert {r.json()["id"] for r in again} == {first.json()["id"]}
        case_id = first.json()["id"]
        wait_until(lambda: loop.tasks_by_status().get("completed", 0) + loop.tasks_by_status().get("failed", 0)
                   == 1, 60, "the case to end")
        # CHT re-sends the same follow-up report (outbound push retries): three times, no new attempt
        enc = loop.fhir("GET", "/fhir/Encounter", params={"based-on": f"ServiceRequest/{case_id}"}).json()
        report_id = next(i["value"] for i in enc["entry"][0]["resource"]["identifier"]
                         if i["system"].endswith("cht-report-id"))
        payload = {"report_id": report_id, "case_ref": case_id, "patient_uuid": cid, "method": "phone",
                   "outcome": "returning_to_care", "attempt_no": 1, "reported_date": 1732440000000}
        statuses = [loop.fhir("POST", "/cht/follow-up", json=payload).status_code for _ in range(3)]
        assert statuses[0] in (200, 201) and statuses[1:] == [200, 200]
        after = loop.fhir("GET", "/fhir/Encounter", params={"based-on": f"ServiceRequest/{case_id}"}).json()
        assert after["total"] == enc["total"]
        assert loop.cht_records(case_id) == 1
        events = next(iter(loop.receiver.events.values()))
        assert events == sorted(set(events))


@pytest.mark.parametrize("kill", [True])
def test_cht_down_callback_down_and_mediator_killed(tmp_path: Path, kill: bool) -> None:
    n = 8
    with Loop(tmp_path, f"sqlite:///{tmp_path / 'f.db'}") as loop:
        org, cht_ids = _prepare(loop, n)
        loop.cht_api("POST", "/_emulator/chw/pause")
        loop.cht_api("POST", "/_emulator/down", json={"seconds": 4})
        import time

        loop.receiver.down_until = time.monotonic() + 4
        case_ids = [loop.request(org, cid, f"REQ-F{i}").json()["id"] for i, cid in enumerate(cht_ids[:n // 2])]
        time.sleep(1.0)
        loop.restart_mediator(kill=kill)  # SIGKILL with deliveries in flight or queued
        case_ids += [loop.request(org, cid, f"REQ-F{i + n // 2}").json()["id"]
                     for i, cid in enumerate(cht_ids[n // 2:])]
        wait_until(lambda: loop.tasks_by_status().get("received", 0) == n, 60, "every case received by CHT")
        assert loop.receiver.refused > 0, "the callback really was down"
        for case_id in case_ids:
            assert loop.cht_records(case_id) == 1, "no case lost or duplicated in CHT"
        loop.cht_api("POST", "/_emulator/chw/resume")
        wait_until(lambda: sum(v for k, v in loop.tasks_by_status().items() if k in TERMINAL) == n, 90,
                   "every case to end")
        wait_until(lambda: len(loop.receiver.final_tasks()) == n
                   and set(loop.receiver.final_tasks().values()) <= TERMINAL, 30, "the facility to hear of every end")
        _assert_notifications_exact(loop, n)


def test_cancel_reaches_cht(tmp_path: Path) -> None:
    with Loop(tmp_path, f"sqlite:///{tmp_path / 'c.db'}") as loop:
        org, (cid,) = _prepare(loop, 1)
        loop.cht_api("POST", "/_emulator/chw/pause")
        sr = loop.request(org, cid, "REQ-C").json()
        wait_until(lambda: loop.tasks_by_status().get("received") == 1, 30, "the case in CHT")
        r = loop.fhir("PUT", f"/fhir/ServiceRequest/{sr['id']}", json={**sr, "status": "revoked"})
        assert r.status_code == 200, r.text
        wait_until(lambda: loop.cht_records(sr["id"], "INTEROP_FOLLOW_UP_CANCEL") == 1, 30, "the cancel record in CHT")
        assert loop.tasks_by_status() == {"cancelled": 1}
        wait_until(lambda: set(loop.receiver.final_tasks().values()) == {"cancelled"}, 30, "the facility told")


def test_two_worker_processes_on_postgresql_deliver_once(tmp_path: Path) -> None:
    from tests.conftest import pg_url
    from tests.support import postgres

    if pg_url() is None:
        pytest.skip(f"PostgreSQL unreachable at {postgres.ADMIN_URL}")
    url = postgres.create_database()
    assert url is not None
    n = 16
    try:
        with Loop(tmp_path, url, workers_in_serve=False) as loop:
            org, cht_ids = _prepare(loop, n)
            case_ids = [loop.request(org, cid, f"REQ-W{i}").json()["id"] for i, cid in enumerate(cht_ids)]
            w1, w2 = loop.add_worker(), loop.add_worker()
            wait_until(lambda: sum(v for k, v in loop.tasks_by_status().items() if k in TERMINAL) == n, 90,
                       "every case to end")
            wait_until(lambda: len(loop.receiver.final_tasks()) == n
                       and set(loop.receiver.final_tasks().values()) <= TERMINAL, 30, "every end notified")
            _assert_notifications_exact(loop, n)
            for case_id in case_ids:
                assert loop.cht_records(case_id) == 1
            logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
            assert all("delivery worker" in text for text in logs), "both workers ran"
            assert w1.proc and w2.proc and w1.proc.poll() is None and w2.proc.poll() is None
    finally:
        postgres.drop_database(url)


def test_patient_unknown_to_cht_is_rejected_as_unassignable(tmp_path: Path) -> None:
    with Loop(tmp_path, f"sqlite:///{tmp_path / 'u.db'}") as loop:
        org = loop.register_facility()
        ghost = loop.fhir("POST", "/fhir/Patient", json={
            "resourceType": "Patient", "identifier": [
                {"system": "https://ltfu.example.org/fhir/NamingSystem/cht-contact-id", "value": "no-such-person"}]})
        case = loop.request(org, ghost.json()["id"], "REQ-GHOST").json()
        wait_until(lambda: loop.tasks_by_status() == {"rejected": 1}, 30, "the case rejected")
        task = loop.fhir("GET", "/fhir/Task").json()["entry"][0]["resource"]
        assert task["businessStatus"]["coding"][0]["code"] == "unassignable"
        assert "unknown to CHT" in task["statusReason"]["text"]
        assert loop.cht_records(case["id"]) == 0
        dead = loop.fhir("GET", "/admin/outbox", params={"status": "dead"}).json()["items"]
        assert [(d["destination"], d["attempts"]) for d in dead] == [("cht", 3)]  # a few tries, then dead


def test_patient_whose_cht_id_is_a_place_is_rejected_as_unassignable(tmp_path: Path) -> None:
    """A 5.x place doc (``type: "contact"`` + ``contact_type``) is not a person, whatever its ``type`` says."""
    with Loop(tmp_path, f"sqlite:///{tmp_path / 'p.db'}") as loop:
        org = loop.register_facility()
        put = loop.cht_api("PUT", "/medic/household-as-contact", json={
            "type": "contact", "contact_type": "clinic", "name": "Otieno household", "reported_date": 1})
        assert put.status_code == 201, put.text
        system = "https://ltfu.example.org/fhir/NamingSystem/cht-contact-id"
        patient = loop.fhir("POST", "/fhir/Patient", json={
            "resourceType": "Patient", "identifier": [{"system": system, "value": "household-as-contact"}]})
        case = loop.request(org, patient.json()["id"], "REQ-PLACE").json()
        wait_until(lambda: loop.tasks_by_status() == {"rejected": 1}, 30, "the case rejected")
        task = loop.fhir("GET", "/fhir/Task").json()["entry"][0]["resource"]
        assert task["businessStatus"]["coding"][0]["code"] == "unassignable"
        assert "not a person in CHT" in task["statusReason"]["text"]
        assert loop.cht_records(case["id"]) == 0
