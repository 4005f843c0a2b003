"""A list drawn from a seeded community: the facility's own record of people CHT mostly knows, never a CHT id."""

from __future__ import annotations

from datetime import date, datetime

from ltfu.emulators import population
from ltfu.emulators.facility import roster
from ltfu.emulators.facility.config import FacilityEmulatorConfig

DAY = date(2026, 12, 1)


def test_community_list_is_reproducible_mixed_and_without_cht_ids() -> None:
    config = FacilityEmulatorConfig()
    seeded = population.standard_hierarchy(7, 800, config.facility_code)
    assert all(u["link_facility_code"] == config.facility_code and u.get("code") for u in seeded.units)
    lst = roster.make_list(config, DAY, 200, community=seeded)
    again = roster.make_list(config, DAY, 200, community=population.standard_hierarchy(7, 800, config.facility_code))
    bundle = roster.transaction_bundle(config, lst, "org", datetime(2026, 12, 1))
    assert bundle == roster.transaction_bundle(config, again, "org", datetime(2026, 12, 1))
    patients = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    systems = {i["system"] for p in patients for i in p["identifier"]}
    assert config.cht_contact_system not in systems and "urn:upi" in systems
    assert all(
        p["identifier"][0] == {"system": config.mrn_system, "value": d.mrn}
        for p, d in zip(patients, lst.defaulters, strict=True)
    )
    names = {(m.family, m.sex) for m, _ in seeded.members()}
    known = sum(1 for p in patients if (p["name"][0]["family"], p["gender"][0]) in names)
    coded = [d for d in lst.defaulters if d.unit_code]
    assert known >= 140 and 15 <= len(coded) <= 50  # most known to CHT (some with swapped names), some placed
    assert {d.unit_code for d in coded} <= {u["code"] for u in seeded.units}
    requests = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"]
    assert sum(1 for r in requests if r.get("locationCode")) == len(coded)
    assert sum(1 for p in patients if "birthDate" not in p) >= 10  # the EMR lacks some birth dates
