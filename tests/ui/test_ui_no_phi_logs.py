"""A full loop (facility → mediator → CHT emulator → CHW report → facility callback, plus the dashboard)
logged by the production log configuration at DEBUG: no patient name, phone number or birth date."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from pathlib import Path

import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ltfu.cht.config_build import build_app_settings
from ltfu.emulators.cht import ChtEmulatorConfig
from ltfu.emulators.cht import create_app as cht_app
from ltfu.emulators.cht.config import ChwSimConfig
from ltfu.logs import JsonFormatter, configure_logging
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work
from tests.support.server import ServerThread, free_port
from tests.ui.conftest import ADMIN, LOOPBACK, build_app

REPO = Path(__file__).resolve().parents[2]
CHT_ADMIN = ("medic", "password")
PHI = {
    "names": ["Wairimu", "Nduta-Kamande", "Odongo", "Achola"],
    "phones": ["+254733555101", "254733555101", "0733555101", "+254733555102", "0733555102"],
    "birth dates": ["1987-04-23", "1991-12-05", "23/04/1987"],
}


def test_full_loop_logs_carry_no_phi(tmp_path: Path) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("DEBUG")
    root.handlers[0].stream = stream  # the production handler and formatter, into a buffer
    assert isinstance(root.handlers[0].formatter, JsonFormatter)
    try:
        _run_loop(tmp_path)
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    lines = [line for line in stream.getvalue().splitlines() if '"logger":"ltfu.emulators' not in line]
    mediator_lines = [line for line in lines if '"logger":"ltfu' in line]
    assert any('"logger":"ltfu.delivery"' in line for line in mediator_lines), "the capture saw no mediator log"
    text = "\n".join(lines)
    for kind, values in PHI.items():
        leaked = [v for v in values if v.lower() in text.lower()]
        assert not leaked, f"{kind} in the logs: {leaked}"


def _run_loop(tmp: Path) -> None:
    received: list[dict] = []

    async def callback(request: Request) -> JSONResponse:
        received.append(await request.json())
        return JSONResponse({"ok": True})

    mport = free_port()
    cfg = tmp / "cht-config"
    build_app_settings(REPO / "cht-config", f"http://127.0.0.1:{mport}", "ltfu-mediator", username="cht",
                       out_dir=cfg)
    chw = ChwSimConfig(first_delay_s=0.2, retry_delay_s=0.2, jitter_s=0.05, unsuccessful_rate=0.0,
                       outcome_mix={"returning_to_care": 1.0})
    emulator = cht_app(ChtEmulatorConfig(app_settings_path=cfg, credentials={"ltfu-mediator": "cht-secret-1"},
                                         chw=chw))
    settings = Settings(database_url=f"sqlite:///{tmp / 'm.db'}", data_dir=tmp, admin_password=ADMIN[1],
                        cht_url="", cht_username=CHT_ADMIN[0], cht_password=CHT_ADMIN[1], poll_interval_s=0.1,
                        callback_allowed_networks=LOOPBACK)  # the receiver listens on loopback
    receiver = Starlette(routes=[Route("/cb", callback, methods=["POST", "PUT"])])
    with ServerThread(receiver) as rcv, ServerThread(emulator) as cht:
        settings = settings.model_copy(update={"cht_url": cht.url})
        with ServerThread(build_app(settings), port=mport) as med:
            asyncio.run(_add_cht_client(settings))
            A = ADMIN
            dh = _post(cht.url + "/api/v1/places", {"name": "Siaya DH", "type": "district_hospital"}, CHT_ADMIN)
            hc = _post(cht.url + "/api/v1/places", {"name": "Lwak HC", "type": "health_center", "parent": dh["id"]},
                       CHT_ADMIN)
            home = _post(cht.url + "/api/v1/places", {"name": "Home", "type": "clinic", "parent": hc["id"]}, CHT_ADMIN)
            r = requests.post(cht.url + "/api/v2/users", auth=CHT_ADMIN, timeout=30, json=[{
                "username": "chw1", "password": "Chw-pass-12345!", "roles": ["chw"], "place": hc["id"],
                "contact": {"name": "Achola Odongo", "phone": PHI["phones"][3]}}])
            assert r.status_code < 300, r.text
            person = _post(cht.url + "/api/v1/people", {
                "name": "Wairimu Nduta-Kamande", "type": "person", "sex": "female", "phone": PHI["phones"][0],
                "date_of_birth": PHI["birth dates"][0], "place": home["id"]}, CHT_ADMIN)
            deadline = time.monotonic() + 15
            while requests.get(med.url + f"/fhir/Patient?identifier={person['id']}", auth=A,
                               timeout=30).json().get("total", 0) < 1:
                assert time.monotonic() < deadline, "CHT did not push the person"
                time.sleep(0.2)
            # a facility-side patient too, and a rejected one with PHI in the body
            _post(med.url + "/fhir/Patient", {"resourceType": "Patient", "name": [{"family": "Odongo",
                  "given": ["Achola"]}], "telecom": [{"system": "phone", "value": PHI["phones"][4]}],
                  "birthDate": PHI["birth dates"][1]}, A)
            bad = requests.post(med.url + "/fhir/Patient", auth=A, timeout=30, json={
                "resourceType": "Patient", "name": [{"family": "Odongo"}], "birthDate": PHI["birth dates"][2]})
            assert bad.status_code in (400, 422)
            ep = _post(med.url + "/fhir/Endpoint", {
                "resourceType": "Endpoint", "status": "active", "address": rcv.url + "/cb",
                "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                                   "code": "hl7-fhir-rest"}, "payloadType": [{"text": "Task"}]}, A)
            org = _post(med.url + "/fhir/Organization", {
                "resourceType": "Organization", "name": "Lwak Mission Hospital",
                "identifier": [{"system": "https://mfl.example.org/ke", "value": "15001"}],
                "endpoint": [{"reference": f"Endpoint/{ep['id']}"}]}, A)
            sr = _post(med.url + "/fhir/ServiceRequest", {
                "resourceType": "ServiceRequest", "status": "active", "intent": "order",
                "identifier": [{"system": "https://lwak.example.org/ltfu", "value": "L-1"}],
                "subject": {"reference": f"Patient/{person['id']}"},
                "requester": {"reference": f"Organization/{org['id']}"}}, A)
            deadline = time.monotonic() + 30
            while True:
                task = requests.get(med.url + f"/fhir/Task?focus=ServiceRequest/{sr['id']}", auth=A,
                                    timeout=30).json()["entry"][0]["resource"]
                if task["status"] == "completed":
                    break
                assert time.monotonic() < deadline, f"the loop did not close: {task['status']}"
                time.sleep(0.2)
            deadline = time.monotonic() + 15
            # the handshake, then the Task's requested, received and in-progress/completed versions: one call
            # each, or fewer when the notifier groups a facility's due events into one Bundle
            while _task_versions(received) < 3:
                assert time.monotonic() < deadline, f"only {_task_versions(received)} Task versions notified"
                time.sleep(0.1)
            for path in ("/ui/cases", f"/ui/cases/{sr['id']}", "/ui/cases?q=" + person["id"], "/ui/deliveries",
                         "/ui/programme", "/metrics"):
                assert requests.get(med.url + path, auth=A, timeout=30).status_code == 200, path
            page = requests.get(med.url + f"/ui/cases/{sr['id']}", auth=A, timeout=30).text
            assert "Wairimu" in page  # shown to the operator on screen, never logged


def _task_versions(notifications: list[dict]) -> int:
    return sum(e.get("resource", {}).get("resourceType") == "Task" for n in notifications for e in n.get("entry", []))


def _post(url: str, body: dict, auth: tuple[str, str]) -> dict:
    r = requests.post(url, json=body, auth=auth, timeout=30)
    assert r.status_code in (200, 201), (url, r.status_code, r.text[:300])
    return r.json()


async def _add_cht_client(settings: Settings) -> None:
    db = Database(settings)
    async with unit_of_work(db) as uow:
        await uow.clients.upsert("cht", "cht-secret-1", is_admin=True, organization_id=None)
    await db.dispose()
