"""`ltfu demo` (what `make demo` runs) closes the loop and says so; a broken loop exits non-zero."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.server import free_port

LTFU = str(Path(sys.executable).with_name("ltfu"))


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    env = {**os.environ, "LTFU_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "120"}
    env.pop("LTFU_DATABASE_URL", None)
    done = subprocess.run([LTFU, "demo", "--cases", "24"], env=env, capture_output=True, text=True, timeout=240)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "All 24 cases closed the loop" in out and "nothing lost, nothing duplicated" in out
    assert "Cases by outcome" in out and "/ui" in out
    assert (tmp_path / "data" / "demo" / "ltfu.db").exists()  # the embedded SQLite default


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_demo_stopped_by_signal_stops_its_three_servers(tmp_path: Path, sig: signal.Signals) -> None:
    ports = [free_port() for _ in range(3)]
    env = {**os.environ, "LTFU_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "120"}
    env.pop("LTFU_DATABASE_URL", None)
    out = tmp_path / "demo.out"
    with out.open("wb") as log:
        demo = subprocess.Popen([LTFU, "demo", "--cases", "0", "--keep-running", "--mediator-port", str(ports[0]),
                                 "--cht-port", str(ports[1]), "--facility-port", str(ports[2])],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while b"Running; Ctrl-C to stop." not in out.read_bytes():
            assert demo.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        assert all(_listening(p) for p in ports)
        demo.send_signal(sig)  # the demo alone, as `kill <pid>` or a service manager would
        demo.wait(60)
        deadline = time.monotonic() + 30
        while any(_listening(p) for p in ports) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_listening(p) for p in ports), f"servers left running after {sig.name}"
    finally:
        if demo.poll() is None:
            demo.kill()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
