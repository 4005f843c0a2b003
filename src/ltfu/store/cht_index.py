"""The CHT person and place index: rows, blocking keys and name-token counts (SQLite and PostgreSQL).

Candidates for a query are the persons under any of its blocking keys. A key with more than ``cap``
persons is not read (it would be slow and say little) but is reported, never silently dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.domain.matching.blocking import QueryKey
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

if TYPE_CHECKING:
    from ltfu.store.db import Database

ALL = "*"  # the cht_name_tokens row counting every indexed person
_CHUNK = 500  # ids per IN (...) list
_COPY_MIN = 200  # rows from which PostgreSQL's COPY beats an INSERT


_PG_DELETE_KEYS = text(
    "DELETE FROM cht_person_keys WHERE (key, person_id) IN "
    "(SELECT * FROM unnest(CAST(:k AS varchar[]), CAST(:p AS varchar[])))"
)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


_ROW_COLUMNS = (
    "person_id",
    "name",
    "given",
    "family",
    "sex",
    "birth_date",
    "birth_precision",
    "phones",
    "identifiers",
    "parent_id",
    "household_id",
    "chw_area_id",
    "unit_id",
    "unit_code",
    "facility_code",
    "lineage",
    "flags",
    "block_keys",
    "updated_at",
)
_KEY_COLUMNS = ("key", "person_id")


def _person_values(p: Person, keys: Iterable[str], now: str) -> tuple[tuple[Any, ...], list[tuple[str, str]]]:
    """The ``cht_persons`` row (``_ROW_COLUMNS``) and the ``cht_person_keys`` rows of a person.

    The row lists its keys (``block_keys``): replacing or removing a person deletes exactly those key rows by
    their primary key, so ``cht_person_keys`` needs no second index on ``person_id`` (a second B-tree that
    every write of a full build would update at random places)."""
    birth = p.birth
    stored = sorted({k[:200] for k in keys})
    row = (
        p.id,
        p.name or " ".join(p.tokens),
        " ".join(p.given)[:255],
        " ".join(p.family)[:255],
        p.sex,
        birth.iso if birth else None,
        birth.precision if birth else None,
        orjson.dumps(p.phones).decode(),
        orjson.dumps(p.identifiers).decode(),
        p.lineage[0] if p.lineage else None,
        p.household_id,
        p.chw_area_id,
        p.unit_id,
        p.unit_code,
        p.facility_code,
        orjson.dumps(p.lineage).decode(),
        " ".join(p.flags),
        orjson.dumps(stored).decode(),
        now,
    )
    pid = p.id or ""
    return row, [(k, pid) for k in stored]


@lru_cache(maxsize=1 << 16)
def _birth(iso: str, precision: str | None) -> BirthDate:
    """A stored birth date (``YYYY-MM-DD`` or ``YYYY``); dates repeat across persons, so parsed once each."""
    y, m, d = (int(x) for x in (iso.split("-") + ["01", "01"])[:3])
    return BirthDate(y, m, d, precision or "year")


def person_from_row(r: Any) -> Person:
    return Person(
        id=r.person_id,
        given=tuple(r.given.split()),
        family=tuple(r.family.split()),
        sex=r.sex,
        birth=_birth(r.birth_date, r.birth_precision) if r.birth_date else None,
        phones=tuple(orjson.loads(r.phones)),
        identifiers=tuple(map(tuple, orjson.loads(r.identifiers))),
        household_id=r.household_id,
        chw_area_id=r.chw_area_id,
        unit_id=r.unit_id,
        unit_code=r.unit_code,
        facility_code=r.facility_code,
        flags=tuple(r.flags.split()),
        name=r.name,
        lineage=tuple(orjson.loads(r.lineage)),
    )


# The columns a query reads, in this order (``_person_from_values``).
_SCAN_COLUMNS = (
    "person_id",
    "name",
    "given",
    "family",
    "sex",
    "birth_date",
    "birth_precision",
    "phones",
    "identifiers",
    "household_id",
    "chw_area_id",
    "unit_id",
    "unit_code",
    "facility_code",
    "flags",
    "lineage",
)


def _person_from_values(values: Sequence[Any]) -> Person:
    """``person_from_row`` for the positional values of ``_SCAN_COLUMNS``: the hot loop of every query."""
    (
        pid,
        name,
        given,
        family,
        sex,
        birth,
        precision,
        phones,
        idents,
        household,
        area,
        unit,
        unit_code,
        facility_code,
        flags,
        lineage,
    ) = values
    return Person(
        id=pid,
        given=tuple(given.split()),
        family=tuple(family.split()),
        sex=sex,
        birth=_birth(birth, precision) if birth else None,
        phones=tuple(orjson.loads(phones)),
        identifiers=tuple(map(tuple, orjson.loads(idents))),
        household_id=household,
        chw_area_id=area,
        unit_id=unit,
        unit_code=unit_code,
        facility_code=facility_code,
        flags=tuple(flags.split()),
        name=name,
        lineage=tuple(orjson.loads(lineage)),
    )


@dataclass
class Block:
    """What one query needs from the index: the candidates, the keys too large to read, name frequencies."""

    persons: list[Person] = field(default_factory=list)
    overflow: list[str] = field(default_factory=list)
    frequencies: dict[str, float] = field(default_factory=dict)


def _block_sql(groups: Sequence[int], tokens: int, ids: int) -> Any:
    """One statement for a whole query (one round trip): each key's size counted up to its cap + 1 only (a
    huge key costs no more than a small one), the persons of the keys within their cap (and of ``ids``), the
    overflowing keys of the first group (the block cap; the other groups' caps are silent), and the
    name-token counts — told apart by ``kind`` (0 person, 1 key, 2 token). ``groups``: keys per cap."""
    ctes, sized = [], []
    for g, n in enumerate(groups):
        values = ", ".join(f"(:k{g}_{i})" for i in range(n)) or "(NULL)"
        ctes.append(f"q{g}(key) AS (VALUES {values})")
        sized.append(
            f"SELECT q{g}.key AS key, {g} AS grp, CAST(:cap{g} AS INTEGER) AS cap, (SELECT count(*) FROM "
            f"(SELECT 1 FROM cht_person_keys k WHERE k.key = q{g}.key LIMIT :over{g}) s) AS n FROM q{g}"
        )
    by_id = (
        (
            " UNION SELECT person_id FROM cht_persons WHERE person_id IN ("
            + ", ".join(f":i{i}" for i in range(ids))
            + ")"
        )
        if ids
        else ""
    )
    cols = ", ".join(f"p.{c}" for c in _SCAN_COLUMNS)
    pad = ", ".join(["NULL"] * (len(_SCAN_COLUMNS) - 1))
    token_list = ", ".join(f":t{i}" for i in range(tokens))
    sql = f"""
WITH {", ".join(ctes)},
sized AS ({" UNION ALL ".join(sized)}),
ids AS (
  SELECT k.person_id FROM cht_person_keys k JOIN sized ON k.key = sized.key WHERE sized.n <= sized.cap{by_id}
)
SELECT 0 AS kind, CAST(NULL AS INTEGER) AS persons, {cols}
FROM cht_persons p WHERE p.person_id IN (SELECT person_id FROM ids)
UNION ALL SELECT 1, NULL, sized.key, {pad} FROM sized WHERE sized.n > sized.cap AND sized.grp = 0
UNION ALL SELECT 2, t.persons, t.token, {pad} FROM cht_name_tokens t WHERE t.token IN ({token_list})
"""
    return text(sql)


def _by_cap(keys: Iterable[QueryKey | str], cap: int) -> dict[int, list[str]]:
    """Keys grouped by their cap, the block cap first (its overflowing keys are reported); a key asked
    with several caps is read with the largest."""
    best: dict[str, int] = {}
    for k in keys:
        key, own = (k, None) if isinstance(k, str) else (k.key, k.cap)
        key = key[:200]
        best[key] = max(best.get(key, 0), cap if own is None else min(own, cap))
    groups: dict[int, list[str]] = {cap: []}
    for key, c in sorted(best.items()):
        groups.setdefault(c, []).append(key)
    return groups


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


async def vacuum_analyze(db: Database) -> None:
    """After a large load (PostgreSQL): statistics for the planner (a query planned meanwhile sees the tables
    as they were, e.g. empty) and the visibility map, without which the key table is read through bitmap heap
    scans instead of index-only scans. Outside a transaction, as VACUUM must run; autovacuum would come later."""
    if db.is_sqlite:
        return
    async with db.engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.execute(text("VACUUM (ANALYZE) cht_persons, cht_person_keys, cht_name_tokens, cht_places"))


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
        old_tokens, found = await self._take(ids)
        rows, keys = [], []
        new_tokens: Counter[str] = Counter()
        now = now_instant()
        for person, person_keys in persons:
            row, key_rows = _person_values(person, person_keys, now)
            rows.append(row)
            keys.extend(key_rows)
            new_tokens.update(set(person.tokens))
        keys.sort()  # in key order: a large batch fills the key B-tree page by page, not all over it
        await self._bulk_insert(cht_persons, _ROW_COLUMNS, rows)
        await self._bulk_insert(cht_person_keys, _KEY_COLUMNS, keys)
        new_tokens[ALL] += len(rows)
        old_tokens[ALL] += len(found)
        delta = Counter(new_tokens)
        delta.subtract(old_tokens)
        await self._count_tokens({t: n for t, n in delta.items() if n})

    async def _bulk_insert(self, table: Any, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        """Many rows at the driver's speed: SQLAlchemy's per-row parameter handling is most of a large load's
        time. PostgreSQL: ``COPY`` for a large batch (a full sync), one multi-row statement for a few rows."""
        if not rows:
            return
        if self.conn.dialect.name == "sqlite":
            marks = ", ".join("?" * len(columns))
            await self.conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})", rows)
        elif len(rows) >= _COPY_MIN:
            raw = await self.conn.get_raw_connection()
            await raw.driver_connection.copy_records_to_table(table.name, records=rows, columns=list(columns))
        else:
            await self.conn.execute(insert(table), [dict(zip(columns, r, strict=True)) for r in rows])

    async def remove_persons(self, ids: Sequence[str]) -> int:
        old, found = await self._take(ids)
        old[ALL] += len(found)
        await self._count_tokens({t: -n for t, n in old.items() if n})
        return len(found)

    async def _take(self, ids: Sequence[str]) -> tuple[Counter[str], set[str]]:
        """Delete the stored versions of ``ids`` with their keys: (their token counts, which ids were stored).
        One statement per chunk when none is stored (a first load), two otherwise."""
        out: Counter[str] = Counter()
        found: set[str] = set()
        for chunk in _chunks(list(ids)):
            rows = await self.conn.execute(
                delete(cht_persons)
                .where(cht_persons.c.person_id.in_(chunk))
                .returning(cht_persons.c.person_id, cht_persons.c.given, cht_persons.c.family, cht_persons.c.block_keys)
            )
            taken: list[tuple[str, str]] = []
            for r in rows:
                found.add(r.person_id)
                out.update(set((r.given + " " + r.family).split()))
                taken.extend((k, r.person_id) for k in orjson.loads(r.block_keys))
            await self._delete_keys(taken)
        return out, found

    async def _delete_keys(self, rows: list[tuple[str, str]]) -> None:
        """Delete ``(key, person_id)`` rows by their primary key."""
        if not rows:
            return
        if self.conn.dialect.name == "sqlite":
            await self.conn.exec_driver_sql("DELETE FROM cht_person_keys WHERE key = ? AND person_id = ?", rows)
        else:
            await self.conn.execute(_PG_DELETE_KEYS, {"k": [k for k, _ in rows], "p": [p for _, p in rows]})

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

    async def candidates(self, keys: Iterable[QueryKey | str], cap: int) -> tuple[list[Person], list[str]]:
        """(the persons under ``keys``, the keys skipped because they hold more than ``cap`` persons): the
        plain form of :meth:`block` (keys with their own cap are skipped silently above it)."""
        groups = _by_cap(keys, cap)
        own = {k: c for c, ks in groups.items() for k in ks}
        if not own:
            return [], []
        sizes = await self.conn.execute(
            select(cht_person_keys.c.key, func.count())
            .where(cht_person_keys.c.key.in_(sorted(own)))
            .group_by(cht_person_keys.c.key)
        )
        usable, overflow = [], []
        for key, n in sizes:
            if n <= own[key]:
                usable.append(key)
            elif key in groups[cap]:
                overflow.append(key)
        if not usable:
            return [], sorted(overflow)
        ids = select(cht_person_keys.c.person_id).where(cht_person_keys.c.key.in_(usable)).distinct()
        rows = await self.conn.execute(select(cht_persons).where(cht_persons.c.person_id.in_(ids)))
        return [person_from_row(r) for r in rows], sorted(overflow)

    async def block(
        self, keys: Iterable[QueryKey | str], tokens: Iterable[str], cap: int, ids: Iterable[str] = ()
    ) -> Block:
        """Everything one query reads, in one statement: the persons under ``keys`` (keys holding more than
        ``cap`` persons are skipped and reported; a ``QueryKey`` with its own cap is skipped silently above
        it), the persons with the CHT ``ids``, and the frequencies of the name ``tokens`` (share of indexed
        persons carrying each)."""
        groups = list(_by_cap(keys, cap).items())
        toks = sorted({t[:64] for t in tokens} | {ALL})
        by_id = sorted(set(ids))
        params: dict[str, Any] = {}
        for g, (c, group) in enumerate(groups):
            params.update({f"cap{g}": c, f"over{g}": c + 1})
            params.update({f"k{g}_{i}": k for i, k in enumerate(group)})
        params.update({f"t{i}": t for i, t in enumerate(toks)})
        params.update({f"i{i}": v for i, v in enumerate(by_id)})
        out = Block()
        counts: dict[str, int] = {}
        rows = await self.conn.execute(_block_sql([len(g) for _, g in groups], len(toks), len(by_id)), params)
        for row in rows:
            kind = row[0]
            if kind == 0:
                out.persons.append(_person_from_values(row[2:]))
            elif kind == 1:
                out.overflow.append(row[2])
            else:
                counts[row[2]] = row[1]
        out.overflow.sort()
        total = counts.pop(ALL, 0)
        out.frequencies = {t: n / total for t, n in counts.items() if total > 0 and n > 0}
        return out

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
            await self.conn.execute(
                insert(facility_places), [{"organization_id": organization_id, "place_id": p} for p in new]
            )
        return len(new)

    async def unlink_facility(self, organization_id: str, place_ids: Sequence[str]) -> None:
        await self.conn.execute(
            delete(facility_places).where(
                facility_places.c.organization_id == organization_id, facility_places.c.place_id.in_(list(place_ids))
            )
        )

    async def facility_place_ids(self, organization_id: str) -> list[str]:
        rows = await self.conn.execute(
            select(facility_places.c.place_id)
            .where(facility_places.c.organization_id == organization_id)
            .order_by(facility_places.c.place_id)
        )
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
