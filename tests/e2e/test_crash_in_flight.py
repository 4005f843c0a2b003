"""SIGKILL the process that delivers to CHT while deliveries are in flight, over and over.

Real processes on loopback: ``ltfu serve`` (delivering with its own workers) and a separate
``ltfu worker``, killed in turn,, a slow CHT that sometimes stores a record and loses the answer (flaky_cht.py), the
facility's callback, and client threads that re-send each request with the same identifier until it
is acknowledged and revoke every fourth case. After the last kill everything drains, then: every
acknowledged request is one case, CHT holds exactly one follow-up record per case (a cancelled case
whose follow-up was dropped before any try holds none), every cancelled case that reached CHT has its
cancel record, and the facility's event numbers have no gap.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from ltfu.fhir.systems import Systems
from ltfu.settings import Settings
from tests.e2e.flaky_cht import FlakyCht
from tests.e2e.harness import ADMIN, LTFU, Process, Receiver, register_facility, wait_http, wait_until
from tests.support.server import ServerThread, free_port

KILLS = 20
REQ_SYSTEM = "https://facility.example/ltfu-request"
FOLLOW_UP, CANCEL = Settings().cht_form.upper(), Settings().cht_cancel_form.upper()


class Clients:
    """Facility clients: each request re-sent until answered; every fourth case revoked afterwards."""

    def __init__(self, base: str, org: str, patients: list[str], threads: int = 3) -> None:
        self.base, self.org, self.patients = base, org, patients
        self.acked: dict[str, str] = {}  # request identifier -> ServiceRequest id
        self.cancelled: set[str] = set()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.numbers = itertools.count()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)

    def _until_answered(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        while True:
            try:
                r = requests.request(method, self.base + path, json=body, auth=ADMIN, timeout=10)
                if r.status_code in (200, 201):
                    return r.json()
                assert r.status_code >= 500, r.text  # a crash may cost an answer, never a client error
            except requests.RequestException:
                pass
            time.sleep(0.1)

    def _run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                i = next(self.numbers)
            if i >= len(self.patients):
                return
            key = f"CRASH-{i}"
            sr = self._until_answered(
                "POST",
                "/fhir/ServiceRequest",
                {
                    "resourceType": "ServiceRequest",
                    "status": "active",
                    "intent": "order",
                    "identifier": [{"system": REQ_SYSTEM, "value": key}],
                    "subject": {"reference": f"Patient/{self.patients[i]}"},
                    "requester": {"reference": f"Organization/{self.org}"},
                },
            )
            with self.lock:
                self.acked[key] = sr["id"]
            if i % 4 == 0:
                time.sleep(0.2)  # long enough for its follow-up to be on its way, often
                self._until_answered("PUT", f"/fhir/ServiceRequest/{sr['id']}", {**sr, "status": "revoked"})
                with self.lock:
                    self.cancelled.add(sr["id"])
            time.sleep(0.6)  # a pace the facility's one ordered notification stream keeps up with


@contextmanager
def _system(tmp: Path, db: str) -> Iterator[tuple[Process, Process, FlakyCht, Receiver, str, str]]:
    """``ltfu serve`` (delivering too) and one ``ltfu worker`` on one database, the slow CHT, the callback."""
    receiver = Receiver()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with FlakyCht() as cht, ServerThread(receiver.app()) as callback:
        env = {
            **os.environ,
            "LTFU_DATABASE_URL": db,
            "LTFU_DATA_DIR": str(tmp / "data"),
            "LTFU_ADMIN_PASSWORD": ADMIN[1],
            "LTFU_CHT_URL": cht.url,
            "LTFU_CHT_USERNAME": "medic",
            "LTFU_CHT_PASSWORD": "cht-admin-pass-1",
            "LTFU_POLL_INTERVAL_S": "0.2",
            "LTFU_RETRY_INITIAL_S": "0.2",
            "LTFU_RETRY_MAX_S": "1",
            "LTFU_DELIVERY_TIMEOUT_S": "5",
            "LTFU_CHT_TIMEOUT_S": "5",
            "LTFU_CHT_MAX_RATE_PER_S": "500",
            "LTFU_CHT_MAX_CONCURRENCY": "32",
            "LTFU_PUBLIC_URL": base,
            "LTFU_CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8",  # the facility callback listens on loopback
            "LTFU_WORKERS": "true",
        }
        # serve is woken by its own requests and claims new work at once: with its 16 slots it would take
        # every delivery at this pace and the worker none. One slot keeps it busy enough that both deliver.
        serve_env = {**env, "LTFU_DELIVERY_CONCURRENCY": "1"}
        serve = Process("mediator", [LTFU, "serve", "--port", str(port)], serve_env, tmp / "mediator.log").start()
        # its own CHT user, so CHT can tell whose deliveries it holds
        worker = Process("worker", [LTFU, "worker"], {**env, "LTFU_CHT_USERNAME": "medic-worker"}, tmp / "worker.log")
        try:
            wait_http(base + "/health")
            worker.start()
            org = register_facility(base, callback.url + "/notify")
            yield serve, worker, cht, receiver, base, org
        finally:
            worker.stop()
            serve.stop()


def _patients(base: str, cht: FlakyCht, n: int) -> list[str]:
    system = Systems(Settings().base_url).cht_contact
    ids = []
    for i in range(n):
        cht_id = cht.add_person(f"Patient Crash{i}")
        r = requests.post(
            base + "/fhir/Patient",
            auth=ADMIN,
            timeout=30,
            json={
                "resourceType": "Patient",
                "identifier": [{"system": system, "value": cht_id}],
                "name": [{"family": f"Crash{i}", "given": ["Patient"]}],
                "gender": "female",
            },
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def _kill_while_in_flight(serve: Process, worker: Process, cht: FlakyCht, base: str) -> dict[str, int]:
    """SIGKILL serve and worker in turn, each time while CHT holds a record POST *of the victim*;
    restart it. Kills (per victim) that cut one of its deliveries off mid-way."""
    hits, pace = {"mediator": 0, "worker": 0}, random.Random(7)
    for victim in itertools.islice(itertools.cycle([serve, worker]), 3 * KILLS):
        if min(hits.values()) >= KILLS // 2:
            break
        if victim is serve:
            wait_http(base + "/health")
        time.sleep(pace.uniform(0.1, 0.5))  # let some deliveries through between the kills
        user = "medic" if victim is serve else "medic-worker"
        what = f"a CHT delivery of the {victim.name} in flight"
        wait_until(lambda user=user: cht.posts_in_flight[user] > 0, 30, what, interval=0.005)
        victim.kill()
        hits[victim.name] += cht.posts_in_flight[user] > 0  # still held by CHT: the kill cut it off
        victim.start()
    wait_http(base + "/health")
    return hits


def _drain(base: str, receiver: Receiver, n_cases: int) -> dict[str, Any]:
    def stats() -> dict[str, Any]:
        return requests.get(base + "/admin/stats", auth=ADMIN, timeout=10).json()

    wait_until(
        lambda: (s := stats())["cases"] == n_cases and all(not by.get("pending") for by in s["deliveries"].values()),
        120,
        "the outbox to drain",
    )
    tasks = requests.get(base + "/fhir/Task", params={"_count": "1000"}, auth=ADMIN, timeout=30).json()
    final = {e["resource"]["id"]: e["resource"]["status"] for e in tasks.get("entry", [])}
    wait_until(lambda: receiver.final_tasks() == final, 60, "the facility to hear of every Task's last state")
    return stats()


def _check(base: str, cht: FlakyCht, receiver: Receiver, clients: Clients, final: dict[str, Any]) -> None:
    acked = clients.acked
    assert final["cases"] == len(acked), "every acknowledged request is one case, and nothing else is"
    assert len(set(acked.values())) == len(acked)
    for key, sr_id in acked.items():
        found = requests.get(
            base + "/fhir/ServiceRequest", params={"identifier": f"{REQ_SYSTEM}|{key}"}, auth=ADMIN, timeout=30
        ).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [sr_id]
    assert not any(by.get("dead") for by in final["deliveries"].values()), (final["deliveries"], cht.not_found[:5])

    follow_ups, cancels = cht.count(FOLLOW_UP), cht.count(CANCEL)
    doubled = {c: n for c, n in follow_ups.items() if n > 1}
    assert not doubled, (
        f"CHT holds two or more follow-up records for {len(doubled)} of {len(acked)} cases "
        f"({sum(doubled.values()) - len(doubled)} extra records)"
    )
    missing = [c for c in acked.values() if c not in clients.cancelled and follow_ups[c] != 1]
    assert not missing, f"{len(missing)} open cases have no follow-up record in CHT"
    twice = {c: n for c, n in cancels.items() if n != 1}
    assert not twice, f"one cancel record per cancelled case: {twice} {[e for e in cht.log if e[3] in twice]}"
    uncancelled = [c for c in clients.cancelled if follow_ups[c] and not cancels[c]]
    assert not uncancelled, f"{len(uncancelled)} cancelled cases left an open CHW task in CHT"
    assert set(cancels) <= clients.cancelled

    ((sub, numbers),) = receiver.events.items()
    status = requests.get(f"{base}/fhir/Subscription/{sub.rsplit('/', 1)[1]}/$status", auth=ADMIN, timeout=30)
    params = status.json()["entry"][0]["resource"]["parameter"]
    total = int(next(p["valueString"] for p in params if p["name"] == "events-since-subscription-start"))
    assert set(numbers) == set(range(1, total + 1)), "the facility got every event number (repeats allowed)"


def test_sigkill_mid_delivery_never_doubles_a_chw_task(tmp_path: Path, e2e_db: str) -> None:
    with _system(tmp_path, e2e_db) as (serve, worker, cht, receiver, base, org):
        patients = _patients(base, cht, 200)
        with Clients(base, org, patients) as clients:
            hits = _kill_while_in_flight(serve, worker, cht, base)
        final = _drain(base, receiver, len(clients.acked))
        follow_ups = cht.count(FOLLOW_UP)
        print(
            f"\n[{e2e_db.split(':')[0]}] kills mid-delivery {hits}, {len(clients.acked)} cases, "
            f"{len(clients.cancelled)} cancelled, {cht.dropped} CHT answers lost after storing; "
            f"cases with 2+ follow-up records: {sum(n > 1 for n in follow_ups.values())}"
        )
        assert min(hits.values()) >= KILLS // 2, f"too few kills hit a delivery in flight: {hits}"
        assert cht.dropped > 0, "some CHT answers were lost after the record was stored"
        _check(base, cht, receiver, clients, final)
