"""Facility isolation, cell by cell: every route and every Bundle entry kind, run as facility A (and as
OpenHIM's gateway acting for A) against facility B's data, on SQLite and PostgreSQL.

Each cell asserts that A gets no byte of B's data (B's ids, names, identifiers, phone, callback token:
none may appear in the answer unless A itself sent it) and changes nothing of B's (every stored version
that mentions B, and B's outbox, are the same before and after). See security-findings.md (C1-C6, H1, M6).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from ltfu.fhir.search_params import SEARCH_PARAMS
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.conftest import ADMIN_PASSWORD, LOOPBACK, _truncate, pg_url
from tests.support import postgres
from tests.support.server import ServerThread

CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}
CHT_B = "8d0e6f64-4a8e-4b8e-9c77-1f2b3c4d5e6f"  # B's patient's CHT id
PASSWORDS = {
    "fa": "facility-a-pw-1",
    "fb": "facility-b-pw-1",
    "gw": "gateway-pw-123",
    "chtc": "cht-push-pw-1",
    "mt": "matcher-pw-1234",
}


# --------------------------------------------------------------------------- the world: A, B, a shared patient


@dataclass
class World:
    url: str
    ids: dict[str, str]
    markers: list[str] = field(default_factory=list)  # B's bytes
    identifiers: list[str] = field(default_factory=list)  # B's identifiers: A may know them and store its own
    sent: set[str] = field(default_factory=set)  # the identifiers A has sent so far (then they are A's too)
    b_ids: list[str] = field(default_factory=list)  # what a stored version of B's mentions

    def session(self, who: str) -> requests.Session:
        s = requests.Session()
        s.auth = ("admin", ADMIN_PASSWORD) if who == "admin" else (who, PASSWORDS[who])
        return s


def _endpoint(x: str) -> dict[str, Any]:
    return {
        "resourceType": "Endpoint",
        "id": f"ep-{x}",
        "status": "active",
        "connectionType": CONN,
        "payloadType": [{"text": "any"}],
        "address": f"http://127.0.0.1:9/{x}",
        "header": [f"Authorization: Bearer SECRET-TOKEN-{x}"],
    }


def _sr(key: str, patient: str, org: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "identifier": [{"system": "urn:req", "value": key}],
        "subject": {"reference": f"Patient/{patient}"},
        "requester": {"reference": f"Organization/{org}"},
    }


def _ok(r: requests.Response) -> dict[str, Any]:
    assert r.status_code in (200, 201), r.text
    return r.json()


def _build(url: str, settings: Settings) -> World:
    admin = requests.Session()
    admin.auth = ("admin", ADMIN_PASSWORD)
    for x in ("a", "b"):
        _ok(admin.put(f"{url}/fhir/Endpoint/ep-{x}", json=_endpoint(x)))
        _ok(
            admin.put(
                f"{url}/fhir/Organization/org-{x}",
                json={
                    "resourceType": "Organization",
                    "id": f"org-{x}",
                    "name": f"Facility {x.upper()}",
                    "identifier": [{"system": "urn:mfl", "value": f"MFL-{x.upper()}"}],
                    "endpoint": [{"reference": f"Endpoint/ep-{x}"}],
                },
            )
        )

    async def clients() -> None:
        db = Database(settings)
        async with unit_of_work(db) as uow:
            await uow.clients.upsert("fa", PASSWORDS["fa"], role="facility", organization_id="org-a")
            await uow.clients.upsert("fb", PASSWORDS["fb"], role="facility", organization_id="org-b")
            await uow.clients.upsert("gw", PASSWORDS["gw"], role="gateway", organization_id=None)
            await uow.clients.upsert("chtc", PASSWORDS["chtc"], role="cht", organization_id=None)
            await uow.clients.upsert("mt", PASSWORDS["mt"], role="matcher", organization_id=None)
            await uow.openhim_clients.put("emr-a", "facility", "org-a")
            await uow.openhim_clients.put("emr-b", "facility", "org-b")
        await db.dispose()

    asyncio.run(clients())
    w = World(url, {})
    fb, fa, cht = w.session("fb"), w.session("fa"), w.session("chtc")
    ids = w.ids
    ids["PB"] = _ok(
        fb.post(
            f"{url}/fhir/Patient",
            json={
                "resourceType": "Patient",
                "identifier": [{"system": "urn:nid", "value": "NID-B-123"}, {"system": "cht", "value": CHT_B}],
                "name": [{"family": "Bsecretname", "given": ["Oti"]}],
                "birthDate": "1984-03-05",
                "gender": "female",
                "telecom": [{"system": "phone", "value": "+254700999111"}],
            },
        )
    )["id"]
    ids["SRB"] = _ok(fb.post(f"{url}/fhir/ServiceRequest", json=_sr("REQ-B-1", ids["PB"], "org-b")))["id"]
    ids["PS"] = _ok(
        admin.post(
            f"{url}/fhir/Patient",
            json={
                "resourceType": "Patient",
                "identifier": [{"system": "urn:nid", "value": "NID-S-1"}],
                "name": [{"family": "Shared", "given": ["Person"]}],
                "gender": "male",
            },
        )
    )["id"]
    ids["SRAS"] = _ok(admin.post(f"{url}/fhir/ServiceRequest", json=_sr("REQ-AS-1", ids["PS"], "org-a")))["id"]
    ids["SRBS"] = _ok(admin.post(f"{url}/fhir/ServiceRequest", json=_sr("REQ-BS-1", ids["PS"], "org-b")))["id"]
    ids["PA"] = _ok(
        fa.post(
            f"{url}/fhir/Patient", json={"resourceType": "Patient", "gender": "male", "name": [{"family": "Aownname"}]}
        )
    )["id"]
    ids["SRA"] = _ok(fa.post(f"{url}/fhir/ServiceRequest", json=_sr("REQ-A-1", ids["PA"], "org-a")))["id"]
    for key, case in (("B", "SRB"), ("BS", "SRBS")):
        r = _ok(
            cht.post(
                f"{url}/cht/follow-up",
                json={
                    "report_id": f"report-{key}",
                    "case_ref": ids[case],
                    "method": "home_visit",
                    "outcome": "refused",
                    "attempt_no": 1,
                    "notes": f"Bnote-{key}",
                },
            )
        )
        ids[f"E{key}"] = r["encounter"].split("/")[1]
        ids[f"O{key}"] = r["observation"].split("/")[1]
    for key, case in (("TB", "SRB"), ("TBS", "SRBS")):
        task = _ok(admin.get(f"{url}/fhir/Task", params={"based-on": f"ServiceRequest/{ids[case]}"}))
        ids[key] = task["entry"][0]["resource"]["id"]
    subs = _ok(admin.get(f"{url}/fhir/Subscription"))["entry"]
    ids["SB"] = next(s["resource"]["id"] for s in subs if "org-b" in json.dumps(s["resource"]))
    ids["SA"] = next(s["resource"]["id"] for s in subs if "org-a" in json.dumps(s["resource"]))
    asyncio.run(_review_items(settings, ids))
    b_keys = ("PB", "SRB", "TB", "EB", "OB", "SB", "SRBS", "TBS", "EBS", "OBS", "RB", "DG")
    w.b_ids = [ids[k] for k in b_keys] + ["org-b", "ep-b"]
    w.identifiers = ["NID-B-123", "REQ-B-1", "REQ-BS-1", "MFL-B", CHT_B]
    w.markers = [*w.b_ids, *w.identifiers, "SECRET-TOKEN-b", "Bsecretname", "+254700999111", "1984-03-05", "Bnote-"]
    return w


# B's community in the CHT index: its patient's CHT person, under a unit linked to B's MFL code.
CHT_DOCS = [
    {"_id": "cu-b", "type": "contact", "contact_type": "c_community_health_unit", "name": "Bunit CU",
     "code": "B-CU-1", "link_facility_code": "MFL-B"},
    {"_id": "hh-b", "type": "contact", "contact_type": "e_household", "name": "Bsecretname household",
     "parent": {"_id": "cu-b"}},
    {"_id": CHT_B, "type": "person", "name": "Oti Bsecretname", "sex": "female", "date_of_birth": "1984-03-05",
     "phone": "+254700999111", "parent": {"_id": "hh-b", "parent": {"_id": "cu-b"}}},
    {"_id": "cht-b-twin", "type": "person", "name": "Oti Bsecretname", "sex": "female",
     "date_of_birth": "1984-03-05", "parent": {"_id": "hh-b", "parent": {"_id": "cu-b"}}},
]


async def _review_items(settings: Settings, ids: dict[str, str]) -> None:
    """A review item for one case of each facility (as intake opens them: the incoming Patient and its
    candidates), B's CHT persons flagged as duplicates from B's item, and B's explicit catchment."""
    from ltfu.services import intake
    from ltfu.services.cht_index import index_docs

    db = Database(settings)
    async with unit_of_work(db) as uow:
        await index_docs(uow, CHT_DOCS)
        for key, case, patient, org in (("RA", "SRA", "PA", "org-a"), ("RB", "SRB", "PB", "org-b")):
            sr = (await uow.resources.read("ServiceRequest", ids[case])).resource
            body = (await uow.resources.read("Patient", ids[patient])).resource
            decision = await intake.decide(uow, ids[case], sr, body, org)
            ids[key] = f"review-{key.lower()}-{uuid.uuid4().hex[:8]}"
            await uow.reviews.create(review_id=ids[key], case_id=ids[case], organization_id=org,
                                     patient_id=ids[patient], reason="possible",
                                     proposal=json.dumps(decision.proposal), due_at="2999-01-01T00:00:00.000000Z")
        ids["DG"] = f"dup-{uuid.uuid4().hex[:8]}"
        await uow.duplicates.create(group_id=ids["DG"], persons=[CHT_B, "cht-b-twin"], actor="admin",
                                    review_id=ids["RB"], note="Bnote-dup", evidence={})
        await uow.cht_index.link_facility("org-b", ["hh-b"])
    await db.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp(f"matrix-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'ltfu.db'}"
    else:
        url = pg_url()  # type: ignore[assignment]
        if url is None:
            pytest.skip(f"PostgreSQL unreachable at {postgres.ADMIN_URL}")
    settings = Settings(database_url=url, data_dir=tmp, admin_password=ADMIN_PASSWORD, workers=False,
                        callback_allowed_networks=LOOPBACK)  # the facilities' callbacks are on loopback

    async def reset() -> None:
        db = Database(settings)
        await db.upgrade()
        await _truncate(db)
        await db.dispose()

    asyncio.run(reset())
    from ltfu.api.app import create_app

    with ServerThread(create_app(settings)) as srv:
        yield _build(srv.url, settings)


# --------------------------------------------------------------------------- the cells


@dataclass(frozen=True)
class Cell:
    name: str
    method: str
    path: str
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    ok_statuses: tuple[int, ...] = ()  # when the cell must actually run (e.g. a search answers 200)
    form: dict[str, str] | None = None  # a dashboard form (sent instead of the JSON body)


def _fill(node: Any, ids: dict[str, str]) -> Any:
    if isinstance(node, str):
        for k in sorted(ids, key=len, reverse=True):
            node = node.replace("{" + k + "}", ids[k])
        return node
    if isinstance(node, dict):
        return {k: _fill(v, ids) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, ids) for v in node]
    return node


