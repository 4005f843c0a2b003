"""The CHT person and place index: rows, blocking keys and name-token counts (SQLite and PostgreSQL).

Candidates for a query are the persons under any of its blocking keys. A key with more than ``cap``
persons is not read (it would be slow and say little) but is reported, never silently dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.domain.matching.normalise import BirthDate
from ltfu.domain.matching.records import Person, Place
from ltfu.store.resources import now_instant
from ltfu.store.schema import (
    cht_name_tokens,
    cht_person_keys,
    cht_persons,
    cht_places,
    cht_sync_state,
    facility_places,
)

ALL = "*"  # the cht_name_tokens row counting every indexed person
_CHUNK = 500  # ids per IN (...) list


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _person_values(p: Person, keys: Iterable[str]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    row = dict(
        person_id=p.id,
        name=p.name or " ".join(p.tokens),
        given=" ".join(p.given)[:255],
        family=" ".join(p.family)[:255],
        sex=p.sex,
        birth_date=p.birth.iso if p.birth else None,
        birth_precision=p.birth.precision if p.birth else None,
        phones=orjson.dumps(list(p.phones)).decode(),
        identifiers=orjson.dumps([list(i) for i in p.identifiers]).decode(),
        parent_id=p.lineage[0] if p.lineage else None,
        household_id=p.household_id,
        chw_area_id=p.chw_area_id,
        unit_id=p.unit_id,
        unit_code=p.unit_code,
        facility_code=p.facility_code,
        lineage=orjson.dumps(list(p.lineage)).decode(),
        flags=" ".join(p.flags),
        updated_at=now_instant(),
    )
    return row, [{"key": k[:200], "person_id": p.id or ""} for k in sorted(set(keys))]


def person_from_row(r: Any) -> Person:
    birth = None
    if r.birth_date:
        y, m, d = (int(x) for x in (r.birth_date.split("-") + ["01", "01"])[:3])
        birth = BirthDate(y, m, d, r.birth_precision or "year")
    return Person(
        id=r.person_id,
        given=tuple(r.given.split()),
        family=tuple(r.family.split()),
        sex=r.sex,
        birth=birth,
        phones=tuple(orjson.loads(r.phones)),
        identifiers=tuple((k, v) for k, v in orjson.loads(r.identifiers)),
        household_id=r.household_id,
        chw_area_id=r.chw_area_id,
        unit_id=r.unit_id,
        unit_code=r.unit_code,
        facility_code=r.facility_code,
        flags=tuple(r.flags.split()),
        name=r.name,
        lineage=tuple(orjson.loads(r.lineage)),
    )


def place_from_row(r: Any) -> Place:
    return Place(
        id=r.place_id,
        contact_type=r.contact_type,
        name=r.name,
        name_norm=r.name_norm,
        code=r.code,
        external_id=r.external_id,
        link_facility_code=r.link_facility_code,
        lineage=tuple(orjson.loads(r.lineage)),
    )


class ChtIndexRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self._dialect = sqlite if conn.dialect.name == "sqlite" else postgresql

    # ---- persons ---------------------------------------------------------------------------------
    async def put_persons(self, persons: Sequence[tuple[Person, set[str]]]) -> None:
        """Insert or replace persons with their blocking keys; name-token counts follow."""
        persons = list({p.id: (p, k) for p, k in persons}.values())  # the last version of each wins
        if not persons:
            return
        ids = [p.id or "" for p, _ in persons]
        old_tokens, found = await self._tokens_of(ids)
        await self._delete(ids)
        rows, keys = [], []
        new_tokens: Counter[str] = Counter()
        for person, person_keys in persons:
            row, key_rows = _person_values(person, person_keys)
            rows.append(row)
            keys.extend(key_rows)
            new_tokens.update(set(person.tokens))
        await self.conn.execute(insert(cht_persons), rows)
        if keys:
            await self.conn.execute(insert(cht_person_keys), keys)
        new_tokens[ALL] += len(rows)
        old_tokens[ALL] += len(found)
        delta = Counter(new_tokens)
        delta.subtract(old_tokens)
        await self._count_tokens({t: n for t, n in delta.items() if n})

    async def remove_persons(self, ids: Sequence[str]) -> int:
        old, found = await self._tokens_of(ids)
        await self._delete(ids)
        old[ALL] += len(found)
        await self._count_tokens({t: -n for t, n in old.items() if n})
        return len(found)

    async def _tokens_of(self, ids: Sequence[str]) -> tuple[Counter[str], set[str]]:
        """Token counts of the stored versions of ``ids``, and which of the ids are stored."""
        out: Counter[str] = Counter()
        found: set[str] = set()
        for chunk in _chunks(list(ids)):
            rows = await self.conn.execute(
                select(cht_persons.c.person_id, cht_persons.c.given, cht_persons.c.family).where(
                    cht_persons.c.person_id.in_(chunk)
                )
            )
            for r in rows:
                found.add(r.person_id)
                out.update(set((r.given + " " + r.family).split()))
        return out, found

    async def _delete(self, ids: Sequence[str]) -> None:
        for chunk in _chunks(list(ids)):
            await self.conn.execute(delete(cht_person_keys).where(cht_person_keys.c.person_id.in_(chunk)))
            await self.conn.execute(delete(cht_persons).where(cht_persons.c.person_id.in_(chunk)))

    async def _count_tokens(self, delta: dict[str, int]) -> None:
        if not delta:
            return
        stmt = self._dialect.insert(cht_name_tokens)
        stmt = stmt.on_conflict_do_update(
            index_elements=[cht_name_tokens.c.token],
            set_={"persons": cht_name_tokens.c.persons + stmt.excluded.persons},
        )
        await self.conn.execute(stmt, [{"token": t[:64], "persons": n} for t, n in sorted(delta.items())])

    async def person(self, person_id: str) -> Person | None:
        row = (await self.conn.execute(select(cht_persons).where(cht_persons.c.person_id == person_id))).first()
        return person_from_row(row) if row else None

    async def persons(self, ids: Sequence[str]) -> list[Person]:
        out: list[Person] = []
        for chunk in _chunks(sorted(set(ids))):
            rows = await self.conn.execute(select(cht_persons).where(cht_persons.c.person_id.in_(chunk)))
            out.extend(person_from_row(r) for r in rows)
        return out

    async def candidates(self, keys: Iterable[str], cap: int) -> tuple[list[Person], list[str]]:
        """(the persons under ``keys``, the keys skipped because they hold more than ``cap`` persons)."""
        wanted = sorted({k[:200] for k in keys})
        if not wanted:
            return [], []
        sizes = await self.conn.execute(
            select(cht_person_keys.c.key, func.count())
            .where(cht_person_keys.c.key.in_(wanted))
            .group_by(cht_person_keys.c.key)
        )
        usable, overflow = [], []
        for key, n in sizes:
            (overflow if n > cap else usable).append(key)
        if not usable:
            return [], sorted(overflow)
        ids = select(cht_person_keys.c.person_id).where(cht_person_keys.c.key.in_(usable)).distinct()
        rows = await self.conn.execute(select(cht_persons).where(cht_persons.c.person_id.in_(ids)))
        return [person_from_row(r) for r in rows], sorted(overflow)

    async def frequencies(self, tokens: Iterable[str]) -> dict[str, float]:
        """Share of indexed persons carrying each token."""
        wanted = sorted({t[:64] for t in tokens} | {ALL})
        rows = await self.conn.execute(
            select(cht_name_tokens.c.token, cht_name_tokens.c.persons).where(cht_name_tokens.c.token.in_(wanted))
        )
        counts = {r.token: r.persons for r in rows}
        total = counts.pop(ALL, 0)
        return {t: n / total for t, n in counts.items() if total > 0 and n > 0}

    async def count_persons(self) -> int:
        return (await self.conn.execute(select(func.count()).select_from(cht_persons))).scalar_one()

    # ---- places ----------------------------------------------------------------------------------
    async def put_places(self, places: Sequence[Place]) -> None:
        if not places:
            return
        ids = [p.id for p in places]
        for chunk in _chunks(ids):
            await self.conn.execute(delete(cht_places).where(cht_places.c.place_id.in_(chunk)))
        now = now_instant()
        await self.conn.execute(
            insert(cht_places),
            [
                dict(
                    place_id=p.id,
                    contact_type=p.contact_type,
                    name=p.name,
                    name_norm=p.name_norm,
                    code=p.code,
                    external_id=p.external_id,
                    link_facility_code=p.link_facility_code,
                    parent_id=p.parent_id,
                    lineage=orjson.dumps(list(p.lineage)).decode(),
                    updated_at=now,
                )
                for p in places
            ],
        )

    async def remove_places(self, ids: Sequence[str]) -> None:
        for chunk in _chunks(list(ids)):
            await self.conn.execute(delete(cht_places).where(cht_places.c.place_id.in_(chunk)))

    async def places(self, ids: Iterable[str]) -> dict[str, Place]:
        out: dict[str, Place] = {}
        for chunk in _chunks(sorted(set(ids))):
            for r in await self.conn.execute(select(cht_places).where(cht_places.c.place_id.in_(chunk))):
                out[r.place_id] = place_from_row(r)
        return out

    async def places_where(
        self, *, code: str | None = None, link_facility_code: str | None = None, parent_id: str | None = None
    ) -> list[Place]:
        stmt = select(cht_places)
        if code is not None:
            stmt = stmt.where(cht_places.c.code == code)
        if link_facility_code is not None:
            stmt = stmt.where(cht_places.c.link_facility_code == link_facility_code)
        if parent_id is not None:
            stmt = stmt.where(cht_places.c.parent_id == parent_id)
        return [place_from_row(r) for r in await self.conn.execute(stmt.order_by(cht_places.c.place_id))]

    async def places_under(self, roots: Iterable[str], contact_types: Iterable[str] | None = None) -> list[Place]:
        """The roots and every place below them (breadth first), optionally of some contact types only."""
        seen: dict[str, Place] = await self.places(roots)
        frontier = list(seen)
        while frontier:
            children: list[Place] = []
            for chunk in _chunks(frontier):
                rows = await self.conn.execute(select(cht_places).where(cht_places.c.parent_id.in_(chunk)))
                children.extend(place_from_row(r) for r in rows)
            frontier = [c.id for c in children if c.id not in seen]
            seen.update({c.id: c for c in children})
        types = set(contact_types) if contact_types is not None else None
        return [p for p in seen.values() if types is None or p.contact_type in types]

    # ---- a facility's explicit catchment --------------------------------------------------------------
    async def link_facility(self, organization_id: str, place_ids: Sequence[str]) -> int:
        have = set(await self.facility_place_ids(organization_id))
        new = [p for p in dict.fromkeys(place_ids) if p not in have]
        if new:
            await self.conn.execute(insert(facility_places),
                                    [{"organization_id": organization_id, "place_id": p} for p in new])
        return len(new)

    async def unlink_facility(self, organization_id: str, place_ids: Sequence[str]) -> None:
        await self.conn.execute(delete(facility_places).where(facility_places.c.organization_id == organization_id,
                                                              facility_places.c.place_id.in_(list(place_ids))))

    async def facility_place_ids(self, organization_id: str) -> list[str]:
        rows = await self.conn.execute(select(facility_places.c.place_id)
                                       .where(facility_places.c.organization_id == organization_id)
                                       .order_by(facility_places.c.place_id))
        return [r.place_id for r in rows]

    # ---- sync state ------------------------------------------------------------------------------
    async def sync_seq(self, name: str) -> str | None:
        row = (await self.conn.execute(select(cht_sync_state.c.seq).where(cht_sync_state.c.name == name))).first()
        return row.seq if row else None

    async def set_sync_seq(self, name: str, seq: str) -> None:
        done = await self.conn.execute(
            update(cht_sync_state).where(cht_sync_state.c.name == name).values(seq=seq, updated_at=now_instant())
        )
        if done.rowcount == 0:
            await self.conn.execute(insert(cht_sync_state).values(name=name, seq=seq, updated_at=now_instant()))
