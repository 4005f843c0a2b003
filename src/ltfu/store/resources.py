"""Versioned FHIR resources: current row, full history and search index, on one connection.

Every method runs inside the caller's transaction (the unit of work); nothing here commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, delete, insert, literal_column, or_, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.fhir.outcome import FhirError
from ltfu.fhir.search_params import index_rows
from ltfu.store.driver import Driver, compiled
from ltfu.store.schema import resource_history, resources, search_index
from ltfu.store.write_buffer import PendingId, WriteBuffer


def now_instant() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Stored:
    """A resource as stored: the JSON with ``id`` and ``meta`` filled in."""

    resource: dict[str, Any]
    version_id: int
    last_updated: str
    created: bool = False

    @property
    def ref(self) -> str:
        return f"{self.resource['resourceType']}/{self.resource['id']}"

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'


def _dump(resource: dict[str, Any]) -> str:
    return orjson.dumps(resource).decode()


def _stamp(resource: dict[str, Any], res_id: str, version: int, when: str) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = when  # microseconds are allowed in a FHIR instant
    out = {"resourceType": resource["resourceType"], "id": res_id, "meta": meta}
    out.update((k, v) for k, v in resource.items() if k not in ("resourceType", "id", "meta"))
    return out


def not_found(res_type: str, res_id: str) -> FhirError:
    return FhirError.of("not-found", f"{res_type}/{res_id} is not known", status=404)


@dataclass(frozen=True)
class _Row:
    version_id: int
    deleted: bool
    last_updated: str
    content: str


# Built once: the hot statements skip SQL construction and cache-key generation on every call.
_THIS = and_(resources.c.res_type == bindparam("t"), resources.c.res_id == bindparam("i"))
_CURRENT = select(resources.c.version_id, resources.c.deleted, resources.c.last_updated,
                  resources.c.content).where(_THIS)
_SET_CURRENT = update(resources).where(_THIS).values(
    version_id=bindparam("v"), seq=bindparam("s"), last_updated=bindparam("w"), deleted=bindparam("d"),
    content=bindparam("c"))
_DROP_INDEX = delete(search_index).where(and_(search_index.c.res_type == bindparam("t"),
                                              search_index.c.res_id == bindparam("i")))
_CURRENT_MANY = select(resources.c.res_id, resources.c.version_id, resources.c.deleted, resources.c.last_updated,
                       resources.c.content).where(and_(resources.c.res_type == bindparam("t"),
                                                       resources.c.res_id.in_(bindparam("ids", expanding=True))))
_ADD_HISTORY = insert(resource_history).returning(resource_history.c.seq)
_ADD_INDEX = insert(search_index)


@cache
def _current_of(n: int) -> Any:
    """The current rows of ``n`` resources named by ``:t0, :i0 ...`` (built once per ``n``: ``compiled`` knows a
    statement by its identity)."""
    return select(resources.c.res_type, resources.c.res_id, resources.c.version_id, resources.c.deleted,
                  resources.c.last_updated, resources.c.content).where(or_(*[
                      and_(resources.c.res_type == bindparam(f"t{k}"), resources.c.res_id == bindparam(f"i{k}"))
                      for k in range(n)]))


_si = search_index
# A token look-up brings the current rows along (the caller reads them next).
_r = resources
_JOINED = and_(_r.c.res_type == _si.c.res_type, _r.c.res_id == _si.c.res_id)
_ROWS_BY_TOKEN = (select(_r.c.res_id, _r.c.version_id, _r.c.deleted, _r.c.last_updated, _r.c.content)
                  .select_from(_si.join(_r, _JOINED))
                  .where(and_(_si.c.res_type == bindparam("t"), _si.c.param == bindparam("p"),
                              _si.c.value == bindparam("v"))).limit(10))
_ROWS_BY_TOKEN_SYSTEM = _ROWS_BY_TOKEN.where(_si.c.system == bindparam("s"))
# A key that may be a logical id or an identifier value (``Patient/<value>``, the PoC's references): the
# current row of that id and the rows whose identifier has that value, in one statement.
_KEY_ROWS = (select(literal_column("1").label("by_token"), _r.c.res_id, _r.c.version_id, _r.c.deleted,
                    _r.c.last_updated, _r.c.content)
             .select_from(_si.join(_r, _JOINED))
             .where(and_(_si.c.res_type == bindparam("t"), _si.c.param == bindparam("p"),
                         _si.c.value == bindparam("v"))).limit(10).subquery())
_ID_OR_TOKEN = union_all(
    select(literal_column("0"), _r.c.res_id, _r.c.version_id, _r.c.deleted, _r.c.last_updated, _r.c.content)
    .where(and_(_r.c.res_type == bindparam("t"), _r.c.res_id == bindparam("v"))),
    select(_KEY_ROWS))
_BY_TOKENS = select(_si.c.res_id, _si.c.system, _si.c.value).where(and_(
    _si.c.res_type == bindparam("t"), _si.c.param == bindparam("p"), _si.c.value.in_(bindparam("vs", expanding=True))))


class ResourceRepository:
    """Reads are remembered for the life of the unit of work (one transaction): a request that looks
    at the same Organization or Subscription several times asks the database once. With a
    ``WriteBuffer``, new resources (their version, history and index rows) wait in it."""

    def __init__(self, conn: AsyncConnection, buffer: WriteBuffer | None = None,
                 unbuffered: AsyncConnection | None = None) -> None:
        self.conn = conn
        self.buffer = buffer
        # Current rows are looked up without flushing the buffer: every resource it holds is in _rows.
        self._unbuffered = unbuffered or conn
        self._rows: dict[tuple[str, str], _Row | None] = {}
        self.driver: Driver | None = None  # set by the unit of work (store/driver.py)
        self._tokens: dict[tuple[str, str, str | None, str], list[str]] = {}

    def forget(self) -> None:
        """Drop what was remembered (after a rolled-back savepoint)."""
        self._rows.clear()
        self._tokens.clear()

    def remember(self, res_type: str, res_id: str, version: int, deleted: Any, last_updated: str, content: str) -> None:
        """A current row read by another statement (a join): later reads ask no one. A row this unit
        of work already holds (perhaps newer: its own write) is kept."""
        self._rows.setdefault((res_type, res_id), _Row(version, bool(deleted), last_updated, content))

    def read_row(self, res_type: str, res_id: str, row: tuple[Any, ...] | None) -> None:
        """The current row (version, deleted, last updated, content) or its absence, read by another statement
        (``store/lookups``) as ``get`` would have read it: ``get`` then asks no one."""
        self._rows[(res_type, res_id)] = _Row(row[0], bool(row[1]), row[2], row[3]) if row else None

    def read_token(self, res_type: str, param: str, system: str | None, value: str, ids: list[str]) -> None:
        """Ids of a token read by another statement, as ``find_ids_by_token`` would have read them."""
        self._tokens[(res_type, param, system, value)] = list(dict.fromkeys(ids))

    def _changed(self, res_type: str) -> None:
        if self._tokens:
            self._tokens = {k: v for k, v in self._tokens.items() if k[0] != res_type}

    # ------------------------------------------------------------------ writes
    async def create(self, resource: dict[str, Any], res_id: str | None = None) -> Stored:
        res_type = resource["resourceType"]
        res_id = res_id or str(uuid.uuid4())
        return await self._write(res_type, res_id, resource, 1, "POST", existing=False)

    async def update(
        self, resource: dict[str, Any], res_id: str, if_match: int | None = None
    ) -> Stored:
        """Update (or create with the client's id). ``if_match`` must equal the current version."""
        res_type = resource["resourceType"]
        current = await self._current_row(res_type, res_id)
        if if_match is not None and (current is None or current.version_id != if_match):
            raise FhirError.of(
                "conflict",
                f"Version conflict: {res_type}/{res_id} is at version "
                f"{current.version_id if current else 'none'}, If-Match asked for {if_match}",
                status=412,
                kind="version-conflict",
            )
        if current is None:
            return await self._write(res_type, res_id, resource, 1, "PUT", existing=False)
        return await self._write(res_type, res_id, resource, current.version_id + 1, "PUT", existing=True)

    async def delete(self, res_type: str, res_id: str) -> bool:
        current = await self._current_row(res_type, res_id)
        if current is None or current.deleted:
            return False
        when = now_instant()
        version = current.version_id + 1
        tomb = {"resourceType": res_type, "id": res_id}
        seq = await self._history(res_type, res_id, version, when, True, "DELETE", tomb)
        await self.conn.execute(_SET_CURRENT, {"t": res_type, "i": res_id, "v": version, "s": seq, "w": when,
                                               "d": True, "c": _dump(tomb)})
        self._rows[(res_type, res_id)] = _Row(version, True, when, _dump(tomb))
        await self.conn.execute(_DROP_INDEX, {"t": res_type, "i": res_id})
        self._changed(res_type)
        return True

    async def _write(
        self, res_type: str, res_id: str, resource: dict[str, Any], version: int, method: str, *, existing: bool
    ) -> Stored:
        when = now_instant()
        stamped = _stamp(resource, res_id, version, when)
        content = _dump(stamped)
        index = [{"res_type": res_type, "res_id": res_id, "param": r.param, "system": r.system, "value": r.value,
                  "value_hi": r.value_hi} for r in index_rows(stamped)]
        if existing and self.driver is not None:  # a new version (a Task moving): the same statements, at the driver
            await self._update_at_driver(self.driver, res_type, res_id, version, when, method, content, index)
        elif existing:
            seq = await self._history(res_type, res_id, version, when, False, method, content)
            await self.conn.execute(_SET_CURRENT, {"t": res_type, "i": res_id, "v": version, "s": seq, "w": when,
                                                   "d": False, "c": content})
            await self.conn.execute(_DROP_INDEX, {"t": res_type, "i": res_id})
            if index:
                await self.conn.execute(insert(search_index), index)
        elif self.buffer is not None:
            pending = PendingId()
            self.buffer.add(resource_history, {"res_type": res_type, "res_id": res_id, "version_id": version,
                                               "last_updated": when, "deleted": False, "method": method,
                                               "content": content}, pending)
            self.buffer.add(resources, {"res_type": res_type, "res_id": res_id, "version_id": version,
                                        "seq": pending, "last_updated": when, "deleted": False, "content": content})
            self.buffer.add_many(search_index, index)
        else:
            seq = await self._history(res_type, res_id, version, when, False, method, content)
            await self.conn.execute(insert(resources).values(res_type=res_type, res_id=res_id, version_id=version,
                                                             seq=seq, last_updated=when, deleted=False,
                                                             content=content))
            if index:
                await self.conn.execute(insert(search_index), index)
        self._rows[(res_type, res_id)] = _Row(version, False, when, content)
        self._changed(res_type)
        return Stored(stamped, version, when, created=version == 1 or not existing)

    async def _update_at_driver(self, driver: Driver, res_type: str, res_id: str, version: int, when: str,
                                method: str, content: str, index: list[dict[str, Any]]) -> None:
        if self.buffer is not None:
            await self.buffer.flush()  # held rows first (the history's order, the index this transaction wrote)
        history = {"res_type": res_type, "res_id": res_id, "version_id": version, "last_updated": when,
                   "deleted": False, "method": method, "content": content}
        (seq,), = await driver.fetch(compiled(_ADD_HISTORY, driver.dialect, list(history)), history)
        current = {"t": res_type, "i": res_id, "v": version, "s": seq, "w": when, "d": False, "c": content}
        await driver.execute_many(compiled(_SET_CURRENT, driver.dialect), [current])
        await driver.execute_many(compiled(_DROP_INDEX, driver.dialect), [{"t": res_type, "i": res_id}])
        if index:
            await driver.execute_many(compiled(_ADD_INDEX, driver.dialect, list(index[0])), index)

    async def _history(
        self, res_type: str, res_id: str, version: int, when: str, deleted: bool, method: str,
        content: str | dict[str, Any],
    ) -> int:
        result = await self.conn.execute(_ADD_HISTORY, {
            "res_type": res_type, "res_id": res_id, "version_id": version, "last_updated": when,
            "deleted": deleted, "method": method, "content": content if isinstance(content, str) else _dump(content)})
        return int(result.scalar_one())

    # ------------------------------------------------------------------ reads
    async def _current_row(self, res_type: str, res_id: str) -> _Row | None:
        key = (res_type, res_id)
        if key not in self._rows:
            if self.driver is not None:  # no flush first: every resource the buffer holds is in _rows
                found = await self.driver.fetch(compiled(_CURRENT, self.driver.dialect), {"t": res_type, "i": res_id})
                row = found[0] if found else None
                self._rows[key] = _Row(row[0], bool(row[1]), row[2], row[3]) if row else None
                return self._rows[key]
            row = (await self._unbuffered.execute(_CURRENT, {"t": res_type, "i": res_id})).first()
            self._rows[key] = _Row(row.version_id, row.deleted, row.last_updated, row.content) if row else None
        return self._rows[key]

    async def prefetch(self, keys: list[tuple[str, str]]) -> None:
        """Read the current rows of several resources (of any types) in one statement; later reads of them in
        this unit of work ask no one (an absent one is remembered as absent)."""
        wanted = list(dict.fromkeys(k for k in keys if k not in self._rows))
        if len(wanted) < 2:
            return  # one is read when asked for
        params = {f"t{n}": t for n, (t, _) in enumerate(wanted)} | {f"i{n}": i for n, (_, i) in enumerate(wanted)}
        statement = _current_of(len(wanted))
        if self.driver is not None:
            found = await self.driver.fetch(compiled(statement, self.driver.dialect), params)
        else:
            found = [tuple(r) for r in await self._unbuffered.execute(statement, params)]
        for key in wanted:
            self._rows[key] = None
        for t, i, v, d, w, c in found:
            self._rows[(t, i)] = _Row(v, bool(d), w, c)

    async def get(self, res_type: str, res_id: str) -> Stored | None:
        """The current version, or None when unknown or deleted."""
        row = await self._current_row(res_type, res_id)
        if row is None or row.deleted:
            return None
        return Stored(orjson.loads(row.content), row.version_id, row.last_updated)

    async def read(self, res_type: str, res_id: str) -> Stored:
        row = await self._current_row(res_type, res_id)
        if row is None:
            raise not_found(res_type, res_id)
        if row.deleted:
            raise FhirError.of("deleted", f"{res_type}/{res_id} was deleted", status=410)
        return Stored(orjson.loads(row.content), row.version_id, row.last_updated)

    async def vread(self, res_type: str, res_id: str, version: int) -> Stored:
        result = await self.conn.execute(
            select(resource_history.c.deleted, resource_history.c.last_updated, resource_history.c.content)
            .where(and_(resource_history.c.res_type == res_type, resource_history.c.res_id == res_id,
                        resource_history.c.version_id == version))
        )
        row = result.first()
        if row is None:
            raise FhirError.of("not-found", f"{res_type}/{res_id} has no version {version}", status=404)
        if row.deleted:
            raise FhirError.of("deleted", f"{res_type}/{res_id} version {version} is a deletion", status=410)
        return Stored(orjson.loads(row.content), version, row.last_updated)

    async def history(
        self, res_type: str | None, res_id: str | None, since: str | None, count: int, before_seq: int | None
    ) -> list[tuple[int, str, dict[str, Any], bool, int]]:
        """History entries newest first: (seq, method, resource, deleted, version)."""
        h = resource_history
        q = select(h.c.seq, h.c.method, h.c.content, h.c.deleted, h.c.version_id, h.c.res_type, h.c.res_id)
        if res_type:
            q = q.where(h.c.res_type == res_type)
        if res_id:
            q = q.where(h.c.res_id == res_id)
        if since:
            q = q.where(h.c.last_updated > since)
        if before_seq:
            q = q.where(h.c.seq < before_seq)
        rows = (await self.conn.execute(q.order_by(h.c.seq.desc()).limit(count))).all()
        return [(r.seq, r.method, orjson.loads(r.content), r.deleted, r.version_id) for r in rows]

    async def get_many(self, refs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Current versions of the given (type, id) pairs that exist, in no particular order."""
        if not refs:
            return []
        by_type: dict[str, set[str]] = {}
        for t, i in refs:
            by_type.setdefault(t, set()).add(i)
        out: list[dict[str, Any]] = []
        for t, ids in by_type.items():
            rows = await self.conn.execute(
                select(resources.c.content).where(
                    and_(resources.c.res_type == t, resources.c.res_id.in_(ids), resources.c.deleted.is_(False))
                )
            )
            out.extend(orjson.loads(r.content) for r in rows)
        return out

    async def prime(self, res_type: str, ids: list[str]) -> None:
        """Load many current rows at once (a re-sent defaulter list): later reads ask no one."""
        wanted = [i for i in dict.fromkeys(ids) if (res_type, i) not in self._rows]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            rows = await self._unbuffered.execute(_CURRENT_MANY, {"t": res_type, "ids": chunk})
            for r in rows:
                self._rows[(res_type, r.res_id)] = _Row(r.version_id, r.deleted, r.last_updated, r.content)

    async def find_ids_by_tokens(
        self, res_type: str, param: str, tokens: list[tuple[str | None, str, bool]]
    ) -> dict[tuple[str | None, str, bool], list[str]]:
        """Ids per token ``(system, code, system_given)`` as a ``param=system|code`` search matches them,
        for many tokens in a few statements (the conditional creates of a defaulter list)."""
        out: dict[tuple[str | None, str, bool], list[str]] = {t: [] for t in tokens}
        codes = list(dict.fromkeys(code for _, code, _ in tokens))
        by_code: dict[str, list[tuple[str | None, str]]] = {}
        for start in range(0, len(codes), 500):
            rows = await self.conn.execute(_BY_TOKENS, {"t": res_type, "p": param, "vs": codes[start:start + 500]})
            for res_id, system, value in rows:
                by_code.setdefault(value, []).append((system, res_id))
        for token in out:
            system, code, system_given = token
            ids = [i for s, i in by_code.get(code, []) if not system_given or s == system]
            out[token] = list(dict.fromkeys(ids))
        return out

    async def prime_id_or_token(self, res_type: str, key: str, param: str = "identifier") -> None:
        """Look ``key`` up as an id and as a ``param`` value (any system) at once: the ``get`` and
        ``find_ids_by_token`` that follow ask no one (one statement instead of two)."""
        token = (res_type, param, None, key)
        if self.driver is None or (res_type, key) in self._rows or token in self._tokens:
            return
        if self.buffer is not None and self.buffer.pending:
            # The token search would send the held rows first, which a plain ``get`` never does (every resource
            # the buffer holds is remembered): a key of a Bundle's own resource would cost a flush.
            return
        self._rows[(res_type, key)] = None
        ids = []
        for by_token, res_id, version, deleted, last_updated, content in await self.driver.fetch(
                compiled(_ID_OR_TOKEN, self.driver.dialect), {"t": res_type, "p": param, "v": key}):
            self._rows[(res_type, res_id)] = _Row(version, bool(deleted), last_updated, content)
            if by_token:
                ids.append(res_id)
        self._tokens[token] = list(dict.fromkeys(ids))

    async def find_ids_by_token(self, res_type: str, param: str, system: str | None, value: str) -> list[str]:
        """Ids of current resources with the token (``system`` None = any system)."""
        key = (res_type, param, system, value)
        if key not in self._tokens:
            params = {"t": res_type, "p": param, "v": value}
            if self.driver is not None:
                if self.buffer is not None:
                    await self.buffer.flush()  # the search index sees this transaction's own rows
                statement = _ROWS_BY_TOKEN if system is None else _ROWS_BY_TOKEN_SYSTEM
                if system is not None:
                    params["s"] = system
                ids = []
                for r in await self.driver.fetch(compiled(statement, self.driver.dialect), params):
                    self._rows[(res_type, r[0])] = _Row(r[1], bool(r[2]), r[3], r[4])
                    ids.append(r[0])
                self._tokens[key] = list(dict.fromkeys(ids))
                return list(self._tokens[key])
            if system is None:
                result = await self.conn.execute(_ROWS_BY_TOKEN, params)
            else:
                result = await self.conn.execute(_ROWS_BY_TOKEN_SYSTEM, {**params, "s": system})
            ids = []
            for r in result:
                self._rows[(res_type, r.res_id)] = _Row(r.version_id, r.deleted, r.last_updated, r.content)
                ids.append(r.res_id)
            self._tokens[key] = list(dict.fromkeys(ids))
        return list(self._tokens[key])
