"""The CHT person and place index: rows, blocking keys and name-token counts (SQLite and PostgreSQL).

Candidates for a query are the persons under any of its blocking keys. A key with more than ``cap``
persons is not read (it would be slow and say little) but is reported, never silently dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.domain.matching.blocking import WIDE_CAP, QueryKey
from ltfu.domain.matching.normalise import BirthDate
from ltfu.domain.matching.records import Person, Place
from ltfu.store.resources import now_instant
from ltfu.store.schema import (
    cht_name_tokens,
    cht_person_keys,
    cht_persons,
    cht_places,
    cht_stage_persons,
    cht_sync_state,
    facility_places,
)

if TYPE_CHECKING:
    from ltfu.store.db import Database

ALL = "*"  # the cht_name_tokens row counting every indexed person
_CHUNK = 500  # ids per IN (...) list
_COPY_MIN = 200  # rows from which PostgreSQL's COPY beats an INSERT


# The last staged row of each person (a person staged twice: changed in CHT during the build, or a page read
# again after a crash).
_LAST_STAGED = "SELECT max(stage_id) FROM cht_stage_persons GROUP BY person_id"

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


def _person_values(p: Person, keys: Collection[str], now: str) -> tuple[tuple[Any, ...], list[tuple[str, str]]]:
    """The ``cht_persons`` row (``_ROW_COLUMNS``) and the ``cht_person_keys`` rows of a person.

    The row lists its keys (``block_keys``): replacing or removing a person deletes exactly those key rows by
    their primary key, so ``cht_person_keys`` needs no second index on ``person_id`` (a second B-tree that
    every write of a full build would update at random places)."""
    birth = p.birth
    stored = sorted(keys) if all(len(k) <= 200 for k in keys) else sorted({k[:200] for k in keys})
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


def _after(prefix: str) -> str:
    """The least string above every string that starts with ``prefix`` (the end of its key range)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _range_rows(table: str, limit: str, pg: bool) -> str:
    """The person ids of the ranges of ``table`` that hold at most ``limit`` rows. PostgreSQL reads each
    range in a ``LATERAL`` subquery with that limit (it cuts nothing: the range was counted), which tells
    its planner how few rows a range gives (it cannot know, and would otherwise merge-join every person)."""
    where = _IN_RANGE.format(t=table)
    if pg:
        return (
            f"SELECT r.person_id FROM {table} CROSS JOIN LATERAL (SELECT k.person_id FROM cht_person_keys k "
            f"WHERE {where} LIMIT {limit}) r WHERE {table}.n <= {limit}"
        )
    return f"SELECT k.person_id FROM cht_person_keys k JOIN {table} ON {where} WHERE {table}.n <= {limit}"


_COUNT = "(SELECT count(*) FROM (SELECT 1 FROM cht_person_keys k WHERE {where} LIMIT {limit}) s)"
_IN_RANGE = "k.key >= {t}.lo AND k.key < {t}.hi"


@lru_cache(maxsize=512)
def _block_sql(groups: tuple[int, ...], fine: int, whole: int, tokens: int, ids: int, pg: bool = False) -> Any:
    """One statement for a whole query (one round trip): each key's size counted up to its cap + 1 only (a
    huge key costs no more than a small one), the persons of the keys within their cap (and of ``ids``), the
    overflowing keys of the first group (the block cap; the other groups' caps are silent), and the
    name-token counts — told apart by ``kind`` (0 person, 1 key, 2 token). ``groups``: keys per cap. Built once
    per shape (numbers of keys): making a ``text()`` parses its bind parameters, a tenth of a query's CPU.

    Prefixes (key ranges ``[lo, hi)``): ``fine`` ones are read while they hold at most ``:wide`` persons, and
    beyond it their finer key joins the first group; ``whole`` ones are read within the block cap (the
    first group's) and reported above it.

    PostgreSQL cannot estimate how many rows a key range holds (it guesses millions) and would then read every
    person to merge-join them: the ids are collected into an array first (``= ANY(ARRAY(…))``), so the
    persons are looked up one by one in their primary key."""
    ctes, sized = [], []
    for g, n in enumerate(groups):
        values = ", ".join(f"(:k{g}_{i})" for i in range(n)) or "(NULL)"
        ctes.append(f"q{g}(key) AS (VALUES {values})")
        sized.append(
            f"SELECT q{g}.key AS key, {g} AS grp, CAST(:cap{g} AS INTEGER) AS cap, "
            f"{_COUNT.format(where=f'k.key = q{g}.key', limit=f':over{g}')} AS n FROM q{g}"
        )
    fine_values = ", ".join(f"(:fl{i}, :fh{i}, :ff{i})" for i in range(fine)) or "(NULL, NULL, NULL)"
    whole_values = ", ".join(f"(:wl{i}, :wh{i})" for i in range(whole)) or "(NULL, NULL)"
    ctes.append(f"rf(lo, hi, fine) AS (VALUES {fine_values})")
    ctes.append(f"rw(lo, hi) AS (VALUES {whole_values})")
    ctes.append(
        f"fsized AS (SELECT rf.lo, rf.hi, rf.fine, {_COUNT.format(where=_IN_RANGE.format(t='rf'), limit=':wide_over')}"
        " AS n FROM rf)"
    )
    ctes.append(
        f"wsized AS (SELECT rw.lo, rw.hi, {_COUNT.format(where=_IN_RANGE.format(t='rw'), limit=':over0')} AS n FROM rw)"
    )
    sized.append(
        f"SELECT fsized.fine, 0, CAST(:cap0 AS INTEGER), {_COUNT.format(where='k.key = fsized.fine', limit=':over0')}"
        " FROM fsized WHERE fsized.n > :wide"
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
  SELECT k.person_id FROM cht_person_keys k JOIN sized ON k.key = sized.key WHERE sized.n <= sized.cap
  UNION {_range_rows("fsized", ":wide", pg)}
  UNION {_range_rows("wsized", ":cap0", pg)}{by_id}
)
SELECT 0 AS kind, CAST(NULL AS INTEGER) AS persons, {cols}
FROM cht_persons p WHERE {"p.person_id = ANY(ARRAY(SELECT person_id FROM ids))" if pg else
    "p.person_id IN (SELECT person_id FROM ids)"}
