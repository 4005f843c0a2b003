"""The fast paths of matching decide exactly as the plain ones: the one-statement block read (SQLite and
PostgreSQL) returns the persons of the blocking keys, and skipping candidates by ``weight_bound`` changes no
candidate, score, grade or veto. On a seeded community (the benchmark's generator)."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace

import pytest
from sqlalchemy import select

from ltfu.cht.people_index import person_of
from ltfu.domain.matching import MatchConfig, index_keys, match, query_keys
from ltfu.domain.matching import matcher as matcher_module
from ltfu.domain.matching.blocking import WIDE_CAP
from ltfu.domain.matching.matcher import _with_household_phones, prior_log_odds
from ltfu.domain.matching.scoring import score, weight_bound
from ltfu.emulators.population import Community, absent_patient, facility_patient
from ltfu.fhir.match_patient import person_from_patient
from ltfu.fhir.systems import Systems
from ltfu.services.cht_index import index_docs
from ltfu.services.matching import find_matches
from ltfu.settings import Settings
from ltfu.store import cht_index as cht_index_store
from ltfu.store.db import Database
from ltfu.store.schema import cht_person_keys
from ltfu.store.uow import unit_of_work
from tests.support.blocks import Keys, read_block

CFG = MatchConfig()


def _community(seed: int, persons: int, incoming: int) -> tuple[list[dict], list, list]:
    """(place and person docs, the persons as the index holds them, incoming facility patients)."""
    rng = random.Random(seed)
    community = Community(seed)
    docs: list[dict] = []
    people, patients = [], []
    for places, hh in community.stream(persons):
        docs.extend(places)
        if hh is None:
            continue
        docs.append(hh.place)
        for m in hh.members:
            docs.append(m.doc)
            people.append(replace(person_of(m.doc), household_id=hh.place["_id"]))
            if rng.random() < incoming / persons:
                patients.append(facility_patient(rng, m, hh, f"MRN-{len(patients)}").patient)
        if rng.random() < 0.05:
            patients.append(absent_patient(rng, community, hh, f"MRN-{len(patients)}").patient)
    systems = Systems("http://ltfu.test")
    settings = Settings()
    incoming_people = [
        person_from_patient(p, systems, settings.match_identifiers, settings.match_default_region) for p in patients
    ]
    return docs, people, incoming_people


def _inverted(people: list) -> tuple[Keys, dict[str, object]]:
    out: dict[str, set[str]] = {}
    for p in people:
        for k in index_keys(p):
            out.setdefault(k, set()).add(p.id)
    return Keys(out), {p.id: p for p in people}


def _blocks(index: tuple[Keys, dict[str, object]], incoming) -> list:
    by_key, everyone = index
    ids, _ = read_block(by_key, query_keys(incoming), CFG.block_cap)
    return [everyone[i] for i in sorted(ids)]


def _signature(result) -> tuple:
    return (
        result.considered,
        result.reasons,
        tuple((c.person_id, c.grade, c.weight, c.probability, c.reasons, c.fields) for c in result.candidates),
        sorted(result.vetoed),
    )


def test_skipping_by_the_bound_changes_no_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    _, people, incoming = _community(21, 5000, 250)
    by_key = _inverted(people)
    counts = Counter(t for p in people for t in set(p.tokens))

    def freq(token: str) -> float | None:
        return counts[token] / len(people) if counts[token] else None

    pairs = skipped = 0
    fast = []
    for q in incoming:
        block = _blocks(by_key, q)
        prior = prior_log_odds(CFG, len(people))
        for candidate in _with_household_phones(block):
            bound, actual = weight_bound(q, candidate, freq, CFG), score(q, candidate, freq, CFG).weight
            assert bound >= actual - 1e-9, (q, candidate)
            pairs += 1
            skipped += bound + prior < 0
        fast.append(_signature(match(q, block, freq, CFG, population=len(people))))
    # the plain matcher: every candidate scored
    monkeypatch.setattr(matcher_module, "bounder", lambda *_: lambda _candidate: math.inf)
    plain = [_signature(match(q, _blocks(by_key, q), freq, CFG, population=len(people))) for q in incoming]
    assert fast == plain
    assert sum(1 for s in plain if s[2]) > 100  # most incoming patients have candidates
    assert pairs > 2000 and skipped > pairs / 2  # and the bound does skip most of the scoring


async def test_one_statement_reads_the_block_the_keys_name(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every kind of key (exact, capped, prefix read whole, prefix beyond ``WIDE_CAP`` read by its finer key)
    as the plain rule of ``tests/support/blocks.py`` says (``wide=1``: every crowded prefix by its fine key)."""
    docs, _, incoming = _community(22, 1500, 60)
    async with unit_of_work(db) as uow:
        await index_docs(uow, docs)
        rows = await uow.conn.execute(select(cht_person_keys.c.key, cht_person_keys.c.person_id))
        by_key: dict[str, set[str]] = {}
        for key, pid in rows:
            by_key.setdefault(key, set()).add(pid)
        everyone = {p.id: p for p in await uow.cht_index.persons([p for s in by_key.values() for p in s])}
        stored = Keys(by_key)
        tokens = Counter(t for p in everyone.values() for t in set(p.tokens))
        for cap, wide in ((2000, WIDE_CAP), (8, WIDE_CAP), (2000, 1)):
            monkeypatch.setattr(cht_index_store, "WIDE_CAP", wide)
            for q in incoming:
                keys = query_keys(q)
                want, overflow = read_block(stored, keys, cap, wide)
                block = await uow.cht_index.block(keys, q.tokens, cap, ids=["nobody", next(iter(everyone))])
                want.add(next(iter(everyone)))
                assert sorted(p.id for p in block.persons) == sorted(want)
                assert all(p == everyone[p.id] for p in block.persons)
                assert block.overflow == overflow
                assert block.frequencies == {t: tokens[t] / len(everyone) for t in set(q.tokens) if tokens[t]}
        # and the service decides on it as on the same persons handed over directly
        freq = {t: n / len(everyone) for t, n in tokens.items()}
        for q in incoming[:30]:
            result = await find_matches(uow, q)
            direct = match(
                q,
                [everyone[pid] for pid in {p.id for p in (await uow.cht_index.block(query_keys(q), (), 2000)).persons}],
                freq.get,
                CFG,
                population=len(everyone),
            )
            assert _signature(result) == _signature(direct)
