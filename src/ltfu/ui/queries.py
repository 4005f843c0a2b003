"""Read models of the dashboard, and the one place where facility scoping is enforced.

Every query takes a :class:`Scope`. An admin's scope is every facility; a facility client's scope is
its own Organization, and a non-admin client without one sees nothing. The scope is a SQL condition
added to each query (never a filter applied after reading), so a facility client cannot reach
another facility's case, delivery or subscription by editing a URL: it simply does not exist for it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, bindparam, false, func, literal, or_, select, text, true
from sqlalchemy.ext.asyncio import AsyncConnection

from ltfu.domain.access import Actor
from ltfu.domain.outcomes import METHODS, OUTCOMES, outcome_label
from ltfu.domain.task_states import TERMINAL
from ltfu.store import tallies
from ltfu.store.schema import (
    FAILING,
    cases,
    delivery_attempts,
    outbox,
    resource_history,
    resources,
    search_index,
    subscription_counters,
)
from ltfu.ui.i18n import N_, NC_, Msg

PAGE_SIZE = 50
# The case list counts at most this many matches ("10,000+ cases"): a count reads every match, and the
# store keeps growing; pages past it are reached by "Older" links, which read one index range each.
COUNT_CAP = 10_000
STATES = ("requested", "received", "accepted", "in-progress", "on-hold", "completed", "failed", "cancelled",
          "rejected")
# Texts here are gettext msgids (English), translated where they are shown (ltfu.ui.i18n). The states
# have the context "task state" (ltfu.ui.i18n.STATE_CONTEXT): a state is not always the same word as
# a column or a count ("Requested").
STATE_LABELS = {
    "requested": NC_("task state", "Requested"),
    "received": NC_("task state", "Received by CHT"),
    "accepted": NC_("task state", "Accepted"),
    "in-progress": NC_("task state", "In progress"),
    "on-hold": NC_("task state", "On hold"),
    "completed": NC_("task state", "Completed"),
    "failed": NC_("task state", "Failed"),
    "cancelled": NC_("task state", "Cancelled"),
    "rejected": NC_("task state", "Rejected"),
    "entered-in-error": NC_("task state", "Entered in error"),
    "open": NC_("task state", "Open (not closed)"),
}
# Timeline: a Task reaching a state.
TASK_EVENTS = {
    "requested": N_("Task requested"), "received": N_("Task received by CHT"), "accepted": N_("Task accepted"),
    "in-progress": N_("Task in progress"), "on-hold": N_("Task on hold"), "completed": N_("Task completed"),
    "failed": N_("Task failed"), "cancelled": N_("Task cancelled"), "rejected": N_("Task rejected"),
    "entered-in-error": N_("Task entered in error"),
}
AGES = {"0-7": (0, 7), "8-14": (8, 14), "15-30": (15, 30), "31+": (31, None)}
AGE_LABELS = {"0-7": N_("0–7 days"), "8-14": N_("8–14 days"), "15-30": N_("15–30 days"),
              "31+": N_("31 days or more")}
# Outcomes where the CHW found the patient, and those that mean the patient is coming back.
REACHED = frozenset({"returning-to-care", "already-returned", "refused", "self-transferred", "hospitalized"})
RETURNING = frozenset({"returning-to-care", "already-returned"})
TARGET_DAYS = 8


def parse_instant(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def instant(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_day(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        return None


# --------------------------------------------------------------------------- scope

@dataclass(frozen=True)
class Scope:
    """Which facilities a client may see: ``organization_id`` None with ``is_admin`` means all."""

    is_admin: bool
    organization_id: str | None

    @classmethod
    def of(cls, actor: Actor) -> Scope:
        """The dashboard's scope of an actor (``ltfu.services.policy``: a facility sees its own only)."""
        return cls(actor.is_admin, None if actor.is_admin else actor.organization_id)

    @property
    def sees_nothing(self) -> bool:
        return not self.is_admin and not self.organization_id

    def condition(self, column: Any) -> ColumnElement[bool]:
        """The SQL condition limiting ``column`` (an organization id column) to this scope."""
        if self.is_admin:
            return true()
        if not self.organization_id:
            return false()
        return column == self.organization_id

    def allows(self, organization_id: str | None) -> bool:
        return self.is_admin or (bool(self.organization_id) and organization_id == self.organization_id)


@dataclass(frozen=True)
class Facility:
    id: str
    name: str
    identifier: str | None


