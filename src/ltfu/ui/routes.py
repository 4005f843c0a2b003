"""``/ui``: the operator dashboard. Server-rendered HTML (Jinja2), plain links and forms, no script.

Pages: cases (filters, paging) and a case's timeline; deliveries (dead and retrying outbox rows,
retry one or a facility's dead rows after a confirmation page; subscriptions); the programme view
(funnel, outcome mix, time to first attempt, SVG charts, a CSV of each chart's table).
Every read goes through :mod:`ltfu.ui.queries` with the client's :class:`~ltfu.ui.queries.Scope`.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ltfu.api.access import current_actor
from ltfu.api.auth import current_client
from ltfu.api.http import nudge_workers
from ltfu.domain.outcomes import OUTCOMES
from ltfu.store.uow import unit_of_work
from ltfu.ui import charts, queries
from ltfu.ui.queries import AGE_LABELS, STATE_LABELS, STATES, TARGET_DAYS, CaseFilters, Programme, Scope

HERE = Path(__file__).parent
MAX_FORM_BYTES = 4096


def _when(value: str | None) -> str:
    parsed = queries.parse_instant(value)
    return parsed.strftime("%Y-%m-%d %H:%M") if parsed else (value or "")


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                  trim_blocks=True, lstrip_blocks=True)
env.filters.update(when=_when, num=_num, pct=_pct)
env.globals.update(STATE_LABELS=STATE_LABELS, OUTCOMES=OUTCOMES,
                   states_options=[(s, STATE_LABELS[s]) for s in STATES],
                   outcome_options=[(code, c.display) for code, c in OUTCOMES.items()])


class Page:
    """What every page needs: the client, its scope and the facility names it may see."""

    def __init__(self, request: Request, facilities: list[queries.Facility]) -> None:
        self.request = request
        self.client = current_client(request)
        self.scope = Scope.of(current_actor(request))
        self.facilities = facilities
        self.names = {f.id: f.name for f in facilities}
        self.facility_options = [(f.id, f.name) for f in facilities]
        self.base = request.scope.get("root_path", "")

    @classmethod
    async def load(cls, request: Request) -> Page:
        async with request.app.state.db.connect() as conn:
            found = await queries.facilities(conn, Scope.of(current_actor(request)))
        return cls(request, found)

    def url(self, path: str, args: dict[str, str] | None = None) -> str:
        query = urlencode({k: v for k, v in (args or {}).items() if v not in (None, "")})
        return self.base + path + (f"?{query}" if query else "")

    def render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        scope_label = "All facilities" if self.scope.is_admin else self.names.get(
            self.scope.organization_id or "", "No facility")
        html = env.get_template(template).render(page=self, client=self.client, scope_label=scope_label,
                                                 url=self.url, path=self.request.url.path, **context)
        return HTMLResponse(html, status_code=status_code, headers=_SECURITY_HEADERS)


_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _not_found(page: Page, what: str) -> HTMLResponse:
    return page.render("error.html", 404, title="Not found", message=f"No {what} here, or not one you may see.")


# --------------------------------------------------------------------------- cases

async def home(request: Request) -> Response:
    return RedirectResponse(request.scope.get("root_path", "") + "/ui/cases", status_code=303)


async def case_list(request: Request) -> Response:
    page = await Page.load(request)
    f = CaseFilters.parse(request.query_params)
    async with request.app.state.db.connect() as conn:
        result = await queries.list_cases(conn, page.scope, f, page.names)
        chw_options = await queries.chws(conn, page.scope)
    return page.render("cases.html", title="Cases", f=f, result=result, chws=chw_options, ages=AGE_LABELS)


async def case_page(request: Request) -> Response:
    page = await Page.load(request)
    async with request.app.state.db.connect() as conn:
        detail = await queries.case_detail(conn, page.scope, request.path_params["case_id"], page.names)
    if detail is None:
        return _not_found(page, "case")
    patient = detail.patient or {}
    names = [n.get("text") or " ".join([*(n.get("given") or []), n.get("family") or ""]).strip()
             for n in patient.get("name") or []]
    identifiers = [(i.get("system") or "", i.get("value")) for i in patient.get("identifier") or [] if i.get("value")]
    return page.render("case.html", title=f"Case {detail.case.request_identifier}", d=detail, c=detail.case,
                       patient_name=next((n for n in names if n), None), identifiers=identifiers)


# --------------------------------------------------------------------------- deliveries

async def deliveries(request: Request) -> Response:
    page = await Page.load(request)
    q = request.query_params
    state = q.get("state") if q.get("state") in ("dead", "retrying") else None
    destination = q.get("destination") if q.get("destination") in ("cht", "notify") else None
    facility = q.get("facility") or None
    async with request.app.state.db.connect() as conn:
        rows = await queries.list_deliveries(conn, page.scope, page.names, state=state, destination=destination,
                                             facility=facility)
        counts = await queries.delivery_counts(conn, page.scope)
        subs = await queries.subscriptions(conn, page.scope, page.names)
    requeued = q.get("requeued")
    return page.render("deliveries.html", title="Deliveries", rows=rows, counts=counts, subs=subs, state=state,
                       destination=destination, facility=facility,
                       requeued=int(requeued) if requeued and requeued.isdigit() else None)


def _same_origin(request: Request) -> bool:
    """Refuse cross-site form posts (Basic auth credentials ride along with any request the browser makes)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:  # not a browser (curl, scripts): no ambient credentials to abuse
        return True
    allowed = {f"{request.url.scheme}://{request.url.netloc}"}
    public = request.app.state.settings.public_url
    if public:
        allowed.add("/".join(public.split("/")[:3]))
    return origin in allowed


