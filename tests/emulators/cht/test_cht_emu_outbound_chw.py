"""Outbound push (dedupe, credentials, retry), the CHW simulation, and restart with the SQLite store."""

from __future__ import annotations

import base64

from tests.emulators.cht.emu_support import (
    CRED_KEY,
    CRED_SECRET,
    make_config,
    receiver,
    seed_area,
    serve,
    wait_for,
)

REQUEST = {
    "_meta": {"form": "INTEROP_FOLLOW_UP"},
    "case_ref": "SR-100",
    "reason": "HIV.H.DE2",
    "missed_appointment_date": "2025-01-28",
    "facility_name": "Kisumu CCC",
}


async def test_outbound_push_dedupe_and_retry(tmp_path):
    async with (
        receiver() as rec,
        serve(make_config(tmp_path, rec.url, chw={"enabled": False}, outbound_retry_interval_s=0.3)) as run,
    ):
        ids = await seed_area(run)
        # the new person is pushed once, already with its shortcode (shortcode runs before outbound)
        pushed = await wait_for(lambda: rec.bodies("/cht/patient"))
        patient = run.emu.store.peek("medic", ids["patient"])
        assert pushed[0]["_id"] == ids["patient"] and pushed[0]["patient_id"] == patient["patient_id"]
        assert pushed[0]["parent"] == {
            "_id": ids["household"],
            "parent": {"_id": ids["area"], "parent": {"_id": ids["district"]}},
        }
        headers = rec.requests[0]["headers"]
        assert headers["Authorization"] == "Basic " + base64.b64encode(f"cht:{CRED_SECRET}".encode()).decode()
        assert headers["Content-Type"] == "application/json" and headers["Accept"] == "application/json"
        # an edit that does not change the payload is not pushed again; one that does is
        doc = dict(patient, notes="not mapped")
        assert (await run.call("PUT", f"/medic/{doc['_id']}", json_body=doc))[0] == 201
        await run.call("POST", "/_emulator/sentinel/flush")
        assert len(rec.bodies("/cht/patient")) == 1
        assert run.emu.outbound.stats.skipped_duplicate["ltfu_patient"] >= 1
        doc = dict(run.emu.store.peek("medic", ids["patient"]), phone="+254711111111")
        assert (await run.call("PUT", f"/medic/{doc['_id']}", json_body=doc))[0] == 201
        await wait_for(lambda: len(rec.bodies("/cht/patient")) == 2)
        assert rec.bodies("/cht/patient")[1]["phone"] == "+254711111111"
        info = run.emu.store.peek("medic-sentinel", f"{ids['patient']}-info")
        assert [t["name"] for t in info["completed_tasks"]] == ["ltfu_patient", "ltfu_patient"]

        # receiver down: the push is queued as task:outbound:<id> and retried on the interval
        rec.fail_next = 2
        status, body, _ = await run.call(
            "POST",
            "/api/v1/people",
            json_body={"name": "John Otieno", "role": "patient", "place": ids["household"]},
        )
        assert status == 200
        task_id = f"task:outbound:{body['id']}"
        await wait_for(lambda: run.emu.store.peek("medic-sentinel", task_id))
        assert run.emu.store.peek("medic-sentinel", task_id)["queue"] == ["ltfu_patient"]
        await wait_for(lambda: any(b["_id"] == body["id"] for b in rec.bodies("/cht/patient")), timeout=10)
        await wait_for(lambda: run.emu.store.peek("medic-sentinel", task_id) is None)
        assert rec.failures == 2
        assert sum(b["_id"] == body["id"] for b in rec.bodies("/cht/patient")) == 1