async def facilities(conn: AsyncConnection, scope: Scope) -> list[Facility]:
    """The Organizations the scope covers, by name."""
    q = select(resources.c.res_id, resources.c.content).where(and_(
        resources.c.res_type == "Organization", resources.c.deleted.is_(False), scope.condition(resources.c.res_id)))
    out = []
    for res_id, content in (await conn.execute(q)).all():
        org = orjson.loads(content)
        ident = next((i.get("value") for i in org.get("identifier") or [] if i.get("value")), None)
        out.append(Facility(res_id, org.get("name") or ident or res_id, ident))
    return sorted(out, key=lambda f: (f.name.lower(), f.id))


# --------------------------------------------------------------------------- cases

@dataclass
class CaseFilters:
    facility: str | None = None
    state: str | None = None
    outcome: str | None = None
    age: str | None = None
    chw: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    q: str | None = None
    page: int = 1
    older: tuple[str, str] | None = None  # the page after this (created_at, case_id): keyset paging
    newer: tuple[str, str] | None = None  # the page before it
    errors: list[Msg] = field(default_factory=list)

    @classmethod
    def parse(cls, params: Any) -> CaseFilters:
        f = cls()
        f.facility = (params.get("facility") or "").strip() or None
        state = (params.get("state") or "").strip()
        if state and state not in STATES and state != "open":
            f.errors.append(Msg(N_("Unknown state %(value)s: ignored"), {"value": repr(state)}))
        else:
            f.state = state or None
        outcome = (params.get("outcome") or "").strip()
        if outcome and outcome not in OUTCOMES and outcome != "none":
            f.errors.append(Msg(N_("Unknown outcome %(value)s: ignored"), {"value": repr(outcome)}))
        else:
            f.outcome = outcome or None
        age = (params.get("age") or "").strip()
        if age and age not in AGES:
            f.errors.append(Msg(N_("Unknown age band %(value)s: ignored"), {"value": repr(age)}))
        else:
            f.age = age or None
        f.chw = (params.get("chw") or "").strip() or None
        for name in ("from", "to"):
            raw = (params.get(name) or "").strip()
            day = parse_day(raw)
            if raw and day is None:
                f.errors.append(Msg(N_("'%(name)s' must be a date (YYYY-MM-DD): ignored"), {"name": name}))
            setattr(f, "date_from" if name == "from" else "date_to", day)
        f.q = (params.get("q") or "").strip()[:200] or None
        page = (params.get("page") or "1").strip()
        f.page = int(page) if page.isdigit() and int(page) >= 1 else 1
        f.older, f.newer = _cursor(params.get("older")), _cursor(params.get("newer"))
        return f

    def query_args(self, **override: Any) -> dict[str, str]:
        """These filters as query parameters (for paging links), with some values replaced; the paging
        cursors only when given in ``override``."""
        args = {"facility": self.facility, "state": self.state, "outcome": self.outcome, "age": self.age,
                "chw": self.chw, "from": self.date_from.isoformat() if self.date_from else None,
                "to": self.date_to.isoformat() if self.date_to else None, "q": self.q,
                "page": str(self.page) if self.page > 1 else None}
        args.update(override)
        return {k: str(v) for k, v in args.items() if v not in (None, "")}

    @property
    def active(self) -> bool:
        return any((self.facility, self.state, self.outcome, self.age, self.chw, self.date_from, self.date_to, self.q))


async def _with_identifier(conn: AsyncConnection, res_type: str, value: str) -> list[str]:
    si = search_index
    q = select(si.c.res_id).where(and_(si.c.res_type == res_type, si.c.param == "identifier",
                                       si.c.value == value)).limit(50)
    return list(dict.fromkeys((await conn.execute(q)).scalars()))


async def _patients_with_identifier(conn: AsyncConnection, value: str) -> list[str]:
    return await _with_identifier(conn, "Patient", value)