B_RESOURCES = [
    ("Patient", "PB"),
    ("ServiceRequest", "SRB"),
    ("Task", "TB"),
    ("Encounter", "EB"),
    ("Observation", "OB"),
    ("Subscription", "SB"),
    ("ServiceRequest", "SRBS"),
    ("Task", "TBS"),
    ("Encounter", "EBS"),
    ("Observation", "OBS"),
]
B_REFS = ",".join([f"{t}/{{{k}}}" for t, k in B_RESOURCES] + ["Organization/org-b", "Endpoint/ep-b"])
B_TOKENS = "urn:nid|NID-B-123,NID-B-123,urn:req|REQ-B-1,REQ-B-1,REQ-BS-1,urn:mfl|MFL-B,MFL-B,cht|" + CHT_B
VALUES = {"reference": B_REFS, "token": B_TOKENS, "string": "Oti", "date": "ge1900-01-01"}
PATIENT_B = {"resourceType": "Patient", "id": "{PB}", "gender": "female", "name": [{"family": "Changed-by-A"}]}
HIJACK = {**_endpoint("b"), "address": "http://127.0.0.1:9/hijacked-by-A"}
ORG_A_WITH_EP_B = {
    "resourceType": "Organization",
    "id": "org-a",
    "name": "Facility A",
    "identifier": [{"system": "urn:mfl", "value": "MFL-A"}],
    "endpoint": [{"reference": "Endpoint/ep-a"}, {"reference": "Endpoint/ep-b"}],
}
ORG_A_WITH_B_IDENT = {
    **ORG_A_WITH_EP_B,
    "endpoint": [{"reference": "Endpoint/ep-a"}],
    "identifier": [{"system": "urn:mfl", "value": "MFL-B"}],
}
SUB_B = {
    "resourceType": "Subscription",
    "status": "requested",
    "reason": "shadow copy",
    "criteria": "Task?requester=Organization/org-b",
    "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/shadow", "payload": "application/fhir+json"},
}


