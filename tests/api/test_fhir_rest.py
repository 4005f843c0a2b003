"""The FHIR REST API over real HTTP (uvicorn on loopback), on SQLite and PostgreSQL."""

from __future__ import annotations

import requests

from tests.conftest import Api

MRN = "https://facility.example/mrn"


def patient(mrn: str, **extra: object) -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": MRN, "value": mrn}],
            "name": [{"family": "Wanjiru", "given": ["Grace"]}], "gender": "female", "birthDate": "1988-03-01",
            **extra}


def issue(resp: requests.Response) -> dict:
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]


def test_auth_required_except_health_and_metadata(server: Api) -> None:
    assert requests.get(server.url + "/health").status_code == 200
    ready = requests.get(server.url + "/ready")  # for orchestrators' probes: no credentials
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
    assert requests.get(server.url + "/fhir/metadata").status_code == 200
    r = requests.get(server.url + "/fhir/Patient")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic")
    assert issue(r)["code"] == "login"
    assert requests.get(server.url + "/fhir/Patient", auth=("admin", "wrong")).status_code == 401


def test_create_read_vread_update_delete(server: Api) -> None:
    r = server.post("/fhir/Patient", json=patient("C1", id="client-chosen"))
    assert r.status_code == 201
    pid = r.json()["id"]
    assert pid != "client-chosen"
    assert r.headers["location"].endswith(f"/fhir/Patient/{pid}/_history/1")
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["content-type"].startswith("application/fhir+json")

    r = server.get(f"/fhir/Patient/{pid}")
    assert r.status_code == 200 and r.json()["identifier"][0]["value"] == "C1"
    assert server.get(f"/fhir/Patient/{pid}", headers={"If-None-Match": 'W/"1"'}).status_code == 304

    body = {**r.json(), "gender": "other"}
    assert server.put(f"/fhir/Patient/{pid}", json=body, headers={"If-Match": 'W/"9"'}).status_code == 412
    r = server.put(f"/fhir/Patient/{pid}", json=body, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"
    assert server.get(f"/fhir/Patient/{pid}/_history/1").json()["gender"] == "female"
    hist = server.get(f"/fhir/Patient/{pid}/_history").json()
    assert hist["type"] == "history" and [e["response"]["etag"] for e in hist["entry"]] == ['W/"2"', 'W/"1"']

    r = server.put(f"/fhir/Patient/{pid}", json={**body, "id": "other"})
    assert r.status_code == 400 and issue(r)["expression"] == ["Patient.id"]

    assert server.delete(f"/fhir/Patient/{pid}").status_code == 200
    assert server.get(f"/fhir/Patient/{pid}").status_code == 410
    assert server.get("/fhir/Patient/never-was").status_code == 404


def test_conditional_create_both_forms(server: Api) -> None:
    first = server.post("/fhir/Patient", json=patient("K1"))
    assert first.status_code == 201
    again = server.post("/fhir/Patient", json=patient("K1"), headers={"If-None-Exist": f"identifier={MRN}|K1"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    # fhirpy's get_or_create form: the condition in the query string
    fhirpy_form = server.post(f"/fhir/Patient?identifier={MRN}|K1", json=patient("K1"))
    assert fhirpy_form.status_code == 200 and fhirpy_form.json()["id"] == first.json()["id"]
    server.post("/fhir/Patient", json=patient("K1-twin", identifier=[{"system": MRN, "value": "K1-twin"},
                                                                    {"system": "urn:x", "value": "dup"}]))
    server.post("/fhir/Patient", json=patient("K1-twin2", identifier=[{"system": "urn:x", "value": "dup"}]))
    many = server.post("/fhir/Patient", json=patient("K9"), headers={"If-None-Exist": "identifier=urn:x|dup"})
    assert many.status_code == 412
    unknown = server.post("/fhir/Patient", json=patient("K9"), headers={"If-None-Exist": "nonsense=1"})
    assert unknown.status_code == 400
    assert server.get("/fhir/Patient?identifier=K9").json()["total"] == 0


def test_search_bundle_paging_and_summary(server: Api) -> None:
    for i in range(5):
        server.post("/fhir/Patient", json=patient(f"Q{i}"))
    page = server.get("/fhir/Patient", params={"identifier": f"{MRN}|", "_count": "2"}).json()
    assert page["type"] == "searchset" and page["total"] == 5 and len(page["entry"]) == 2
    assert page["entry"][0]["search"]["mode"] == "match"
    got = [e["resource"]["identifier"][0]["value"] for e in page["entry"]]
    while nxt := next((link["url"] for link in page["link"] if link["relation"] == "next"), None):
        page = server.session.get(nxt).json()
        got += [e["resource"]["identifier"][0]["value"] for e in page["entry"]]
    assert got == [f"Q{i}" for i in range(5)]
    count = server.get("/fhir/Patient", params={"_summary": "count"}).json()
    assert count["total"] == 5 and "entry" not in count
    assert server.get("/fhir/Patient", params={"_count": "0"}).json()["total"] == 5
    # unknown parameters are ignored (and not echoed); strict handling refuses them
    lenient = server.get("/fhir/Patient", params={"bogus": "1", "identifier": "Q1"}).json()
    assert lenient["total"] == 1 and "bogus" not in lenient["link"][0]["url"]
    strict = server.get("/fhir/Patient", params={"bogus": "1"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert server.post("/fhir/Patient/_search", data={"identifier": "Q2"}).json()["total"] == 1


def test_prefer_return(server: Api) -> None:
    r = server.post("/fhir/Patient", json=patient("M1"), headers={"Prefer": "return=minimal"})
    assert r.status_code == 201 and r.content == b"" and "location" in r.headers
    r = server.post("/fhir/Patient", json=patient("M2"), headers={"Prefer": "return=OperationOutcome"})
    assert r.status_code == 201 and r.json()["resourceType"] == "OperationOutcome"


def test_transaction_resolves_urn_uuid_and_is_atomic(server: Api) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111", "resource": patient("T1"),
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={MRN}|T1"}},
        {"resource": {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                      "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"}},
         "request": {"method": "POST", "url": "ServiceRequest"}},
    ]}
    r = server.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created", "201 Created"]
    pid = out["entry"][0]["resource"]["id"]
    assert out["entry"][1]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    # the same Bundle again: the patient exists (200), a second SR is created
    again = server.post("/fhir", json=bundle).json()
    assert again["entry"][0]["response"]["status"] == "200 OK"
    assert again["entry"][1]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    # one bad entry rolls back the whole transaction
    bad = {**bundle, "entry": [
        {"resource": patient("T2"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**patient("T3"), "gender": "bogus"}, "request": {"method": "POST", "url": "Patient"}},
    ]}
    r = server.post("/fhir", json=bad)
    assert r.status_code == 400
    assert issue(r)["expression"] == ["Bundle.entry[1].resource.gender"]
    assert server.get("/fhir/Patient", params={"identifier": "T2"}).json()["total"] == 0


def test_batch_answers_per_entry(server: Api) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient("B1"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**patient("B2"), "gender": "bogus"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient?identifier=B1"}},
    ]}
    r = server.post("/fhir", json=bundle)
    assert r.status_code == 200
    entries = r.json()["entry"]
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[1]["response"]["status"] == "400"
    assert entries[1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert entries[2]["resource"]["total"] == 1
    assert server.get("/fhir/Patient", params={"identifier": "B1"}).json()["total"] == 1


def test_client_mistakes_are_4xx_operation_outcomes(server: Api) -> None:
    cases = [
        server.post("/fhir/Patient", data=b"{not json", headers={"Content-Type": "application/fhir+json"}),
        server.post("/fhir/Patient", json={"resourceType": "Organization", "name": "x"}),
        server.post("/fhir/Patient", json=[1, 2]),
        server.post("/fhir/Widget", json={"resourceType": "Widget"}),
        server.get("/fhir/Widget/1"),
        server.post("/fhir/Patient", json={**patient("E1"), "gender": "bogus"}),
        server.post("/fhir/Patient", data=b"<Patient/>", headers={"Content-Type": "application/xml"}),
        server.post("/fhir/Patient", data=b"", headers={"Content-Type": "application/fhir+json"}),
        server.get("/fhir/Patient", params={"birthdate": "yesterday"}),
        server.get("/fhir/Patient", params={"_count": "many"}),
        server.post("/fhir", json={"resourceType": "Bundle", "type": "collection"}),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, (r.request.method, r.request.url, r.status_code, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    assert cases[6].status_code == 415
    gender = issue(cases[5])
    assert gender["code"] == "value" and gender["expression"] == ["Patient.gender"]


def test_oversized_body_is_413(server: Api) -> None:
    big = {**patient("BIG"), "text": {"status": "generated", "div": "<div>" + "x" * (11 * 1024 * 1024) + "</div>"}}
    r = server.post("/fhir/Patient", json=big)
    assert r.status_code == 413 and issue(r)["code"] == "too-long"


def test_metadata_is_a_capability_statement(server: Api) -> None:
    cs = server.get("/fhir/metadata").json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    types = {r["type"] for r in cs["rest"][0]["resource"]}
    assert {"Patient", "ServiceRequest", "Task", "Subscription", "Encounter"} <= types


def test_metadata_names_the_base_each_client_used(server: Api) -> None:
    """The statement is built once per base: a second Host is not served the first one's URL."""
    for host in ("one.example", "two.example:8080", "one.example"):
        cs = server.get("/fhir/metadata", headers={"Host": host}).json()
        assert cs["implementation"]["url"] == f"http://{host}/fhir"


def test_base_url_served_with_and_without_slash_never_redirected(server: Api) -> None:
    org = {"resourceType": "Organization", "name": "Base"}
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"resource": org, "request": {"method": "POST", "url": "Organization"}}]}
    for path in ("/fhir", "/fhir/"):
        r = server.post(path, json=bundle, allow_redirects=False)
        assert r.status_code == 200, (path, r.status_code, r.headers.get("location"))
        assert r.json()["type"] == "batch-response"
        got = server.get(path, allow_redirects=False)
        assert got.status_code < 300 or got.status_code >= 400, (path, got.status_code)
        assert got.headers["content-type"].startswith("application/fhir+json")
    trailing = server.get("/fhir/Organization/", allow_redirects=False)  # served as /fhir/Organization
    assert trailing.status_code == 200 and trailing.json()["type"] == "searchset", trailing.status_code


def test_transaction_is_atomic_across_the_sends_of_its_held_rows(server: Api, monkeypatch) -> None:
    """A long list sends its rows every ``FLUSH_EVERY`` entries; a bad entry after several sends still
    leaves nothing behind, and a replay of the good list creates nothing new."""
    from ltfu.services import bundles

    monkeypatch.setattr(bundles, "FLUSH_EVERY", 3)
    _atomic_list(server)


def test_a_long_list_is_atomic_with_its_sends_and_commit_on_a_thread(server: Api, settings, monkeypatch) -> None:
    """Long work (``ltfu.turns``): on SQLite its large inserts and its commit run on a thread, the loop serving
    others meanwhile; still one transaction, all or nothing, and replayed as it was."""
    import asyncio

    from ltfu.services import bundles
    from ltfu.store import driver

    monkeypatch.setattr(bundles, "FLUSH_EVERY", 3)
    monkeypatch.setattr(bundles, "LONG_ENTRIES", 5)
    monkeypatch.setattr(driver, "THREAD_ROWS", 2)
    sent: list[str] = []
    real = asyncio.to_thread

    async def to_thread(fn, *args, **kw):  # noqa: ANN001, ANN202 - a spy
        sent.append(getattr(fn, "__name__", ""))
        return await real(fn, *args, **kw)

    monkeypatch.setattr(asyncio, "to_thread", to_thread)
    _atomic_list(server, 300)  # many sends of the same INSERT in a row, each on a thread
    if settings.is_sqlite:  # the inline writer: what went to a thread
        assert {"_executemany", "commit"} <= set(sent), sent


def _atomic_list(server: Api, n: int = 10) -> None:
    good = [{"resource": patient(f"F{i}"), "request": {"method": "POST", "url": "Patient",
                                                      "ifNoneExist": f"identifier={MRN}|F{i}"}} for i in range(n)]
    bad = {"resourceType": "Bundle", "type": "transaction", "entry": [
        *good, {"resource": {**patient("F-bad"), "gender": "bogus"}, "request": {"method": "POST", "url": "Patient"}}]}
    r = server.post("/fhir", json=bad)
    assert r.status_code == 400
    assert issue(r)["expression"] == [f"Bundle.entry[{n}].resource.gender"]
    assert server.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == 0
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": good}
    first = server.post("/fhir", json=bundle)
    assert first.status_code == 200, first.text[:300]
    assert [e["response"]["status"] for e in first.json()["entry"]] == ["201 Created"] * n
    again = server.post("/fhir", json=bundle).json()["entry"]
    assert [e["response"]["status"] for e in again] == ["200 OK"] * n
    assert [e["resource"]["id"] for e in again] == [e["resource"]["id"] for e in first.json()["entry"]]
    assert server.get("/fhir/Patient", params={"_summary": "count"}).json()["total"] == n
