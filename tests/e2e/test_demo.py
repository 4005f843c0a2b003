"""`ltfu demo` (what `make demo` runs) closes the loop and says so; a broken loop exits non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
