"""Targets of CHT's outbound push (``/cht/...``). CHT retries every 5 minutes and re-sends on change,
so every route is idempotent; a 4xx here is permanent for that payload and CHT keeps retrying it.
Only the ``cht`` role (and admin, to replay a payload by hand) reaches them: ``ltfu.api.access``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ltfu.api.access import current_actor
from ltfu.api.http import JSONResponse, json_body, nudge_workers
from ltfu.cht.inbound import parse_follow_up, parse_person
from ltfu.cht.users import ChtUnavailable
from ltfu.fhir.outcome import FhirError, Issue
from ltfu.metrics import count_cht_push
from ltfu.services import attempts, cht_people
from ltfu.store.uow import unit_of_work


async def patient(request: Request) -> Response:
    try:
        raw = await json_body(request)
        person = parse_person(raw)
        if raw.get("_deleted") is True:  # a tombstone (deleted, or merged away by cht-conf)
            reopened = await cht_people.deleted(request.app.state.db, current_actor(request), person.id)
            count_cht_push("patient", "deleted")
            return JSONResponse({"status": "deleted", "cases_to_review": reopened})
        stored, created = await cht_people.receive(request.app.state.db, current_actor(request), person, raw,
                                                   request.app.state.cht_users)
    except FhirError:
        count_cht_push("patient", "rejected")
        raise
    except ChtUnavailable as exc:  # CHT retries the push every 5 minutes
        count_cht_push("patient", "rejected")
        raise FhirError([Issue("transient", f"Cannot tell now whether this person is a CHW: {exc}")], 503) from None
    if stored is None:
        count_cht_push("patient", "ignored")
        return JSONResponse({"status": "ignored", "reason": "a CHT user's contact (a CHW), not a patient"})
    count_cht_push("patient", "recorded" if created else "duplicate")
    return JSONResponse({"status": "created" if created else "ok", "patient": stored.ref},
                        status_code=201 if created else 200)


async def follow_up(request: Request) -> Response:
    try:
        raw = await json_body(request)
        report = parse_follow_up(raw)
        async with unit_of_work(request.app.state.db, current_actor(request)) as uow:
            result, changed = await attempts.record_follow_up(uow, report, raw)
    except FhirError:
        count_cht_push("follow-up", "rejected")
        raise
    count_cht_push("follow-up", "recorded" if changed else "duplicate")
    nudge_workers(request)
    return JSONResponse({"status": "recorded" if changed else "duplicate", **result},
                        status_code=201 if changed else 200)


routes = [
    Route("/cht/patient", patient, methods=["POST"]),
    Route("/cht/follow-up", follow_up, methods=["POST"]),
]
