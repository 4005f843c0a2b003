"""cht-config's outbound rules in the emulator (cht-core 5.2 shapes): who is pushed to ``/cht/patient``.

A CHW registered through the users API (its contact has no ``role``, as recorded on 5.2) is never pushed;
patients in a household are, in both person shapes; a request record never fires the PoC Encounter push.
"""

from __future__ import annotations

from tests.emulators.cht.emu_support import make_config, receiver, serve, wait_for


async def test_only_household_people_are_pushed_as_patients(tmp_path):
    async with (
        receiver() as rec,
        serve(make_config(tmp_path, rec.url, cht_config=True, cht_version="5.2.0", chw={"enabled": False})) as run,
    ):

        async def post(path, body):
            status, answer, _ = await run.call("POST", path, json_body=body)
            assert status == 200, (path, answer)
            return answer

        dh = (await post("/api/v1/places", {"name": "County", "type": "district_hospital"}))["id"]
        area = (await post("/api/v1/places", {"name": "Area", "type": "health_center", "parent": dh}))["id"]
        household = (await post("/api/v1/place", {"name": "Household", "type": "clinic", "parent": area}))["_id"]
        chw = await post(
            "/api/v2/users",
            {
                "username": "chw_a",
                "password": "Chw-Passw0rd-2026",
                "roles": ["chw"],
                "place": area,
                "contact": {"name": "Mary Atieno", "phone": "0712"},
            },
        )
        supervisor = (await post("/api/v1/people", {"name": "Paul Supervisor", "place": dh}))["id"]
        legacy = (await post("/api/v1/people", {"name": "Achieng Otieno", "place": household}))["id"]
        datasource = (
            await post("/api/v1/person", {"type": "person", "name": "Datasource Person", "parent": household})
        )["_id"]
        await post("/api/v1/people", {"name": "No Place Person"})
        status, _, _ = await run.call(
            "POST",
            "/api/v2/records",
            json_body={"_meta": {"form": "interop_follow_up"}, "patient_uuid": legacy, "case_ref": "c-1"},
        )
        assert status == 200
        await run.call("POST", "/_emulator/sentinel/flush")
        await run.call("POST", "/_emulator/sentinel/flush")
        await wait_for(lambda: len(rec.bodies("/cht/patient")) >= 2)
        await run.call("POST", "/_emulator/sentinel/flush")
        pushed = {b["_id"]: b for b in rec.bodies("/cht/patient")}
        assert set(pushed) == {legacy, datasource}
        assert chw["contact"]["id"] not in pushed and supervisor not in pushed
        assert (pushed[datasource]["type"], pushed[datasource]["contact_type"]) == ("contact", "person")
        assert rec.bodies("/mediator/encounter") == []  # our request record is not the PoC's report