def _own_sr(subject: Any, key: str | None = None) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "identifier": [{"system": "urn:req", "value": key or f"A-{uuid.uuid4()}"}],
        "subject": subject,
        "requester": {"reference": "Organization/org-a"},
    }


def _visit(based_on: str, kind: str = "Encounter") -> dict[str, Any]:
    if kind == "Encounter":
        return {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
            "subject": {"reference": "Patient/{PA}"},
            "basedOn": [{"reference": based_on}],
        }
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "outcome"},
        "subject": {"reference": "Patient/{PA}"},
        "basedOn": [{"reference": based_on}],
    }


# Bundle entry kinds: (name, entry); each runs as a batch and as a transaction.
ENTRIES: list[tuple[str, dict[str, Any]]] = [
    *[(f"GET-{t}-{k}", {"request": {"method": "GET", "url": f"{t}/{{{k}}}"}}) for t, k in B_RESOURCES],
    ("GET-Endpoint-ep-b", {"request": {"method": "GET", "url": "Endpoint/ep-b"}}),
    ("GET-Organization-org-b", {"request": {"method": "GET", "url": "Organization/org-b"}}),
    ("GET-search-Patient-identifier", {"request": {"method": "GET", "url": "Patient?identifier=urn:nid|NID-B-123"}}),
    ("GET-search-Subscription", {"request": {"method": "GET", "url": "Subscription"}}),
    ("GET-search-Endpoint", {"request": {"method": "GET", "url": "Endpoint"}}),
    ("GET-search-Task-include", {"request": {"method": "GET", "url": "Task?_include=Task:patient"}}),
    ("PUT-Patient-PB", {"request": {"method": "PUT", "url": "Patient/{PB}"}, "resource": PATIENT_B}),
    ("PUT-Endpoint-ep-b", {"request": {"method": "PUT", "url": "Endpoint/ep-b"}, "resource": HIJACK}),
    (
        "PUT-Organization-org-a-ep-b",
        {"request": {"method": "PUT", "url": "Organization/org-a"}, "resource": ORG_A_WITH_EP_B},
    ),
    (
        "PUT-Organization-org-a-B-identifier",
        {"request": {"method": "PUT", "url": "Organization/org-a"}, "resource": ORG_A_WITH_B_IDENT},
    ),
    (
        "PUT-conditional-Patient",
        {
            "request": {"method": "PUT", "url": "Patient?identifier=urn:nid|NID-B-123"},
            "resource": {k: v for k, v in PATIENT_B.items() if k != "id"},
        },
    ),
    (
        "PUT-Task-TB-cancel",
        {
            "request": {"method": "PUT", "url": "Task/{TB}"},
            "resource": {
                "resourceType": "Task",
                "id": "{TB}",
                "status": "cancelled",
                "intent": "order",
                "requester": {"reference": "Organization/org-a"},
            },
        },
    ),
    ("DELETE-Patient-PB", {"request": {"method": "DELETE", "url": "Patient/{PB}"}}),
    ("DELETE-conditional-Patient", {"request": {"method": "DELETE", "url": "Patient?identifier=urn:nid|NID-B-123"}}),
    ("POST-Subscription-org-b", {"request": {"method": "POST", "url": "Subscription"}, "resource": SUB_B}),
    (
        "POST-Organization",
        {
            "request": {"method": "POST", "url": "Organization"},
            "resource": {"resourceType": "Organization", "name": "Rogue"},
        },
    ),
    (
        "POST-Patient-ifNoneExist",
        {
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:nid|NID-B-123"},
            "resource": {"resourceType": "Patient", "gender": "female"},
        },
    ),
    (
        "POST-SR-subject-PB",
        {"request": {"method": "POST", "url": "ServiceRequest"}, "resource": _own_sr({"reference": "Patient/{PB}"})},
    ),
    (
        "POST-SR-subject-identifier",
        {
            "request": {"method": "POST", "url": "ServiceRequest"},
            "resource": _own_sr({"identifier": {"system": "urn:nid", "value": "NID-B-123"}}),
        },
    ),
    (
        "POST-SR-subject-conditional",
        {
            "request": {"method": "POST", "url": "ServiceRequest"},
            "resource": _own_sr({"reference": "Patient?identifier=urn:nid|NID-B-123"}),
        },
    ),
    (
        "POST-SR-B-request-identifier",
        {
            "request": {"method": "POST", "url": "ServiceRequest"},
            "resource": _own_sr({"reference": "Patient/{PA}"}, "REQ-B-1"),
        },
    ),
    (
        "POST-SR-requester-org-b",
        {
            "request": {"method": "POST", "url": "ServiceRequest"},
            "resource": {**_own_sr({"reference": "Patient/{PA}"}), "requester": {"reference": "Organization/org-b"}},
        },
    ),
    (
        "POST-Encounter-basedOn-SRB",
        {"request": {"method": "POST", "url": "Encounter"}, "resource": _visit("ServiceRequest/{SRB}")},
    ),
    (
        "POST-Observation-basedOn-SRB",
        {
            "request": {"method": "POST", "url": "Observation"},
            "resource": _visit("ServiceRequest/{SRB}", "Observation"),
        },
    ),
]


