"""Tune the matcher's weights and thresholds in minutes, not hours: the blocks of ``bench/matching.py``'s
incoming patients, read once from the index it built, then graded again for every setting.

Grading is pure (``domain.matching.match``) and needs only each query's block: its candidates, the
overflowing keys, the name frequencies and the number of persons indexed. This tool draws the bench's
incoming patients (its own ``build`` without writing: the same seed, the same community), reads each block
from the kept index exactly as ``services.matching.find_matches`` does (``ChtIndex.block``), keeps the blocks
in a pickle, then grades them with every ``--weights`` given:

    nice -n 5 .venv/bin/python bench/matching.py --persons 1000000 --index /tmp/idx-1e6.db   # build once
    nice -n 5 .venv/bin/python bench/match_tune.py --persons 1000000 --index /tmp/idx-1e6.db \
        --cache /tmp/blocks-1e6.pickle
    nice -n 5 .venv/bin/python bench/match_tune.py --cache /tmp/blocks-1e6.pickle --brief \
        --weights '{"calibration_bits": 5}' --weights '{"certain_p": 0.99}'

prints, per setting, the accuracy figures of ``bench/matching.py`` with the same definitions (precision,
recall, review, absent linked, by perturbation type). Latency is not measured here: ``bench/matching.py``
remains the benchmark; this is the tuning loop. Read the blocks again after the blocking keys change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import matching as bench  # noqa: E402  (bench/matching.py)
from ltfu.domain.matching import MatchConfig, match, query_keys  # noqa: E402
from ltfu.domain.matching.records import Person  # noqa: E402
from ltfu.fhir.match_patient import person_from_patient  # noqa: E402
from ltfu.fhir.systems import Systems  # noqa: E402
from ltfu.settings import Settings  # noqa: E402
from ltfu.store.db import Database  # noqa: E402
from ltfu.store.index_size import indexed_persons  # noqa: E402
from ltfu.store.uow import UnitOfWork  # noqa: E402


@dataclass
class Query:
    item: Any  # bench Incoming
    person: Person  # the normalised query
    candidates: list[int]  # indexes into Blocks.persons
    overflow: list[str]
    frequencies: dict[str, float]


@dataclass
class Blocks:
    persons: list[Person]
    queries: list[Query]
    total: int


async def _read_blocks(url: str, items: list[Any], settings: Settings) -> Blocks:
    """Each query's block as ``services.matching.find_matches`` reads it (the bench flags no duplicates)."""
    db = Database(settings.model_copy(update={"database_url": url}))
    systems = Systems(settings.base_url)
    cap = MatchConfig().block_cap
    persons: dict[str, int] = {}
    stored: list[Person] = []
    queries = []
    async with db.connect() as conn:
        uow = UnitOfWork(conn, db)
        total = await indexed_persons(conn)
        for item in items:
            q = person_from_patient(item.patient, systems, settings.match_identifiers, settings.match_default_region)
            by_id = [v for k, v in q.identifiers if k == "cht_id"]
            block = await uow.cht_index.block(query_keys(q), q.tokens, cap, by_id)
            at = []
            for p in block.persons:
                if p.id not in persons:
                    persons[p.id] = len(stored)
                    stored.append(p)
                at.append(persons[p.id])
            queries.append(Query(item, q, at, list(block.overflow), block.frequencies))
    await db.dispose()
    return Blocks(stored, queries, total)


def collect(url: str, persons: int, incoming: int, seed: int) -> Blocks:
    """The incoming patients of the bench's generator (no write), their blocks from the built index."""
    t0 = time.process_time()
    settings = Settings(workers=False)
    items = asyncio.run(bench.build(None, settings, persons, incoming, seed, write=False))[0][:incoming]  # type: ignore[arg-type]
    blocks = asyncio.run(_read_blocks(url, items, settings))
    print(f"{len(items)} blocks of {blocks.total} persons read, {time.process_time() - t0:.0f} s CPU", file=sys.stderr)
    return blocks


