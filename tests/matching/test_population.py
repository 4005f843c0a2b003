"""The seeded community of the benchmark and the demo, and the matcher's accuracy on a small one."""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from pathlib import Path

from ltfu.emulators.population import Community, facility_patient, typo

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


def _households(seed: int, persons: int) -> list:
    return [hh for _, hh in Community(seed).stream(persons) if hh is not None]


def test_the_community_is_seeded_and_kenyan_like() -> None:
    a, b = _households(5, 3000), _households(5, 3000)
    assert [m.doc for h in a for m in h.members] == [m.doc for h in b for m in h.members]
    sizes = Counter(len(h.members) for h in a)
    assert set(sizes) <= set(range(3, 8))
    docs = [m.doc for h in a for m in h.members]
    assert 0.10 < sum(1 for d in docs if d.get("upi")) / len(docs) < 0.20
    assert any(m.twin_of for h in a for m in h.members)
    assert all(d["parent"]["_id"] == h.place["_id"] for h in a for d in (m.doc for m in h.members))
    families = Counter(d["last_name"] for d in docs)
    top = families.most_common(1)[0][1]
    assert top > 5 * (len(docs) / len(families))  # a skew: some family names are very common


def test_facility_view_perturbs_and_keeps_the_truth() -> None:
    rng = random.Random(3)
    hh = _households(7, 200)[0]
    seen = Counter()
    for _ in range(300):
        incoming = facility_patient(rng, hh.members[0], hh, "MRN-1")
        assert incoming.truth == hh.members[0].doc["_id"]
        seen.update(incoming.tags)
    assert {"typo", "swap", "dob-missing", "phone-changed"} <= set(seen)
    assert typo(random.Random(1), "Otieno", 1) != "Otieno"


async def test_accuracy_on_a_small_community() -> None:
    import matching as bench

    report = await bench.run(
        argparse.Namespace(
            persons=4000,
            incoming=400,
            seed=21,
            database_url=None,
            weights=None,
            examples="",
            examples_min_weight=-100.0,
        )
    )
    assert report["certain_precision"] >= 0.99
    assert report["absent_wrongly_linked"] <= 0.01
    assert report["recall_certain_plus_review"] >= 0.93