def _bundle_cells() -> list[Cell]:
    cells = []
    for kind in ("batch", "transaction"):
        for name, entry in ENTRIES:
            cells.append(
                Cell(
                    f"bundle-{kind}-{name}",
                    "POST",
                    "/fhir/",
                    {"resourceType": "Bundle", "type": kind, "entry": [entry]},
                )
            )
    urn = f"urn:uuid:{uuid.uuid4()}"
    cells.append(
        Cell(
            "bundle-transaction-urn-uuid-for-org-b",
            "POST",
            "/fhir/",
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "fullUrl": urn,
                        "request": {"method": "POST", "url": "Patient"},
                        "resource": {"resourceType": "Patient", "gender": "male"},
                    },
                    {
                        "request": {"method": "POST", "url": "ServiceRequest"},
                        "resource": {**_own_sr({"reference": urn}), "requester": {"reference": "Organization/org-b"}},
                    },
                ],
            },
        )
    )
    return cells


def _read_cells() -> list[Cell]:
    cells = []
    for t, k in [*B_RESOURCES, ("Endpoint", "ep-b"), ("Organization", "org-b")]:
        rid = "{" + k + "}" if not k.startswith(("ep-", "org-")) else k
        cells += [
            Cell(f"read-{t}-{k}", "GET", f"/fhir/{t}/{rid}"),
            Cell(f"vread-{t}-{k}", "GET", f"/fhir/{t}/{rid}/_history/1"),
            Cell(f"history-{t}-{k}", "GET", f"/fhir/{t}/{rid}/_history"),
        ]
    for t in SEARCH_PARAMS:
        cells.append(Cell(f"history-type-{t}", "GET", f"/fhir/{t}/_history"))
    cells.append(Cell("history-system", "GET", "/fhir/_history"))
    return cells


def _search_cells() -> list[Cell]:
    cells = []
    for t, params in SEARCH_PARAMS.items():
        b_ids = ",".join("{" + k + "}" for rt, k in B_RESOURCES if rt == t) or "org-b,ep-b"
        cells.append(Cell(f"search-{t}", "GET", f"/fhir/{t}", ok_statuses=(200,)))
        cells.append(Cell(f"search-{t}-_id", "GET", f"/fhir/{t}?_id={b_ids}", ok_statuses=(200,)))
        cells.append(
            Cell(f"search-{t}-_lastUpdated", "GET", f"/fhir/{t}?_lastUpdated=ge2000-01-01", ok_statuses=(200,))
        )
        cells.append(Cell(f"search-post-{t}", "POST", f"/fhir/{t}/_search", ok_statuses=(200,)))
        for p, d in params.items():
            cells.append(Cell(f"search-{t}-{p}", "GET", f"/fhir/{t}?{p}={VALUES[d.kind]}", ok_statuses=(200,)))
            if d.kind == "reference":
                cells.append(Cell(f"include-{t}-{p}", "GET", f"/fhir/{t}?_include={t}:{p}", ok_statuses=(200,)))
                for target in ("Patient", "ServiceRequest", "Organization", "Encounter"):
                    cells.append(
                        Cell(
                            f"revinclude-{target}-{t}-{p}",
                            "GET",
                            f"/fhir/{target}?_revinclude={t}:{p}",
                            ok_statuses=(200,),
                        )
                    )
    return cells


