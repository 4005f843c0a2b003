"""`ltfu import csv`: a defaulter line list becomes cases; re-imports change nothing; bad rows are named."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.conftest import Api

LTFU = str(Path(sys.executable).with_name("ltfu"))
CSV = """mrn,given,family,sex,birth_date,phone,missed_appointment,reason
CCC-001,Akinyi,Otieno,F,1990-04-02,+254700000001,2026-11-01,HIV.H.DE2
CCC-002,Brian,Ouma,M,1985-01-30,,2026-11-03,HIV.H.DE3
CCC-003,Carol,Wekesa,F,02/03/1990,,2026-11-04,
"""


def test_import_csv(server: Api, settings: Settings, tmp_path: Path) -> None:
    ep = server.post("/fhir/Endpoint", json={"resourceType": "Endpoint", "status": "active", "address": "http://x/y",
                                             "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/"
                                                                "endpoint-connection-type", "code": "hl7-fhir-rest"},
                                             "payloadType": [{"text": "Task"}]}).json()
    org = server.post("/fhir/Organization", json={"resourceType": "Organization", "name": "F",
                                                  "endpoint": [{"reference": f"Endpoint/{ep['id']}"}]}).json()["id"]
    csv_file = tmp_path / "2026-W47.csv"
    csv_file.write_text(CSV)
    env = {**os.environ, "LTFU_DATABASE_URL": settings.database_url or "", "LTFU_DATA_DIR": str(tmp_path)}
    args = [LTFU, "import", "csv", str(csv_file), "--facility", org]
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 1, first.stdout + first.stderr  # one row refused
    assert "2 new requests, 0 already known, 1 rows refused" in first.stdout
    assert "line 4: birth_date must be YYYY-MM-DD" in first.stdout
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert "0 new requests, 2 already known, 1 rows refused" in again.stdout
    tasks = server.get("/fhir/Task", params={"_include": "Task:focus"}).json()
    assert tasks["total"] == 2
    srs = [e["resource"] for e in tasks["entry"] if e["resource"]["resourceType"] == "ServiceRequest"]
    assert {s["identifier"][0]["value"] for s in srs} == {"2026-W47-CCC-001", "2026-W47-CCC-002"}
    assert all(s["requisition"]["value"] == "2026-W47" for s in srs)
    pat = server.get("/fhir/Patient", params={"identifier": "CCC-001"}).json()["entry"][0]["resource"]
    assert pat["name"][0] == {"family": "Otieno", "given": ["Akinyi"]} and pat["gender"] == "female"
    assert server.get("/fhir/Patient", params={"identifier": "CCC-003"}).json()["total"] == 0

    async def cases() -> int:
        db = Database(settings)
        async with unit_of_work(db) as uow:
            n = len(await uow.outbox.list(destination="cht", status="pending"))
        await db.dispose()
        return n

    assert asyncio.run(cases()) == 2  # each new case is queued for CHT
