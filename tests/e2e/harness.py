"""Real processes on loopback for end-to-end tests: the mediator (`ltfu serve`), `ltfu worker`s,
the CHT emulator (`ltfu emulate cht`), and an in-test facility callback receiver.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.server import ServerThread, free_port

LTFU = str(Path(sys.executable).with_name("ltfu"))
ADMIN = ("admin", "admin-secret-1")
CHT_ADMIN = ("medic", "cht-admin-pass-1")
PUSH_USER, PUSH_PASSWORD = "cht", "cht-push-secret-1"
CONN = {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"}


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.args, self.env, self.log = name, args, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to finish what it was doing."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_http(url: str, timeout: float = 40.0) -> None:
    def up() -> bool:
        try:
            return requests.get(url, timeout=2).status_code < 500
        except requests.RequestException:
            return False

    wait_until(up, timeout, f"{url} to answer")


def register_facility(mediator_url: str, callback_url: str, code: str = "13023") -> str:
    """An Endpoint (the facility's callback) and its Organization; the Organization's id."""
    ep = requests.post(mediator_url + "/fhir/Endpoint", auth=ADMIN, timeout=30, json={
        "resourceType": "Endpoint", "status": "active", "connectionType": CONN,
        "payloadType": [{"text": "Task"}], "address": callback_url,
        "header": ["Authorization: Bearer facility-token"]}).json()
    org = requests.post(mediator_url + "/fhir/Organization", auth=ADMIN, timeout=30, json={
        "resourceType": "Organization", "identifier": [{"system": "https://mfl.example/ke", "value": code}],
        "name": f"Facility {code}", "endpoint": [{"reference": f"Endpoint/{ep['id']}"}]})
    assert org.status_code == 201, org.text
    return str(org.json()["id"])


@dataclass
class Receiver:
    """The facility's callback: records notifications; can be told to fail for a while."""

    events: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    handshakes: int = 0
    down_until: float = 0.0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def notify(request: Request) -> Response:
            if time.monotonic() < self.down_until:
                self.refused += 1
                return JSONResponse({"error": "down"}, status_code=503)
            if request.headers.get("authorization") != "Bearer facility-token":
                return JSONResponse({"error": "bad token"}, status_code=401)
            bundle = await request.json()
            params = bundle["entry"][0]["resource"]["parameter"]
            kind = next(p["valueCode"] for p in params if p["name"] == "type")
            sub = next(p["valueReference"]["reference"] for p in params if p["name"] == "subscription")
            with self.lock:
                if kind == "handshake":
                    self.handshakes += 1
                for p in params:
                    if p["name"] == "notification-event":
                        number = int(next(x["valueString"] for x in p["part"] if x["name"] == "event-number"))
                        self.events[sub].append(number)
                for e in bundle["entry"][1:]:
                    r = e["resource"]
                    if r["resourceType"] == "Task":
                        prev = self.tasks.get(r["id"])
                        if prev is None or int(prev["meta"]["versionId"]) < int(r["meta"]["versionId"]):
                            self.tasks[r["id"]] = r
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/notify", notify, methods=["POST"])])

    def final_tasks(self) -> dict[str, str]:
        with self.lock:
            return {tid: t["status"] for tid, t in self.tasks.items()}


class Loop:
    """Mediator + CHT emulator + receiver, wired like a deployment, in ``tmp``."""

    def __init__(self, tmp: Path, database_url: str, *, workers_in_serve: bool = True,
                 cht_version: str = "4.11.0") -> None:
        self.tmp = tmp
        self.database_url = database_url
        self.mport, self.cport = free_port(), free_port()
        self.mediator_url = f"http://127.0.0.1:{self.mport}"
        self.cht_url = f"http://127.0.0.1:{self.cport}"
        self.receiver = Receiver()
        self._receiver_server = ServerThread(self.receiver.app())
        self.env = {
            **os.environ,
            "LTFU_DATABASE_URL": database_url,
            "LTFU_DATA_DIR": str(tmp / "data"),
            "LTFU_ADMIN_PASSWORD": ADMIN[1],
            "LTFU_CHT_URL": self.cht_url,
            "LTFU_CHT_USERNAME": CHT_ADMIN[0],
            "LTFU_CHT_PASSWORD": CHT_ADMIN[1],
            "LTFU_POLL_INTERVAL_S": "0.2",
            "LTFU_RETRY_INITIAL_S": "0.3",
            "LTFU_RETRY_MAX_S": "1.5",
            "LTFU_DELIVERY_TIMEOUT_S": "5",
            "LTFU_CHT_TIMEOUT_S": "5",
            "LTFU_WORKERS": "true" if workers_in_serve else "false",
            "LTFU_PUBLIC_URL": self.mediator_url,
            "LTFU_CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8",  # the facility callback listens on loopback
        }
        self.mediator = Process("mediator", [LTFU, "serve", "--port", str(self.mport)], self.env,
                                tmp / "mediator.log")
        self.cht = Process("cht", [
            LTFU, "emulate", "cht", "--port", str(self.cport), "--db", str(tmp / "cht.db"),
            "--admin-password", CHT_ADMIN[1], "--mediator-url", self.mediator_url,
            "--credential-key", "ltfu-mediator", "--mediator-username", PUSH_USER,
            "--mediator-password", PUSH_PASSWORD, "--retry-interval", "1", "--chw-delay", "0.5",
            "--chw-retry-delay", "0.5", "--log-level", "warning", "--version", cht_version,
        ], self.env, tmp / "cht.log")
        self.workers: list[Process] = []

    def __enter__(self) -> Loop:
        self._receiver_server.__enter__()
        subprocess.run([LTFU, "clients", "add", PUSH_USER, "--password-stdin", "--cht"],
                       input=f"{PUSH_PASSWORD}\n".encode(), env=self.env, check=True, capture_output=True)
        self.cht.start()
        self.mediator.start()
        wait_http(self.cht_url + "/api/info")
        wait_http(self.mediator_url + "/health")
        return self

    def __exit__(self, *exc: Any) -> None:
        for p in [*self.workers, self.mediator, self.cht]:
            p.stop()
        self._receiver_server.__exit__(*exc)

    def add_worker(self) -> Process:
        name = f"worker{len(self.workers)}"
        w = Process(name, [LTFU, "worker"], self.env, self.tmp / f"{name}.log")
        self.workers.append(w.start())
        return w

    def restart_mediator(self, *, kill: bool) -> None:
        self.mediator.kill() if kill else self.mediator.stop()
        self.mediator.start()
        wait_http(self.mediator_url + "/health")

    # ------------------------------------------------------------------ API helpers
    def fhir(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(method, self.mediator_url + path, auth=ADMIN, timeout=30, **kw)

    def cht_api(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(method, self.cht_url + path, auth=CHT_ADMIN, timeout=30,
                                headers={"Accept": "application/json"}, **kw)

    def register_facility(self, code: str = "13023") -> str:
        return register_facility(self.mediator_url, self._receiver_server.url + "/notify", code)

    def seed_cht(self, n: int) -> list[str]:
        """A CHW area with a CHW user and ``n`` patients in CHT; their CHT ids."""
        dh = self.cht_api("POST", "/api/v1/places", json={"name": "County hospital", "type": "district_hospital"})
        hc = self.cht_api("POST", "/api/v1/places", json={"name": "CHW area", "type": "health_center",
                                                          "parent": dh.json()["id"]}).json()["id"]
        hh = self.cht_api("POST", "/api/v1/places", json={"name": "Household", "type": "clinic",
                                                          "parent": hc}).json()["id"]
        user = self.cht_api("POST", "/api/v2/users", json=[{
            "username": "chw1", "password": "Chw-pass-12345!", "roles": ["chw"], "place": hc,
            "contact": {"name": "Mary Atieno", "phone": "+254700000001"}}])
        assert user.status_code == 200, user.text
        ids = []
        for i in range(n):
            r = self.cht_api("POST", "/api/v1/people", json={"name": f"Patient Number{i}", "type": "person",
                                                             "sex": "female", "date_of_birth": "1990-01-01",
                                                             "place": hh})
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])
        return ids

    def request(self, org_id: str, cht_id: str, key: str) -> requests.Response:
        return self.fhir("POST", "/fhir/ServiceRequest", json={
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "identifier": [{"system": "https://facility.example/ltfu-request", "value": key}],
            "subject": {"reference": f"Patient/{cht_id}"}, "requester": {"reference": f"Organization/{org_id}"},
            "reasonCode": [{"coding": [{"system": "http://smart.who.int/hiv/CodeSystem/HIVConcepts",
                                        "code": "HIV.H.DE2", "display": "Missed care visit"}]}]})

    def cht_records(self, case_id: str, form: str = "INTEROP_FOLLOW_UP") -> int:
        r = self.cht_api("POST", "/medic/_find", json={"selector": {"form": form, "fields.case_ref": case_id},
                                                       "limit": 10})
        return len(r.json()["docs"])

    def tasks_by_status(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        bundle = self.fhir("GET", "/fhir/Task", params={"_count": "1000"}).json()
        for e in bundle.get("entry", []):
            out[e["resource"]["status"]] += 1
        return dict(out)