POC_SR = {
    "intent": "order",
    "status": "active",
    "subject": {"reference": f"Patient/{CHT_B}"},
    "requester": {"reference": "Organization/MFL-B"},
}
POC_SR_OWN_ORG = {**POC_SR, "requester": {"reference": "Organization/MFL-A"}}
POC_PATIENT = {
    "identifier": [{"system": "cht", "value": CHT_B}],
    "name": [{"family": "Doe", "given": ["John"]}],
    "gender": "male",
    "birthDate": "2000-01-01",
}
POC_ENCOUNTER = {
    "resourceType": "Encounter",
    "identifier": [{"system": "cht", "use": "official", "value": CHT_B}],
    "status": "finished",
    "class": "outpatient",
    "type": [{"text": "Community health worker visit"}],
    "subject": {"reference": f"Patient/?identifier={CHT_B}"},
    "participant": [{"type": [{"text": "Community health worker"}]}],
}
POC_ORG = {
    "identifier": [{"system": "official", "value": "rogue-org"}],
    "name": ["rogue"],
    "endpoint": [{"reference": "Endpoint/ep-b"}],
}


def _write_cells() -> list[Cell]:
    fhir_json = {"Content-Type": "application/fhir+json"}
    cells = [
        Cell(
            "create-Patient-If-None-Exist",
            "POST",
            "/fhir/Patient",
            {"resourceType": "Patient", "gender": "female"},
            {**fhir_json, "If-None-Exist": "identifier=urn:nid|NID-B-123"},
        ),
        Cell("create-Patient-fhirpy-query", "POST", "/fhir/Patient?name=Oti", {"resourceType": "Patient"}),
        Cell(
            "create-Patient-fhirpy-identifier",
            "POST",
            "/fhir/Patient?identifier=NID-B-123",
            {"resourceType": "Patient"},
        ),
        Cell(
            "conditional-update-Patient",
            "PUT",
            "/fhir/Patient?identifier=urn:nid|NID-B-123",
            {"resourceType": "Patient", "gender": "male"},
        ),
        Cell("update-Patient-PB", "PUT", "/fhir/Patient/{PB}", PATIENT_B),
        Cell("update-Endpoint-ep-b", "PUT", "/fhir/Endpoint/ep-b", HIJACK),
        Cell(
            "update-Organization-org-b",
            "PUT",
            "/fhir/Organization/org-b",
            {"resourceType": "Organization", "id": "org-b", "name": "Taken"},
        ),
        Cell("update-Organization-org-a-attach-ep-b", "PUT", "/fhir/Organization/org-a", ORG_A_WITH_EP_B),
        Cell("update-Organization-org-a-B-identifier", "PUT", "/fhir/Organization/org-a", ORG_A_WITH_B_IDENT),
        Cell(
            "update-Subscription-SB",
            "PUT",
            "/fhir/Subscription/{SB}",
            {**SUB_B, "id": "{SB}", "criteria": "Task?requester=Organization/org-a"},
        ),
        Cell("update-Subscription-SA-to-org-b", "PUT", "/fhir/Subscription/{SA}", {**SUB_B, "id": "{SA}"}),
        Cell(
            "update-Task-TB-cancel",
            "PUT",
            "/fhir/Task/{TB}",
            {
                "resourceType": "Task",
                "id": "{TB}",
                "status": "cancelled",
                "intent": "order",
                "requester": {"reference": "Organization/org-a"},
            },
        ),
        Cell(
            "update-ServiceRequest-SRB-revoke",
            "PUT",
            "/fhir/ServiceRequest/{SRB}",
            {**_sr("REQ-B-1", "{PB}", "org-a"), "id": "{SRB}", "status": "revoked"},
        ),
        Cell(
            "update-SRA-retarget-subject-PB",
            "PUT",
            "/fhir/ServiceRequest/{SRA}",
            {**_sr("REQ-A-1", "{PB}", "org-a"), "id": "{SRA}"},
        ),
        Cell("delete-Patient-PB", "DELETE", "/fhir/Patient/{PB}"),
        Cell("delete-ServiceRequest-SRB", "DELETE", "/fhir/ServiceRequest/{SRB}"),
        Cell("create-Subscription-org-b", "POST", "/fhir/Subscription", SUB_B),
        Cell("create-SR-subject-PB", "POST", "/fhir/ServiceRequest", _own_sr({"reference": "Patient/{PB}"})),
        Cell(
            "create-SR-subject-identifier",
            "POST",
            "/fhir/ServiceRequest",
            _own_sr({"identifier": {"system": "urn:nid", "value": "NID-B-123"}}),
        ),
        Cell(
            "create-SR-subject-query",
            "POST",
            "/fhir/ServiceRequest",
            _own_sr({"reference": "Patient?identifier=urn:nid|NID-B-123"}),
        ),
        Cell("create-SR-subject-cht-id", "POST", "/fhir/ServiceRequest", _own_sr({"reference": f"Patient/{CHT_B}"})),
        Cell(
            "create-SR-B-request-identifier",
            "POST",
            "/fhir/ServiceRequest",
            _own_sr({"reference": "Patient/{PA}"}, "REQ-B-1"),
        ),
        Cell(
            "create-SR-requester-org-b",
            "POST",
            "/fhir/ServiceRequest",
            {**_own_sr({"reference": "Patient/{PA}"}), "requester": {"reference": "Organization/org-b"}},
        ),
        Cell(
            "create-SR-requester-MFL-B",
            "POST",
            "/fhir/ServiceRequest",
            {**_own_sr({"reference": "Patient/{PA}"}), "requester": {"reference": "Organization/MFL-B"}},
        ),
        Cell("create-Encounter-basedOn-SRB", "POST", "/fhir/Encounter", _visit("ServiceRequest/{SRB}")),
        Cell(
            "create-Observation-basedOn-SRB", "POST", "/fhir/Observation", _visit("ServiceRequest/{SRB}", "Observation")
        ),
        Cell(
            "create-Encounter-subject-PB",
            "POST",
            "/fhir/Encounter",
            {**_visit("ServiceRequest/{SRA}"), "subject": {"reference": "Patient/{PB}"}},
        ),
        Cell("create-Organization", "POST", "/fhir/Organization", {"resourceType": "Organization", "name": "Rogue"}),
        Cell("validate-Patient", "POST", "/fhir/Patient/$validate", {"resourceType": "Patient", "gender": "male"}),
        Cell("events-SB", "GET", "/fhir/Subscription/{SB}/$events"),
        Cell("status-SB", "GET", "/fhir/Subscription/{SB}/$status"),
        Cell("events-SB-post", "POST", "/fhir/Subscription/{SB}/$events"),
    ]
    for prefix in ("/mediator", ""):
        tag = prefix.strip("/") or "unprefixed"
        cells += [
            Cell(f"poc-{tag}-status", "GET", f"{prefix}/"),
            Cell(f"poc-{tag}-service-request-for-B", "POST", f"{prefix}/service-request", POC_SR),
            Cell(f"poc-{tag}-service-request-B-patient", "POST", f"{prefix}/service-request", POC_SR_OWN_ORG),
            Cell(f"poc-{tag}-organization", "POST", f"{prefix}/organization", POC_ORG),
            Cell(f"poc-{tag}-patient-B-cht-id", "POST", f"{prefix}/patient", POC_PATIENT),
            Cell(f"poc-{tag}-encounter-B", "POST", f"{prefix}/encounter", POC_ENCOUNTER),
        ]
    cells += [
        Cell(
            "cht-follow-up-for-B",
            "POST",
            "/cht/follow-up",
            {
                "report_id": "forged-by-A",
                "case_ref": "{SRB}",
                "method": "home_visit",
                "outcome": "deceased",
                "death_date": "2026-11-30",
                "attempt_no": "1",
            },
        ),
        Cell(
            "cht-follow-up-replay-B-report",
            "POST",
            "/cht/follow-up",
            {"report_id": "report-B", "case_ref": "{SRB}", "method": "phone", "outcome": "deceased", "attempt_no": "2"},
        ),
        Cell("cht-patient-B", "POST", "/cht/patient", {"_id": CHT_B, "type": "person", "name": "Renamed by A"}),
    ]
    return cells


