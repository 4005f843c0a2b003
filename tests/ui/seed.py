"""A small, known data set for the dashboard tests, made through the real HTTP API.

Two facilities: A's callback answers 200, B's answers its handshake and 400 to events until the test flips it (so B's
notifications die and can be retried). Twelve cases move through ``/cht/follow-up`` reports.
No CHT is configured, so CHT submissions stay queued.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}
MRN = {"A": "https://kisumu.example.org/mrn", "B": "https://siaya.example.org/mrn"}
FACILITY = {"A": ("Kisumu County Referral", "13023"), "B": ("Siaya Health Centre", "14552")}

# (key, facility, given, family, phone, birthDate, reports: [(attempt, method, outcome)], cancel)
PATIENTS: list[tuple[str, str, str, str, str, str, list[tuple[int, str, str]], bool]] = [
    ("A-1001", "A", "Achieng", "Otieno", "+254711000101", "1985-03-14", [(1, "phone", "returning_to_care")], False),
    ("A-1002", "A", "Baraka", "Odhiambo", "+254711000102", "1979-11-02",
     [(1, "home_visit", "not_located"), (2, "home_visit", "not_located")], False),
    ("A-1003", "A", "Chebet", "Wanjiru", "+254711000103", "1992-07-21", [(1, "phone", "refused")], False),
    ("A-1004", "A", "Dalmas", "Kiprono", "+254711000104", "1968-01-30", [(1, "home_visit", "deceased")], False),
    ("A-1005", "A", "Esther", "Nyambura", "+254711000105", "2001-05-05", [], False),
    ("A-1006", "A", "Fredrick", "Mutua", "+254711000106", "1990-09-09", [], True),
    ("A-1007", "A", "Grace", "Akinyi", "+254711000107", "1988-12-12", [(1, "sms", "not_located")], False),
    ("A-1008", "A", "Hassan", "Abdi", "+254711000108", "1975-04-18", [], False),
    ("B-2001", "B", "Imani", "Chepkoech", "+254722000201", "1983-02-11", [(1, "phone", "returning_to_care")], False),
    ("B-2002", "B", "Jabali", "Omondi", "+254722000202", "1996-06-16", [(1, "home_visit", "not_located")], False),
    ("B-2003", "B", "Kamau", "Njoroge", "+254722000203", "1971-08-08", [], False),
    ("B-2004", "B", "Lilian", "Auma", "+254722000204", "1999-10-10", [], False),
]
CHW = {"A": ("chw-a-01", "Mary Atieno"), "B": ("chw-b-01", "Peter Ouma")}


@dataclass
class Seeded:
    orgs: dict[str, str] = field(default_factory=dict)  # "A"/"B" → Organization id
    cases: dict[str, str] = field(default_factory=dict)  # patient key → case id
    patients: dict[str, str] = field(default_factory=dict)  # patient key → Patient id

    @property
    def phi(self) -> list[str]:
        """Names, phone numbers and birth dates of the seeded patients: what logs must never contain."""
        out = []
        for _, _, given, family, phone, birth, _, _ in PATIENTS:
            out += [given, family, phone, phone.lstrip("+"), birth]
        return out


def _ok(r: Any) -> Any:
    assert r.status_code in (200, 201), (r.status_code, r.text[:500])
    return r.json()


def seed(api: Any, callback_base: str) -> Seeded:
    s = Seeded()
    for key, (name, code) in FACILITY.items():
        ep = _ok(api.post("/fhir/Endpoint", json={
            "resourceType": "Endpoint", "status": "active", "connectionType": CONN,
            "payloadType": [{"text": "Task"}], "address": f"{callback_base}/cb/{key}",
            "header": ["Authorization: Bearer facility-token"]}))
        org = _ok(api.post("/fhir/Organization", json={
            "resourceType": "Organization", "identifier": [{"system": "https://mfl.example.org/ke", "value": code}],
            "name": name, "endpoint": [{"reference": f"Endpoint/{ep['id']}"}]}))
        s.orgs[key] = org["id"]
    for key, fac, given, family, phone, birth, _, _ in PATIENTS:
        patient = _ok(api.post("/fhir/Patient", json={
            "resourceType": "Patient", "identifier": [{"use": "official", "system": MRN[fac], "value": key}],
            "name": [{"family": family, "given": [given]}], "telecom": [{"system": "phone", "value": phone}],
            "gender": "female", "birthDate": birth}))
        s.patients[key] = patient["id"]
        sr = _ok(api.post("/fhir/ServiceRequest", json={
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "identifier": [{"system": f"{MRN[fac]}/ltfu-request", "value": f"REQ-{key}"}],
            "code": {"text": "Trace patient lost to follow-up"},
            "subject": {"reference": f"Patient/{patient['id']}"},
            "requester": {"reference": f"Organization/{s.orgs[fac]}"}}))
        s.cases[key] = sr["id"]
    now_ms = int(time.time() * 1000)
    for key, fac, _, _, _, _, reports, cancel in PATIENTS:
        chw_id, chw_name = CHW[fac]
        for attempt, method, outcome in reports:
            _ok(api.post("/cht/follow-up", json={
                "report_id": f"rep-{key}-{attempt}", "reported_date": now_ms, "case_ref": s.cases[key],
                "chw_id": chw_id, "chw_name": chw_name, "attempt_no": attempt, "method": method,
                "contacted": "yes" if outcome != "not_located" else "no", "outcome": outcome}))
        if cancel:
            sr = _ok(api.get(f"/fhir/ServiceRequest/{s.cases[key]}"))
            _ok(api.put(f"/fhir/ServiceRequest/{s.cases[key]}", json={**sr, "status": "revoked"}))
    return s


EXPECTED_STATES = {"completed": 5, "in-progress": 2, "requested": 4, "cancelled": 1}
