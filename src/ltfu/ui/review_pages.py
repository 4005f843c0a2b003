"""``/ui/review``: the matching review queue for people. The incoming patient and up to 5 candidates side by
side, each field marked agree/partial/disagree with its weight, the candidates' household → CHW area → unit,
the proposed places; link, create under a place, not a match, defer, flag candidates as one person recorded
twice in CHT. The queue lists the flagged duplicates for a CHT admin. Plain forms, no script. The decisions
go through :mod:`ltfu.services.review` (audited, sticky), as the JSON API's do.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ltfu.api.access import current_actor
from ltfu.api.http import nudge_workers
from ltfu.fhir.outcome import FhirError
from ltfu.services import policy, review
from ltfu.store.uow import unit_of_work
from ltfu.ui.i18n import N_, NC_
from ltfu.ui.routes import Page, _forbidden, _form_lists, _not_found, _same_origin

FIELDS = ("given", "family", "birthDate", "sex", "phone", "place", "identifier")
# What the page shows for the codes of the matching and of the review queue (translated in the template).
FIELD_LABELS = {
    "given": N_("Given name"),
    "family": N_("Family name"),
    "birthDate": N_("Date of birth"),
    "sex": N_("Sex"),
    "phone": N_("Phone"),
    "place": N_("Place"),
    "identifier": N_("Identifier"),
}
VERDICT_LABELS = {
    "agree": N_("agrees"),
    "partial": N_("partly agrees"),
    "disagree": N_("disagrees"),
    "missing": N_("missing"),
}
GRADE_LABELS = {"certain": N_("certain match"), "probable": N_("probable match"), "possible": N_("possible match")}
REASON_LABELS = {
    "certain": N_("certain match"),
    "probable": N_("probable match"),
    "possible": N_("possible match"),
    "cht-duplicate": N_("possible duplicate in CHT"),
    "conflict": N_("fields conflict"),
    "no-candidate": N_("no candidate"),
    "no-place": N_("no place found"),
    "ambiguous-place": N_("several possible places"),
    "block-overflow": N_("too many similar persons to check"),
    "review": N_("needs review"),
    "cht-person-gone": N_("CHT person deleted or merged"),
}
# The context of the review items' statuses and of the decisions (a state, not a verb or a filter).
STATUS_CONTEXT = "review status"
STATUS_LABELS = {
    "open": NC_("review status", "Open"),
    "deferred": NC_("review status", "Deferred"),
    "linked": NC_("review status", "Linked"),
    "created": NC_("review status", "Person created"),
    "rejected": NC_("review status", "Not a match"),
    "expired": NC_("review status", "Expired"),
    "closed": NC_("review status", "Case closed first"),
}
ACTION_CONTEXT = "review decision"
ACTION_LABELS = {
    "link": NC_("review decision", "linked"),
    "create": NC_("review decision", "created a person"),
    "reject": NC_("review decision", "not a match"),
    "defer": NC_("review decision", "deferred"),
    "flag-duplicate": NC_("review decision", "flagged as duplicates in CHT"),
    "resolve-duplicate": NC_("review decision", "marked as dealt with in CHT"),
    "cht-person-gone": NC_("review decision", "unlinked: the CHT person was deleted or merged in CHT"),
    "report-old-link": NC_("review decision", "sent a CHW report on the former CHT person"),
    "case-closed": NC_("review decision", "closed: the case ended before a decision"),
}
# The queue's filter: which items to show.
FILTER_LABELS = {"open": N_("Open"), "decided": N_("Decided"), "all": N_("All")}
# Why a decision was not recorded, by HTTP status (the service's own messages are English, for the API).
ERROR_MESSAGES = {
    403: N_("Your account may look at this item but not decide it."),
    409: N_("This item was already decided."),
    422: N_("Choose one of the candidates or of the places shown."),
}
FLAG_ERROR = N_("Tick at least two of the candidates to flag them as duplicates.")
LABELS = {
    "FIELD_LABELS": FIELD_LABELS,
    "VERDICT_LABELS": VERDICT_LABELS,
    "GRADE_LABELS": GRADE_LABELS,
    "REASON_LABELS": REASON_LABELS,
    "STATUS_LABELS": STATUS_LABELS,
    "STATUS_CONTEXT": STATUS_CONTEXT,
    "ACTION_LABELS": ACTION_LABELS,
    "ACTION_CONTEXT": ACTION_CONTEXT,
    "FILTER_LABELS": FILTER_LABELS,
}


def _patient_summary(patient: dict[str, Any]) -> dict[str, str]:
    name = next((n for n in patient.get("name") or [] if isinstance(n, dict)), {})
    return {
        "given": " ".join(name.get("given") or []),
        "family": name.get("family") or "",
        "birthDate": patient.get("birthDate", ""),
        "sex": patient.get("gender", ""),
        "phone": ", ".join(t.get("value", "") for t in patient.get("telecom") or [] if isinstance(t, dict)),
        "identifier": ", ".join(
            f"{i.get('system', '')}|{i.get('value', '')}"
            for i in patient.get("identifier") or []
            if isinstance(i, dict)
        ),
        "place": "",
    }


def _grid(item: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per field: the incoming value, then each candidate's (value, verdict, weight)."""
    incoming = _patient_summary(item["proposal"]["patient"])
    rows = []
    for field in FIELDS:
        cells = []
        for c in item["proposal"]["candidates"]:
            found = [f for f in c["fields"] if f["field"] == field]
            if found:
                f = found[0]
                cells.append(
                    {"value": f["candidate"], "verdict": f["verdict"], "weight": f["weight"], "level": f["level"]}
                )
            else:
                cells.append({"value": "", "verdict": "missing", "weight": 0.0, "level": "missing"})
        if any(c["verdict"] != "missing" for c in cells) or incoming.get(field):
            rows.append({"field": field, "incoming": incoming.get(field, ""), "cells": cells})
    return rows