def _ui_cells() -> list[Cell]:
    cells = [
        Cell("ui-cases", "GET", "/ui/cases"),
        Cell("ui-cases-facility-b", "GET", "/ui/cases?facility=org-b"),
        Cell("ui-case-SRB", "GET", "/ui/cases/{SRB}"),
        Cell("ui-case-SRBS", "GET", "/ui/cases/{SRBS}"),
        Cell("ui-deliveries", "GET", "/ui/deliveries"),
        Cell("ui-deliveries-facility-b", "GET", "/ui/deliveries?facility=org-b"),
        Cell("ui-deliveries-retry-b", "GET", "/ui/deliveries/retry?facility=org-b"),
        Cell("ui-programme", "GET", "/ui/programme"),
        Cell("ui-programme-facility-b", "GET", "/ui/programme?facility=org-b"),
    ]
    for table in ("funnel", "outcomes", "facilities", "weeks"):
        cells.append(Cell(f"ui-csv-{table}", "GET", f"/ui/programme/{table}.csv"))
        cells.append(Cell(f"ui-csv-{table}-facility-b", "GET", f"/ui/programme/{table}.csv?facility=org-b"))
    cells += [
        Cell("admin-outbox", "GET", "/admin/outbox"),
        Cell("admin-outbox-b", "GET", "/admin/outbox?organization=org-b"),
        Cell("admin-stats", "GET", "/admin/stats"),
        Cell("admin-retry-b", "POST", "/admin/outbox/retry?organization=org-b"),
        Cell("metrics", "GET", "/metrics"),
    ]
    return cells


MATCH_B = {
    "resourceType": "Parameters",
    "parameter": [
        {
            "name": "resource",
            "resource": {"resourceType": "Patient", "gender": "female", "name": [{"family": "Oti"}]},
        }
    ],
}