async def _case_conditions(conn: AsyncConnection, scope: Scope, f: CaseFilters,
                           now: datetime) -> list[ColumnElement[bool]]:
    c = cases.c
    cond: list[ColumnElement[bool]] = [scope.condition(c.organization_id)]
    if f.facility:
        cond.append(c.organization_id == f.facility)
    if f.state == "open":
        cond.append(c.status.not_in(TERMINAL))
    elif f.state:
        cond.append(c.status == f.state)
    if f.outcome == "none":
        cond.append(c.outcome.is_(None))
    elif f.outcome:
        cond.append(c.outcome == f.outcome)
    if f.age:
        low, high = AGES[f.age]
        # age in whole days since the request: created within (now - (high+1) days, now - low days]
        cond.append(c.created_at <= instant(now - timedelta(days=low)))
        if high is not None:
            cond.append(c.created_at > instant(now - timedelta(days=high + 1)))
    if f.chw:
        cond.append(c.chw_id == f.chw)
    if f.date_from:
        cond.append(c.created_at >= f.date_from.isoformat())
    if f.date_to:
        cond.append(c.created_at < (f.date_to + timedelta(days=1)).isoformat())
    if f.q:
        patient_ids = await _patients_with_identifier(conn, f.q)
        # the request's identifier value, whatever its system, from the FHIR index (an indexed lookup,
        # where ``request_key LIKE '%|value'`` read every case)
        request_ids = await _with_identifier(conn, "ServiceRequest", f.q)
        matches = [c.case_id.in_([f.q, *request_ids])]
        if patient_ids:
            matches.append(c.patient_id.in_(patient_ids))
        cond.append(or_(*matches))
    return cond


def _cursor(value: str | None) -> tuple[str, str] | None:
    """``created_at,case_id`` of a paging link; anything else is ignored (page 1)."""
    created, _, case_id = (value or "").partition(",")
    if not case_id or len(value or "") > 200 or parse_instant(created) is None:
        return None
    return created, case_id



@dataclass(frozen=True)
class CaseRow:
    case_id: str
    task_id: str
    patient_id: str
    patient_identifier: str | None
    organization_id: str | None
    facility: str
    status: str
    business_status: str | None
    outcome: str | None
    attempts: int
    chw_id: str | None
    created_at: str
    sent_to_cht_at: str | None
    first_attempt_at: str | None
    closed_at: str | None
    window_end: str | None
    request_identifier: str

    @property
    def age_days(self) -> int:
        created = parse_instant(self.created_at)
        return (datetime.now(UTC) - created).days if created else 0


@dataclass
class CasePage:
    rows: list[CaseRow]
    total: int  # at most COUNT_CAP
    page: int
    pages: int
    capped: bool = False  # more than ``total`` match
    older_args: dict[str, str] | None = None  # query parameters of the next (older) page, if any
    newer_args: dict[str, str] | None = None


def _patient_identifier(patient: dict[str, Any] | None) -> str | None:
    if not patient:
        return None
    idents = [i for i in patient.get("identifier") or [] if i.get("value")]
    official = [i for i in idents if i.get("use") == "official"]
    chosen = (official or idents or [None])[0]
    return chosen.get("value") if chosen else None


