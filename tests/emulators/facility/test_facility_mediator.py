"""The facility emulator against the real mediator app (uvicorn on loopback, SQLite): registration
through the FHIR API, the day's list as a transaction (idempotent), a facility client's Basic auth,
the patients created in the CHT emulator first (one Patient per person, no twins), and — with
delivery workers on — the mediator's own notifications reaching the facility in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from ltfu.api.app import create_app as mediator_app
from ltfu.emulators.cht import ChtEmulatorConfig
from ltfu.emulators.cht import create_app as cht_app
from ltfu.emulators.cht.config import default_cht_config_dir
from ltfu.emulators.facility import FacilityError
from ltfu.emulators.facility.roster import WHO_SYSTEM
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.conftest import LOOPBACK
from tests.emulators.facility.fac_support import facility, wait_for
from tests.support.server import ServerThread

ADMIN = ("admin", "admin-secret-fac-1")
CHT_ADMIN = ("medic", "cht-admin-pass-1")


@contextlib.contextmanager
def mediator(tmp_path: Path, **overrides: Any) -> Iterator[tuple[str, Settings]]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'ltfu.db'}",
        data_dir=tmp_path,
        admin_password=ADMIN[1],
        workers=False,
        callback_allowed_networks=LOOPBACK,
        **overrides,
    )
    with ServerThread(mediator_app(settings)) as srv:
        yield srv.url, settings


def fhir(url: str, path: str, auth: tuple[str, str] = ADMIN, **params: str) -> dict[str, Any]:
    r = requests.get(url + "/fhir" + path, params=params, auth=auth, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry") or []]


def test_registration_and_defaulter_list(tmp_path: Path) -> None:
    with (
        mediator(tmp_path) as (url, settings),
        facility(mediator_url=url, mediator_username=ADMIN[0], mediator_password=ADMIN[1]) as (fac, callback, cfg),
    ):
        reg = fac.register()
        assert reg["created"] is True
        org = fhir(url, f"/Organization/{reg['organization_id']}")
        assert org["identifier"] == [{"system": cfg.facility_identifier_system, "value": cfg.facility_code}]
        assert org["endpoint"] == [{"reference": f"Endpoint/{reg['endpoint_id']}"}]
        endpoint = fhir(url, f"/Endpoint/{reg['endpoint_id']}")
        assert endpoint["address"] == callback and endpoint["status"] == "active"
        subs = [s for s in entries(fhir(url, "/Subscription", _count="100"))
                if s["channel"]["endpoint"] == callback]
        assert len(subs) == 1
        # registering again reuses the Organization and its Endpoint
        again = fac.register()
        assert again["created"] is False and again["organization_id"] == reg["organization_id"]
        assert again["endpoint_id"] == reg["endpoint_id"]
        assert len(entries(fhir(url, "/Organization"))) == 1 and len(entries(fhir(url, "/Endpoint"))) == 1

        day = "2026-11-20"
        sent = fac.send_list(12, day=day)
        assert (sent["requests_created"], sent["patients_created"], sent["count"]) == (12, 12, 12)
        srs = entries(fhir(url, "/ServiceRequest", requester=f"Organization/{reg['organization_id']}", _count="100"))
        assert len(srs) == 12
        by_ident = {sr["identifier"][0]["value"]: sr for sr in srs}
        assert set(by_ident) == {f"LTFU-20261120-{i:04d}" for i in range(1, 13)}
        assert set(sent["requests"]) == set(by_ident)
        for sr in srs:
            assert sr["identifier"][0]["system"] == cfg.request_system
            assert (sr["status"], sr["intent"]) == ("active", "order")
            assert sr["requester"] == {"reference": f"Organization/{reg['organization_id']}"}
            coding = sr["reasonCode"][0]["coding"][0]
            assert coding["system"] == WHO_SYSTEM and coding["code"].startswith("HIV.H.DE")
            assert sr["occurrencePeriod"]["end"] == "2026-12-04" and sr["occurrencePeriod"]["start"] < day
            assert sr["requisition"] == {"system": cfg.list_system, "value": day}
            patient = fhir(url, "/" + sr["subject"]["reference"])
            mrn = patient["identifier"][0]
            assert mrn["system"] == cfg.mrn_system and mrn["value"].startswith(cfg.facility_code + "-")
            assert patient["name"][0]["family"] and patient["telecom"][0]["value"].startswith("+2547")
        assert sum(1 for c in (sr["reasonCode"][0]["coding"][0]["code"] for sr in srs) if c == "HIV.H.DE2") >= 3
        tasks = entries(fhir(url, "/Task", _count="100"))
        assert len(tasks) == 12 and {t["status"] for t in tasks} == {"requested"}

        # the same list again changes nothing; a longer one adds only the new patients
        again = fac.send_list(12, day=day)
        assert (again["requests_created"], again["requests_existing"], again["patients_matched"]) == (0, 12, 12)
        more = fac.send_list(15, day=day)
        assert (more["requests_created"], more["patients_created"]) == (3, 3)
        assert len(entries(fhir(url, "/Task", _count="100"))) == 15
        assert len(entries(fhir(url, "/Patient", _count="100"))) == 15
        assert fac.report()["requests_sent"] == 15


def test_facility_client_credentials(tmp_path: Path) -> None:
    with mediator(tmp_path) as (url, settings):
        with facility(mediator_url=url, mediator_username=ADMIN[0], mediator_password=ADMIN[1]) as (fac, _, _):
            org_id = fac.register()["organization_id"]

        async def add_client() -> None:
            db = Database(settings)
            try:
                async with unit_of_work(db) as uow:
                    await uow.clients.upsert("kisumu-emr", "facility-pass-1", is_admin=False, organization_id=org_id)
            finally:
                await db.dispose()

        asyncio.run(add_client())
        with facility(mediator_url=url, mediator_username="kisumu-emr", mediator_password="wrong-pass") as (fac, _, _):
            try:
                fac.register()
                raise AssertionError("a wrong password was accepted")
            except FacilityError as exc:
                assert exc.status == 502 and "401" in exc.body["reason"]
        with facility(mediator_url=url, mediator_username="kisumu-emr", mediator_password="facility-pass-1") as (
            fac, _, _
        ):
            assert fac.register()["organization_id"] == org_id
            assert fac.send_list(3, day="2026-11-21")["requests_created"] == 3


def test_patients_created_in_cht_first_are_one_patient_each(tmp_path: Path) -> None:
    cht_config = default_cht_config_dir()
    assert cht_config is not None
    with mediator(tmp_path) as (url, settings):
        cht = ChtEmulatorConfig(
            app_settings_path=cht_config,
            mediator_url=url,
            mediator_username=ADMIN[0],
            mediator_password=ADMIN[1],
            admin_password=CHT_ADMIN[1],
            sentinel_delay_s=0.0,
            timezone="Africa/Nairobi",
        )
        cht.chw.enabled = False
        with ServerThread(cht_app(cht)) as cht_srv:
            call = requests.Session()
            call.auth = CHT_ADMIN
            dh = call.post(cht_srv.url + "/api/v1/places", json={"name": "Kisumu", "type": "district_hospital"})
            area = call.post(cht_srv.url + "/api/v1/places", json={"name": "Kondele", "type": "health_center",
                                                                   "parent": dh.json()["id"]})
            households = [
                call.post(cht_srv.url + "/api/v1/places", json={"name": f"Household {i}", "type": "clinic",
                                                                "parent": area.json()["id"]}).json()["id"]
                for i in range(3)
            ]
            with facility(mediator_url=url, mediator_username=ADMIN[0], mediator_password=ADMIN[1],
                          cht_url=cht_srv.url, cht_username=CHT_ADMIN[0], cht_password=CHT_ADMIN[1]) as (fac, _, cfg):
                fac.register()
                sent = fac.send_list(8, day="2026-11-22", cht={"places": households})
                assert sent["cht_people_created"] == 8 and sent["requests_created"] == 8
                people = call.post(cht_srv.url + "/medic/_find", json={"selector": {"type": "person"}, "limit": 100},
                                   headers={"Accept": "application/json"}).json()["docs"]
                assert len(people) == 8 and {p["parent"]["_id"] for p in people} == set(households)
                assert all(p["role"] == "patient" and p["phone"].startswith("+2547") for p in people)
                # every person reaches the mediator (outbound push) as the same Patient as the list's
                wait_for(lambda: all(
                    len(entries(fhir(url, "/Patient", identifier=f"{cfg.cht_contact_system}|{p['_id']}"))) == 1
                    and any(i["system"] == f"{settings.base_url}/NamingSystem/cht-patient-id"
                            for i in entries(fhir(url, "/Patient", identifier=p["_id"]))[0]["identifier"])
                    for p in people))
                assert len(entries(fhir(url, "/Patient", _count="100"))) == 8
                for sr in entries(fhir(url, "/ServiceRequest", _count="100")):
                    patient = fhir(url, "/" + sr["subject"]["reference"])
                    systems = {i["system"] for i in patient["identifier"]}
                    assert cfg.cht_contact_system in systems
                # again: no new people in CHT, nothing new at the mediator
                again = fac.send_list(8, day="2026-11-22", cht={"places": households})
                assert (again["cht_people_created"], again["requests_created"]) == (0, 0)


def test_mediator_notifications_reach_the_facility_in_order(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'notify.db'}",
        data_dir=tmp_path,
        admin_password=ADMIN[1],
        workers=True,
        poll_interval_s=0.05,
        retry_initial_s=0.2,
        retry_max_s=0.5,
        retry_budget_s=60.0,  # with the 72 h default and a 0.5 s cap, RetryPolicy.max_attempts overflows
        delivery_timeout_s=5.0,
        retry_permanent_4xx=50,  # the first calls may come before the facility holds its secret (401)
        callback_allowed_networks=LOOPBACK,
    )
    with (
        ServerThread(mediator_app(settings)) as srv,
        facility(mediator_url=srv.url, mediator_username=ADMIN[0], mediator_password=ADMIN[1],
                 require_signature=True) as (fac, _, _),
    ):
        reg = fac.register()
        # the facility's secret, shown once by the admin API, handed to the facility
        issued = requests.post(f"{srv.url}/admin/organizations/{reg['organization_id']}/signing-secret",
                               auth=ADMIN, timeout=30)
        assert issued.status_code == 200 and issued.headers["cache-control"] == "no-store"
        fac.set_signing_secret(issued.json()["subscriptions"][0]["secret"])
        report = fac.wait(lambda r: r["subscriptions"] and r["subscriptions"][0]["handshakes"] >= 1 and r, 20)
        assert report["notifications"]["signature_ok"] >= 1
        fac.send_list(5, day="2026-11-23")
        report = fac.wait(lambda r: r["tasks"]["count"] == 5 and r, 20)
        # the facility is down for a while: the mediator retries until it is back
        fac.down(1.0)
        fac.send_list(8, day="2026-11-23")
        report = fac.wait(lambda r: r["tasks"]["count"] == 8 and r, 30)
        s = report["subscriptions"][0]
        assert s["unique_events"] == 8 and s["highest_event"] == 8
        assert (s["duplicates"], s["out_of_order"], s["gaps_seen"], s["missing_count"]) == (0, 0, 0, 0)
        assert report["notifications"]["refused_down"] >= 1
        # never a bad signature, not even at start-up: the secret handed over is the key every call so far was
        # signed with (before, a call signed just before the hand-over was refused as bad_signature)
        assert not {"unauthorized", "bad_signature", "skewed"} & set(report["notifications"])
        # every notification read was signed (a facility's due events may come grouped in one Bundle)
        read = sum(n for k, n in report["notifications"].items() if k.startswith("bundles_"))
        assert report["notifications"]["signature_ok"] == read >= 2 and "replayed" not in report["notifications"]
        assert report["notifications"]["events_received"] >= 8
        assert report["tasks"]["by_status"] == {"requested": 8}
        assert report["stage_latency"]["requested"]["count"] == 8
        assert report["registration"]["organization_id"] == reg["organization_id"]