async def test_missing_credentials_queue_then_credentials_api(tmp_path):
    async with (
        receiver() as rec,
        serve(make_config(tmp_path, rec.url, chw={"enabled": False}, credentials={})) as run,
    ):
        status, body, _ = await run.call("POST", "/api/v1/places", json_body={"name": "D", "type": "district_hospital"})
        status, body, _ = await run.call(
            "POST", "/api/v1/people", json_body={"name": "P", "role": "patient", "place": body["id"]}
        )
        task_id = f"task:outbound:{body['id']}"
        await wait_for(lambda: run.emu.store.peek("medic-sentinel", task_id))
        assert "have not been configured" in run.emu.outbound.stats.last_errors[-1]
        # credentials: admin only, text body
        status, resp, _ = await run.call(
            "PUT",
            f"/api/v1/credentials/{CRED_KEY}",
            data=CRED_SECRET,
            headers={"Content-Type": "text/plain"},
            auth=("ltfu", "Mediator-pass-1"),
        )
        assert status == 403
        status, resp, _ = await run.call(
            "PUT", f"/api/v1/credentials/{CRED_KEY}", data="", headers={"Content-Type": "text/plain"}
        )
        assert (status, resp) == (400, {"code": 400, "error": "Missing required request body"})
        status, resp, _ = await run.call(
            "PUT", f"/api/v1/credentials/{CRED_KEY}", data=CRED_SECRET, headers={"Content-Type": "text/plain"}
        )
        assert (status, resp) == (200, {"ok": True})
        status, resp, _ = await run.call("POST", "/_emulator/outbound/retry")
        assert status == 200 and resp["queue"] == []
        assert rec.bodies("/cht/patient")[0]["_id"] == body["id"]


async def test_records_push_synchronously_and_chw_reports(tmp_path):
    chw = {"unsuccessful_rate": 1.0, "max_attempts": 2, "outcome_mix": {"returning_to_care": 1.0}}
    async with receiver() as rec, serve(make_config(tmp_path, rec.url, cht_config=True, chw=chw)) as run:
        ids = await seed_area(run)
        await wait_for(lambda: (run.emu.store.peek("medic", ids["patient"]) or {}).get("patient_id"))
        status, body, _ = await run.call(
            "POST", "/api/v2/records", json_body={**REQUEST, "patient_uuid": ids["patient"]}
        )
        assert status == 200
        record_id = body["id"]
        # attempt 1: not located by phone; attempt 2: home visit, returning to care
        reports = await wait_for(lambda: len(rec.bodies("/cht/follow-up")) >= 2 and rec.bodies("/cht/follow-up"))
        first, second = reports[0], reports[1]
        patient = run.emu.store.peek("medic", ids["patient"])
        assert first["outcome"] == "not_located" and first["method"] == "phone" and first["attempt_no"] == 1
        assert first["contacted"] in ("yes", "no") and first["not_located_reason"]
        assert second["outcome"] == "returning_to_care" and second["method"] == "home_visit"
        assert second["attempt_no"] == 2 and second["next_appointment_date"]
        for r in (first, second):
            assert r["case_ref"] == "SR-100" and r["patient_uuid"] == ids["patient"]
            assert r["patient_id"] == patient["patient_id"]
            assert r["chw_id"] == ids["chw_contact"] and r["chw_name"] == "Wanjiru CHW"
        doc = run.emu.store.peek("medic", first["report_id"])
        assert doc["form"] == "ltfu_follow_up" and doc["content_type"] == "xml" and doc["from"] == "+254700000001"
        assert doc["contact"] == {
            "_id": ids["chw_contact"],
            "parent": {"_id": ids["area"], "parent": {"_id": ids["district"]}},
        }
        inputs = doc["fields"]["inputs"]
        assert inputs["source"] == "task" and inputs["source_id"] == record_id
        assert doc["fields"]["request_doc_id"] == record_id and inputs["task_case_ref"] == "SR-100"
        assert inputs["contact"]["_id"] == ids["patient"] and inputs["missed_appointment_date"] == "2025-01-28"

        def strings_only(v):
            return all(strings_only(x) for x in v.values()) if isinstance(v, dict) else isinstance(v, str)

        assert strings_only(doc["fields"])
        cases = run.emu.chw.cases()
        assert [c["state"] for c in cases] == ["resolved"] and cases[0]["attempt"] == 2
        assert len(rec.bodies("/cht/follow-up")) == 2

        # a cancel record closes an open follow-up before the CHW acts
        await run.call("POST", "/_emulator/chw/pause")
        status, body, _ = await run.call(
            "POST",
            "/api/v2/records",
            json_body={**REQUEST, "case_ref": "SR-200", "patient_uuid": ids["patient"]},
        )
        await wait_for(lambda: any(c["case_ref"] == "SR-200" for c in run.emu.chw.cases()))
        status, _, _ = await run.call(
            "POST",
            "/api/v2/records",
            json_body={
                "_meta": {"form": "INTEROP_FOLLOW_UP_CANCEL"},
                "patient_uuid": ids["patient"],
                "case_ref": "SR-200",
                "reason": "returned on their own",
            },
        )
        await wait_for(
            lambda: any(c["case_ref"] == "SR-200" and c["state"] == "cancelled" for c in run.emu.chw.cases())
        )
        await run.call("POST", "/_emulator/chw/resume")
        status, stats, _ = await run.call("GET", "/_emulator/stats")
        assert stats["chw"]["cases"] == {"resolved": 1, "cancelled": 1} and stats["chw"]["reports"] == 2


