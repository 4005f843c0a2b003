"""Matching benchmark: accuracy and latency of the matcher against a seeded Kenyan-like CHT index.

Builds the index through the real path (CHT's ``_changes`` → ``ChtSync`` → SQL), then matches
incoming facility patients with known truth through ``services.matching.find_matches`` (in process, CHT
excluded) and reports precision, recall, review load, latency and the confusion by perturbation type
against issue 13's targets.

    nice -n 10 .venv/bin/python bench/matching.py --persons 100000 [--incoming 10000] [--database-url ...]
    nice -n 10 .venv/bin/python bench/matching.py --persons 1000000 --incoming 2000   # the 1e6 targets

The build is ``ltfu cht sync --full`` (``ChtSync`` over the generated community served as CHT's ``_changes``
feed, 500 docs a page as the CLI reads it: staged, then merged). It is reported as wall time, CPU time of this
process (the generator included) and CPU time of the sync (the generator left out), with the peak RSS.
``--index FILE`` keeps the SQLite index and reuses it on the next run (latency work without a rebuild).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from ltfu.cht.client import ChtResponse
from ltfu.delivery.cht_sync import ChtSync
from ltfu.domain.matching import query_keys
from ltfu.domain.matching.records import MatchResult, Person
from ltfu.emulators.population import Community, Incoming, absent_patient, facility_patient
from ltfu.fhir.match_patient import person_from_patient
from ltfu.fhir.systems import Systems
from ltfu.gc_tuning import tune_gc
from ltfu.services.cht_index import index_docs
from ltfu.services.matching import find_matches, match_config
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.uow import UnitOfWork, unit_of_work


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


INDEX_CPU = [0.0]  # CPU seconds of the sync during the build, the generator's left out
MERGE_S = [0.0]  # wall seconds of the staged build's merge (SQLite's writer held)


class Feed:
    """CHT's ``_changes?include_docs=true`` over the generated community, for ``ChtSync``: the build is what
    ``ltfu cht sync --full`` does (its page size, one transaction per page, the staging and the merge)."""

    def __init__(self, docs: Iterator[dict]) -> None:
        self.docs, self.served, self.cpu = docs, 0, 0.0

    async def request(self, method: str, path: str, body: object = None) -> ChtResponse:
        c0 = time.process_time()
        query = parse_qs(urlparse(path).query)
        since, limit = int(query["since"][0]), int(query["limit"][0])
        assert since == self.served, (since, self.served)  # the sync reads on from where the last page ended
        results = []
        for doc in islice(self.docs, limit):
            self.served += 1
            results.append({"id": doc["_id"], "seq": str(self.served), "changes": [], "doc": doc})
        self.cpu += time.process_time() - c0
        return ChtResponse(200, {"results": results, "last_seq": str(self.served)}, 0)

    async def close(self) -> None:
        return None


def why_missed(truth: str, pool: list[Person], result: MatchResult) -> str:
    """Why a true match is not among the candidates: never retrieved (blocking), vetoed, or graded too low."""
    if truth not in {p.id for p in pool}:
        return "missed-not-retrieved"
    return "missed-vetoed" if truth in {v for v, _ in result.vetoed} else "missed-below-possible"


def outcome_of(truth: str | None, result: MatchResult, ids: list[str]) -> tuple[bool, str]:
    """(auto-linked?, the outcome's name) of one incoming patient against its known truth."""
    best = result.best
    certain = best is not None and best.grade == "certain"
    if certain:
        return True, "certain-correct" if best.person_id == truth else "certain-wrong"
    return False, "review-with-truth" if truth in ids else "review-without-truth" if ids else "none"


async def build(
    db: Database, settings: Settings, persons: int, incoming: int, seed: int, *, write: bool = True
) -> tuple[list[Incoming], float, int]:
    """Index the community through ``ChtSync.sync_once(full=True)``; pick the incoming patients on the way
    (70% present, 30% absent). ``write=False``: the index is already built (``--index``), only the incoming
    patients are drawn (the same seed, the same community)."""
    rng = random.Random(seed + 1)
    community = Community(seed)
    present_n = int(incoming * 0.7)
    absent_n = incoming - present_n
    expected_households = persons / 5
    pick_p = present_n / persons
    relative_p = (absent_n / 2) / expected_households
    chosen: list[Incoming] = []
    absent: list[Incoming] = []
    mrn = 0
    start = time.perf_counter()

    def docs() -> Iterator[dict]:
        nonlocal mrn
        for places, hh in community.stream(persons):
            yield from places
            if hh is None:
                continue
            yield hh.place
            yield from (m.doc for m in hh.members)
            for member in hh.members:
                if len(chosen) < present_n and rng.random() < pick_p * 1.05:
                    mrn += 1
                    chosen.append(facility_patient(rng, member, hh, f"P{mrn:07d}"))
            if len(absent) < absent_n // 2 and rng.random() < relative_p * 1.05:
                mrn += 1
                absent.append(absent_patient(rng, community, hh, f"P{mrn:07d}"))

    if write:
        feed = Feed(docs())
        c0 = time.process_time()
        synced = await ChtSync(db, settings, feed).sync_once(full=True)  # type: ignore[arg-type]
        INDEX_CPU[0] = time.process_time() - c0 - feed.cpu
        MERGE_S[0] = synced.merge_s
    else:
        for _ in docs():
            pass
    build_s = time.perf_counter() - start
    while len(absent) < absent_n:
        mrn += 1
        absent.append(absent_patient(rng, community, None, f"P{mrn:07d}"))
    out = chosen + absent
    rng.shuffle(out)
    return out, build_s, community.persons


async def server_cpu_s(db: Database) -> float | None:
    """CPU seconds of the PostgreSQL backends serving this database, when the server runs on this machine
    (``/proc``): the build's cost on the server side, which the client's CPU time leaves out."""
    if db.is_sqlite:
        return None
    from sqlalchemy import text

    backends = text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    async with db.connect() as conn:
        pids = [r[0] for r in await conn.execute(backends)]
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def run(args: argparse.Namespace) -> dict:
    tmp = tempfile.TemporaryDirectory(prefix="ltfu-bench-match-")
    index = Path(args.index) if getattr(args, "index", None) else Path(tmp.name) / "match.db"
    reuse = getattr(args, "reuse", False) if args.database_url else index.exists()
    url = args.database_url or f"sqlite:///{index}"
    settings = Settings(
        database_url=url,
        data_dir=Path(tmp.name),
        workers=False,
        match_weights=json.loads(args.weights) if args.weights else {},
    )
    db = Database(settings)
    await db.upgrade()
    tune_gc(settings)  # as ``ltfu cht sync``, ``serve`` and ``worker`` do
    c0 = time.process_time()
    incoming, build_s, persons = await build(db, settings, args.persons, args.incoming, args.seed, write=not reuse)
    if reuse:
        where = "the database" if args.database_url else index
        print(f"index reused ({where}): the build figures are not a build's", file=sys.stderr)
    build_cpu = time.process_time() - c0
    build_rss = rss_mb()
    build_server_cpu = await server_cpu_s(db)
    print(
        f"index: {persons} persons in {build_s:.1f} s wall, {build_cpu:.1f} s CPU "
        f"({INDEX_CPU[0]:.1f} s in the sync), peak RSS {build_rss:.0f} MB",
        file=sys.stderr,
    )
    systems = Systems(settings.base_url)
    cfg = match_config(settings)
    latencies: list[float] = []
    stats: dict[str, Counter] = defaultdict(Counter)
    totals: Counter = Counter()
    examples: Counter = Counter()
    hist: dict[int, Counter] = defaultdict(Counter)
    cpu: list[float] = []
    for item in incoming[: args.incoming]:
        t0, c0 = time.perf_counter(), time.process_time()
        query = person_from_patient(item.patient, systems, settings.match_identifiers, settings.match_default_region)
        async with db.connect() as conn:
            result = await find_matches(UnitOfWork(conn, db), query)
            latencies.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
            ids = [c.person_id for c in result.candidates]
            missed = None
            if item.truth and item.truth not in ids:  # why: never a candidate (blocking), vetoed, or graded too low
                pool, _ = await UnitOfWork(conn, db).cht_index.candidates(query_keys(query), cfg.block_cap)
                missed = why_missed(item.truth, pool, result)
        best = result.best
        certain, outcome = outcome_of(item.truth, result, ids)
        if certain and best.person_id in item.household:
            outcome_household = "household-wrong"
            totals[outcome_household] += 1
        if best is not None:
            odds = (
                math.log2(best.probability / (1 - best.probability))
                if 0 < best.probability < 1
                else (60.0 if best.probability >= 1 else -60.0)
            )
            bucket = int(odds // 4) * 4
            hist[bucket]["true" if best.person_id == item.truth else "false"] += 1
        if result.decision == "review" and item.truth in ids[:3]:
            totals["review-top3"] += 1
        totals[outcome] += 1
        totals["present" if item.truth else "absent"] += 1
        if missed:
            totals[missed] += 1
        high = best is not None and best.weight >= args.examples_min_weight
        if args.examples and outcome in args.examples.split(",") and examples[outcome] < 12 and high:
            examples[outcome] += 1
            print(
                f"--- {outcome} {item.tags} truth={item.truth}",
                json.dumps(item.patient["name"]),
                item.patient.get("birthDate"),
                file=sys.stderr,
            )
            for c in result.candidates[:3]:
                print(
                    f"    {c.person_id} {c.grade} w={c.weight:.1f} p={c.probability:.3f} {c.reasons}",
                    " ".join(f"{f.field}:{f.level}:{f.weight:.1f}[{f.incoming}|{f.candidate}]" for f in c.fields),
                    file=sys.stderr,
                )
        for tag in item.tags:
            stats[tag][outcome] += 1
            stats[tag]["n"] += 1
            if missed:
                stats[tag][missed] += 1
            if result.decision == "review":
                stats[tag]["review"] += 1
        if item.twin:
            totals["twin-n"] += 1
            totals["twin-" + outcome] += 1
        if item.truth and certain:
            totals["present-certain"] += 1
        if not item.truth and certain:
            totals["absent-linked"] += 1
        if result.decision == "review":
            totals["review"] += 1
            totals["review-absent"] += not item.truth
            if item.truth in ids:
                totals["review-truth-present"] += 1
    n = len(latencies)
    certain_all = totals["certain-correct"] + totals["certain-wrong"]
    present = totals["present"]
    found = totals["certain-correct"] + totals["review-with-truth"]
    twin_certain = totals["twin-certain-correct"] + totals["twin-certain-wrong"]
    report = {
        "persons": persons,
        "incoming": n,
        "build_s": round(build_s, 1),
        "build_cpu_s": round(build_cpu, 1),
        "build_index_cpu_s": round(INDEX_CPU[0], 1),
        "build_merge_wall_s": round(MERGE_S[0], 1),
        "build_peak_rss_mb": round(build_rss),
        "build_server_cpu_s": None if build_server_cpu is None else round(build_server_cpu, 1),
        "latency_ms": {
            "p50": round(pct(latencies, 0.5), 2),
            "p99": round(pct(latencies, 0.99), 2),
            "mean": round(statistics.fmean(latencies), 2),
        },
        "cpu_ms": {"p50": round(pct(cpu, 0.5), 2), "p99": round(pct(cpu, 0.99), 2)},
        "certain_precision": round(totals["certain-correct"] / certain_all, 4) if certain_all else None,
        "household_twin_precision": round(1 - (totals["household-wrong"] / max(totals["present-certain"], 1)), 5),
        "twin_certain_precision": round(totals["twin-certain-correct"] / twin_certain, 4) if twin_certain else None,
        "auto_link_recall": round(totals["certain-correct"] / present, 4) if present else None,
        "recall_certain_plus_review": round(found / present, 4) if present else None,
        "review_rate": round(totals["review"] / n, 4),
        "review_top3": round(totals["review-top3"] / max(totals["review-truth-present"], 1), 4),
        "absent_wrongly_linked": round(totals["absent-linked"] / max(totals["absent"], 1), 4),
        "review_present_absent": [totals["review"] - totals["review-absent"], totals["review-absent"]],
        "missed": {k: totals[k] for k in ("missed-not-retrieved", "missed-vetoed", "missed-below-possible")},
        "by_tag": {
            tag: {
                **{k: v for k, v in sorted(c.items()) if k != "n"},
                "n": c["n"],
                "recall": round((c["certain-correct"] + c["review-with-truth"]) / c["n"], 4),
                "review_rate": round(c["review"] / c["n"], 4),
            }
            for tag, c in sorted(stats.items())
        },
    }
    report["best_log_odds_histogram"] = {f"{k}..{k + 4}": dict(v) for k, v in sorted(hist.items())}
    # one incremental update: a person edited (new phone) in its own transaction
    update_ms, update_cpu = [], []
    doc = {
        "_id": "bench-update",
        "type": "person",
        "name": "Grace Wambui Kamau",
        "sex": "female",
        "date_of_birth": "1990-05-17",
        "parent": {"_id": "hh-x"},
    }
    for i in range(50):
        t0, c0 = time.perf_counter(), time.process_time()
        async with unit_of_work(db) as uow:
            await index_docs(uow, [{**doc, "phone": f"07120000{i:02d}"}])
        update_ms.append((time.perf_counter() - t0) * 1000)
        update_cpu.append((time.process_time() - c0) * 1000)
    report["incremental_update_ms"] = {
        "p50": round(pct(update_ms, 0.5), 2),
        "max": round(max(update_ms), 2),
        "cpu_p50": round(pct(update_cpu, 0.5), 2),
    }
    report["peak_rss_mb"] = round(rss_mb())
    report["index_reused"] = reuse
    await db.dispose()
    tmp.cleanup()
    return report


TARGETS = """targets: certain precision >= 0.995 (households/twins >= 0.999); recall certain+review >= 0.97
(swap >= 0.95, dob-missing >= 0.90); review <= 0.20; absent wrongly linked <= 0.005;
latency 1e5 p50 <= 5 ms p99 <= 25 ms, 1e6 p50 <= 20 ms p99 <= 100 ms; build 1e6 <= 60 s, <= 1.5 GB; update <= 10 ms"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--incoming", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--index",
        default=None,
        help="SQLite file of the index: built there and kept when absent, reused (not rebuilt) when present "
        "(the same --persons, --incoming and --seed: the draws of the incoming patients shape the community); "
        "the bench's own update is then in it",
    )
    parser.add_argument("--reuse", action="store_true", help="with --database-url: the database holds the index")
    parser.add_argument("--examples", default="", help="outcomes to print examples of, e.g. certain-wrong")
    parser.add_argument("--examples-min-weight", type=float, default=-100.0)
    parser.add_argument("--weights", default=None, help="JSON overrides of MatchConfig (as LTFU_MATCH_WEIGHTS)")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print(json.dumps(report, indent=2))
    print(TARGETS, file=sys.stderr)


if __name__ == "__main__":
    main()
