"""Run a parsed ``SearchQuery`` against the search index (same SQL on SQLite and PostgreSQL)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Select, and_, bindparam, exists, func, literal, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from ltfu.fhir.search_params import SEARCH_PARAMS, Criterion, SearchQuery
from ltfu.store.resources import ResourceRepository
from ltfu.store.schema import (
    cases,
    endpoint_owners,
    resource_owners,
    resources,
    search_index,
    subscription_counters,
)


@dataclass
class SearchResult:
    matches: list[dict[str, Any]]
    included: list[dict[str, Any]]
    total: int | None
    next_cursor: int | None


def _escape_like(v: str) -> str:
    return v.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _date_clause(col_lo: Any, col_hi: Any, prefix: str, lo: str, hi: str) -> ColumnElement[bool]:
    """Compare the stored range [col_lo, col_hi] with the searched range [lo, hi] (FHIR prefixes)."""
    if prefix in ("eq", "ap"):
        return and_(col_lo >= lo, col_hi <= hi)
    if prefix == "ne":
        return or_(col_lo < lo, col_hi > hi)
    if prefix == "gt":
        return col_hi > hi
    if prefix == "lt":
        return col_lo < lo
    if prefix == "ge":
        return col_hi >= lo
    if prefix == "le":
        return col_lo <= hi
    if prefix == "sa":
        return col_lo > hi
    return col_hi < lo  # eb


def _value_clause(c: Criterion, value: Any) -> ColumnElement[bool]:
    si = search_index
    if c.kind == "token":
        system, code, system_given = value
        parts = []
        if code is not None:
            parts.append(si.c.value == code)
        if system_given:
            parts.append(si.c.system == system if system is not None else si.c.system.is_(None))
        return and_(*parts)
    if c.kind == "reference":
        if value.startswith("*/"):
            return si.c.value.like("%/" + _escape_like(value[2:]), escape="\\")
        return si.c.value == value
    if c.kind == "date":
        return _date_clause(si.c.value, si.c.value_hi, *value)
    if c.modifier == "exact":
        return si.c.value == value
    if c.modifier == "contains":
        return si.c.value.like("%" + _escape_like(value) + "%", escape="\\")
    return si.c.value.like(_escape_like(value) + "%", escape="\\")


def facility_clause(res_type: str, org: str, id_col: Any) -> ColumnElement[bool]:
    """``id_col`` restricted to what ``org`` may see of ``res_type`` (the rule is ``ltfu.services.policy``'s).

    Its cases and what hangs off them (Patient, Task, Encounter/Observation ``basedOn`` the request), what it
    created itself (``resource_owners``), its own Organization, the Endpoints it owns or its Organization was
    given, and its Subscriptions. Nothing else.
    """
    mine = cases.c.organization_id == org
    owners = resource_owners
    owned = id_col.in_(select(owners.c.res_id).where(and_(owners.c.res_type == res_type,
                                                          owners.c.organization_id == org)))
    if res_type == "ServiceRequest":
        return or_(id_col.in_(select(cases.c.case_id).where(mine)), owned)
    if res_type == "Task":
        return or_(id_col.in_(select(cases.c.task_id).where(mine)), owned)
    if res_type == "Patient":
        return or_(id_col.in_(select(cases.c.patient_id).where(mine)), owned)
    if res_type in ("Encounter", "Observation"):
        si = search_index.alias("based")
        linked = (select(si.c.res_id).join(cases, si.c.value == literal("ServiceRequest/") + cases.c.case_id)
                  .where(and_(si.c.res_type == res_type, si.c.param == "based-on", mine)))
        return or_(id_col.in_(linked), owned)
    if res_type == "Organization":
        return id_col == org
    if res_type == "Endpoint":  # created by it, or stored as its own when its Organization first named it
        return or_(owned, id_col.in_(select(endpoint_owners.c.endpoint_id)
                                     .where(endpoint_owners.c.organization_id == org)))
    if res_type == "Subscription":
        counted = select(subscription_counters.c.subscription_id).where(subscription_counters.c.organization_id == org)
        return or_(id_col.in_(counted), owned)
    return owned


@functools.lru_cache(maxsize=64)
def visible_statement(res_type: str) -> Select[Any]:
    """``visible_to``'s statement for ``res_type``, built once (parameters ``org`` and ``i``): the policy
    asks it several times per request, at the driver (``UnitOfWork.fetch``)."""
    clause = facility_clause(res_type, bindparam("org"), resources.c.res_id)
    return select(resources.c.res_id).where(
        and_(resources.c.res_type == res_type, resources.c.res_id == bindparam("i"), clause))


async def visible_to(conn: AsyncConnection, org: str, res_type: str, res_id: str) -> bool:
    """True when ``res_id`` exists (deleted or not) and ``org`` may see it."""
    return (await conn.execute(visible_statement(res_type), {"org": org, "i": res_id})).first() is not None


def _unclaimed(ids: Any) -> ColumnElement[bool]:
    claimed = select(resource_owners.c.res_id).where(resource_owners.c.res_type == "Patient")
    return and_(resources.c.res_type == "Patient", ids, resources.c.deleted.is_(False),
                resources.c.res_id.not_in(claimed), resources.c.res_id.not_in(select(cases.c.patient_id)))


# ``unclaimed_patients`` of one id, built once (parameter ``i``).
UNCLAIMED_PATIENT = select(resources.c.res_id).where(_unclaimed(resources.c.res_id == bindparam("i")))


async def unclaimed_patients(conn: AsyncConnection, ids: list[str]) -> list[str]:
    """Those of ``ids`` that no facility created and that are in no case (e.g. pushed by CHT)."""
    if not ids:
        return []
    found = set((await conn.execute(select(resources.c.res_id).where(_unclaimed(resources.c.res_id.in_(ids)))))
                .scalars())
    return [i for i in ids if i in found]


def _criterion_clause(res_type: str, c: Criterion) -> ColumnElement[bool]:
    r = resources
    if c.kind == "id":
        return r.c.res_id.in_(c.values)
    if c.kind == "lastUpdated":
        return or_(*(_date_clause(r.c.last_updated, r.c.last_updated, *v) for v in c.values))
    si = search_index
    owner = and_(si.c.res_type == res_type, si.c.res_id == r.c.res_id, si.c.param == c.param)
    if c.modifier == "missing":
        has = exists().where(owner)
        return not_(has) if c.values[0] else has
    match = exists().where(and_(owner, or_(*(_value_clause(c, v) for v in c.values))))
    return not_(match) if c.modifier == "not" else match


# A search by an exact key (an identifier, a reference, a code) mostly matches a few resources of a type that
# has many. Asked for its matches in ``seq`` order, the planner walks the whole type along ix_resources_type_seq
# testing each (no statistics tell it how few match): a cost that grows with the store (bench/write_path.py
# growth, "search"). So the index is asked first: when an exact criterion has at most ``FEW`` index rows,
# the page is read by those ids and sorted; else the walk stays (the matches are dense enough for it).
FEW = 500


def _exact(c: Criterion) -> bool:
    """Every value of ``c`` is a key of ix_search_lookup (res_type, param, value)."""
    if not c.values or c.modifier not in (None, "exact"):
        return False
    if c.kind == "token":
        return c.modifier is None and all(v[1] is not None for v in c.values)
    if c.kind == "reference":
        return c.modifier is None and not any(v.startswith("*/") for v in c.values)
    return c.kind == "string" and c.modifier == "exact"


async def _few_ids(conn: AsyncConnection, q: SearchQuery) -> list[str] | None:
    """The ids an exact criterion allows, when at most ``FEW`` index rows match it (None: no such criterion)."""
    si = search_index
    for c in q.criteria:
        if not _exact(c):
            continue
        value = or_(*(_value_clause(c, v) for v in c.values))
        rows = (await conn.execute(select(si.c.res_id).where(and_(si.c.res_type == q.res_type, si.c.param == c.param,
                                                                   value)).limit(FEW + 1))).scalars().all()
        if len(rows) <= FEW:
            return list(dict.fromkeys(rows))
    return None


async def run_search(conn: AsyncConnection, q: SearchQuery) -> SearchResult:
    r = resources
    scope = facility_clause(q.res_type, q.facility, r.c.res_id) if q.facility is not None else None
    where = and_(r.c.res_type == q.res_type, r.c.deleted.is_(False),
                 *(_criterion_clause(q.res_type, c) for c in q.criteria), *([scope] if scope is not None else []))
    few = await _few_ids(conn, q)
    order: Any = r.c.seq
    if few is not None:
        where = and_(where, r.c.res_id.in_(few))
        order = r.c.seq + 0  # sort the few: ordered by the bare column, the planner walks the type's index again
    total = None
    if q.total or q.summary_count:
        total = int((await conn.execute(select(func.count()).select_from(r).where(where))).scalar_one())
    if q.summary_count:
        return SearchResult([], [], total, None)
    page = select(r.c.seq, r.c.content).where(where)
    if q.cursor is not None:
        page = page.where(r.c.seq < q.cursor if q.descending else r.c.seq > q.cursor)
    page = page.order_by(order.desc() if q.descending else order).limit(q.count + 1)
    rows = (await conn.execute(page)).all()
    more = len(rows) > q.count
    rows = rows[: q.count]
    matches = [orjson.loads(row.content) for row in rows]
    next_cursor = rows[-1].seq if more and rows else None
    included = await _includes(conn, q, matches) if (q.includes or q.revincludes) and matches else []
    if q.facility is not None:
        included = [x for x in included if await visible_to(conn, q.facility, x["resourceType"], x["id"])]
    return SearchResult(matches, included, total, next_cursor)


async def _includes(conn: AsyncConnection, q: SearchQuery, matches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen = {(m["resourceType"], m["id"]) for m in matches}
    ids = [m["id"] for m in matches]
    refs: list[tuple[str, str]] = []
    si = search_index
    for res_type, param, target in q.includes:
        rows = await conn.execute(
            select(si.c.value).where(and_(si.c.res_type == res_type, si.c.param == param, si.c.res_id.in_(ids)))
        )
        for (value,) in rows:
            t, _, i = value.partition("/")
            if (target is None or t == target) and (t, i) not in seen:
                refs.append((t, i))
    out = await ResourceRepository(conn).get_many(refs)
    seen.update((x["resourceType"], x["id"]) for x in out)
    targets = [f"{q.res_type}/{i}" for i in ids]
    for res_type, param in q.revincludes:
        if SEARCH_PARAMS[res_type][param].kind != "reference":
            continue
        rows = await conn.execute(
            select(si.c.res_id).where(and_(si.c.res_type == res_type, si.c.param == param, si.c.value.in_(targets)))
        )
        rev = [(res_type, i) for (i,) in rows if (res_type, i) not in seen]
        found = await ResourceRepository(conn).get_many(list(dict.fromkeys(rev)))
        seen.update((x["resourceType"], x["id"]) for x in found)
        out.extend(found)
    return out
