"""Blocking keys: one perturbation never loses a true match on its own, while a common name no longer brings
every person sharing its phonetic code (the other sex, other birth years, other initials)."""

from __future__ import annotations

import pytest

from ltfu.domain.matching import Person, index_keys, query_keys
from ltfu.domain.matching.blocking import DATED_PAIR_CAP
from ltfu.domain.matching.normalise import birth_date, name_tokens
from ltfu.services.cht_index import index_docs
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work


def person(given: str, family: str, sex: str | None = "F", dob: str | None = "1988-11-23") -> Person:
    return Person(
        id="p1", given=name_tokens(given), family=name_tokens(family), sex=sex, birth=birth_date(dob) if dob else None
    )


def reaches(incoming: Person, stored: Person, *, capped: bool = True, crowded: bool = False) -> bool:
    """Whether a query key reaches a stored key; ``crowded``: every prefix holds more than ``WIDE_CAP``
    persons (a common name at 1e6), so only its finer key is read."""
    keys = index_keys(stored)
    for k in query_keys(incoming):
        if not capped and k.cap is not None:
            continue
        if crowded and k.fine is not None:
            if k.fine in keys:
                return True
        elif any(k.reaches(s) for s in keys):
            return True
    return False


CHT = person("Grace Akinyi", "Wambui")


@pytest.mark.parametrize("crowded", [False, True])
def test_one_perturbation_alone_keeps_the_person_reachable(crowded: bool) -> None:
    """Also when every name prefix is crowded (only the finer keys read)."""
    assert reaches(person("Grace Akinyi", "Wambui"), CHT, crowded=crowded)
    assert reaches(person("Wambui", "Grace"), CHT, crowded=crowded)  # swapped
    assert reaches(person("Gramce", "Wambui"), CHT, crowded=crowded)  # a typo in the given name (another Soundex)
    assert reaches(person("Grace", "Wamgui"), CHT, crowded=crowded)  # a typo in the family name (another Soundex)
    assert reaches(person("Grace", "Wambui", dob="1989-11-23"), CHT, crowded=crowded)  # the year off by one
    assert reaches(person("Grace", "Wambui", dob="1988"), CHT, crowded=crowded)  # year-only
    assert reaches(person("Grace", "Wambui", dob=None), CHT, crowded=crowded)  # no birth date
    assert not reaches(person("Wambui", "Gramce", dob=None), CHT, crowded=crowded)  # a typo and no birth date
    assert reaches(person("Grace", "Wambui", sex=None), CHT, crowded=crowded)  # the sex unknown here
    assert reaches(person("Grace", "Wambui"), person("Grace Akinyi", "Wambui", sex=None), crowded=crowded)  # …or CHT
    assert reaches(person("", "Wambui"), CHT, crowded=crowded)  # one token only
    assert reaches(person("Grace", "Wambui"), person("", "Wambui"), crowded=crowded)  # a CHT person with one token
    assert reaches(person("Grace", "Wambui"), person("Grace Akinyi", "Wambui", dob=None), crowded=crowded)


def test_a_crowded_prefix_keeps_the_typos_the_soundex_digit_survives() -> None:
    """Beyond ``WIDE_CAP`` only the finer key (initial + first Soundex digit of the other token) is read: a
    typo in a vowel, a dropped or doubled letter keep it; with two tokens, a typo that changes both the
    token's Soundex and its first digit loses the person (the wide prefix would have held it)."""
    cht = person("Grace", "Kamau")
    for typo in ("Kamao", "Kmau", "Kammau", "Kamua"):
        assert reaches(person("Grace", typo), cht, crowded=True)
    assert reaches(person("Grace", "Kbmau"), cht)  # the prefix (G620, K) while it is small …
    assert not reaches(person("Grace", "Kbmau"), cht, crowded=True)  # … not when crowded: K1 is not K5
    assert reaches(person("Grace Wanjiru", "Kbmau"), person("Grace Wanjiru", "Kamau"), crowded=True)  # a third token