async def review_list(request: Request) -> Response:
    page = await Page.load(request)
    status = request.query_params.get("status", "open")
    actor = current_actor(request)
    try:
        async with unit_of_work(request.app.state.db, actor) as uow:
            items = await review.list_items(uow, status)
            groups = await review.duplicates(uow) if policy.may_decide_review(actor) else []
    except FhirError:
        return page.render(
            "error.html",
            400,
            title=page._("Unknown filter"),
            message=page._("Show the open, the decided or all the items."),
        )
    for item in items:
        item["summary"] = _patient_summary(item["proposal"]["patient"])
    return page.render(
        "review_list.html",
        title=page._("Patient matching review"),
        items=items,
        status=status,
        done=request.query_params.get("done"),
        duplicates=[g for g in groups if g["active"]],
        **LABELS,
    )


async def review_item(request: Request) -> Response:
    page = await Page.load(request)
    review_id = request.path_params["review_id"]
    actor = current_actor(request)
    if request.method == "POST":
        if not _same_origin(request):
            return _forbidden(page)
        form = await _form_lists(request)
        body: dict[str, Any] = {k: v[0] for k, v in form.items() if k in ("action", "person", "place", "note") and v}
        if body.get("action") == "flag-duplicate":
            body["persons"] = form.get("persons", [])
        try:
            async with unit_of_work(request.app.state.db, actor) as uow:
                await review.act(uow, review_id, body)
        except FhirError as exc:
            if exc.status == 404:
                return _not_found(page, N_("No review item here, or not one you may see."))
            status = exc.status or 400
            message = ERROR_MESSAGES.get(status, N_("The decision could not be recorded."))
            if status == 422 and body.get("action") == "flag-duplicate":
                message = FLAG_ERROR
            return page.render("error.html", status, title=page._("Not done"), message=page._(message))
        nudge_workers(request)
        if body.get("action") == "flag-duplicate":  # the item stays open: back to it
            return RedirectResponse(page.url(f"/ui/review/{review_id}", {"done": "flag-duplicate"}), status_code=303)
        return RedirectResponse(page.url("/ui/review", {"done": body.get("action", "")}), status_code=303)
    try:
        async with unit_of_work(request.app.state.db, actor) as uow:
            item = await review.get_item(uow, review_id)
            places = await uow.cht_index.places(
                {i for c in item["proposal"]["candidates"] for i in c["lineage"].values() if i}
            )
    except FhirError:
        return _not_found(page, N_("No review item here, or not one you may see."))
    names = {pid: p.name for pid, p in places.items()}
    return page.render(
        "review_item.html",
        title=page._("Review a patient match"),
        item=item,
        grid=_grid(item),
        names=names,
        can_decide=policy.may_decide_review(actor),
        summary=_patient_summary(item["proposal"]["patient"]),
        done=request.query_params.get("done"),
        **LABELS,
    )


async def resolve_duplicates(request: Request) -> Response:
    """A CHT admin dealt with a flagged group (merged in CHT, or not the same person after all)."""
    page = await Page.load(request)
    if not _same_origin(request):
        return _forbidden(page)
    await _form_lists(request)
    try:
        async with unit_of_work(request.app.state.db, current_actor(request)) as uow:
            await review.resolve_duplicates(uow, request.path_params["group"])
    except FhirError as exc:
        if exc.status == 404:
            return _not_found(page, N_("No flagged duplicates here."))
        return page.render("error.html", exc.status or 400, title=page._("Not done"),
                           message=page._(ERROR_MESSAGES[403]))
    return RedirectResponse(page.url("/ui/review", {"done": "resolve-duplicate"}), status_code=303)


routes_review = [
    ("/ui/review", review_list, ["GET"]),
    ("/ui/review/duplicates/{group}/resolve", resolve_duplicates, ["POST"]),
    ("/ui/review/{review_id}", review_item, ["GET", "POST"]),
]
