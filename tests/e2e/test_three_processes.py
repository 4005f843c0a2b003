"""Mediator, CHT emulator and facility emulator as three real processes (the demo's wiring), with
trouble on the way: the facility's endpoint down, the CHT emulator killed and restarted, the mediator
down while CHT pushes (CHT's outbound queue retries). Nothing may be lost or duplicated."""

from __future__ import annotations

import time
from pathlib import Path

import requests
from rich.console import Console

from ltfu.demo import DemoOptions, seed_cht, start
from ltfu.emulators.facility import FacilityClient
from ltfu.settings import Settings
from tests.e2e.harness import wait_until

MEDIATOR, CHT, FACILITY = 0, 1, 2


def test_loop_survives_restarts_and_outages(tmp_path: Path, e2e_db: str) -> None:
    n = 30
    opts = DemoOptions(cases=n, admin_password="admin-secret-1", chw_delay_s=0.5, database_url=e2e_db)
    svc = start(opts, Settings(data_dir=tmp_path), Console(file=open("/dev/null", "w")))  # noqa: SIM115
    try:
        stats = lambda: requests.get(svc.mediator + "/admin/stats", auth=svc.admin, timeout=10).json()  # noqa: E731
        cht_stats = lambda: requests.get(svc.cht + "/_emulator/stats", auth=svc.cht_admin, timeout=10).json()  # noqa: E731
        fac = FacilityClient(svc.facility)
        pop = seed_cht(svc, n)  # the demo's community: the facility's list carries no CHT ids
        fac.register()  # the operator registered the facility at start: its handshake is long done
        fac.down()
        fac.send_list(n, population=pop)
        wait_until(lambda: fac.report()["notifications"].get("refused_down", 0) > 0, 30, "a refused notification")
        fac.up()
        # A case whose patient waits in the review queue never reaches CHT: every other case must close.
        closable = lambda: n - stats()["matching"]["in_review"]  # noqa: E731
        wait_until(lambda: stats()["reached"]["cht"] >= n // 3, 60, "a third of the cases in CHT")
        svc.kill(CHT)  # crash mid-run; its SQLite store keeps records, CHWs and the outbound queue
        time.sleep(1)
        svc.launch(CHT)
        wait_until(lambda: stats()["reached"]["cht"] == closable(), 90, "every closable case in CHT after the restart")
        svc.kill(MEDIATOR)  # CHT's pushes fail while the mediator is away and wait in its queue
        wait_until(lambda: sum(cht_stats()["outbound"]["failed"].values()) > 0, 30, "a failed outbound push")
        svc.launch(MEDIATOR)
        wait_until(lambda: stats()["reached"]["closed"] == closable(), 150, "every closable case closed")
        expected = closable()
        assert expected >= n // 2, stats()["matching"]
        report = wait_until(lambda: (r := fac.report())["tasks"]["terminal"] == expected and r["missing_events"] == 0
                            and r, 60, "the facility told of every end")
        final = stats()
        assert report["duplicates"] == 0 and report["out_of_order"] == 0
        assert report["notifications"].get("refused_down", 0) > 0, "the facility endpoint really was down"
        assert report["notifications"].get("signature_ok", 0) >= expected
        assert "bad_signature" not in report["notifications"]
        assert sum(x.get("dead", 0) for x in final["deliveries"].values()) == 0
        assert cht_stats()["docs"].get("data_record:INTEROP_FOLLOW_UP") == expected, "one CHT record per case"
        # Pushes of people (no case waits for them) may still be on the 1 s retry schedule here.
        wait_until(lambda: cht_stats()["outbound"]["queue"] == 0, 30, "every failed push retried")
    finally:
        svc.stop()
