"""CPU time of ``ltfu.fhir.validation.validate`` per resource: the fast path (compiled R4 schema) against the
R4B models (``fast=False``, what every resource cost before the fast path), on the resources of a
defaulter list (bench/write_path.py's Bundle) and on the official R4 examples of the types we accept.

    .venv/bin/python bench/validation.py [--defaulters 10000] [--repeat 3]

CPU time (time.process_time), best of ``--repeat``: on a shared machine it is steadier than wall time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from write_path import defaulters  # noqa: E402

from ltfu.fhir.validation import SUPPORTED_TYPES, validate  # noqa: E402

EXAMPLES = Path(__file__).parent.parent / "tests" / "fixtures" / "r4-examples"


def cpu_us(resources: list[dict[str, Any]], fast: bool, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for r in resources:
            validate(r, fast=fast)
        best = min(best, time.process_time() - t0)
    return best / len(resources) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--defaulters", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    bundle = defaulters(args.defaulters, "3fa85f64-5717-4562-b3fc-2c963f66afa6", "bench")
    entries = [e["resource"] for e in bundle["entry"]]
    examples = []
    for p in sorted(EXAMPLES.glob("*.json")):
        r = orjson.loads(p.read_bytes())
        if r.get("resourceType") in SUPPORTED_TYPES:
            try:
                examples.append(validate(r, fast=False))
            except Exception:
                continue
    validate(entries[0]), validate(entries[1])  # compile the schemas outside the timing
    for name, group in (("defaulter Patient", entries[0::2]), ("defaulter ServiceRequest", entries[1::2]),
                        ("official examples", examples)):
        slow, fast = cpu_us(group, False, args.repeat), cpu_us(group, True, args.repeat)
        print(f"VALIDATE {name}: n={len(group)} models_us={slow:.1f} fast_us={fast:.1f} ratio={slow / fast:.1f}x "
              f"(CPU per resource)", flush=True)
    slow, fast = cpu_us(entries, False, 1), cpu_us(entries, True, 1)
    print(f"VALIDATE bundle of {args.defaulters} defaulters ({len(entries)} entries): "
          f"models_s={slow * len(entries) / 1e6:.2f} fast_s={fast * len(entries) / 1e6:.2f} (CPU)", flush=True)


if __name__ == "__main__":
    main()