def _review_cells() -> list[Cell]:
    """The matching review queue, ``$match`` and the catchment: a facility sees its own requests' items only
    (another's is absent: 404), decides none, and never reaches what spans the community (403)."""
    cells = [
        Cell("match-Patient", "POST", "/fhir/Patient/$match", MATCH_B, ok_statuses=(403,)),
        Cell("review-list", "GET", "/admin/review", ok_statuses=(200,)),
        Cell("review-list-all", "GET", "/admin/review?status=all", ok_statuses=(200,)),
        Cell("review-list-decided", "GET", "/admin/review?status=decided", ok_statuses=(200,)),
        Cell("review-get-RB", "GET", "/admin/review/{RB}", ok_statuses=(404,)),
        Cell("review-duplicates", "GET", "/admin/review/duplicates", ok_statuses=(403,)),
        Cell("review-duplicates-all", "GET", "/admin/review/duplicates?status=all", ok_statuses=(403,)),
        Cell("review-duplicates-resolve-DG", "POST", "/admin/review/duplicates/{DG}/resolve", ok_statuses=(403,)),
        Cell("ui-review", "GET", "/ui/review", ok_statuses=(200,)),
        Cell("ui-review-all", "GET", "/ui/review?status=all", ok_statuses=(200,)),
        Cell("ui-review-RB", "GET", "/ui/review/{RB}", ok_statuses=(404,)),
        Cell("ui-review-resolve-DG", "POST", "/ui/review/duplicates/{DG}/resolve", ok_statuses=(403,)),
    ]
    decisions = {
        "defer": {"action": "defer"},
        "reject": {"action": "reject"},
        "link": {"action": "link", "person": CHT_B},
        "create": {"action": "create", "place": "hh-b"},
        "flag-duplicate": {"action": "flag-duplicate", "persons": [CHT_B, "cht-b-twin"]},
    }
    for name, body in decisions.items():
        cells.append(Cell(f"review-decide-RB-{name}", "POST", "/admin/review/{RB}", body, ok_statuses=(404,)))
        form = {k: v if isinstance(v, str) else v[0] for k, v in body.items()}
        cells.append(Cell(f"ui-review-decide-RB-{name}", "POST", "/ui/review/{RB}", form=form, ok_statuses=(404,)))
    for org in ("org-b", "org-a"):
        base = f"/admin/facilities/{org}/catchment"
        cells += [
            Cell(f"catchment-get-{org}", "GET", base, ok_statuses=(403,)),
            Cell(f"catchment-put-{org}", "PUT", base, {"places": ["cu-b"]}, ok_statuses=(403,)),
            Cell(f"catchment-post-{org}", "POST", base + "/cu-b", ok_statuses=(403,)),
            Cell(f"catchment-delete-{org}", "DELETE", base + "/hh-b", ok_statuses=(403,)),
        ]
    return cells


def _rank(cell: Cell) -> int:
    """Cells that would overwrite or delete B's data (where isolation fails) run last, deletes at the very
    end, so that on a server that leaks, the other cells still find B's data to leak."""
    name = cell.name.lower()
    return 2 if "delete" in name else 1 if ("put-" in name or "update" in name or "cht-" in name) else 0


CELLS = sorted(
    [*_read_cells(), *_search_cells(), *_ui_cells(), *_bundle_cells(), *_write_cells(), *_review_cells()],
    key=_rank,
)
ACTORS = {"facility": ("fa", {}), "gateway": ("gw", {"X-OpenHIM-ClientID": "emr-a"})}


# --------------------------------------------------------------------------- the checks


def _b_state(w: World) -> list[str]:
    """Every stored version that mentions B, and B's outbox rows: what A must not change."""
    admin = w.session("admin")
    versions = _ok(admin.get(f"{w.url}/fhir/_history", params={"_count": "1000"}))
    assert "next" not in {link["relation"] for link in versions["link"]}
    state = [
        json.dumps(e, sort_keys=True) for e in versions.get("entry", []) if any(i in json.dumps(e) for i in w.b_ids)
    ]
    outbox = _ok(admin.get(f"{w.url}/admin/outbox", params={"organization": "org-b", "limit": "1000"}))
    review = [
        _ok(admin.get(f"{w.url}/admin/review/{w.ids['RB']}")),
        _ok(admin.get(f"{w.url}/admin/review/duplicates", params={"status": "all"})),
        {k: v for k, v in _ok(admin.get(f"{w.url}/admin/facilities/org-b/catchment")).items()},
        _ok(admin.get(f"{w.url}/admin/facilities/org-a/catchment"))["explicit"],
    ]
    return (
        sorted(state)
        + sorted(json.dumps(r, sort_keys=True) for r in outbox["items"])
        + [json.dumps(r, sort_keys=True) for r in review]
    )


@pytest.mark.parametrize("actor", list(ACTORS))
@pytest.mark.parametrize("cell", CELLS, ids=[c.name for c in CELLS])
def test_a_gets_nothing_of_b_and_changes_nothing(world: World, actor: str, cell: Cell) -> None:
    who, extra = ACTORS[actor]
    session = world.session(who)
    path, body = _fill(cell.path, world.ids), _fill(cell.body, world.ids)
    sent = path + json.dumps(body) + json.dumps(cell.form) + json.dumps(cell.headers)
    before = _b_state(world)
    r = session.request(
        cell.method,
        world.url + path,
        json=body if cell.form is None else None,
        data=_fill(cell.form, world.ids),
        headers={**cell.headers, **extra},
        timeout=30,
        allow_redirects=False,
    )
    assert r.status_code < 500, r.text[:300]
    if cell.ok_statuses:
        assert r.status_code in cell.ok_statuses, r.text[:300]
    answer = r.text + json.dumps(dict(r.headers))
    world.sent.update(i for i in world.identifiers if i in sent)
    leaked = [m for m in world.markers if m in answer and m not in sent and m not in world.sent]
    assert not leaked, f"{cell.name} answered {r.status_code} with B's {leaked}: {r.text[:300]}"
    assert _b_state(world) == before, f"{cell.name} changed B's data ({r.status_code})"