def evaluate(blocks: Blocks, cfg: MatchConfig, population: int | None) -> dict[str, Any]:
    """The accuracy figures of ``bench/matching.py``'s report, with the same definitions."""
    totals: Counter[str] = Counter()
    stats: dict[str, Counter] = defaultdict(Counter)
    for q in blocks.queries:
        item = q.item
        pool = [blocks.persons[i] for i in q.candidates]
        result = match(q.person, pool, q.frequencies.get, cfg, overflow=bool(q.overflow), population=population)
        ids = [c.person_id for c in result.candidates]
        missed = None
        if item.truth and item.truth not in ids:
            missed = bench.why_missed(item.truth, pool, result)
        best = result.best
        certain, outcome = bench.outcome_of(item.truth, result, ids)
        if certain and best.person_id in item.household:
            totals["household-wrong"] += 1
        totals[outcome] += 1
        totals["present" if item.truth else "absent"] += 1
        if missed:
            totals[missed] += 1
        review = result.decision == "review"
        for tag in item.tags:
            stats[tag][outcome] += 1
            stats[tag]["n"] += 1
            stats[tag]["review"] += review
            if missed:
                stats[tag][missed] += 1
        if item.twin:
            totals["twin-" + outcome] += 1
        totals["present-certain"] += bool(item.truth and certain)
        totals["absent-linked"] += bool(not item.truth and certain)
        totals["review"] += review
        totals["review-absent"] += review and not item.truth
    n = len(blocks.queries)
    certain_all = totals["certain-correct"] + totals["certain-wrong"]
    twin_certain = totals["twin-certain-correct"] + totals["twin-certain-wrong"]
    present = totals["present"]
    return {
        "certain_precision": round(totals["certain-correct"] / certain_all, 4) if certain_all else None,
        "household_twin_precision": round(1 - totals["household-wrong"] / max(totals["present-certain"], 1), 5),
        "twin_certain_precision": round(totals["twin-certain-correct"] / twin_certain, 4) if twin_certain else None,
        "auto_link_recall": round(totals["certain-correct"] / present, 4),
        "recall_certain_plus_review": round((totals["certain-correct"] + totals["review-with-truth"]) / present, 4),
        "review_rate": round(totals["review"] / n, 4),
        "absent_wrongly_linked": round(totals["absent-linked"] / max(totals["absent"], 1), 4),
        "review_present_absent": [totals["review"] - totals["review-absent"], totals["review-absent"]],
        "certain_wrong": totals["certain-wrong"],
        "missed": {k: totals[k] for k in ("missed-not-retrieved", "missed-vetoed", "missed-below-possible")},
        "by_tag": {
            tag: {
                "n": c["n"],
                "recall": round((c["certain-correct"] + c["review-with-truth"]) / c["n"], 4),
                "review_rate": round(c["review"] / c["n"], 4),
                "certain_wrong": c["certain-wrong"],
                **{k: c[k] for k in ("missed-not-retrieved", "missed-below-possible") if c[k]},
            }
            for tag, c in sorted(stats.items())
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=None, help="read the blocks into the cache (else read it)")
    parser.add_argument("--index", default=None, help="the SQLite index bench/matching.py --index kept")
    parser.add_argument("--database-url", default=None, help="or the database that holds the index")
    parser.add_argument("--incoming", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--cache", required=True, help="pickle of the blocks")
    parser.add_argument("--weights", action="append", default=[], help="JSON overrides; repeat to compare")
    parser.add_argument("--brief", action="store_true", help="one line per setting")
    parser.add_argument("--block-prior", action="store_true", help="the prior per block candidate (before)")
    args = parser.parse_args()
    if args.persons:
        blocks = collect(args.database_url or f"sqlite:///{args.index}", args.persons, args.incoming, args.seed)
        with open(args.cache, "wb") as f:
            pickle.dump(blocks, f, protocol=pickle.HIGHEST_PROTOCOL)
    else:
        with open(args.cache, "rb") as f:
            blocks = pickle.load(f)
    for weights in args.weights or ["{}"]:
        cfg = MatchConfig().with_overrides(json.loads(weights))
        t0 = time.process_time()
        report = evaluate(blocks, cfg, None if args.block_prior else blocks.total)
        if args.brief:
            tags = report["by_tag"]
            print(
                f"{weights:40} prec {report['certain_precision']} hh {report['household_twin_precision']} "
                f"tw {report['twin_certain_precision']} rec {report['recall_certain_plus_review']} "
                f"swap {tags['swap']['recall']} dobm {tags['dob-missing']['recall']} "
                f"rev {report['review_rate']} abs {report['absent_wrongly_linked']} "
                f"auto {report['auto_link_recall']} miss {list(report['missed'].values())}",
                flush=True,
            )
        else:
            print(json.dumps({"weights": json.loads(weights), **report}), flush=True)
        print(f"({time.process_time() - t0:.0f} s CPU)", file=sys.stderr)


if __name__ == "__main__":
    main()