UNION ALL SELECT 1, NULL, sized.key, {pad} FROM sized WHERE sized.n > sized.cap AND sized.grp = 0
UNION ALL SELECT 1, NULL, wsized.lo, {pad} FROM wsized WHERE wsized.n > :cap0
UNION ALL SELECT 2, t.persons, t.token, {pad} FROM cht_name_tokens t WHERE t.token IN ({token_list})
"""
    return text(sql)


@dataclass
class _Plan:
    """A query's keys as the statement reads them: exact keys by cap (the block cap first), prefixes with a
    finer key (``prefix → fine``), prefixes read whole."""

    groups: dict[int, list[str]]
    fine: dict[str, str]
    whole: list[str]


def _plan(keys: Iterable[QueryKey | str], cap: int) -> _Plan:
    """Exact keys grouped by their cap, the block cap first (its overflowing keys are reported); a key
    asked with several caps is read with the largest. A prefix asked both with and without a finer key is
    read whole."""
    best: dict[str, int] = {}
    fine: dict[str, str] = {}
    whole: set[str] = set()
    for k in keys:
        if isinstance(k, str):
            k = QueryKey(k)
        key = k.key[:200]
        if k.prefix:
            if k.fine is None:
                whole.add(key)
            else:
                fine[key] = k.fine[:200]
            continue
        best[key] = max(best.get(key, 0), cap if k.cap is None else min(k.cap, cap))
    groups: dict[int, list[str]] = {cap: []}
    for key, c in sorted(best.items()):
        groups.setdefault(c, []).append(key)
    return _Plan(groups, {p: f for p, f in sorted(fine.items()) if p not in whole}, sorted(whole))


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
        plain form of :meth:`block`."""
        found = await self.block(keys, (), cap)
        return found.persons, found.overflow

    async def block(
        self, keys: Iterable[QueryKey | str], tokens: Iterable[str], cap: int, ids: Iterable[str] = ()
    ) -> Block:
        """Everything one query reads, in one statement: the persons under ``keys`` (keys holding more than
        ``cap`` persons are skipped and reported; a ``QueryKey`` with its own cap is skipped silently above
        it; prefixes as ``QueryKey`` tells), the persons with the CHT ``ids``, and the frequencies of the name
        ``tokens`` (share of indexed persons carrying each)."""
        plan = _plan(keys, cap)
        groups = list(plan.groups.items())
        toks = sorted({t[:64] for t in tokens} | {ALL})
        by_id = sorted(set(ids))
        wide = min(WIDE_CAP, cap)
        params: dict[str, Any] = {"wide": wide, "wide_over": wide + 1}
        for g, (c, group) in enumerate(groups):
            params.update({f"cap{g}": c, f"over{g}": c + 1})
            params.update({f"k{g}_{i}": k for i, k in enumerate(group)})
        for i, (lo, fine) in enumerate(plan.fine.items()):
            params.update({f"fl{i}": lo, f"fh{i}": _after(lo), f"ff{i}": fine})
        for i, lo in enumerate(plan.whole):
            params.update({f"wl{i}": lo, f"wh{i}": _after(lo)})
        params.update({f"t{i}": t for i, t in enumerate(toks)})
        params.update({f"i{i}": v for i, v in enumerate(by_id)})
        out = Block()
        counts: dict[str, int] = {}
        pg = self.conn.dialect.name != "sqlite"
        sql = _block_sql(tuple(len(g) for _, g in groups), len(plan.fine), len(plan.whole), len(toks), len(by_id), pg)
        rows = await self.conn.execute(sql, params)
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

    # ---- a staged first full build -------------------------------------------------------------------
    async def stage_persons(self, persons: Sequence[tuple[Person, set[str]]], removed: Sequence[str] = ()) -> None:
        """Append persons (and deletions) to the staging table: no index to update, so a page costs its rows
        only; :meth:`merge_stage` moves the last staged version of each person into the index."""
        now = now_instant()
        rows = [(False, *_person_values(p, k, now)[0]) for p, k in persons]
        rows += [(True, pid, "", "", "", None, None, None, "[]", "[]", None, None, None, None, None, None, "[]",
                  "", "[]", now) for pid in removed]
        await self._bulk_insert(cht_stage_persons, ("deleted", *_ROW_COLUMNS), rows)

    async def clear_stage(self) -> None:
        await self.conn.execute(delete(cht_stage_persons))

    async def staged_over_indexed(self) -> list[tuple[Person | None, str, Person, str]]:
        """The persons staged that the index holds already (pushed meanwhile, or before the build): (the last
        staged version or None for a deletion, when staged, the indexed version, when indexed)."""
        cols = ", ".join(f"p.{c}" for c in _SCAN_COLUMNS)
        staged = ", ".join(f"s.{c}" for c in _SCAN_COLUMNS)
        rows = await self.conn.execute(
            text(
                f"SELECT s.deleted, s.updated_at, p.updated_at, {staged}, {cols} FROM cht_stage_persons s "
                f"JOIN cht_persons p ON p.person_id = s.person_id WHERE s.stage_id IN ({_LAST_STAGED})"
            )
        )
        n = len(_SCAN_COLUMNS)
        return [
            (None if r[0] else _person_from_values(r[3 : 3 + n]), r[1], _person_from_values(r[3 + n :]), r[2])
            for r in rows
        ]

    async def merge_stage(self) -> int:
        """Move the last staged version of every person the index does not hold into it, in key order (one
        pass over each B-tree instead of a page rewrite per batch), then empty the staging table; the name
        token counts are counted again. Persons the index holds are the caller's (:meth:`staged_over_indexed`).
        Returns the persons moved."""
        new = (
            f"WHERE s.stage_id IN ({_LAST_STAGED}) AND NOT s.deleted "
            "AND NOT EXISTS (SELECT 1 FROM cht_persons p WHERE p.person_id = s.person_id)"
        )
        each = (
            "json_each(s.block_keys) j"
            if self.conn.dialect.name == "sqlite"
            else "LATERAL jsonb_array_elements_text(CAST(s.block_keys AS jsonb)) AS j(value)"
        )
        await self.conn.execute(  # the keys first: ``new`` reads cht_persons as it was
            text(
                "INSERT INTO cht_person_keys (key, person_id) SELECT j.value, s.person_id "
                f"FROM cht_stage_persons s CROSS JOIN {each} {new} ORDER BY 1, 2"
            )
        )
        cols = ", ".join(_ROW_COLUMNS)
        moved = await self.conn.execute(
            text(
                f"INSERT INTO cht_persons ({cols}) SELECT {', '.join('s.' + c for c in _ROW_COLUMNS)} "
                f"FROM cht_stage_persons s {new} ORDER BY s.person_id"
            )
        )
        await self.clear_stage()
        await self.recount_tokens()
        return moved.rowcount

    async def recount_tokens(self) -> None:
        """The name-token counts from the persons indexed (a page at a time by primary key)."""
        counts: Counter[str] = Counter()
        last, total = "", 0
        while True:
            rows = (
                await self.conn.execute(
                    select(cht_persons.c.person_id, cht_persons.c.given, cht_persons.c.family)
                    .where(cht_persons.c.person_id > last)
                    .order_by(cht_persons.c.person_id)
                    .limit(20_000)
                )
            ).all()
            if not rows:
                break
            last = rows[-1].person_id
            total += len(rows)
            for r in rows:
                counts.update({t[:64] for t in (r.given + " " + r.family).split()})
        counts[ALL] = total
        await self.conn.execute(delete(cht_name_tokens))
        items = sorted(counts.items())
        for chunk in _chunks(items, 5000):
            await self._bulk_insert(cht_name_tokens, ("token", "persons"), list(chunk))

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

    async def forget_sync_seq(self, name: str) -> None:
        await self.conn.execute(delete(cht_sync_state).where(cht_sync_state.c.name == name))

    async def set_sync_seq(self, name: str, seq: str) -> None:
        done = await self.conn.execute(
            update(cht_sync_state).where(cht_sync_state.c.name == name).values(seq=seq, updated_at=now_instant())
        )
        if done.rowcount == 0:
            await self.conn.execute(insert(cht_sync_state).values(name=name, seq=seq, updated_at=now_instant()))
