"""People/places/users APIs, the person API, and /medic: _find, PUT 409, _bulk_docs, _changes."""

from __future__ import annotations

from ltfu.emulators.cht.sentinel import is_valid_shortcode
from tests.emulators.cht.emu_support import make_config, seed_area, serve, wait_for


async def test_people_places_users(tmp_path):
    async with serve(make_config(tmp_path, cht_version="4.11.0")) as run:
        ids = await seed_area(run)
        _, area, _ = await run.call("GET", f"/medic/{ids['area']}")
        assert area["parent"] == {"_id": ids["district"]} and area["contact"]["_id"] == ids["chw_contact"]
        assert area["contact"]["parent"] == {"_id": ids["area"], "parent": {"_id": ids["district"]}}
        # created, linked to its new contact, then given a place_id shortcode by sentinel
        await wait_for(lambda: (run.emu.store.peek("medic", ids["area"]) or {}).get("place_id"))
        assert run.emu.store.peek("medic", ids["area"])["_rev"].startswith("3-")
        _, person, _ = await run.call("GET", f"/medic/{ids['patient']}")
        assert person["type"] == "person" and person["role"] == "patient"
        assert person["parent"] == {
            "_id": ids["household"],
            "parent": {"_id": ids["area"], "parent": {"_id": ids["district"]}},
        }
        # the shortcode arrives as a second revision a sentinel tick later
        await wait_for(lambda: (run.emu.store.peek("medic", ids["patient"]) or {}).get("patient_id"))
        _, person, _ = await run.call("GET", f"/api/v1/person/{ids['patient']}")
        assert person["_rev"].startswith("2-") and is_valid_shortcode(person["patient_id"])
        assert len(person["patient_id"]) == 5
        _, hydrated, _ = await run.call("GET", f"/api/v1/person/{ids['patient']}?with_lineage=true")
        assert (
            hydrated["parent"]["name"] == "Household 1" and hydrated["parent"]["parent"]["name"] == "Area 1"
        )
        status, body, _ = await run.call("GET", "/api/v1/person/nope")
        assert (status, body) == (404, {"code": 404, "error": "Person not found"})
        # user docs
        _, settings_doc, _ = await run.call("GET", "/medic/org.couchdb.user:chw1")
        assert settings_doc["type"] == "user-settings" and settings_doc["facility_id"] == [ids["area"]]  # 5.x: a list
        assert settings_doc["contact_id"] == ids["chw_contact"]
        # errors
        status, body, _ = await run.call("POST", "/api/v1/people", json_body={"type": "person"})
        assert (status, body) == (400, {"code": 400, "error": 'Person is missing a "name" property.'})
        status, body, _ = await run.call("POST", "/api/v1/places", json_body={"name": "x", "type": "clinic"})
        assert (status, body) == (400, {"code": 400, "error": 'Place  is missing a "parent" property.'})
        status, body, _ = await run.call(
            "POST", "/api/v1/places", json_body={"name": "x", "type": "clinic", "parent": ids["district"]}
        )
        assert status == 400 and "should have one of the following parent types" in body["error"]
        status, body, _ = await run.call(
            "POST",
            "/api/v1/people",
            data='{"name":"x"}',
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        assert (status, body) == (400, {"code": 400, "error": "Content-Type must be application/json"})
        status, body, _ = await run.call(
            "POST",
            "/api/v1/users",
            json_body={
                "username": "chw1",
                "password": "Another-pass-1",
                "roles": ["chw"],
                "place": ids["area"],
                "contact": ids["chw_contact"],
            },
        )
        assert status == 400 and body["error"]["translationKey"] == "username.taken"
        status, body, _ = await run.call(
            "POST",
            "/api/v2/users",
            json_body=[
                {
                    "username": "chw2",
                    "password": "short",
                    "roles": ["chw"],
                    "place": ids["area"],
                    "contact": {"name": "New CHW"},
                },
                {
                    "username": "chw3",
                    "password": "Good-pass-2024",
                    "roles": ["chw"],
                    "place": ids["area"],
                    "contact": {"name": "Another CHW"},
                },
            ],
        )
        assert status == 200 and body[0]["error"]["translationKey"] == "password.length.minimum"
        assert set(body[1]) == {"user", "user-settings", "contact"}
        # the new CHW can log in; offline users may not use _find or the person API
        chw = ("chw3", "Good-pass-2024")
        status, body, _ = await run.call("POST", "/medic/_find", json_body={"selector": {}}, auth=chw)
        assert status == 403 and body["details"] == "Offline users are not allowed access to this endpoint"
        assert (await run.call("GET", f"/api/v1/person/{ids['patient']}", auth=chw))[0] == 403


async def test_person_api_gated_by_version(tmp_path):
    async with serve(make_config(tmp_path, cht_version="4.8.0")) as run:
        assert (await run.call("GET", "/api/v1/person/x"))[0] == 404
        assert (await run.call("GET", "/api/info"))[1] == {"version": "4.8.0"}


async def test_couch_surface(tmp_path):
    async with serve(make_config(tmp_path)) as run:
        ids = await seed_area(run)
        # _find: implicit $eq, $or, $in, $exists, $regex, dotted fields, fields, limit/bookmark, warning
        sel = {"selector": {"type": "person", "parent.parent._id": ids["area"]}, "fields": ["_id", "name"]}
        status, body, _ = await run.call("POST", "/medic/_find", json_body=sel)
        assert status == 200 and body["docs"] == [{"_id": ids["patient"], "name": "Jane Doe"}]
        assert body["warning"].startswith("No matching index found")
        status, body, _ = await run.call(
            "POST",
            "/medic/_find",
            json_body={
                "selector": {
                    "$or": [{"type": "clinic"}, {"type": {"$in": ["health_center"]}}],
                    "name": {"$regex": "^(Area|House)"},
                    "contact": {"$exists": False},
                }
            },
        )
        assert [d["_id"] for d in body["docs"]] == [ids["household"]]
        status, body, _ = await run.call(
            "POST",
            "/medic/_find",
            json_body={
                "selector": {"type": {"$in": ["person", "clinic", "health_center", "district_hospital"]}},
                "limit": 2,
            },
        )
        assert len(body["docs"]) == 2
        status, more, _ = await run.call(
            "POST",
            "/medic/_find",
            json_body={
                "selector": {"type": {"$in": ["person", "clinic", "health_center", "district_hospital"]}},
                "limit": 10,
                "bookmark": body["bookmark"],
            },
        )
        assert len(more["docs"]) == 3 and not {d["_id"] for d in more["docs"]} & {
            d["_id"] for d in body["docs"]
        }
        status, body, _ = await run.call("POST", "/medic/_find", json_body={"selector": {}, "sort": ["name"]})
        assert status == 400 and body["error"] == "no_usable_index"
        # GET/PUT with revisions
        _, doc, _ = await run.call("GET", f"/medic/{ids['household']}")
        doc["name"] = "Household One"
        status, body, _ = await run.call("PUT", f"/medic/{doc['_id']}", json_body=doc)
        assert status == 201 and body["ok"] is True and body["rev"].startswith("3-")
        status, body, _ = await run.call("PUT", f"/medic/{doc['_id']}", json_body=doc)  # stale _rev
        assert (status, body) == (409, {"error": "conflict", "reason": "Document update conflict."})
        status, body, _ = await run.call("GET", "/medic/missing-doc")
        assert (status, body) == (404, {"error": "not_found", "reason": "missing"})
        # _bulk_docs: new docs, a conflict
        status, body, _ = await run.call(
            "POST",
            "/medic/_bulk_docs",
            json_body={
                "docs": [
                    {"_id": "bulk-1", "type": "data_record", "form": "x", "fields": {}},
                    {"_id": ids["household"], "_rev": "1-stale", "name": "nope"},
                ]
            },
        )
        assert status == 201
        assert body[0]["ok"] is True and body[0]["id"] == "bulk-1"
        assert body[1] == {"id": ids["household"], "error": "conflict", "reason": "Document update conflict."}
        # _changes: since, include_docs, longpoll
        status, body, _ = await run.call("GET", "/medic/_changes?since=0&include_docs=true")
        assert status == 200 and body["results"][-1]["id"] == "bulk-1"
        assert all("doc" in r for r in body["results"])
        last = body["last_seq"]
        status, body, _ = await run.call("GET", f"/medic/_changes?since={last}&feed=longpoll&timeout=200")
        assert body["results"] == [] and body["last_seq"] == last
        # DELETE then GET -> deleted
        _, doc, _ = await run.call("GET", "/medic/bulk-1")
        assert (await run.call("DELETE", f"/medic/bulk-1?rev={doc['_rev']}"))[0] == 200
        assert (await run.call("GET", "/medic/bulk-1"))[1] == {"error": "not_found", "reason": "deleted"}
