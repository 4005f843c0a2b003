"""``/ui/review``: the matching review queue for people. The incoming patient and up to 5 candidates side by
side, each field marked agree/partial/disagree with its weight, the candidates' household → CHW area → unit,
the proposed places; link, create under a place, not a match, defer. Plain forms, no script. The decisions
go through :mod:`ltfu.services.review` (audited, sticky), as the JSON API's do.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ltfu.api.access import current_actor
from ltfu.api.http import nudge_workers
from ltfu.fhir.outcome import FhirError
from ltfu.services import review
from ltfu.store.uow import unit_of_work
from ltfu.ui.routes import Page, _forbidden, _form, _not_found, _same_origin

FIELDS = ("given", "family", "birthDate", "sex", "phone", "place", "identifier")


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
    try:
        async with unit_of_work(request.app.state.db, current_actor(request)) as uow:
            items = await review.list_items(uow, status)
    except FhirError:
        return page.render("error.html", 400, title="Unknown filter", message="status is open, decided or all.")
    for item in items:
        item["summary"] = _patient_summary(item["proposal"]["patient"])
    return page.render(
        "review_list.html",
        title="Patient matching review",
        items=items,
        status=status,
        done=request.query_params.get("done"),
    )


async def review_item(request: Request) -> Response:
    page = await Page.load(request)
    review_id = request.path_params["review_id"]
    actor = current_actor(request)
    if request.method == "POST":
        if not _same_origin(request):
            return _forbidden(page)
        form = await _form(request)
        body = {k: v for k, v in form.items() if k in ("action", "person", "place") and v}
        try:
            async with unit_of_work(request.app.state.db, actor) as uow:
                await review.act(uow, review_id, body)
        except FhirError as exc:
            if exc.status == 404:
                return _not_found(page, "review item")
            return page.render("error.html", exc.status or 400, title="Not done", message=exc.message)
        nudge_workers(request)
        return RedirectResponse(page.url("/ui/review", {"done": body.get("action", "")}), status_code=303)
    try:
        async with unit_of_work(request.app.state.db, actor) as uow:
            item = await review.get_item(uow, review_id)
            places = await uow.cht_index.places(
                {i for c in item["proposal"]["candidates"] for i in c["lineage"].values() if i}
            )
    except FhirError:
        return _not_found(page, "review item")
    names = {pid: p.name for pid, p in places.items()}
    return page.render(
        "review_item.html",
        title="Review a patient match",
        item=item,
        grid=_grid(item),
        names=names,
        can_decide=actor.role in ("admin", "matcher", "system"),
        summary=_patient_summary(item["proposal"]["patient"]),
    )


routes_review = [
    ("/ui/review", review_list, ["GET"]),
    ("/ui/review/{review_id}", review_item, ["GET", "POST"]),
]
