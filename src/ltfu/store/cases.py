"""Case rows: the query-friendly projection of a ServiceRequest + Task pair."""

from __future__ import annotations

from collections import namedtuple
from functools import cache
from typing import Any

from sqlalchemy import and_, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.domain.task_states import OPEN, TERMINAL
from ltfu.store.driver import Driver, compiled
from ltfu.store.schema import cases
from ltfu.store.write_buffer import WriteBuffer

_BY_KEY = select(cases).where(cases.c.request_key == bindparam("k"))
_BY_KEYS = select(cases).where(cases.c.request_key.in_(bindparam("ks", expanding=True)))
_BY_ID = select(cases).where(cases.c.case_id == bindparam("i"))
@cache
def _set_statement(columns: tuple[str, ...]) -> Any:
    """The UPDATE of these columns of one case (the few sets the services make, each built once and kept:
    ``compiled`` knows a statement by its identity)."""
    return update(cases).where(cases.c.case_id == bindparam("case_id_")).values({c: bindparam(c) for c in columns})


# A case row read at the driver (store/driver.py), with the attribute access of SQLAlchemy's rows.
CaseRow = namedtuple("CaseRow", [c.name for c in cases.columns])  # type: ignore[misc]  # noqa: PYI024


class CaseRepository:
    def __init__(self, conn: AsyncConnection, buffer: WriteBuffer | None = None) -> None:
        self.conn = conn
        self.buffer = buffer
        self._absent: set[str] = set()  # request keys known to have no case (prefetched or checked)
        self.driver: Driver | None = None  # set by the unit of work

    async def add(self, **values: Any) -> None:
        """A new case; with a buffer it waits there (its request key was checked absent under lock)."""
        self._absent.discard(values["request_key"])
        if self.buffer is None:
            await self.conn.execute(insert(cases).values(**values))
        else:
            self.buffer.add(cases, values)

    def known_absent(self, request_key: str) -> None:
        """No case has this request key (another statement looked: ``store/lookups``)."""
        self._absent.add(request_key)

    def is_known_absent(self, request_key: str) -> bool:
        return request_key in self._absent

    async def get(self, case_id: str) -> Any:
        if self.driver is not None:
            if self.buffer is not None:
                await self.buffer.flush()
            rows = await self.driver.fetch(compiled(_BY_ID, self.driver.dialect), {"i": case_id})
            return CaseRow(*rows[0]) if rows else None
        return (await self.conn.execute(_BY_ID, {"i": case_id})).first()

    async def by_request_key(self, request_key: str) -> Any:
        if request_key in self._absent:
            return None
        if self.driver is not None:
            if self.buffer is not None:
                await self.buffer.flush()
            rows = await self.driver.fetch(compiled(_BY_KEY, self.driver.dialect), {"k": request_key})
            return CaseRow(*rows[0]) if rows else None
        return (await self.conn.execute(_BY_KEY, {"k": request_key})).first()

    async def prefetch_request_keys(self, keys: list[str]) -> None:
        """Look many request keys up at once (a defaulter list): the absent ones need no query later."""
        wanted = list(dict.fromkeys(k for k in keys if k not in self._absent))
        found: set[str] = set()
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            rows = await self.conn.execute(_BY_KEYS, {"ks": chunk})
            found.update(r.request_key for r in rows)
        self._absent.update(k for k in wanted if k not in found)

    async def by_task(self, task_id: str) -> Any:
        return (await self.conn.execute(select(cases).where(cases.c.task_id == task_id))).first()

    async def open_for_patient(self, patient_id: str) -> Any:
        """The most recent open case of a patient, if any."""
        q = (select(cases).where(and_(cases.c.patient_id == patient_id, cases.c.status.not_in(TERMINAL)))
             .order_by(cases.c.created_at.desc()).limit(1))
        return (await self.conn.execute(q)).first()

    async def open_for_patients(self, patient_ids: list[str]) -> list[Any]:
        """Every open (non-terminal) case of these patients."""
        if not patient_ids:
            return []
        q = (select(cases).where(and_(cases.c.patient_id.in_(patient_ids), cases.c.status.not_in(TERMINAL)))
             .order_by(cases.c.created_at))
        return list((await self.conn.execute(q)).all())

    async def set(self, case_id: str, **values: Any) -> None:
        if self.driver is not None:
            if self.buffer is not None:
                await self.buffer.flush()
            statement = _set_statement(tuple(sorted(values)))
            await self.driver.execute_many(compiled(statement, self.driver.dialect), [{**values, "case_id_": case_id}])
            return
        await self.conn.execute(update(cases).where(cases.c.case_id == case_id).values(**values))

    async def expired(self, now: str, limit: int) -> list[str]:
        # the open states by name: ix_cases_status_window is then read for each, up to ``now`` (NOT IN reads them all)
        q = (select(cases.c.case_id)
             .where(and_(cases.c.status.in_(OPEN), cases.c.window_end.is_not(None), cases.c.window_end < now))
             .order_by(cases.c.window_end).limit(limit))
        return list((await self.conn.execute(q)).scalars())
