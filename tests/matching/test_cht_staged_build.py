"""A sync from ``0`` is staged and merged once the feed is read (SQLite and PostgreSQL): the index it leaves is
the one page-by-page indexing leaves; it resumes after a crash from the staged sequence; a push during the
build wins over the staged version of its person; a deletion or a later version in the feed wins over an
earlier staged one."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy import func, select

from ltfu.cht.client import ChtResponse
from ltfu.delivery.cht_sync import STAGE_NAME, ChtSync
from ltfu.domain.matching import index_keys
from ltfu.services.cht_index import index_docs, index_person_doc
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.schema import cht_name_tokens, cht_person_keys, cht_stage_persons
from ltfu.store.uow import unit_of_work
from tests.matching.test_cht_index import AREA, HOUSE, UNIT, person_doc


class Feed:
    """``_changes`` over a list of docs (seq = position); ``fail_at``: the request of that page fails."""

    def __init__(self, docs: list[dict[str, Any]], fail_at: int | None = None) -> None:
        self.docs, self.fail_at, self.requests, self.since = docs, fail_at, 0, []

    async def request(self, method: str, path: str, body: object = None) -> ChtResponse:
        query = parse_qs(urlparse(path).query)
        since, limit = int(query["since"][0]), int(query["limit"][0])
        self.since.append(since)
        self.requests += 1
        if self.requests == self.fail_at:
            raise ConnectionError("CHT went away")
        page = self.docs[since : since + limit]
        results = [
            {"id": d["_id"], "seq": str(since + i + 1), "deleted": True}
            if d.get("_deleted")
            else {"id": d["_id"], "seq": str(since + i + 1), "doc": d}
            for i, d in enumerate(page)
        ]
        return ChtResponse(200, {"results": results, "last_seq": str(since + len(page))}, 0)

    async def close(self) -> None:
        return None


def community(n: int) -> list[dict[str, Any]]:
    names = ("Grace Akinyi Wambui", "Peter Otieno", "Mary Njeri Kamau", "John Kamau", "Ann Wanjiru")
    docs: list[dict[str, Any]] = [UNIT, AREA, HOUSE]
    for i in range(n):
        docs.append(person_doc(f"p{i:03d}", names[i % 5], sex="female" if i % 2 else "male",
                               date_of_birth=f"19{60 + i % 40}-0{1 + i % 9}-1{i % 10}", phone=f"+2547120{i:05d}"))
    return docs


async def index_state(db: Database) -> tuple[dict[str, Any], set[tuple[str, str]], dict[str, int]]:
    async with unit_of_work(db) as uow:
        rows = set(await uow.conn.execute(select(cht_person_keys.c.key, cht_person_keys.c.person_id)))
        tokens = dict((await uow.conn.execute(select(cht_name_tokens.c.token, cht_name_tokens.c.persons))).all())
        ids = sorted({pid for _, pid in rows} | {"p000"})
        persons = {p.id: p for p in await uow.cht_index.persons(ids)}
        return persons, {(k, p) for k, p in rows}, tokens


async def test_a_staged_build_leaves_the_index_page_by_page_indexing_leaves(db: Database, settings: Settings) -> None:
    docs = community(23)
    sync = ChtSync(db, settings, Feed(docs), page=5)  # type: ignore[arg-type]
    result = await sync.sync_once()
    assert result.persons == 23 and result.seq == str(len(docs))
    staged = await index_state(db)
    persons, keys, tokens = staged
    assert len(persons) == 23 and keys == {(k, pid) for pid, p in persons.items() for k in index_keys(p)}
    assert tokens["*"] == 23 and tokens["KAMAU"] == sum("KAMAU" in p.tokens for p in persons.values()) == 9
    async with unit_of_work(db) as uow:
        assert await uow.cht_index.sync_seq("medic") == str(len(docs))
        assert await uow.cht_index.sync_seq(STAGE_NAME) is None
        assert (await uow.conn.execute(select(func.count()).select_from(cht_stage_persons))).scalar_one() == 0
    # the same docs indexed page by page (the path of an incremental sync) leave the same index
    async with unit_of_work(db) as uow:
        await uow.cht_index.remove_persons(list(persons))
        for i in range(0, len(docs), 5):
            await index_docs(uow, docs[i : i + 5])
    assert await index_state(db) == staged


async def test_a_staged_build_resumes_from_its_sequence_after_a_crash(db: Database, settings: Settings) -> None:
    docs = community(23)
    feed = Feed(docs, fail_at=4)
    sync = ChtSync(db, settings, feed, page=5)  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        await sync.sync_once()
    async with unit_of_work(db) as uow:
        assert await uow.cht_index.sync_seq(STAGE_NAME) == "15"  # three pages staged
        assert await uow.cht_index.sync_seq("medic") is None
        assert await uow.cht_index.count_persons() == 0  # nothing merged yet
    result = await sync.sync_once()  # no --full: the staged build goes on from where it stopped
    assert feed.since == [0, 5, 10, 15, 15, 20, 25]
    assert result.seq == str(len(docs))
    persons, keys, tokens = await index_state(db)
    assert len(persons) == 23 and tokens["*"] == 23


async def test_a_push_during_the_build_wins_and_a_later_version_or_deletion_in_the_feed_too(
    db: Database, settings: Settings
) -> None:
    docs = community(12)
    # p003 changed in CHT during the build: the feed gives it again later; p004 deleted after it was read
    docs.append(person_doc("p003", "Peter Otieno Ochieng", sex="male", date_of_birth="1963-04-13"))
    docs.append({"_id": "p004", "_deleted": True})
    feed = Feed(docs, fail_at=2)
    sync = ChtSync(db, settings, feed, page=5)  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        await sync.sync_once()  # p000…p001 staged
    # a push of p000 meanwhile: a new phone, without the lineage and UPI a push's mapping may leave out
    async with unit_of_work(db) as uow:
        await index_person_doc(uow, {"_id": "p000", "type": "person", "name": "Peter Otieno",
                                     "phone": "+254799000000"})
    await sync.sync_once()
    persons, keys, _ = await index_state(db)
    p0 = persons["p000"]
    assert p0.phones == ("+254799000000",)  # the push's phone wins …
    assert p0.household_id == "hh1" and p0.birth is not None  # … the staged doc fills what it lacked
    assert ("ph:+254799000000", "p000") in keys and ("ph:+254712000000", "p000") not in keys
    assert persons["p003"].given == ("PETER", "OTIENO") and persons["p003"].family == ("OCHIENG",)
    assert "p004" not in persons and not any(pid == "p004" for _, pid in keys)
    assert keys == {(k, pid) for pid, p in persons.items() for k in index_keys(p)}


async def test_a_push_before_the_staging_reads_its_person_loses_to_the_staged_doc(
    db: Database, settings: Settings
) -> None:
    docs = community(6)
    async with unit_of_work(db) as uow:  # pushed before the first sync: the feed's version is as new or newer
        await index_person_doc(uow, {"_id": "p002", "type": "person", "name": "Mary Kamau", "phone": "+254799000002"})
    await ChtSync(db, settings, Feed(docs), page=4).sync_once()  # type: ignore[arg-type]
    persons, keys, tokens = await index_state(db)
    assert persons["p002"].given == ("MARY", "NJERI") and persons["p002"].phones == ("+254712000002",)
    assert keys == {(k, pid) for pid, p in persons.items() for k in index_keys(p)}
    assert tokens["*"] == 6
