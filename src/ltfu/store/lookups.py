"""A new case's look-ups in one statement: whether its request key is a known case, the resources it
references (the requester Organization, the subject Patient) by id and by identifier, and the requester's
subscriptions. The answers go where the repositories remember what they read, so the service's own
look-ups that follow (``cases.by_request_key``, ``resources.get``, ``find_ids_by_token``, the facility's
subscriptions) ask no one: one round trip instead of four on PostgreSQL, one statement instead of four
on SQLite. Each branch is the statement its repository would have sent, so the answers are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    Integer,
    Text,
    and_,
    bindparam,
    cast,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy.sql import CompoundSelect

from ltfu.store.driver import compiled
from ltfu.store.schema import callback_secrets, cases, resources, search_index, subscription_counters
from ltfu.store.uow import UnitOfWork

_r, _si, _sc, _cs = resources.c, search_index.c, subscription_counters.c, callback_secrets.c
_JOINED = and_(_r.res_type == _si.res_type, _r.res_id == _si.res_id)

_SUBSCRIPTION_ROWS = (subscription_counters
                      .outerjoin(resources, and_(_r.res_type == "Subscription", _r.res_id == _sc.subscription_id))
                      .outerjoin(callback_secrets, and_(_cs.res_type == "Subscription",
                                                        _cs.res_id == _sc.subscription_id)))
# A facility's subscriptions with their current rows and header secrets (the request reads all three).
SUBSCRIPTIONS_OF = (select(_sc.subscription_id, _r.version_id, _r.deleted, _r.last_updated, _r.content, _cs.headers)
                    .select_from(_SUBSCRIPTION_ROWS).where(_sc.organization_id == bindparam("o"))
                    .order_by(_sc.subscription_id))


@dataclass(frozen=True)
class Ref:
    """A reference to look up: ``res_id`` (a key that may be an id) and/or an identifier token
    (``system`` None: any system), as ``services.requests._resolve_reference`` would."""

    res_type: str
    res_id: str | None
    system: str | None
    value: str


_CASE, _SUBSCRIPTION = 0, 1  # tags of the branches; a ref's id and token branches follow from 2


def _tag(n: int) -> Any:
    return literal_column(str(n)).label("tag")


def _nulls() -> list[Any]:
    return [cast(null(), Integer), cast(null(), Boolean), cast(null(), Text), cast(null(), Text), cast(null(), Text),
            cast(null(), Text)]


_STATEMENTS: dict[tuple[Any, ...], CompoundSelect] = {}


def _statement(shape: tuple[Any, ...]) -> CompoundSelect:
    found = _STATEMENTS.get(shape)
    if found is not None:
        return found
    refs, subscriptions = shape
    branches = [select(_tag(_CASE), cases.c.case_id, *_nulls()).where(cases.c.request_key == bindparam("k"))]
    for i, (by_id, by_system) in enumerate(refs):
        t, v = bindparam(f"t{i}"), bindparam(f"v{i}")
        if by_id:
            branches.append(select(_tag(2 + 2 * i), _r.res_id, _r.version_id, _r.deleted, _r.last_updated,
                                   _r.content, cast(null(), Text), cast(null(), Text))
                            .where(and_(_r.res_type == t, _r.res_id == bindparam(f"i{i}"))))
        where = [_si.res_type == t, _si.param == "identifier", _si.value == v]
        if by_system:
            where.append(_si.system == bindparam(f"s{i}"))
        token = (select(_r.res_id, _r.version_id, _r.deleted, _r.last_updated, _r.content)
                 .select_from(search_index.join(resources, _JOINED)).where(and_(*where)).limit(10).subquery())
        branches.append(select(_tag(3 + 2 * i), token.c.res_id, token.c.version_id, token.c.deleted,
                               token.c.last_updated, token.c.content, cast(null(), Text), cast(null(), Text)))
        if subscriptions == i:  # the subscriptions of the Organizations this ref finds, by id or by identifier
            found_ids = [select(_si.res_id).where(and_(*where))]
            if by_id:
                found_ids.append(select(_r.res_id).where(and_(_r.res_type == t, _r.res_id == bindparam(f"i{i}"))))
            branches.append(select(_tag(_SUBSCRIPTION), _sc.subscription_id, _r.version_id, _r.deleted,
                                   _r.last_updated, _r.content, _cs.headers, _sc.organization_id)
                            .select_from(_SUBSCRIPTION_ROWS)
                            .where(_sc.organization_id.in_(union_all(*found_ids).scalar_subquery())))
    found = _STATEMENTS[shape] = union_all(*branches)
    return found


async def prime_new_case(uow: UnitOfWork, request_key: str, refs: list[Ref],
                         subscriptions_of: int | None) -> dict[str, list[tuple[Any, ...]]] | None:
    """Send the look-ups; the repositories remember the answers. ``subscriptions_of``: the index of the ref
    that names the requester: returned are the subscriptions (``SUBSCRIPTIONS_OF``'s rows, in its order) of
    every Organization it finds, for the caller to remember. None when nothing was sent: no driver, or rows
    held (the token look-ups would send them first, which the look-ups they stand for never do)."""
    if uow.driver is None or uow.buffer.pending:
        return None
    shape = (tuple((r.res_id is not None, r.system is not None) for r in refs), subscriptions_of)
    params: dict[str, Any] = {"k": request_key}
    for i, r in enumerate(refs):
        params[f"t{i}"], params[f"v{i}"] = r.res_type, r.value
        if r.res_id is not None:
            params[f"i{i}"] = r.res_id
        if r.system is not None:
            params[f"s{i}"] = r.system
    rows = await uow.driver.fetch(compiled(_statement(shape), uow.driver.dialect), params)
    by_tag: dict[int, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_tag.setdefault(row[0], []).append(row[1:])
    if _CASE not in by_tag:
        uow.cases.known_absent(request_key)
    orgs: list[str] = []
    for i, r in enumerate(refs):
        if r.res_id is not None:
            found = by_tag.get(2 + 2 * i)
            uow.resources.read_row(r.res_type, r.res_id, found[0][1:5] if found else None)
            if found and i == subscriptions_of:
                orgs.append(r.res_id)
        ids = []
        for res_id, version, deleted, last_updated, content, _h, _o in by_tag.get(3 + 2 * i, []):
            uow.resources.read_row(r.res_type, res_id, (version, deleted, last_updated, content))
            ids.append(res_id)
        uow.resources.read_token(r.res_type, "identifier", r.system, r.value, ids)
        if i == subscriptions_of:
            orgs.extend(ids)
    if subscriptions_of is None:
        return None
    subscriptions: dict[str, list[tuple[Any, ...]]] = {org: [] for org in orgs}
    for row in sorted(by_tag.get(_SUBSCRIPTION, []), key=lambda row: row[0]):
        subscriptions.setdefault(row[6], []).append(row[:6])
    return subscriptions
