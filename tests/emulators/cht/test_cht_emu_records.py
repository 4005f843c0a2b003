"""Records API (JSON forms), auth and error envelopes of the CHT emulator."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from tests.emulators.cht.emu_support import ADMIN, make_config, seed_area, serve


async def test_record_success_shape(tmp_path):
    async with serve(make_config(tmp_path)) as run:
        ids = await seed_area(run)
        status, body, _ = await run.call(
            "POST",
            "/api/v2/records",
            json_body={
                "_meta": {
                    "form": "interop_follow_up",
                    "from": "+254700000009",
                    "reported_date": 1732440000000,
                    "locale": "en",
                    "source": "ltfu",
                },
                "PATIENT_UUID": ids["patient"],
                "case_ref": "SR-1",
                "missed_appointment_date": "2025-01-28",
                "reason": "HIV.H.DE2",
                "undeclared": "dropped",
            },
            auth=("ltfu", "Mediator-pass-1"),
        )
        assert status == 200
        assert set(body) == {"success", "id"} and body["success"] is True
        status, doc, _ = await run.call("GET", f"/medic/{body['id']}")
        assert status == 200
        expected_date = int(datetime(2025, 1, 28, tzinfo=ZoneInfo("Africa/Nairobi")).timestamp() * 1000)
        assert doc["type"] == "data_record" and doc["form"] == "INTEROP_FOLLOW_UP"
        assert doc["from"] == "+254700000009"
        assert doc["errors"] == [] and doc["tasks"] == []
        assert doc["fields"] == {
            "patient_uuid": ids["patient"],
            "case_ref": "SR-1",
            "missed_appointment_date": expected_date,
            "reason": "HIV.H.DE2",
        }
        assert doc["reported_date"] == 1732440000000
        assert doc["sms_message"] == {
            "form": "INTEROP_FOLLOW_UP",
            "from": "+254700000009",
            "reported_date": 1732440000000,
            "locale": "en",
            "source": "ltfu",
        }
        assert doc["_rev"].startswith("1-")


async def test_record_validation_errors_are_200(tmp_path):
    async with serve(make_config(tmp_path)) as run:
        status, body, _ = await run.call(
            "POST",
            "/api/v1/records",
            json_body={"_meta": {"form": "INTEROP_FOLLOW_UP"}, "patient_uuid": 123, "due_date": "not a date"},
        )
        assert status == 200 and body["success"] is True
        _, doc, _ = await run.call("GET", f"/medic/{body['id']}")
        assert doc["fields"] == {"patient_uuid": 123, "due_date": None}
        assert doc["errors"] == [
            {
                "code": "sys.incorrect_type",
                "message": "Incorrect type of field patient_uuid, expected string.",
            },
            {"code": "sys.missing_fields", "message": "Missing or invalid fields: case_ref."},
        ]
        assert "from" not in doc


async def test_record_500s_with_details(tmp_path):
    async with serve(make_config(tmp_path)) as run:
        cases = [
            ({"patient_uuid": "x"}, "Missing _meta property."),
            ({"_meta": {}, "patient_uuid": "x"}, "Missing required field: form"),
            ({"_meta": {"form": "nope"}}, "Form not found: NOPE"),
        ]
        for body, details in cases:
            status, resp, headers = await run.call("POST", "/api/v2/records", json_body=body)
            assert status == 500
            assert headers["content-type"].startswith("application/json")
            assert resp == {"code": 500, "error": "Server error", "details": details}
        # text clients get the message and the details as text
        status, resp, headers = await run.call(
            "POST", "/api/v2/records", json_body={"_meta": {"form": "x"}}, accept_json=False
        )
        assert status == 500 and headers["content-type"].startswith("text/plain")
        assert resp == 'Server error: "Form not found: X"'
        # unsupported content type: plain server error
        status, resp, _ = await run.call(
            "POST", "/api/v2/records", data="hello", headers={"Content-Type": "text/plain"}
        )
        assert (status, resp) == (500, {"code": 500, "error": "Server error"})


async def test_auth_rules(tmp_path):
    async with serve(make_config(tmp_path)) as run:
        body = {"_meta": {"form": "INTEROP_FOLLOW_UP"}, "patient_uuid": "p", "case_ref": "c"}
        status, resp, headers = await run.call("POST", "/api/v2/records", json_body=body, auth=None)
        assert (status, resp) == (401, {"code": 401, "error": "unauthorized"})
        status, resp, _ = await run.call("POST", "/api/v2/records", json_body=body, auth=(ADMIN[0], "wrong"))
        assert status == 401
        # a browser-like client is sent to the login page
        status, _, headers = await run.call(
            "POST",
            "/api/v2/records?x=1",
            json_body=body,
            auth=None,
            accept_json=False,
            headers={"User-Agent": "Mozilla/5.0"},
        )
        assert status == 302 and headers["location"] == "/medic/login?redirect=%2Fapi%2Fv2%2Frecords%3Fx%3D1"
        # no user agent: basic-auth prompt
        status, resp, headers = await run.call(
            "POST",
            "/api/v2/records",
            json_body=body,
            auth=None,
            accept_json=False,
            headers={"User-Agent": ""},
        )
        assert status == 401 and resp == "not logged in"
        assert headers["www-authenticate"] == 'Basic realm="Medic Web Services"'
        # a CHW (offline role, no can_create_records) is refused
        ids = await seed_area(run)
        assert ids
        status, resp, _ = await run.call(
            "POST", "/api/v2/records", json_body=body, auth=("chw1", "Chw-pass-2024")
        )
        assert (status, resp) == (403, {"code": 403, "error": "Insufficient privileges"})
        status, resp, _ = await run.call(
            "POST", "/api/v2/records", json_body=body, auth=("chw1", "Chw-pass-2024"), accept_json=False
        )
        assert (status, resp) == (403, "Insufficient privileges")
        # GET /api/info needs no auth
        status, resp, _ = await run.call("GET", "/api/info", auth=None)
        assert (status, resp) == (200, {"version": "4.11.0"})


async def test_injected_failures(tmp_path):
    async with serve(make_config(tmp_path)) as run:
        body = {"_meta": {"form": "INTEROP_FOLLOW_UP"}, "patient_uuid": "p", "case_ref": "c"}
        status, _, _ = await run.call(
            "POST", "/_emulator/fail/records", json_body={"count": 2, "status": 503}
        )
        assert status == 200
        assert (await run.call("POST", "/api/v2/records", json_body=body))[0] == 503
        assert (await run.call("POST", "/api/v2/records", json_body=body))[0] == 503
        assert (await run.call("POST", "/api/v2/records", json_body=body))[0] == 200
        await run.call("POST", "/_emulator/down", json_body={})
        assert (await run.call("GET", "/api/info"))[0] == 503
        await run.call("POST", "/_emulator/up", json_body={})
        assert (await run.call("GET", "/api/info"))[0] == 200
        status, stats, _ = await run.call("GET", "/_emulator/stats")
        assert status == 200 and stats["calls"]["records"] == 3
        assert (await run.call("GET", "/_emulator/stats", auth=("ltfu", "Mediator-pass-1")))[0] == 403