async def test_seeded_outcome_mix_is_reproducible(tmp_path):
    from ltfu.emulators.cht.chw import ChwSimulation
    from ltfu.emulators.cht.config import ChwSimConfig

    config = ChwSimConfig(seed=7, unsuccessful_rate=0.4)
    sim_a = ChwSimulation.__new__(ChwSimulation)
    sim_a.config = config
    draws = [sim_a.choose(f"SR-{i}", 1) for i in range(400)]
    assert draws == [sim_a.choose(f"SR-{i}", 1) for i in range(400)]
    share = draws.count("not_located") / len(draws)
    assert 0.35 < share < 0.5  # 0.4 unsuccessful + a little from the mix
    assert {"returning_to_care", "moved", "deceased"} <= set(draws)
    assert all(sim_a.choose(f"SR-{i}", 2) for i in range(50))


async def test_restart_keeps_state(tmp_path):
    db = tmp_path / "cht.db"
    async with receiver() as rec:
        async with serve(make_config(tmp_path, rec.url, cht_config=True, db_path=db, chw={"enabled": False})) as run:
            ids = await seed_area(run)
            await wait_for(lambda: rec.bodies("/cht/patient"))
            status, body, _ = await run.call(
                "POST", "/api/v2/records", json_body={**REQUEST, "patient_uuid": ids["patient"]}
            )
            record_id = body["id"]
            await wait_for(lambda: run.emu.chw.cases())
            await run.call("POST", "/_emulator/sentinel/flush")
            seq, count = run.emu.store.update_seq("medic"), run.emu.store.doc_count("medic")
        async with serve(
            make_config(tmp_path, rec.url, cht_config=True, db_path=db, chw={"first_delay_s": 0.0})
        ) as run:
            assert run.emu.store.update_seq("medic") >= seq and run.emu.store.doc_count("medic") >= count
            status, doc, _ = await run.call("GET", f"/medic/{record_id}")
            assert status == 200 and doc["fields"]["case_ref"] == "SR-100"
            # users survive (the CHW logs in), no patient is pushed twice (infodocs kept)
            assert (await run.call("GET", "/medic/org.couchdb.user:chw1", auth=("chw1", "Chw-pass-2024")))[0] == 200
            await run.call("POST", "/_emulator/sentinel/flush")
            assert len(rec.bodies("/cht/patient")) == 1
            # the open follow-up (seen before the restart, CHW then paused) is acted on now
            await wait_for(lambda: rec.bodies("/cht/follow-up"))
            assert rec.bodies("/cht/follow-up")[0]["case_ref"] == "SR-100"