def test_name_keys_leave_out_who_cannot_be_the_patient() -> None:
    assert not reaches(person("Grace", "Wambui", sex="M"), CHT)  # the other sex: a veto anyway
    # two years apart: only through the pair key, read when it is small (rare names)
    assert not reaches(person("Grace", "Wambui", dob="1986-11-23"), CHT, capped=False)
    assert reaches(person("Grace", "Wambui", dob="1986-11-23"), CHT)
    assert not reaches(person("Grace", "Otieno"), CHT)  # another Grace: her other names start otherwise
    assert reaches(person("Grace", "Omondi"), person("Grace Akinyi", "Otieno"))  # …and the same initial does


def test_pair_keys_with_a_birth_date_are_read_only_when_small() -> None:
    dated = [k for k in query_keys(person("Grace", "Wambui")) if k.key.startswith("np:")]
    assert dated and all(k.cap == DATED_PAIR_CAP for k in dated)
    undated = [k for k in query_keys(person("Grace", "Wambui", dob=None)) if k.key.startswith("np:")]
    assert undated and all(k.cap is None for k in undated)


def _doc(pid: str, name: str, dob: str) -> dict:
    return {"_id": pid, "type": "person", "name": name, "sex": "female", "date_of_birth": dob}


async def test_a_large_pair_key_is_skipped_silently_for_a_dated_patient(db: Database) -> None:
    """A rare name born four years apart comes through the pair key; a common one's pair key is left out
    without an overflow (its persons born within a year come through the year keys)."""
    docs = [_doc("rare", "Zawadi Chepkwony", "1984-03-02")]
    docs += [_doc(f"c{i}", "Grace Wambui", f"19{50 + i % 50}-03-02") for i in range(DATED_PAIR_CAP + 1)]
    async with unit_of_work(db) as uow:
        await index_docs(uow, docs)
        rare = await uow.cht_index.block(query_keys(person("Zawadi", "Chepkwony", dob="1988-03-02")), (), 2000)
        assert [p.id for p in rare.persons] == ["rare"]
        common = await uow.cht_index.block(query_keys(person("Grace", "Wambui", dob="1988-03-02")), (), 2000)
        assert sorted(p.id for p in common.persons) == sorted(
            f"c{i}" for i in range(DATED_PAIR_CAP + 1) if 1987 <= 1950 + i % 50 <= 1989
        )
        assert common.overflow == []
        undated = await uow.cht_index.block(query_keys(person("Grace", "Wambui", dob=None)), (), 2000)
        assert len(undated.persons) == DATED_PAIR_CAP + 1
        capped = await uow.cht_index.block(query_keys(person("Grace", "Wambui", dob=None)), (), 50)
        assert capped.persons == [] and capped.overflow == ["np:G620:W510:F"]


async def test_the_migration_rewrites_an_index_built_with_the_keys_before(db: Database) -> None:
    """0018 re-derives every person's keys from its row (down: the keys of 0006), no CHT sync needed."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import select

    from ltfu.store.db import MIGRATIONS
    from ltfu.store.schema import cht_person_keys

    docs = [_doc(f"p{i}", name, "1990-02-03") for i, name in enumerate(("Grace Akinyi Wambui", "Otieno", "Ann N"))]
    docs.append({"_id": "x", "type": "person", "name": "Mary Njeri", "phone": "+254712000111", "upi": "MOH1X2Y3Z4"})
    async with unit_of_work(db) as uow:
        await index_docs(uow, docs)

    def migrate(sync_conn: object, to: str, up: bool) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = sync_conn
        (command.upgrade if up else command.downgrade)(cfg, to)

    async def stored() -> dict[str, set[str]]:
        async with db.connect() as conn:
            out: dict[str, set[str]] = {}
            for key, pid in await conn.execute(select(cht_person_keys.c.key, cht_person_keys.c.person_id)):
                out.setdefault(pid, set()).add(key)
            return out

    async with unit_of_work(db) as uow:
        wanted = {p.id: index_keys(p) for p in await uow.cht_index.persons(["p0", "p1", "p2", "x"])}
    assert await stored() == wanted
    async with db.engine.begin() as conn:
        await conn.run_sync(migrate, "0013", False)
    before = await stored()
    assert "ty:G620:1990" in before["p0"] and "np:G620:W510" in before["p0"] and "ph:+254712000111" in before["x"]
    async with db.engine.begin() as conn:
        await conn.run_sync(migrate, "head", True)
    assert await stored() == wanted