async def _patients(conn: AsyncConnection, ids: set[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    q = select(resources.c.res_id, resources.c.content).where(and_(
        resources.c.res_type == "Patient", resources.c.res_id.in_(ids)))
    return {r: orjson.loads(content) for r, content in (await conn.execute(q)).all()}


def _case_row(r: Any, patients: dict[str, dict[str, Any]], names: dict[str, str]) -> CaseRow:
    return CaseRow(
        case_id=r.case_id, task_id=r.task_id, patient_id=r.patient_id,
        patient_identifier=_patient_identifier(patients.get(r.patient_id)), organization_id=r.organization_id,
        facility=names.get(r.organization_id or "", r.organization_id or "—"), status=r.status,
        business_status=r.business_status, outcome=r.outcome, attempts=r.attempts or 0, chw_id=r.chw_id,
        created_at=r.created_at, sent_to_cht_at=r.sent_to_cht_at, first_attempt_at=r.first_attempt_at,
        closed_at=r.closed_at, window_end=r.window_end, request_identifier=r.request_key.rpartition("|")[2],
    )


async def list_cases(conn: AsyncConnection, scope: Scope, f: CaseFilters, names: dict[str, str],
                     *, now: datetime | None = None) -> CasePage:
    """A page of cases, newest first. Pages after the first follow a cursor (the last row shown) along
    an index, so a page costs the same however many cases are stored; a bare ``page=N`` (an old link)
    still works by offset, within the counted ``COUNT_CAP``."""
    now = now or datetime.now(UTC)
    cond = and_(*await _case_conditions(conn, scope, f, now))
    counted = select(literal(1)).select_from(cases).where(cond).limit(COUNT_CAP + 1).subquery()
    total = int((await conn.execute(select(func.count()).select_from(counted))).scalar_one())
    capped, total = total > COUNT_CAP, min(total, COUNT_CAP)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    c = cases.c
    newest_first = (c.created_at.desc(), c.case_id.desc())
    if f.older or f.newer:
        at, key = f.older or f.newer  # type: ignore[misc]
        if f.older:  # (created_at, case_id) < cursor, written so that the index range is plain
            where = and_(cond, c.created_at <= at, or_(c.created_at < at, c.case_id < key))
            q = select(cases).where(where).order_by(*newest_first)
        else:
            where = and_(cond, c.created_at >= at, or_(c.created_at > at, c.case_id > key))
            q = select(cases).where(where).order_by(c.created_at, c.case_id)
        rows = list((await conn.execute(q.limit(PAGE_SIZE + 1))).all())
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        if f.newer:
            rows.reverse()
        page = max(1, f.page)
        has_older, has_newer = (more, True) if f.older else (True, more)
        if f.newer and not more:
            page = 1
    else:
        page = min(f.page, pages)
        q = select(cases).where(cond).order_by(*newest_first).limit(PAGE_SIZE + 1).offset((page - 1) * PAGE_SIZE)
        rows = list((await conn.execute(q)).all())
        has_older, has_newer = len(rows) > PAGE_SIZE, page > 1
        rows = rows[:PAGE_SIZE]
    patients = await _patients(conn, {r.patient_id for r in rows})
    older = newer = None
    if rows and has_older:
        older = f.query_args(page=str(page + 1), older=f"{rows[-1].created_at},{rows[-1].case_id}", newer=None)
    if rows and has_newer:
        newer = (f.query_args(page=None, older=None, newer=None) if page <= 2 else
                 f.query_args(page=str(page - 1), newer=f"{rows[0].created_at},{rows[0].case_id}", older=None))
    return CasePage([_case_row(r, patients, names) for r in rows], total, page, max(pages, page), capped, older,
                    newer)


# The distinct CHWs in scope, one index step each (a "loose index scan": ``GROUP BY chw_id`` read every case).
_CHWS = """
WITH RECURSIVE chw(id) AS (
  SELECT MIN(chw_id) FROM cases WHERE chw_id IS NOT NULL {org}
  UNION ALL
  SELECT (SELECT MIN(chw_id) FROM cases WHERE chw_id IS NOT NULL AND chw_id > chw.id {org}) FROM chw
  WHERE chw.id IS NOT NULL
)
SELECT id, (SELECT task_id FROM cases WHERE chw_id = chw.id {org} ORDER BY created_at DESC, case_id DESC LIMIT 1)
FROM chw WHERE id IS NOT NULL LIMIT 500
"""


async def chws(conn: AsyncConnection, scope: Scope) -> list[tuple[str, str]]:
    """(chw id, display) of the CHWs who reported on cases in scope; the name from their latest Task."""
    if scope.sees_nothing:
        return []
    if scope.is_admin:
        q = text(_CHWS.format(org=""))
    else:
        q = text(_CHWS.format(org="AND organization_id = :org")).bindparams(
            bindparam("org", scope.organization_id))
    pairs = [(chw, task) for chw, task in (await conn.execute(q)).all()]
    if not pairs:
        return []
    tq = select(resources.c.res_id, resources.c.content).where(and_(
        resources.c.res_type == "Task", resources.c.res_id.in_([t for _, t in pairs])))
    names: dict[str, str] = {}
    for task_id, content in (await conn.execute(tq)).all():
        owner = orjson.loads(content).get("owner") or {}
        if owner.get("display"):
            names[task_id] = owner["display"]
    out = [(chw, f"{names[t]} ({chw})" if t in names else chw) for chw, t in pairs]
    return sorted(out, key=lambda p: p[1].lower())


async def get_case(conn: AsyncConnection, scope: Scope, case_id: str, names: dict[str, str]) -> CaseRow | None:
    """The case if it exists *and* is in scope; None otherwise (the caller answers 404 either way)."""
    q = select(cases).where(and_(cases.c.case_id == case_id, scope.condition(cases.c.organization_id)))
    r = (await conn.execute(q)).first()
    if r is None:
        return None
    patients = await _patients(conn, {r.patient_id})
    return _case_row(r, patients, names)


# --------------------------------------------------------------------------- timeline

@dataclass
class Attempt:
    at: str
    status_code: int | None
    latency_ms: int
    result: str
    error: str | None


@dataclass(frozen=True)
class AttemptPart:
    """One fact of a CHW attempt for the timeline: ``method``/``outcome`` (codes), ``next_appointment`` (a date),
    ``by`` (the CHW)."""

    kind: str
    value: str


@dataclass
class Event:
    at: str
    kind: str  # request | task | attempt | delivery | cancel | expiry
    title: Msg
    detail: Msg | str = ""
    links: list[tuple[Msg | str, str]] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    state: str | None = None  # for deliveries: pending | retrying | done | dead
    parts: list[AttemptPart] = field(default_factory=list)  # for attempts


@dataclass
class CaseDetail:
    case: CaseRow
    patient: dict[str, Any] | None
    events: list[Event]


def _coding_code(concept: dict[str, Any] | None) -> str | None:
    return (((concept or {}).get("coding") or [{}])[0]).get("code")


async def _history(conn: AsyncConnection, res_type: str, res_id: str) -> list[tuple[int, str, dict[str, Any]]]:
    h = resource_history
    q = (select(h.c.version_id, h.c.last_updated, h.c.content)
         .where(and_(h.c.res_type == res_type, h.c.res_id == res_id)).order_by(h.c.version_id))
    return [(v, at, orjson.loads(c)) for v, at, c in (await conn.execute(q)).all()]


async def _based_on(conn: AsyncConnection, res_type: str, case_id: str) -> list[dict[str, Any]]:
    si = search_index
    ids = select(si.c.res_id).where(and_(si.c.res_type == res_type, si.c.param == "based-on",
                                         si.c.value == f"ServiceRequest/{case_id}"))
    q = select(resources.c.content).where(and_(resources.c.res_type == res_type, resources.c.res_id.in_(ids),
                                               resources.c.deleted.is_(False)))
    return [orjson.loads(c) for c in (await conn.execute(q)).scalars()]


# What one delivery attempt ended in (delivery_attempts.result).
ATTEMPT_RESULTS = {"ok": N_("delivered"), "retry": N_("will retry"), "dead": N_("gave up")}
DELIVERY_STATES = {"queued": N_("queued"), "retrying": N_("retrying"), "done": N_("delivered"), "dead": N_("dead"),
                   "pending": N_("queued")}


def delivery_state(status: str, attempts: int) -> str:
    if status == "pending":
        return "retrying" if attempts else "queued"
    return status


async def case_detail(conn: AsyncConnection, scope: Scope, case_id: str, names: dict[str, str]) -> CaseDetail | None:
    case = await get_case(conn, scope, case_id, names)
    if case is None:
        return None
    patient = (await _patients(conn, {case.patient_id})).get(case.patient_id)
    events: list[Event] = []
    for version, at, sr in await _history(conn, "ServiceRequest", case_id):
        link = [(f"ServiceRequest v{version}", f"/fhir/ServiceRequest/{case_id}/_history/{version}")]
        if version == 1:
            events.append(Event(at, "request", Msg(N_("Request received from the facility")),
                                Msg(N_("Request %(id)s"), {"id": case.request_identifier}), link))
        elif sr.get("status") in ("revoked", "entered-in-error"):
            events.append(Event(at, "cancel", Msg(N_("Request withdrawn by the facility")),
                                Msg(N_("ServiceRequest status %(status)s"), {"status": sr.get("status")}), link))
    previous: tuple[str, str | None] | None = None
    for version, at, task in await _history(conn, "Task", case.task_id):
        business = _coding_code(task.get("businessStatus"))
        current = (task.get("status", ""), business)
        if current != previous:
            text = (task.get("businessStatus") or {}).get("text") or business or ""
            kind = {"cancelled": "cancel"}.get(current[0], "expiry" if business == "expired" else "task")
            reason = (task.get("statusReason") or {}).get("text")
            detail = text + (f" — {reason}" if reason and reason != text else "")
            title = Msg(TASK_EVENTS[current[0]]) if current[0] in TASK_EVENTS else Msg(N_("Task: %(status)s"),
                                                                                            {"status": current[0]})
            events.append(Event(at, kind, title, detail,
                                [(f"Task v{version}", f"/fhir/Task/{case.task_id}/_history/{version}")]))
        previous = current
    observations = {(o.get("encounter") or {}).get("reference"): o
                    for o in await _based_on(conn, "Observation", case_id)}
    for enc in await _based_on(conn, "Encounter", case_id):
        method = _coding_code((enc.get("type") or [{}])[0])
        chw = ((enc.get("participant") or [{}])[0].get("individual") or {})
        obs = observations.get(f"Encounter/{enc['id']}")
        outcome = _coding_code((obs or {}).get("valueCodeableConcept"))
        parts = [AttemptPart("method", method if method in METHODS else (method or ""))]
        if outcome:
            parts.append(AttemptPart("outcome", outcome))
        for comp in (obs or {}).get("component") or []:
            if _coding_code(comp.get("code")) == "next-appointment-date" and comp.get("valueDateTime"):
                parts.append(AttemptPart("next_appointment", comp["valueDateTime"][:10]))
        if chw.get("display") or (chw.get("identifier") or {}).get("value"):
            parts.append(AttemptPart("by", chw.get("display") or chw["identifier"]["value"]))
        links: list[tuple[Msg | str, str]] = [("Encounter", f"/fhir/Encounter/{enc['id']}")]
        if obs:
            links.append(("Observation", f"/fhir/Observation/{obs['id']}"))
        at = (enc.get("period") or {}).get("start") or (enc.get("meta") or {}).get("lastUpdated", "")
        events.append(Event(at, "attempt", Msg(N_("CHW follow-up attempt")), "", links, parts=parts))
    rows = (await conn.execute(select(outbox).where(outbox.c.case_id == case_id).order_by(outbox.c.id))).all()
    attempts: dict[int, list[Attempt]] = defaultdict(list)
    if rows:
        aq = (select(delivery_attempts).where(delivery_attempts.c.outbox_id.in_([r.id for r in rows]))
              .order_by(delivery_attempts.c.id))
        for a in (await conn.execute(aq)).all():
            attempts[a.outbox_id].append(Attempt(a.attempted_at, a.status_code, a.latency_ms, a.result, a.error))
    for r in rows:
        if r.destination == "cht":
            title = {"follow-up": Msg(N_("Follow-up sent to CHT")), "cancel": Msg(N_("Cancellation sent to CHT"))}.get(
                r.kind, Msg(N_("CHT %(kind)s"), {"kind": r.kind}))
        else:
            number = orjson.loads(r.payload).get("event")
            title = (Msg(N_("Notification event %(number)s to the facility"), {"number": number}) if number
                     else Msg(N_("Notification to the facility")))
        state = delivery_state(r.status, r.attempts)
        state_msg = Msg(DELIVERY_STATES.get(state, state))
        if r.status == "done" and r.last_error:
            detail = Msg(N_("outbox #%(id)s: %(state)s (%(note)s)"), {"id": r.id, "state": state_msg,
                                                                       "note": r.last_error})
        elif r.last_error:
            detail = Msg(N_("outbox #%(id)s: %(state)s — last error: %(error)s"),
                         {"id": r.id, "state": state_msg, "error": r.last_error[:300]})
        else:
            detail = Msg(N_("outbox #%(id)s: %(state)s"), {"id": r.id, "state": state_msg})
        links = [(Msg(N_("Subscription %(id)s…"), {"id": r.subscription_id[:8]}),
                  f"/fhir/Subscription/{r.subscription_id}")] if r.subscription_id else []
        events.append(Event(r.created_at, "delivery", title, detail, links, attempts.get(r.id, []), state))
    events.sort(key=lambda e: (e.at or "", {"request": 0, "task": 1}.get(e.kind, 2)))
    return CaseDetail(case, patient, events)


# --------------------------------------------------------------------------- deliveries

@dataclass(frozen=True)
class DeliveryRow:
    id: int
    destination: str
    kind: str
    state: str
    attempts: int
    created_at: str
    next_attempt_at: str
    last_attempt_at: str | None
    last_error: str | None
    case_id: str | None
    subscription_id: str | None
    organization_id: str | None
    facility: str


def _delivery(r: Any, names: dict[str, str]) -> DeliveryRow:
    return DeliveryRow(r.id, r.destination, r.kind, delivery_state(r.status, r.attempts), r.attempts, r.created_at,
                       r.next_attempt_at, r.last_attempt_at, (r.last_error or "")[:500] or None, r.case_id,
                       r.subscription_id, r.organization_id,
                       names.get(r.organization_id or "", r.organization_id or "—"))


# The failing rows of a state (all of them, dead or retrying, without one). FAILING, which each implies, is said
# first, as the partial index ix_outbox_failing has it, so that the index applies.
_FAILING = {None: f"({FAILING})", "dead": "status = 'dead'", "retrying": "status = 'pending' AND attempts > 0"}


async def list_deliveries(conn: AsyncConnection, scope: Scope, names: dict[str, str], *, state: str | None = None,
                          destination: str | None = None, facility: str | None = None,
                          limit: int = 200) -> list[DeliveryRow]:
    """Dead and retrying outbox rows (newest first): a page read along the partial index of the failing rows,
    however many rows are stored or queued. SQLite is told to take that index (``INDEXED BY``): left to
    itself it reads every pending row through ix_outbox_due for the OR, then sorts."""
    if scope.sees_nothing:
        return []
    where = [f"({FAILING})", f"({_FAILING[state if state in _FAILING else None]})"]
    params: dict[str, Any] = {"limit": limit}
    if not scope.is_admin:
        where.append("organization_id = :scope")
        params["scope"] = scope.organization_id
    if destination:
        where.append("destination = :destination")
        params["destination"] = destination
    if facility:
        where.append("organization_id = :facility")
        params["facility"] = facility
    hint = " INDEXED BY ix_outbox_failing" if conn.dialect.name == "sqlite" else ""
    q = text(f"SELECT * FROM outbox{hint} WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT :limit")
    return [_delivery(r, names) for r in (await conn.execute(q, params)).all()]


async def _outbox_tallies(conn: AsyncConnection, scope: Scope, facility: str | None = None) -> list[tallies.Tally]:
    """The outbox counts of the scope (of one of its facilities when given); kept by triggers."""
    if scope.sees_nothing or (facility is not None and not scope.allows(facility)):
        return []
    return await tallies.read(conn, "outbox", facility or scope.organization_id)


async def delivery_counts(conn: AsyncConnection, scope: Scope) -> dict[str, dict[str, int]]:
    """destination → {queued, retrying, dead} counts of undelivered rows in scope."""
    out: dict[str, dict[str, int]] = {d: {"queued": 0, "retrying": 0, "dead": 0} for d in ("cht", "notify")}
    for (dest, status, failed), n in tallies.summed(await _outbox_tallies(conn, scope), 0, 1, 2):
        if status != "done":
            key = delivery_state(status or "", 1 if tallies.flag(failed) else 0)
            out.setdefault(dest or "", {"queued": 0, "retrying": 0, "dead": 0})[key] += n
    return out


async def get_delivery(conn: AsyncConnection, scope: Scope, row_id: int, names: dict[str, str]) -> DeliveryRow | None:
    q = select(outbox).where(and_(outbox.c.id == row_id, scope.condition(outbox.c.organization_id)))
    r = (await conn.execute(q)).first()
    return _delivery(r, names) if r is not None else None


async def dead_count(conn: AsyncConnection, scope: Scope, facility: str) -> int:
    return sum(t.n for t in await _outbox_tallies(conn, scope, facility) if t.key[1] == "dead")


async def retry_one(uow: Any, scope: Scope, row_id: int) -> int:
    """Re-queue one dead row, if it is in scope. Returns how many rows were re-queued (0 or 1)."""
    if scope.sees_nothing:
        return 0
    row = await get_delivery(uow.conn, scope, row_id, {})
    if row is None:
        return 0
    return await uow.outbox.replay(row_id=row_id, organization_id=scope.organization_id)


async def retry_facility(uow: Any, scope: Scope, facility: str) -> int:
    """Re-queue every dead row of one facility in scope."""
    if not facility or not scope.allows(facility):
        return 0
    return await uow.outbox.replay(organization_id=facility)


@dataclass(frozen=True)
class SubscriptionRow:
    id: str
    organization_id: str
    facility: str
    status: str
    endpoint: str
    events: int
    error: str | None


async def subscriptions(conn: AsyncConnection, scope: Scope, names: dict[str, str]) -> list[SubscriptionRow]:
    sc = subscription_counters
    q = (select(sc.c.subscription_id, sc.c.organization_id, sc.c.events_since_start, resources.c.content)
         .join(resources, and_(resources.c.res_type == "Subscription", resources.c.res_id == sc.c.subscription_id))
         .where(and_(scope.condition(sc.c.organization_id), resources.c.deleted.is_(False)))
         .order_by(sc.c.organization_id, sc.c.subscription_id))
    out = []
    for sub_id, org_id, events, content in (await conn.execute(q)).all():
        sub = orjson.loads(content)
        out.append(SubscriptionRow(sub_id, org_id, names.get(org_id, org_id), sub.get("status", "requested"),
                                   (sub.get("channel") or {}).get("endpoint", ""), events, sub.get("error")))
    return out


# --------------------------------------------------------------------------- programme

def quantile(sorted_values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (the common 'type 7' definition)."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass
class Timeliness:
    """Time from request to first CHW attempt for a group of cases."""

    label: str
    cases: int = 0
    attempted: int = 0
    eligible: int = 0  # attempted, or requested at least TARGET_DAYS ago and not withdrawn unattempted
    within_target: int = 0
    delays: list[float] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return quantile(sorted(self.delays), 0.5)

    @property
    def p90(self) -> float | None:
        return quantile(sorted(self.delays), 0.9)

    @property
    def share_within_target(self) -> float | None:
        return self.within_target / self.eligible if self.eligible else None


# Outcome-mix rows of cases that closed (or not yet) without a coded outcome.
CLOSURE_LABELS = {"expired": N_("Expired without outcome"), "failed": N_("Failed"),
                  "cancelled": N_("Cancelled by facility"), "rejected": N_("Not assignable in CHT"),
                  "entered-in-error": N_("Entered in error"), "completed-no-outcome": N_("Completed, no coded outcome"),
                  "open": N_("Still open")}


@dataclass
class Programme:
    date_from: date
    date_to: date
    total: int
    funnel: list[tuple[str, int]]
    outcomes: list[tuple[str, str, int]]  # (code, English label, count)
    by_facility: list[Timeliness]
    by_week: list[Timeliness]
    overall: Timeliness


def _week_start(d: datetime) -> date:
    day = d.date()
    return day - timedelta(days=day.weekday())


async def programme(conn: AsyncConnection, scope: Scope, names: dict[str, str], *, facility: str | None,
                    date_from: date, date_to: date, now: datetime | None = None) -> Programme:
    """Funnel, outcome mix and timeliness of the cases *requested* in [date_from, date_to]."""
    now = now or datetime.now(UTC)
    c = cases.c
    cond = [scope.condition(c.organization_id), c.created_at >= date_from.isoformat(),
            c.created_at < (date_to + timedelta(days=1)).isoformat()]
    if facility:
        cond.append(c.organization_id == facility)
    q = select(c.organization_id, c.status, c.business_status, c.outcome, c.created_at, c.sent_to_cht_at,
               c.first_attempt_at).where(and_(*cond))
    funnel = Counter[str]()
    mix = Counter[str]()
    overall = Timeliness(N_("All facilities") if not facility else names.get(facility, facility))
    per_facility: dict[str, Timeliness] = {}
    per_week: dict[date, Timeliness] = {}
    total = 0
    for org_id, status, business, outcome, created_s, sent_s, first_s in (await conn.execute(q)).all():
        created = parse_instant(created_s)
        if created is None:
            continue
        total += 1
        first = parse_instant(first_s)
        funnel["requested"] += 1
        if sent_s or first:
            funnel["cht"] += 1
        if first:
            funnel["attempted"] += 1
        if first and outcome in REACHED:
            funnel["reached"] += 1
        if first and outcome in RETURNING:
            funnel["returning"] += 1
        if outcome:
            mix[outcome] += 1
        elif status == "failed":
            mix["expired" if business == "expired" else "failed"] += 1
        elif status in ("cancelled", "rejected", "entered-in-error"):
            mix[status] += 1
        elif status == "completed":
            mix["completed-no-outcome"] += 1
        else:
            mix["open"] += 1
        week = _week_start(created)
        groups = (overall,
                  per_facility.setdefault(org_id or "", Timeliness(names.get(org_id or "", org_id or "—"))),
                  per_week.setdefault(week, Timeliness(week.isoformat())))
        delay = (first - created).total_seconds() / 86400 if first else None
        eligible = first is not None or (
            (now - created) >= timedelta(days=TARGET_DAYS) and status not in ("cancelled", "rejected"))
        for g in groups:
            g.cases += 1
            if delay is not None:
                g.attempted += 1
                g.delays.append(max(0.0, delay))
                if delay <= TARGET_DAYS:
                    g.within_target += 1
            if eligible:
                g.eligible += 1
    stages = [(N_("Requested"), "requested"), (N_("Reached CHT"), "cht"), (N_("Attempted by a CHW"), "attempted"),
              (N_("Patient reached"), "reached"), (N_("Returning to care"), "returning")]
    outcomes = [(code, outcome_label(code, "en"), mix[code]) for code in OUTCOMES]
    outcomes += [(code, label, mix[code]) for code, label in CLOSURE_LABELS.items() if mix[code]]
    return Programme(
        date_from, date_to, total, [(label, funnel[key]) for label, key in stages], outcomes,
        sorted(per_facility.values(), key=lambda t: t.label.lower()),
        [per_week[w] for w in sorted(per_week)], overall)
