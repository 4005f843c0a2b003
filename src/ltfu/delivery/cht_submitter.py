"""Sends follow-up and cancel records to CHT (records API, JSON form), never twice.

Every try of a row that may have been sent before (a crash, a timeout or a lost answer may hide a
record CHT stored) first asks CHT ``_find`` for the record of this case by its ``fields.case_ref``
(:mod:`ltfu.delivery.create_once`), so a CHW never gets two tasks for one case. The records API is
kept (rather than ``PUT /medic/<deterministic id>``) because it is what runs the form's field
conversion, validation and CHT's API-side transitions (``mark_for_outbound``, ``update_clinics``) and
it assigns the ``_id`` itself; a raw CouchDB write would skip all of that (reference/cht.md §2).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import aiohttp

from ltfu.cht import records
from ltfu.cht.client import ChtClient, ChtResponse
from ltfu.cht.contact_shapes import is_person
from ltfu.cht.doc_ids import doc_path
from ltfu.cht.people_index import identifier_fields, minified_parent, person_doc, with_identifiers
from ltfu.cht.version import has_datasource_create
from ltfu.delivery.attempt import Attempt, Effect, Handler
from ltfu.delivery.create_once import Lookup, create_once
from ltfu.delivery.retry import Verdict, classify
from ltfu.domain.task_states import TERMINAL
from ltfu.fhir.systems import Systems
from ltfu.services import intake, review, tasks
from ltfu.services.cht_index import index_docs
from ltfu.services.intake import PERSON_IDENTIFIERS
from ltfu.settings import Settings
from ltfu.store.db import Database
from ltfu.store.outbox import OutboxRow
from ltfu.store.resources import now_instant
from ltfu.store.reviews import OPEN
from ltfu.store.uow import UnitOfWork, unit_of_work

MAX_CONFLICTS = 5  # re-reads after a 409 before the update waits for the next retry
CaseData = tuple[Any, dict[str, Any], dict[str, Any], dict[str, Any] | None]  # case row, SR, Patient, Organization


async def _read_case(uow: UnitOfWork, case_id: str) -> CaseData | None:
    """What a record of the case is built from; None when a part is missing (the send then reads it again and
    fails as it would have: a retry, not a failed claim)."""
    case = await uow.cases.get(case_id)
    if case is None:
        return None
    sr = await uow.resources.get("ServiceRequest", case_id)
    patient = await uow.resources.get("Patient", case.patient_id)
    if sr is None or patient is None:
        return None
    org = await uow.resources.get("Organization", case.organization_id) if case.organization_id else None
    return case, sr.resource, patient.resource, org.resource if org else None


def _failure(resp: ChtResponse, what: str) -> Attempt:
    verdict = classify(resp.status)
    if resp.status == 302:
        detail = "CHT redirected to its login page: check LTFU_CHT_USERNAME/PASSWORD"
        verdict = Verdict.PERMANENT
    elif resp.status >= 500 and isinstance(resp.body, dict) and resp.body.get("details"):
        # The records API answers 500 for problems that will not go away (unknown form, missing _meta).
        detail = f"CHT refused the {what}: {resp.body['details']}"
        verdict = Verdict.PERMANENT
    else:
        body = resp.body if isinstance(resp.body, str) else (resp.body or {}).get("error", "")
        detail = f"CHT answered {resp.status} to the {what}: {str(body)[:200]}"
    return Attempt(verdict, resp.status, resp.latency_ms, detail)


class ChtSubmitter(Handler):
    destination = "cht"
    chains = False  # a case's lane: its follow-up, perhaps a cancel later

    def __init__(self, db: Database, settings: Settings) -> None:
        assert settings.cht_url
        self.db = db
        self.settings = settings
        self.systems = Systems(settings.base_url)
        self.client = ChtClient.from_settings(settings)

    async def close(self) -> None:
        await self.client.close()

    async def send(self, row: OutboxRow) -> Attempt:
        try:
            if row.kind == "follow-up":
                return await self._follow_up(row)
            if row.kind == "cancel":
                return await self._cancel(row)
            if row.kind == PERSON_IDENTIFIERS:
                return await self._write_identifiers(row)
            return Attempt(Verdict.DEAD, error=f"unknown CHT message kind {row.kind!r}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Attempt(Verdict.RETRY, error=f"CHT unreachable: {type(exc).__name__}")

    async def prepare(self, uow: UnitOfWork, rows: list[OutboxRow]) -> list[OutboxRow]:
        """The case of a follow-up or cancel, read in the claim's transaction."""
        row = rows[0]
        if row.kind not in ("follow-up", "cancel"):
            return rows
        return [replace(row, prepared=await _read_case(uow, row.payload["case_id"])), *rows[1:]]

    async def _load(self, row: OutboxRow) -> CaseData:
        if row.prepared is not None:
            return row.prepared  # type: ignore[no-any-return]
        case_id = row.payload["case_id"]
        async with unit_of_work(self.db) as uow:
            case = await uow.cases.get(case_id)
            sr = (await uow.resources.read("ServiceRequest", case_id)).resource
            patient = (await uow.resources.read("Patient", case.patient_id)).resource
            org = await uow.resources.get("Organization", case.organization_id) if case.organization_id else None
        return case, sr, patient, org.resource if org else None

    async def _record_of(self, form: str, case_id: str, person_id: str | None = None) -> Lookup:
        selector = {"form": form.upper(), "fields.case_ref": case_id}
        if person_id is not None:
            selector["fields.patient_uuid"] = person_id
        return await find_existing(self.client, selector, f"{form} record of the case")

    async def _post(self, record: dict[str, Any], what: str) -> tuple[str | None, Attempt]:
        resp = await self.client.create_record(record)
        if resp.status != 200 or not isinstance(resp.body, dict) or resp.body.get("success") is not True:
            return None, _failure(resp, what)
        record_id = resp.body.get("id")
        if not record_id:
            return None, Attempt(Verdict.PERMANENT, resp.status, resp.latency_ms,
                                 "CHT reported success without a record id (a transition failed)")
        # CHT saves a record with validation errors and still says success: read it back.
        stored = await self.client.get_doc(record_id)
        errors = stored.body.get("errors") if stored.status == 200 and isinstance(stored.body, dict) else None
        if errors:
            codes = ", ".join(str(e.get("code", e)) for e in errors)
            return record_id, Attempt(Verdict.PERMANENT, resp.status, resp.latency_ms,
                                      f"CHT stored the {what} with errors: {codes}")
        return record_id, Attempt(Verdict.OK, resp.status, resp.latency_ms + stored.latency_ms)

    async def _follow_up(self, row: OutboxRow) -> Attempt:
        case_id = row.payload["case_id"]
        case, sr, patient, org = await self._load(row)
        rematched = case.business_status == "awaiting-match" and case.status not in TERMINAL
        if case.status not in ("requested", "received") and not rematched:
            return Attempt(Verdict.OK, error=f"case already {case.status}; not sent")
        person_id = records.cht_contact_id(patient, self.systems)
        if person_id is None:
            person_id, parked = await self._intake(row, case, sr, patient)
            if parked is not None:
                return parked
        person = await self.client.get_person(person_id)
        if person.status == 404:
            return self._unassignable("the patient's CHT contact id is unknown to CHT", person)
        if person.status != 200:
            return _failure(person, "person lookup")
        if not is_person(person.body):  # type person, or type contact + contact_type person (5.x)
            return self._unassignable("the patient's CHT id is not a person in CHT", person)
        form = self.settings.cht_form
        record = records.follow_up_record(
            form, case_id=case_id, patient_uuid=person_id, patient_shortcode=records.cht_shortcode(
                patient, self.systems) or person.body.get("patient_id"),
            request=sr, organization=org, window_end=case.window_end)
        # the record of this case *for this person*: after a person was deleted or merged in CHT
        # (services/cht_gone.py) the case is sent again to the person it is linked to now
        record_id, attempt = await create_once(row, lambda: self._record_of(form, case_id, person_id),
                                               lambda: self._post(record, "follow-up record"))
        if attempt.verdict is not Verdict.OK:
            return attempt

        async def received(uow: UnitOfWork) -> None:
            current = await uow.cases.get(case_id)
            if current is not None and current.status in ("received", "accepted", "in-progress", "on-hold") \
                    and current.business_status == "awaiting-match":  # re-sent to a new person
                await tasks.transition(uow, case_id, current.status, "received-by-cht", case=current,
                                       case_values={"cht_record_id": record_id, "sent_to_cht_at": now_instant()})
                return
            if current is None or current.status != "requested":
                await uow.cases.set(case_id, cht_record_id=record_id, sent_to_cht_at=now_instant())
                return
            await tasks.transition(uow, case_id, "received", "received-by-cht", case=current,
                                   case_values={"cht_record_id": record_id, "sent_to_cht_at": now_instant()})

        attempt.on_done = received
        return attempt

    async def _intake(self, row: OutboxRow, case: Any, sr: dict[str, Any],
                      patient: dict[str, Any]) -> tuple[str | None, Attempt | None]:
        """Match the patient (services/intake.py): (the CHT person id, None) to go on, or (None, the attempt)
        when the case waits for a review or a person could not be created yet."""
        async with unit_of_work(self.db) as uow:
            sticky = await review.decided_place(uow, case.case_id)
            if sticky is not None and sticky[0] in OPEN + ("expired",):
                return None, Attempt(Verdict.OK, error=f"patient matching: review item {sticky[0]}")
            if sticky is not None and sticky[0] == "created" and sticky[1]:
                decision = intake.Decision("create", place_id=sticky[1], reason="review")
            else:
                decision = await intake.decide(uow, case.case_id, sr, patient, case.organization_id)
            if decision.action == "link" and decision.person_id:
                await intake.link_patient(uow, patient["id"], decision.person_id)
                await uow.cases.set(case.case_id, matched_by=decision.reason)
                return decision.person_id, None
            if decision.action == "review":
                await intake.open_review(uow, case.case_id, case.organization_id, patient["id"], decision)
                await uow.cases.set(case.case_id, matched_by="review")
                return None, Attempt(Verdict.OK, error=f"patient matching: sent to review ({decision.reason})")
            place = (await uow.cht_index.places([decision.place_id or ""])).get(decision.place_id or "")
        if place is None:
            return None, Attempt(Verdict.RETRY, error="patient matching: the chosen place is not indexed yet")
        doc = person_doc(patient, case.case_id, self.systems, self.settings)
        person_id, attempt = await create_once(
            row, lambda: find_existing(self.client, {"ltfu_source": doc["ltfu_source"]}, "person"),
            lambda: self._create_person(doc, place.id))
        if attempt.verdict is not Verdict.OK or person_id is None:
            return None, attempt
        async with unit_of_work(self.db) as uow:
            await index_docs(uow, [{**doc, "_id": person_id, "parent": minified_parent(place)}])
            await intake.link_patient(uow, patient["id"], person_id)
            await uow.cases.set(case.case_id, matched_by="reviewed" if decision.reason == "review" else "created")
        return person_id, None

    async def _create_person(self, doc: dict[str, Any], place_id: str) -> tuple[str | None, Attempt]:
        """Create the person under ``place_id`` (never without a place: an orphan), in the shape the CHT version
        takes: 5.2+ cht-datasource ``POST /api/v1/person`` with ``parent`` (answers the stored doc), older
        ``POST /api/v1/people`` with ``place`` (answers ``{ok, id, rev}``)."""
        version = await self.client.version()
        if version is None:
            return None, Attempt(Verdict.RETRY, error="CHT did not tell its version (GET /api/info)")
        if has_datasource_create(version):
            resp = await self.client.request("POST", "/api/v1/person", {**doc, "parent": place_id})
            key = "_id"
        else:
            resp = await self.client.request("POST", "/api/v1/people", {**doc, "place": place_id})
            key = "id"
        if resp.status != 200 or not isinstance(resp.body, dict) or not resp.body.get(key):
            return None, _failure(resp, "person creation")
        return str(resp.body[key]), Attempt(Verdict.OK, resp.status, resp.latency_ms)

    async def _write_identifiers(self, row: OutboxRow) -> Attempt:
        """The linked facility Patient's MRN/UPI added to the CHT person (``LTFU_CHT_WRITE_IDENTIFIERS``).

        A full-document update (CouchDB has no partial one): GET the doc, add the fields, PUT it with its
        ``_rev``; a 409 (someone saved the person meanwhile) reads it again. Nothing is written when the
        fields are there already, so a replay (a crash after the PUT, a lost answer) writes nothing twice."""
        person_id, patient_id = row.payload["person_id"], row.payload["patient_id"]
        async with unit_of_work(self.db) as uow:
            stored = await uow.resources.get("Patient", patient_id)
        if stored is None:
            return Attempt(Verdict.OK, error="the Patient is gone; nothing written")
        fields, mrns = identifier_fields(stored.resource, self.systems, self.settings.match_identifiers)
        if not fields and not mrns:
            return Attempt(Verdict.OK, error="the Patient has no identifier to write")
        latency = 0
        for _ in range(MAX_CONFLICTS):
            got = await self.client.get_doc(person_id)
            latency += got.latency_ms
            if got.status == 404:
                return Attempt(Verdict.OK, 404, latency, "the CHT person is gone; nothing written")
            if got.status != 200:
                return _failure(got, "person read")
            if not isinstance(got.body, dict) or not is_person(got.body):
                return Attempt(Verdict.PERMANENT, got.status, latency, "the linked CHT id is not a person")
            wanted = with_identifiers(got.body, fields, mrns)
            if wanted == got.body:
                return Attempt(Verdict.OK, 200, latency, "the identifiers are in CHT already")
            put = await self.client.request("PUT", doc_path(person_id), wanted)
            latency += put.latency_ms
            if put.status == 409:
                continue
            if put.status not in (200, 201) or not isinstance(put.body, dict):
                return _failure(put, "person update")
            saved = {**wanted, "_rev": put.body.get("rev", wanted.get("_rev"))}

            async def reindex(uow: UnitOfWork, doc: dict[str, Any] = saved) -> None:
                await index_docs(uow, [doc])  # the next match finds the person by these identifiers

            return Attempt(Verdict.OK, put.status, latency, on_done=reindex)
        return Attempt(Verdict.RETRY, 409, latency, "the CHT person kept changing while it was updated (409)")

    def _unassignable(self, reason: str, resp: ChtResponse | None = None) -> Attempt:
        return Attempt(Verdict.PERMANENT, resp.status if resp else None, resp.latency_ms if resp else 0,
                       f"unassignable: {reason}")

    def dead_effect(self, row: OutboxRow, error: str) -> Effect | None:
        """Giving up on a follow-up: the Task is rejected (``unassignable``) and the facility told."""
        if row.kind != "follow-up":
            return None
        case_id = row.payload["case_id"]

        async def reject(uow: UnitOfWork) -> None:
            case = await uow.cases.get(case_id)
            if case is not None and case.status in ("requested", "received"):
                await tasks.transition(uow, case_id, "rejected", "unassignable", reason=error[:300])

        return reject

    async def _cancel(self, row: OutboxRow) -> Attempt:
        case_id = row.payload["case_id"]
        _, _, patient, _ = await self._load(row)
        form = self.settings.cht_cancel_form
        record = records.cancel_record(form, case_id=case_id, patient_uuid=records.cht_contact_id(
            patient, self.systems), reason=row.payload.get("reason"))
        _, attempt = await create_once(row, lambda: self._record_of(form, case_id),
                                       lambda: self._post(record, "cancel record"))
        return attempt


async def find_existing(client: ChtClient, selector: dict[str, Any], what: str) -> Lookup:
    """The ``_id`` of the CHT doc matching ``selector`` (Mango ``_find``), for :func:`create_once`.

    Anything but a clean answer is a failure (retry later), never "not there": creating on a failed
    look-up is how duplicates happen."""
    resp = await client.find(selector, limit=1)
    if resp.status != 200:
        return Lookup(latency_ms=resp.latency_ms, failure=_failure(resp, f"look-up of the {what}"))
    if not isinstance(resp.body, dict) or not isinstance(resp.body.get("docs"), list):
        return Lookup(latency_ms=resp.latency_ms, failure=Attempt(
            Verdict.RETRY, resp.status, resp.latency_ms, f"CHT answered the look-up of the {what} without docs"))
    docs = resp.body["docs"]
    return Lookup(found=str(docs[0].get("_id")) if docs else None, latency_ms=resp.latency_ms)
