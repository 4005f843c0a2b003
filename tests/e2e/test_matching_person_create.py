"""Intake creates a person in CHT in the shape the CHT version takes (real processes, SQLite and PostgreSQL):
4.x ``POST /api/v1/people`` with ``place`` stores ``type: person``; 5.2's cht-datasource ``POST /api/v1/person``
with ``parent`` stores ``type: contact`` + ``contact_type: person``. One person per case either way."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import Loop, wait_until
from tests.e2e.test_matching_intake import _cht_id, _patient, _request, _task

PLACE_SYSTEM = "https://ltfu.example.org/fhir/CodeSystem/cht-place"


@pytest.mark.parametrize(("version", "stored_type"), [("4.11.0", "person"), ("5.2.0", "contact")])
def test_a_new_person_is_created_in_the_shape_of_the_cht_version(
    tmp_path: Path, e2e_db: str, version: str, stored_type: str
) -> None:
    loop = Loop(tmp_path, e2e_db, cht_version=version)
    loop.env["LTFU_CHT_SYNC_INTERVAL_S"] = "0.5"
    with loop:
        assert loop.cht_api("GET", "/api/info").json() == {"version": version}
        org = loop.register_facility("13023")
        unit = loop.cht_api("POST", "/api/v1/places", json={"name": "Kanyawegi CU", "type": "district_hospital",
                                                            "code": "612345", "link_facility_code": "13023"})
        area = loop.cht_api("POST", "/api/v1/places", json={"name": "Akinyi Area", "type": "health_center",
                                                            "parent": unit.json()["id"]}).json()["id"]
        loop.cht_api("POST", "/api/v1/people", json={"type": "person", "name": "Peter Otieno", "place": area})
        # the feed is ordered: once the person is indexed, so are the places created before him
        wait_until(lambda: loop.fhir("GET", "/admin/stats").json()["cht_index"]["persons"] >= 1, 90,
                   "the CHT community in ltfu's index (sync)")
        patient = _patient(loop, ["Zawadi"], "Nekesa", gender="female", birthDate="2001-02-03",
                           identifier=[{"system": "urn:emr:mrn", "value": "MRN-77"}])
        case = _request(loop, org, patient, "r-new",
                        locationCode=[{"coding": [{"system": PLACE_SYSTEM, "code": area}]}])
        wait_until(lambda: _task(loop, case)["status"] != "requested", 90, "the case sent to CHT")
        assert _task(loop, case)["status"] == "received"
        created = _cht_id(loop, patient)
        assert created is not None
        doc = loop.cht_api("GET", f"/medic/{created}").json()
        assert doc["type"] == stored_type
        if stored_type == "contact":
            assert doc["contact_type"] == "person"
        assert doc["parent"] == {"_id": area, "parent": {"_id": unit.json()["id"]}}
        assert doc["ltfu_source"] == f"ltfu-case:{case}" and doc["facility_mrn"] == ["urn:emr:mrn|MRN-77"]
        found = loop.cht_api("POST", "/medic/_find", json={"selector": {"ltfu_source": f"ltfu-case:{case}"}})
        assert len(found.json()["docs"]) == 1
        assert loop.cht_records(case) == 1