# --------------------------------------------------------------------------- A still works; roles


def test_facility_and_gateway_still_reach_their_own(world: World) -> None:
    for who, extra in ACTORS.values():
        s = world.session(who)
        s.headers.update(extra)
        assert s.get(f"{world.url}/fhir/ServiceRequest/{world.ids['SRA']}").status_code == 200
        shared = s.get(f"{world.url}/fhir/Patient", params={"_revinclude": "ServiceRequest:subject"}).json()
        got = {e["resource"]["id"] for e in shared["entry"]}
        assert {world.ids["PA"], world.ids["PS"], world.ids["SRA"], world.ids["SRAS"]} <= got
        assert world.ids["SRBS"] not in got
        assert s.get(f"{world.url}/fhir/Subscription/{world.ids['SA']}/$events").status_code == 200
        assert s.get(f"{world.url}/fhir/Endpoint/ep-a").status_code == 200
        assert s.get(f"{world.url}/ui/cases").status_code == 200
        # its own callback: a new Endpoint of its own, attached to its Organization, a Subscription of its own
        ep = s.post(f"{world.url}/fhir/Endpoint", json={k: v for k, v in _endpoint("a").items() if k != "id"})
        assert ep.status_code == 201, ep.text
        org = s.get(f"{world.url}/fhir/Organization/org-a").json()
        org["endpoint"] = [*org["endpoint"], {"reference": f"Endpoint/{ep.json()['id']}"}]
        assert s.put(f"{world.url}/fhir/Organization/org-a", json=org).status_code == 200
        own_sub = {**SUB_B, "criteria": "Task?requester=Organization/org-a"}
        assert s.post(f"{world.url}/fhir/Subscription", json=own_sub).status_code == 201


def test_gateway_needs_a_mapped_openhim_client_and_is_never_admin(world: World) -> None:
    gw = world.session("gw")
    for headers in ({}, {"X-OpenHIM-ClientID": "not-mapped"}):
        for path in ("/fhir/Patient", "/admin/stats", "/mediator/", "/cht/follow-up", "/ui/cases"):
            r = gw.get(world.url + path, headers=headers)
            assert r.status_code == 403, (path, headers, r.status_code)
    as_b = gw.get(f"{world.url}/fhir/Patient/{world.ids['PB']}", headers={"X-OpenHIM-ClientID": "emr-b"})
    assert as_b.status_code == 200  # the header names who acts: B's own EMR through OpenHIM
    assert gw.get(f"{world.url}/admin/stats", headers={"X-OpenHIM-ClientID": "emr-a"}).status_code == 403


def test_review_match_and_catchment_per_role(world: World) -> None:
    """A facility reads its own items (not to decide); a matcher matches and reviews everyone's but has no
    admin API; an admin has it all. The gateway acting for A is A."""
    url, ids = world.url, world.ids
    for who, extra in ACTORS.values():
        s = world.session(who)
        s.headers.update(extra)
        assert [i["review_id"] for i in s.get(f"{url}/admin/review").json()["items"]] == [ids["RA"]]
        assert s.get(f"{url}/admin/review/{ids['RA']}").status_code == 200
        assert s.get(f"{url}/ui/review/{ids['RA']}").status_code == 200
        own = s.post(f"{url}/admin/review/{ids['RA']}", json={"action": "defer"})
        assert own.status_code == 403 and own.json()["resourceType"] == "OperationOutcome"
        assert s.get(f"{url}/admin/facilities/org-a/catchment").status_code == 403
    matcher = world.session("mt")
    listed = {i["review_id"] for i in matcher.get(f"{url}/admin/review").json()["items"]}
    assert {ids["RA"], ids["RB"]} <= listed
    assert matcher.post(f"{url}/fhir/Patient/$match", json=MATCH_B).status_code == 200
    groups = matcher.get(f"{url}/admin/review/duplicates").json()["groups"]
    assert [g["group"] for g in groups] == [ids["DG"]]
    assert matcher.get(f"{url}/ui/review").status_code == 200
    for path in ("/admin/facilities/org-b/catchment", "/admin/stats", "/admin/outbox", "/fhir/Patient", "/ui/cases"):
        assert matcher.get(url + path).status_code == 403, path
    decided = matcher.post(f"{url}/admin/review/{ids['RA']}", json={"action": "defer"})
    assert decided.status_code == 200 and decided.json()["decisions"][-1]["actor"] == "mt"
    admin = world.session("admin")
    shown = _ok(admin.get(f"{url}/admin/facilities/org-b/catchment"))
    assert [p["id"] for p in shown["explicit"]] == ["hh-b"]
    assert [p["id"] for p in shown["by_link_facility_code"]] == ["cu-b"]  # link_facility_code MFL-B
