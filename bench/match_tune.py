"""Tune the matcher's weights and thresholds in minutes, not hours: the blocks of ``bench/matching.py``'s
incoming patients, read once from an in-memory copy of its index, then graded again for every setting.

``bench/matching.py`` builds its index through SQL (a 1e6 build takes ~40 min on this machine); grading is
pure (``domain.matching.match``) and needs only each query's block: its candidates, the overflowing keys and
the name frequencies. This tool generates the same community and the same incoming patients (it runs the
bench's own ``build`` with the SQL writes replaced), indexes the persons in memory exactly as
``services.cht_index.index_docs`` does (the same ``person_of``, placement, ``index_keys``, the row round trip
of ``store.cht_index``), answers each query as ``ChtIndex.block`` does (key caps, overflow of the block cap,
token frequencies over every indexed person) and keeps the blocks in a pickle. Then:

    nice -n 5 .venv/bin/python bench/match_tune.py --persons 1000000 --cache /tmp/blocks-1e6.pickle
    nice -n 5 .venv/bin/python bench/match_tune.py --cache /tmp/blocks-1e6.pickle \
        --weights '{"calibration_bits": -5}' --weights '{"calibration_bits": -7}'

prints, per setting, the figures ``bench/matching.py`` reports (precision, recall, review, absent linked, by
perturbation type). Latency is not measured here: ``bench/matching.py`` remains the benchmark; this is the
tuning loop. The blocks depend on the blocking keys (``index_keys``/``query_keys``): rebuild the cache after
changing them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from ltfu.cht.people_index import contact_kind, lineage_of, person_of, place_of  # noqa: E402
from ltfu.domain.matching import MatchConfig, index_keys, match, query_keys  # noqa: E402
from ltfu.domain.matching.blocking import QueryKey  # noqa: E402
from ltfu.domain.matching.records import Person, Place  # noqa: E402
from ltfu.fhir.match_patient import person_from_patient  # noqa: E402
from ltfu.fhir.systems import Systems  # noqa: E402
from ltfu.services.cht_index import _placement, place_levels  # noqa: E402
from ltfu.settings import Settings  # noqa: E402
from ltfu.store.cht_index import _person_from_values, _person_values  # noqa: E402

# _SCAN_COLUMNS positions within the _ROW_COLUMNS row of store.cht_index (person_id … flags, lineage)
_SCAN = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 15)


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


def _groups(keys: list[QueryKey], cap: int) -> tuple[dict[str, int], set[str]]:
    """As ``store.cht_index._by_cap``: each key's cap (the largest asked), and the keys of the block cap."""
    best: dict[str, int] = {}
    for k in keys:
        key = k.key[:200]
        best[key] = max(best.get(key, 0), cap if k.cap is None else min(k.cap, cap))
    return best, {k for k, c in best.items() if c == cap}


async def _incoming(persons: int, incoming: int, seed: int) -> list[Any]:
    async def nothing(uow: Any, batch: list) -> None:
        return None

    bench.index_docs = nothing
    out, _, _ = await bench.build(None, persons, incoming, seed)  # type: ignore[arg-type]
    return out


def collect(persons: int, incoming: int, seed: int, cap: int) -> Blocks:
    """Two passes of the bench's generator: the incoming patients and their keys, then the index."""

    @contextlib.asynccontextmanager
    async def no_uow(db: Any):
        yield None

    async def no_vacuum(db: Any) -> None:
        return None

    bench.unit_of_work = no_uow
    bench.vacuum_analyze = no_vacuum
    t0 = time.process_time()
    items = asyncio.run(_incoming(persons, incoming, seed))[:incoming]
    settings = Settings(workers=False)
    systems = Systems(settings.base_url)
    queries = [
        person_from_patient(i.patient, systems, settings.match_identifiers, settings.match_default_region)
        for i in items
    ]
    asked = [_groups(query_keys(q), cap) for q in queries]
    wanted = {k for best, _ in asked for k in best}
    print(f"pass 1: {len(items)} incoming, {len(wanted)} keys, {time.process_time() - t0:.0f} s CPU", file=sys.stderr)

    holders: dict[str, list[int]] = defaultdict(list)  # key → indexes (up to the largest cap + 1)
    sizes: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    rows: dict[int, Person] = {}
    places: dict[str, Place] = {}
    levels = place_levels(settings)
    count = [0]

    async def index(uow: Any, batch: list) -> None:
        people = []
        for doc in batch:
            kind = contact_kind(doc, settings.cht_person_types)
            if kind == "place":
                p = place_of(doc)
                places[p.id] = p
            elif kind == "person":
                people.append((doc, lineage_of(doc)))
        where: dict[tuple[str, ...], dict] = {}
        for doc, lineage in people:
            if (placement := where.get(lineage)) is None:
                placement = where[lineage] = _placement(lineage, places, levels)
            person = person_of(doc, settings.match_default_region, lineage, **placement)
            keys = index_keys(person)
            n = count[0]
            count[0] += 1
            tokens.update(set(person.tokens))
            hit = False
            for k in {k[:200] for k in keys}:
                if k in wanted:
                    sizes[k] += 1
                    if sizes[k] <= cap + 1:
                        holders[k].append(n)
                        hit = True
            if hit:
                row, _ = _person_values(person, keys, "")
                rows[n] = _person_from_values([row[i] for i in _SCAN])

    async def second() -> None:
        bench.index_docs = index
        await bench.build(None, persons, incoming, seed)  # type: ignore[arg-type]

    asyncio.run(second())
    total = count[0]
    print(f"pass 2: {total} persons indexed, {len(rows)} in a block, {time.process_time() - t0:.0f} s CPU",
          file=sys.stderr)
    order = sorted(rows)
    position = {n: i for i, n in enumerate(order)}
    out = []
    for item, q, (best, block_cap_keys) in zip(items, queries, asked, strict=True):
        found: set[int] = set()
        overflow = []
        for k, c in best.items():
            if sizes[k] <= c:
                found.update(holders[k])
            elif k in block_cap_keys:
                overflow.append(k)
        freq = {t: tokens[t[:64]] / total for t in q.tokens if tokens[t[:64]]}
        out.append(Query(item, q, sorted(position[n] for n in found), sorted(overflow), freq))
    return Blocks([rows[n] for n in order], out, total)


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
            missed = (
                "missed-not-retrieved"
                if item.truth not in {p.id for p in pool}
                else "missed-vetoed"
                if item.truth in {v for v, _ in result.vetoed}
                else "missed-below-possible"
            )
        best = result.best
        certain = best is not None and best.grade == "certain"
        outcome = (
            "certain-correct"
            if certain and best.person_id == item.truth
            else "certain-wrong"
            if certain
            else "review-with-truth"
            if item.truth in ids
            else "review-without-truth"
            if ids
            else "none"
        )
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
    parser.add_argument("--persons", type=int, default=None, help="build the cache (else read it)")
    parser.add_argument("--incoming", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--cache", required=True, help="pickle of the blocks")
    parser.add_argument("--weights", action="append", default=[], help="JSON overrides; repeat to compare")
    parser.add_argument("--brief", action="store_true", help="one line per setting")
    parser.add_argument("--block-prior", action="store_true", help="the prior per block candidate (before)")
    args = parser.parse_args()
    if args.persons:
        blocks = collect(args.persons, args.incoming, args.seed, MatchConfig().block_cap)
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