async def _form(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _forbidden(page: Page) -> HTMLResponse:
    return page.render("error.html", 403, title="Refused",
                       message="This form must be sent from the dashboard itself.")


async def retry_one(request: Request) -> Response:
    page = await Page.load(request)
    row_id = request.path_params["row_id"]
    async with request.app.state.db.connect() as conn:
        row = await queries.get_delivery(conn, page.scope, row_id, page.names)
    if row is None:
        return _not_found(page, "delivery")
    if request.method == "GET":
        return page.render("confirm.html", title=f"Retry delivery #{row_id}", row=row, count=1 if row.state == "dead"
                           else 0, action=page.url(f"/ui/deliveries/{row_id}/retry"), facility=None)
    if not _same_origin(request):
        return _forbidden(page)
    await _form(request)
    async with unit_of_work(request.app.state.db) as uow:
        n = await queries.retry_one(uow, page.scope, row_id)
    nudge_workers(request)
    return RedirectResponse(page.url("/ui/deliveries", {"requeued": str(n)}), status_code=303)


async def retry_facility(request: Request) -> Response:
    page = await Page.load(request)
    if request.method == "GET":
        facility = request.query_params.get("facility") or page.scope.organization_id or ""
    else:
        if not _same_origin(request):
            return _forbidden(page)
        facility = (await _form(request)).get("facility", "")
    if not facility or not page.scope.allows(facility) or facility not in page.names:
        return page.render("error.html", 400 if not facility else 404, title="Choose a facility",
                           message="Choose one of your facilities to retry its dead deliveries.")
    if request.method == "GET":
        async with request.app.state.db.connect() as conn:
            count = await queries.dead_count(conn, page.scope, facility)
        return page.render("confirm.html", title="Retry dead deliveries", row=None, count=count,
                           action=page.url("/ui/deliveries/retry"), facility=facility,
                           facility_name=page.names[facility])
    async with unit_of_work(request.app.state.db) as uow:
        n = await queries.retry_facility(uow, page.scope, facility)
    nudge_workers(request)
    return RedirectResponse(page.url("/ui/deliveries", {"requeued": str(n), "facility": facility}), status_code=303)


# --------------------------------------------------------------------------- programme

def _range(q: Any) -> tuple[date, date, list[str]]:
    errors = []
    today = datetime.now(UTC).date()
    to = queries.parse_day(q.get("to"))
    if q.get("to") and to is None:
        errors.append("'to' must be a date (YYYY-MM-DD): ignored")
    to = to or today
    start = queries.parse_day(q.get("from"))
    if q.get("from") and start is None:
        errors.append("'from' must be a date (YYYY-MM-DD): ignored")
    if start is None:
        start = to - timedelta(weeks=12) - timedelta(days=(to - timedelta(weeks=12)).weekday())
    if start > to:
        errors.append("'from' is after 'to': swapped")
        start, to = to, start
    return start, to, errors


def _tables(p: Programme) -> dict[str, dict[str, Any]]:
    requested = p.funnel[0][1] if p.funnel else 0
    closed = sum(n for _, _, n in p.outcomes)

    def share(n: int, of: int) -> str:
        return f"{n / of * 100:.1f}" if of else ""

    def timeliness_row(t: queries.Timeliness) -> list[Any]:
        return [t.label, t.cases, t.attempted, _num(t.median), _num(t.p90), t.eligible, t.within_target,
                "" if t.share_within_target is None else f"{t.share_within_target * 100:.1f}"]

    tl_cols = ["Cases", "Attempted", "Median days to first attempt", "p90 days to first attempt",
               f"Eligible for the {TARGET_DAYS}-day target", f"First attempt within {TARGET_DAYS} days",
               f"Share within {TARGET_DAYS} days (%)"]
    return {
        "funnel": {"title": "Follow-up funnel", "columns": ["Stage", "Cases", "Share of requested (%)"],
                   "rows": [[label, n, share(n, requested)] for label, n in p.funnel]},
        "outcomes": {"title": "Outcome mix", "columns": ["Outcome", "Code", "Cases", "Share (%)"],
                     "rows": [[label, code, n, share(n, closed)] for code, label, n in p.outcomes]},
        "facilities": {"title": "Time to first attempt by facility", "columns": ["Facility", *tl_cols],
                       "rows": [timeliness_row(t) for t in [*p.by_facility, p.overall]]},
        "weeks": {"title": "Time to first attempt by week of request", "columns": ["Week starting", *tl_cols],
                  "rows": [timeliness_row(t) for t in p.by_week]},
    }


def _charts(p: Programme) -> dict[str, Any]:
    requested = p.funnel[0][1] if p.funnel else 0
    funnel = [charts.Bar(label, n, f"{n} ({n / requested * 100:.0f}%)" if requested else str(n))
              for label, n in p.funnel]
    closed = sum(n for _, _, n in p.outcomes) or 1
    outcomes = [charts.Bar(label, n, f"{n} ({n / closed * 100:.0f}%)") for _, label, n in p.outcomes]
    fac = [charts.Bar(t.label, (t.share_within_target or 0) * 100,
                      _pct(t.share_within_target) + f" of {t.eligible}") for t in p.by_facility]
    weeks = [t.label[5:] for t in p.by_week]
    return {
        "funnel": charts.hbar("chart-funnel", "Follow-up funnel: cases at each stage", funnel),
        "outcomes": charts.hbar("chart-outcomes", "Outcome mix of the cases requested in the period", outcomes),
        "facilities": charts.hbar("chart-facilities", f"Share of cases attempted within {TARGET_DAYS} days, "
                                  "by facility", fac, max_value=100),
        "weeks_days": charts.columns(
            "chart-weeks-days", "Days from request to first attempt, by week of request", weeks,
            [("Median", [t.median for t in p.by_week]), ("p90", [t.p90 for t in p.by_week])], unit=" d", min_max=1.0),
        "weeks_share": charts.columns(
            "chart-weeks-share", f"Share attempted within {TARGET_DAYS} days, by week of request", weeks,
            [(f"Within {TARGET_DAYS} days", [None if t.share_within_target is None else t.share_within_target * 100
                                            for t in p.by_week])], unit="%", max_value=100),
    }


async def _programme(request: Request, page: Page) -> tuple[Programme, str | None, list[str]]:
    q = request.query_params
    facility = q.get("facility") or None
    start, to, errors = _range(q)
    async with request.app.state.db.connect() as conn:
        p = await queries.programme(conn, page.scope, page.names, facility=facility, date_from=start, date_to=to)
    return p, facility, errors


async def programme(request: Request) -> Response:
    page = await Page.load(request)
    p, facility, errors = await _programme(request, page)
    args = {"facility": facility or "", "from": p.date_from.isoformat(), "to": p.date_to.isoformat()}
    return page.render("programme.html", title="Programme", p=p, facility=facility, errors=errors,
                       tables=_tables(p), charts=_charts(p), args=args, target=TARGET_DAYS)


async def programme_csv(request: Request) -> Response:
    page = await Page.load(request)
    name = request.path_params["table"]
    p, facility, _ = await _programme(request, page)
    tables = _tables(p)
    if name not in tables:
        return _not_found(page, "such table")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(tables[name]["columns"])
    writer.writerows(tables[name]["rows"])
    filename = f"ltfu-{name}-{p.date_from.isoformat()}-{p.date_to.isoformat()}.csv"
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


routes = [
    Route("/ui", home, methods=["GET"]),
    Route("/ui/cases", case_list, methods=["GET"]),
    Route("/ui/cases/{case_id}", case_page, methods=["GET"]),
    Route("/ui/deliveries", deliveries, methods=["GET"]),
    Route("/ui/deliveries/retry", retry_facility, methods=["GET", "POST"]),
    Route("/ui/deliveries/{row_id:int}/retry", retry_one, methods=["GET", "POST"]),
    Route("/ui/programme", programme, methods=["GET"]),
    Route("/ui/programme/{table}.csv", programme_csv, methods=["GET"]),
    Mount("/ui/static", app=StaticFiles(directory=HERE / "static"), name="ui-static"),
]
