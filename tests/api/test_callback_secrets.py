"""Callback secrets and Endpoint ownership (issue 11 items 3-5), on SQLite and PostgreSQL.

- ``Endpoint.header`` values are write-only: stored apart (Fernet-encrypted here), ``Name: ***`` in
  every read, search, history version, Subscription, ``$events``, Bundle, ``/ui`` page and log line.
- An Endpoint has one owner, set by the server; a facility may attach only its own and change only
  its address; header lines and addresses are checked at registration on every write path.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.fernet import Fernet
from sqlalchemy import select
from typer.testing import CliRunner

from ltfu.settings import Settings
from ltfu.store.callbacks import endpoint_owner
from ltfu.store.db import Database
from ltfu.store.schema import callback_secrets, resource_history, resources, signing_keys
from ltfu.store.uow import unit_of_work
from tests.conftest import ADMIN_PASSWORD, LOOPBACK, Api

CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}
TOKEN_A, TOKEN_B = "SECRET-TOKEN-a-5f2c", "SECRET-TOKEN-b-9d1e"
KEY = Fernet.generate_key().decode()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, data_dir=tmp_path, admin_password=ADMIN_PASSWORD, workers=False,
                    callback_allowed_networks=LOOPBACK, secrets_key=KEY)


def _endpoint(ep_id: str, address: str, *header: str) -> dict[str, Any]:
    ep = {"resourceType": "Endpoint", "id": ep_id, "status": "active", "connectionType": CONN,
          "payloadType": [{"text": "Task"}], "address": address}
    return {**ep, "header": list(header)} if header else ep


def _facility(server: Api, x: str, token: str) -> None:
    assert server.put(f"/fhir/Endpoint/ep-{x}", json=_endpoint(
        f"ep-{x}", f"http://127.0.0.1:9/{x}", f"Authorization: Bearer {token}")).status_code == 201
    org = {"resourceType": "Organization", "id": f"org-{x}", "name": f"Facility {x}",
           "endpoint": [{"reference": f"Endpoint/ep-{x}"}]}
    assert server.put(f"/fhir/Organization/org-{x}", json=org).status_code == 201


def _run(settings: Settings, fn: Any) -> Any:
    async def go() -> Any:
        db = Database(settings)
        try:
            async with unit_of_work(db) as uow:
                return await fn(uow)
        finally:
            await db.dispose()
    return asyncio.run(go())


def _client(server: Api, settings: Settings, name: str, org: str) -> requests.Session:
    async def add(uow: Any) -> None:
        await uow.clients.upsert(name, f"{name}-password", is_admin=False, organization_id=org)
    _run(settings, add)
    s = requests.Session()
    s.auth = (name, f"{name}-password")
    return s


def _two_facilities(server: Api, settings: Settings) -> tuple[requests.Session, requests.Session]:
    _facility(server, "a", TOKEN_A)
    _facility(server, "b", TOKEN_B)
    return _client(server, settings, "fa", "org-a"), _client(server, settings, "fb", "org-b")


def test_header_secrets_masked_everywhere(server: Api, settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fa, fb = _two_facilities(server, settings)
    pat = server.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "male"}).json()["id"]
    sr = {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
          "identifier": [{"system": "urn:req", "value": "b-1"}], "subject": {"reference": f"Patient/{pat}"},
          "requester": {"reference": "Organization/org-b"}}
    assert fb.post(server.url + "/fhir/ServiceRequest", json=sr).status_code == 201
    # a header change keeps the old token in no history version either
    changed = _endpoint("ep-b", "http://127.0.0.1:9/b2", f"Authorization: Bearer {TOKEN_B}-v2")
    assert server.put("/fhir/Endpoint/ep-b", json=changed).status_code == 200
    subs = server.get("/fhir/Subscription").json()["entry"]
    sub_b = next(e["resource"]["id"] for e in subs if e["resource"]["channel"]["endpoint"].endswith("/b2"))

    seen: list[str] = []
    for who in (server.session, fa, fb):
        for path in ("/fhir/Endpoint", "/fhir/Endpoint/ep-b", "/fhir/Endpoint/ep-b/_history",
                     "/fhir/Endpoint/ep-b/_history/1", "/fhir/Endpoint/ep-a", "/fhir/Subscription",
                     f"/fhir/Subscription/{sub_b}", f"/fhir/Subscription/{sub_b}/_history",
                     f"/fhir/Subscription/{sub_b}/$events", "/fhir/_history", "/fhir/Endpoint/_history",
                     "/fhir/Organization?_include=Organization:endpoint", "/ui/deliveries", "/ui"):
            r = who.get(server.url + path, timeout=30)
            seen.append(f"{path} {r.status_code} {r.text}")
        batch = {"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": "Endpoint/ep-b"}},
            {"request": {"method": "GET", "url": f"Subscription?_id={sub_b}"}}]}
        seen.append(who.post(server.url + "/fhir/", json=batch, timeout=30).text)
    text = "\n".join(seen)
    assert "Bearer" not in text and "SECRET-TOKEN" not in text
    ep_b = server.get("/fhir/Endpoint/ep-b").json()
    assert ep_b["header"] == ["Authorization: ***"]
    sub = server.get(f"/fhir/Subscription/{sub_b}").json()
    assert sub["channel"]["header"] == ["Authorization: ***"]
    assert "SECRET-TOKEN" not in caplog.text

    async def stored(uow: Any) -> tuple[list[str], list[str], list[str], list[str]]:
        contents = [r.content for r in await uow.conn.execute(select(resources.c.content))]
        contents += [r.content for r in await uow.conn.execute(select(resource_history.c.content))]
        sealed = [r.headers for r in await uow.conn.execute(select(callback_secrets.c.headers))]
        keys = [r.secret for r in await uow.conn.execute(select(signing_keys.c.secret))]
        return contents, sealed, keys, await uow.callbacks.headers("Subscription", sub_b)

    contents, sealed, keys, real = _run(settings, stored)
    assert not any("SECRET-TOKEN" in c for c in contents)
    assert sealed and all(s.startswith("fernet:") and "SECRET-TOKEN" not in s for s in sealed)
    assert keys and all(k.startswith("fernet:") and "whsec_" not in k for k in keys)
    assert real == [f"Authorization: Bearer {TOKEN_B}-v2"]  # what the notifier sends
    # without the key the secrets cannot be read
    blind = Settings(**{**settings.model_dump(), "secrets_key": None})
    with pytest.raises(Exception, match="LTFU_SECRETS_KEY"):
        _run(blind, lambda uow: uow.callbacks.headers("Endpoint", "ep-b"))


def test_masked_header_keeps_the_stored_value(server: Api, settings: Settings) -> None:
    _facility(server, "a", TOKEN_A)
    ep = server.get("/fhir/Endpoint/ep-a").json()
    body = {**ep, "header": ["Authorization: ***", "X-Api-Key: k-1"]}
    assert server.put("/fhir/Endpoint/ep-a", json=body).status_code == 200
    assert _run(settings, lambda uow: uow.callbacks.headers("Endpoint", "ep-a")) == [
        f"Authorization: Bearer {TOKEN_A}", "X-Api-Key: k-1"]
    r = server.put("/fhir/Endpoint/ep-a", json={**ep, "header": ["X-Other: ***"]})
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Endpoint.header"]
    without = {k: v for k, v in ep.items() if k != "header"}
    assert server.put("/fhir/Endpoint/ep-a", json=without).status_code == 200
    assert _run(settings, lambda uow: uow.callbacks.headers("Endpoint", "ep-a")) == []


def test_endpoint_ownership(server: Api, settings: Settings) -> None:
    fa, _ = _two_facilities(server, settings)
    url = server.url + "/fhir"
    assert _run(settings, lambda uow: endpoint_owner(uow.conn, "ep-a")) == "org-a"
    assert _run(settings, lambda uow: endpoint_owner(uow.conn, "ep-b")) == "org-b"
    org_a = server.get("/fhir/Organization/org-a").json()
    takeover = {**org_a, "endpoint": [{"reference": "Endpoint/ep-a"}, {"reference": "Endpoint/ep-b"}]}
    r = fa.put(f"{url}/Organization/org-a", json=takeover)  # the policy (403) or the one-owner rule (422)
    assert r.status_code in (403, 422) and r.json()["resourceType"] == "OperationOutcome"
    assert server.put("/fhir/Organization/org-a", json=takeover).status_code == 422  # one owner, for admins too
    ep_b = server.get("/fhir/Endpoint/ep-b").json()
    hijack = fa.put(f"{url}/Endpoint/ep-b", json={**ep_b, "address": "https://attacker.example/x"})
    assert hijack.status_code in (403, 404)  # 404: the policy does not even say that ep-b exists
    assert server.get("/fhir/Endpoint/ep-b").json()["address"] == "http://127.0.0.1:9/b"
    # a facility changes the address of its own Endpoint, nothing else
    ep_a = fa.get(f"{url}/Endpoint/ep-a").json()
    assert fa.put(f"{url}/Endpoint/ep-a", json={**ep_a, "address": "https://a.example/new"}).status_code == 200
    for change in ({"header": ["Authorization: Bearer mine-now"]}, {"status": "off"}, {"name": "renamed"},
                   {"header": None}):
        current = fa.get(f"{url}/Endpoint/ep-a").json()
        body = {k: v for k, v in {**current, **change}.items() if v is not None}
        assert fa.put(f"{url}/Endpoint/ep-a", json=body).status_code == 403, change
    assert _run(settings, lambda uow: uow.callbacks.headers("Endpoint", "ep-a")) == [f"Authorization: Bearer {TOKEN_A}"]
    # the owner is not what the Organization says: dropping the reference does not free the Endpoint
    unlinked = {k: v for k, v in org_a.items() if k not in ("endpoint", "meta")}
    assert fa.put(f"{url}/Organization/org-a", json=unlinked).status_code == 200
    org_b = server.get("/fhir/Organization/org-b").json()
    grab = {**org_b, "endpoint": [{"reference": "Endpoint/ep-a"}]}
    assert server.put("/fhir/Organization/org-b", json=grab).status_code == 422
    assert _run(settings, lambda uow: endpoint_owner(uow.conn, "ep-a")) == "org-a"


BAD_HEADERS = ["Host: internal-admin.local", "Content-Length: 5", "Transfer-Encoding: chunked", "Connection: close",
               "X-LTFU-Signature: sha256=00", "webhook-signature: v1,x", "X-A: b\r\nX-Injected: yes", "Not A Token: x"]


@pytest.mark.parametrize("line", BAD_HEADERS)
def test_header_validation_on_every_write_path(server: Api, line: str) -> None:
    ep = _endpoint("ep-h", "http://127.0.0.1:9/h", line)
    for r in (server.post("/fhir/Endpoint", json={k: v for k, v in ep.items() if k != "id"}),
              server.put("/fhir/Endpoint/ep-h", json=ep)):
        assert r.status_code == 422, r.text
        assert r.json()["resourceType"] == "OperationOutcome"
        assert r.json()["issue"][0]["expression"] == ["Endpoint.header"]
    bundle = server.post("/fhir/", json={"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": ep, "request": {"method": "PUT", "url": "Endpoint/ep-h"}}]})
    assert bundle.status_code == 200 and bundle.json()["entry"][0]["response"]["status"].startswith("422")
    poc = {**{k: v for k, v in ep.items() if k != "id"}, "identifier": [{"system": "urn:x", "value": "h"}]}
    r = server.post("/mediator/endpoint", json=poc)
    assert r.status_code == 422 and r.json()["outcome"]["resourceType"] == "OperationOutcome"
    sub = {"resourceType": "Subscription", "status": "requested", "reason": "r",
           "criteria": "Task?requester=Organization/x",
           "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/s", "payload": "application/fhir+json",
                       "header": [line]}}
    r = server.post("/fhir/Subscription", json=sub)
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Subscription.channel.header"]
    assert server.get("/fhir/Endpoint").json()["total"] == 0


@pytest.mark.parametrize("address", ["https://169.254.169.254/latest/meta-data", "https://[::1]:8443/cb",
                                     "http://10.1.2.3/cb", "ftp://facility.example/cb", "https://u:p@f.example/cb"])
def test_address_policy_at_registration(server: Api, address: str) -> None:
    ep = _endpoint("ep-x", address)
    r = server.put("/fhir/Endpoint/ep-x", json=ep)
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Endpoint.address"]
    sub = {"resourceType": "Subscription", "status": "requested", "reason": "r",
           "criteria": "Task?requester=Organization/x",
           "channel": {"type": "rest-hook", "endpoint": address, "payload": "application/fhir+json"}}
    r = server.post("/fhir/Subscription", json=sub)
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Subscription.channel.endpoint"]


def test_plain_http_needs_the_allow_list(db_url: str, tmp_path: Path) -> None:
    from ltfu.api.app import create_app
    from tests.support.server import ServerThread

    strict = Settings(database_url=db_url, data_dir=tmp_path, admin_password=ADMIN_PASSWORD, workers=False)
    with ServerThread(create_app(strict)) as srv:
        api = Api(srv.url)
        for address in ("http://127.0.0.1:9/cb", "http://facility.example/cb", "https://127.0.0.1/cb"):
            assert api.put("/fhir/Endpoint/ep-s", json=_endpoint("ep-s", address)).status_code == 422, address
        ok = api.put("/fhir/Endpoint/ep-s", json=_endpoint("ep-s", "https://emr.example/cb"))
        assert ok.status_code in (200, 201)


def test_signing_secret_per_subscription_and_rotation(server: Api, settings: Settings, tmp_path: Path) -> None:
    _two_facilities(server, settings)
    subs = {e["resource"]["_criteria"]["extension"][0]["valueString"].rsplit("/", 1)[1]: e["resource"]["id"]
            for e in server.get("/fhir/Subscription").json()["entry"]}

    def live(org: str) -> list[str]:
        return _run(settings, lambda uow: uow.callbacks.signing_keys(subs[org]))

    first_a, first_b = live("org-a"), live("org-b")
    assert len(first_a) == len(first_b) == 1 and first_a[0].secret != first_b[0].secret  # no shared secret
    issued = server.post("/admin/organizations/org-a/signing-secret")
    assert issued.status_code == 200 and issued.headers["cache-control"] == "no-store"
    secret = issued.json()["subscriptions"][0]["secret"]
    assert secret.startswith("whsec_")
    # the first issue hands over the key every call was signed with so far (no second key beside it)
    assert secret == first_a[0].secret and [k.secret for k in live("org-a")] == [secret]
    rotated = server.post("/admin/organizations/org-a/signing-secret").json()["subscriptions"][0]["secret"]
    assert [k.secret for k in live("org-a")] == [rotated, secret]  # two live keys during rotation
    runner = CliRunner()
    env = {"LTFU_DATABASE_URL": settings.database_url, "LTFU_DATA_DIR": str(tmp_path), "LTFU_SECRETS_KEY": KEY}
    from ltfu.cli import app

    out = runner.invoke(app, ["clients", "secret", "org-a"], env=env)
    assert out.exit_code == 0, out.output
    cli_secret = out.stdout.split()[-1]
    assert [k.secret for k in live("org-a")] == [cli_secret, rotated]  # the oldest one is retired
    out = runner.invoke(app, ["clients", "secret", "org-a", "--retire-previous"], env=env)
    assert out.exit_code == 0 and "whsec_" not in out.output
    assert [k.secret for k in live("org-a")] == [cli_secret]
    assert [k.secret for k in live("org-b")] == [first_b[0].secret]  # another facility is untouched
    assert runner.invoke(app, ["clients", "secret", "org-nobody"], env=env).exit_code == 1
    fa = _client(server, settings, "fa2", "org-a")
    assert fa.post(server.url + "/admin/organizations/org-a/signing-secret").status_code == 403
