"""``LTFU_CHT_WRITE_IDENTIFIERS=true`` in the real loop (mediator and CHT emulator processes, SQLite and
PostgreSQL): a certain link writes the facility's MRN to the CHT person once, and the next patient that
carries only that MRN is linked to the same person by identifier."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.harness import Loop, wait_until
from tests.e2e.test_matching_intake import _cht_id, _patient, _request, _seed, _task

MRN = "urn:emr:mrn"


def test_a_written_mrn_finds_the_person_next_time(tmp_path: Path, e2e_db: str) -> None:
    loop = Loop(tmp_path, e2e_db)
    loop.env["LTFU_CHT_SYNC_INTERVAL_S"] = "0.5"
    loop.env["LTFU_CHT_WRITE_IDENTIFIERS"] = "true"
    with loop:
        org = loop.register_facility("13023")
        ids = _seed(loop)
        wait_until(lambda: loop.fhir("GET", "/admin/stats").json()["cht_index"]["persons"] >= 4, 90,
                   "the CHT persons in ltfu's index (sync)")
        first = _patient(loop, ["Grace"], "Otieno", gender="female",
                         identifier=[{"system": "urn:upi", "value": "MOHR13K16YL12"}, {"system": MRN, "value": "M-9"}])
        case = _request(loop, org, first, "w-1")
        wait_until(lambda: _task(loop, case)["status"] != "requested", 90, "the first case sent to CHT")
        assert _cht_id(loop, first) == ids["grace"]
        wait_until(lambda: loop.cht_api("GET", f"/medic/{ids['grace']}").json().get("facility_mrn"), 90,
                   "the MRN written to the CHT person")
        doc = loop.cht_api("GET", f"/medic/{ids['grace']}").json()
        assert doc["facility_mrn"] == [f"{MRN}|M-9"] and doc["upi"] == "MOHR13K16YL12"

        # another record of the facility for her: only the MRN and a shortened name
        second = _patient(loop, ["G."], "Otieno", gender="female", identifier=[{"system": MRN, "value": "M-9"}])
        case2 = _request(loop, org, second, "w-2")
        wait_until(lambda: _task(loop, case2)["status"] != "requested", 90, "the second case sent to CHT")
        assert _cht_id(loop, second) == ids["grace"]
        cases = loop.fhir("GET", "/admin/stats").json()["matching"]
        assert cases["identifier"] == 2, cases
        def writes() -> list[dict]:
            rows = loop.fhir("GET", "/admin/outbox", params={"destination": "cht"}).json()["items"]
            return [r for r in rows if r.get("kind") == "person-identifiers"]

        wait_until(lambda: len(writes()) == 2 and all(r["status"] == "done" for r in writes()), 60,
                   "both identifier writes done (one per Patient and person)")
        again = loop.cht_api("GET", f"/medic/{ids['grace']}").json()
        # one entry, not two (the rev may move: sentinel's shortcode is a later, asynchronous revision)
        assert again["facility_mrn"] == [f"{MRN}|M-9"]
