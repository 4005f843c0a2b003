"""``/ui``: the operator dashboard. Server-rendered HTML (Jinja2), plain links and forms, no script.

Pages: cases (filters, paging) and a case's timeline; deliveries (dead and retrying outbox rows,
retry one or a facility's dead rows after a confirmation page; subscriptions); the programme view
(funnel, outcome mix, time to first attempt, SVG charts, a CSV of each chart's table).
Every read goes through :mod:`ltfu.ui.queries` with the client's :class:`~ltfu.ui.queries.Scope`.
Every text goes through gettext in the client's language (:mod:`ltfu.ui.i18n`); a page added here
renders with :meth:`Page.render`, which gives its template ``_``, ``ngettext`` and the locale's filters.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ltfu.api.access import current_actor
from ltfu.api.auth import current_client
from ltfu.api.http import nudge_workers
from ltfu.domain.outcomes import LANGUAGES, OUTCOMES
from ltfu.store.uow import unit_of_work
from ltfu.ui import charts, queries
from ltfu.ui.i18n import COOKIE, N_, NATIVE_NAMES, Locale, Msg, choose_language, translations
from ltfu.ui.queries import (
    AGE_LABELS,
    ATTEMPT_RESULTS,
    CLOSURE_LABELS,
    DELIVERY_STATES,
    STATE_LABELS,
    STATES,
    TARGET_DAYS,
    CaseFilters,
    Programme,
    Scope,
)

HERE = Path(__file__).parent
MAX_FORM_BYTES = 4096
DESTINATIONS = {"cht": N_("CHT"), "notify": N_("Facility notifications")}
LANGUAGE_COOKIE_MAX_AGE = 365 * 24 * 3600


@cache
def environment(language: str) -> Environment:
    """The templates in one language: gettext from its catalogue, filters formatting for its locale."""
    loc = Locale(language)
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.i18n"])
    env.install_gettext_translations(translations(loc.language), newstyle=True)  # type: ignore[attr-defined]

    def when(value: str | None) -> str:
        parsed = queries.parse_instant(value)
        return loc.when(parsed) if parsed else (value or "")

    def cell(value: Any) -> str:
        """A table cell: numbers in the locale's digits and separators, text as it is."""
        if isinstance(value, bool) or value is None:
            return "" if value is None else str(value)
        if isinstance(value, int):
            return loc.count(value)
        if isinstance(value, float):
            return loc.number(value)
        return str(loc.t(value))

    def attempt_part(part: queries.AttemptPart) -> str:
        _ = loc.gettext
        if part.kind == "method":
            return loc.method(part.value) if part.value else _("Contact attempt")
        if part.kind == "outcome":
            return _("outcome: %(outcome)s") % {"outcome": loc.outcome(part.value)}
        if part.kind == "next_appointment":
            day = queries.parse_day(part.value)
            return _("next appointment %(date)s") % {"date": loc.day(day) if day else part.value}
        return _("by %(chw)s") % {"chw": part.value}

    env.filters.update(state=lambda code: loc.state(code, STATE_LABELS), attempt_part=attempt_part, when=when,
                       num=loc.number, pct=loc.percent, count=loc.count, day=loc.day, t=loc.t, cell=cell,
                       outcome=lambda code: loc.outcome(code) if code else "")
    env.globals.update(STATE_LABELS=STATE_LABELS, DELIVERY_STATES=DELIVERY_STATES, ATTEMPT_RESULTS=ATTEMPT_RESULTS,
                       DESTINATIONS=DESTINATIONS,
                       LANGUAGES=LANGUAGES, NATIVE_NAMES=NATIVE_NAMES, lang=loc.language,
                       states_options=[(s, loc.state(s, STATE_LABELS)) for s in STATES],
                       outcome_options=[(code, loc.outcome(code)) for code in OUTCOMES],
                       age_options=[(k, loc.gettext(v)) for k, v in AGE_LABELS.items()])
    return env


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
        self.locale = Locale(choose_language(request.cookies.get(COOKIE), request.headers.get("accept-language")))
        self._ = self.locale.gettext

    @classmethod
    async def load(cls, request: Request) -> Page:
        async with request.app.state.db.connect() as conn:
            found = await queries.facilities(conn, Scope.of(current_actor(request)))
        return cls(request, found)

    def url(self, path: str, args: dict[str, str] | None = None) -> str:
        query = urlencode({k: v for k, v in (args or {}).items() if v not in (None, "")})
        return self.base + path + (f"?{query}" if query else "")

    def render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        scope_label = self._("All facilities") if self.scope.is_admin else self.names.get(
            self.scope.organization_id or "", self._("No facility"))
        here = self.request.url.path + (f"?{self.request.url.query}" if self.request.url.query else "")
        html = environment(self.locale.language).get_template(template).render(
            page=self, client=self.client, scope_label=scope_label, url=self.url, path=self.request.url.path,
            here=here, **context)
        headers = {**_SECURITY_HEADERS, "Content-Language": self.locale.language, "Vary": "Accept-Language, Cookie"}
        return HTMLResponse(html, status_code=status_code, headers=headers)


_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _not_found(page: Page, message: str) -> HTMLResponse:
    return page.render("error.html", 404, title=page._("Not found"), message=page._(message))


async def language(request: Request) -> Response:
    """The language picker: remember the choice in a cookie and go back to the page it was made on."""
    chosen = request.query_params.get("lang", "")
    target = request.query_params.get("next", "")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui") or target.startswith("//"):
        target = "/ui/cases"
    response = RedirectResponse(request.scope.get("root_path", "") + target, status_code=303)
    if chosen in LANGUAGES:
        response.set_cookie(COOKIE, chosen, max_age=LANGUAGE_COOKIE_MAX_AGE, path="/", httponly=True, samesite="lax")
    return response


# --------------------------------------------------------------------------- cases

async def home(request: Request) -> Response:
    return RedirectResponse(request.scope.get("root_path", "") + "/ui/cases", status_code=303)


async def case_list(request: Request) -> Response:
    page = await Page.load(request)
    f = CaseFilters.parse(request.query_params)
    async with request.app.state.db.connect() as conn:
        result = await queries.list_cases(conn, page.scope, f, page.names)
        chw_options = await queries.chws(conn, page.scope)
    return page.render("cases.html", title=page._("Cases"), f=f, result=result, chws=chw_options)


async def case_page(request: Request) -> Response:
    page = await Page.load(request)
    async with request.app.state.db.connect() as conn:
        detail = await queries.case_detail(conn, page.scope, request.path_params["case_id"], page.names)
    if detail is None:
        return _not_found(page, N_("No case here, or not one you may see."))
    patient = detail.patient or {}
    names = [n.get("text") or " ".join([*(n.get("given") or []), n.get("family") or ""]).strip()
             for n in patient.get("name") or []]
    identifiers = [(i.get("system") or "", i.get("value")) for i in patient.get("identifier") or [] if i.get("value")]
    return page.render("case.html", title=page._("Case %(id)s") % {"id": detail.case.request_identifier},
                       d=detail, c=detail.case,
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
    return page.render("deliveries.html", title=page._("Deliveries"), rows=rows, counts=counts, subs=subs, state=state,
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


async def _form_lists(request: Request) -> dict[str, list[str]]:
    """Every value of every field (checkboxes); an oversized form is empty."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    return parse_qs(body.decode("utf-8", "replace"))


async def _form(request: Request) -> dict[str, str]:
    return {k: v[0] for k, v in (await _form_lists(request)).items()}


def _forbidden(page: Page) -> HTMLResponse:
    return page.render("error.html", 403, title=page._("Refused"),
                       message=page._("This form must be sent from the dashboard itself."))


async def retry_one(request: Request) -> Response:
    page = await Page.load(request)
    row_id = request.path_params["row_id"]
    async with request.app.state.db.connect() as conn:
        row = await queries.get_delivery(conn, page.scope, row_id, page.names)
    if row is None:
        return _not_found(page, N_("No delivery here, or not one you may see."))
    if request.method == "GET":
        return page.render("confirm.html", title=page._("Retry delivery #%(id)s") % {"id": row_id}, row=row,
                           count=1 if row.state == "dead" else 0, action=page.url(f"/ui/deliveries/{row_id}/retry"),
                           facility=None)
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
        return page.render("error.html", 400 if not facility else 404, title=page._("Choose a facility"),
                           message=page._("Choose one of your facilities to retry its dead deliveries."))
    if request.method == "GET":
        async with request.app.state.db.connect() as conn:
            count = await queries.dead_count(conn, page.scope, facility)
        return page.render("confirm.html", title=page._("Retry dead deliveries"), row=None, count=count,
                           action=page.url("/ui/deliveries/retry"), facility=facility,
                           facility_name=page.names[facility])
    async with unit_of_work(request.app.state.db) as uow:
        n = await queries.retry_facility(uow, page.scope, facility)
    nudge_workers(request)
    return RedirectResponse(page.url("/ui/deliveries", {"requeued": str(n), "facility": facility}), status_code=303)


# --------------------------------------------------------------------------- programme

def _range(q: Any) -> tuple[date, date, list[Msg]]:
    errors = []
    today = datetime.now(UTC).date()
    to = queries.parse_day(q.get("to"))
    if q.get("to") and to is None:
        errors.append(Msg(N_("'%(name)s' must be a date (YYYY-MM-DD): ignored"), {"name": "to"}))
    to = to or today
    start = queries.parse_day(q.get("from"))
    if q.get("from") and start is None:
        errors.append(Msg(N_("'%(name)s' must be a date (YYYY-MM-DD): ignored"), {"name": "from"}))
    if start is None:
        start = to - timedelta(weeks=12) - timedelta(days=(to - timedelta(weeks=12)).weekday())
    if start > to:
        errors.append(Msg(N_("'from' is after 'to': swapped")))
        start, to = to, start
    return start, to, errors


def _share(n: int, of: int) -> float | None:
    """n of ``of`` in per cent, one decimal (None when there is nothing to share)."""
    return round(n / of * 100, 1) if of else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _row_label(loc: Locale, t: queries.Timeliness, overall: bool) -> str:
    if overall:
        return loc.gettext(t.label)  # "All facilities" or the facility chosen
    return t.label


def _outcome_label(loc: Locale, code: str, english: str) -> str:
    return loc.outcome(code) if code in OUTCOMES else loc.gettext(CLOSURE_LABELS.get(code, english))


def _tables(p: Programme, loc: Locale) -> dict[str, dict[str, Any]]:
    """The programme's tables: translated titles and labels, numbers as numbers (formatted where shown)."""
    _ = loc.gettext
    requested = p.funnel[0][1] if p.funnel else 0
    closed = sum(n for _c, _l, n in p.outcomes)

    def timeliness_row(label: str, t: queries.Timeliness) -> list[Any]:
        return [label, t.cases, t.attempted, _round(t.median), _round(t.p90), t.eligible, t.within_target,
                None if t.share_within_target is None else round(t.share_within_target * 100, 1)]

    target = {"days": TARGET_DAYS}
    tl_cols = [_("Cases"), _("Attempted"), _("Median days to first attempt"), _("p90 days to first attempt"),
               _("Eligible for the %(days)s-day target") % target, _("First attempt within %(days)s days") % target,
               _("Share within %(days)s days (%%)") % target]
    return {
        "funnel": {"title": _("Follow-up funnel"), "columns": [_("Stage"), _("Cases"), _("Share of requested (%)")],
                   "rows": [[_(label), n, _share(n, requested)] for label, n in p.funnel]},
        "outcomes": {"title": _("Outcome mix"), "columns": [_("Outcome"), _("Code"), _("Cases"), _("Share (%)")],
                     "rows": [[_outcome_label(loc, code, label), code, n, _share(n, closed)]
                              for code, label, n in p.outcomes]},
        "facilities": {"title": _("Time to first attempt by facility"), "columns": [_("Facility"), *tl_cols],
                       "rows": [*(timeliness_row(t.label, t) for t in p.by_facility),
                                timeliness_row(_row_label(loc, p.overall, True), p.overall)]},
        "weeks": {"title": _("Time to first attempt by week of request"), "columns": [_("Week starting"), *tl_cols],
                  "rows": [timeliness_row(loc.day(date.fromisoformat(t.label)), t) for t in p.by_week]},
    }


def _charts(p: Programme, loc: Locale) -> dict[str, Any]:
    _ = loc.gettext
    requested = p.funnel[0][1] if p.funnel else 0

    def count_and_share(n: int, of: int) -> str:
        return f"{loc.count(n)} ({loc.percent(n / of)})" if of else loc.count(n)

    funnel = [charts.Bar(_(label), n, count_and_share(n, requested)) for label, n in p.funnel]
    closed = sum(n for _c, _l, n in p.outcomes) or 1
    outcomes = [charts.Bar(_outcome_label(loc, code, label), n, count_and_share(n, closed))
                for code, label, n in p.outcomes]
    fac = [charts.Bar(t.label, (t.share_within_target or 0) * 100,
                      _("%(share)s of %(eligible)s") % {"share": loc.percent(t.share_within_target),
                                                        "eligible": loc.count(t.eligible)}) for t in p.by_facility]
    weeks = [loc.short_day(date.fromisoformat(t.label)) for t in p.by_week]
    target = {"days": TARGET_DAYS}
    words = charts.Words(no_data=_("No data"), number=loc.number)
    return {
        "funnel": charts.hbar("chart-funnel", _("Follow-up funnel: cases at each stage"), funnel, words=words),
        "outcomes": charts.hbar("chart-outcomes", _("Outcome mix of the cases requested in the period"), outcomes,
                                words=words),
        "facilities": charts.hbar("chart-facilities", _("Share of cases attempted within %(days)s days, by facility")
                                  % target, fac, max_value=100, words=words),
        "weeks_days": charts.columns(
            "chart-weeks-days", _("Days from request to first attempt, by week of request"), weeks,
            [(_("Median"), [t.median for t in p.by_week]), (_("p90"), [t.p90 for t in p.by_week])],
            unit=_(" d"), min_max=1.0, words=words),
        "weeks_share": charts.columns(
            "chart-weeks-share", _("Share attempted within %(days)s days, by week of request") % target, weeks,
            [(_("Within %(days)s days") % target, [None if t.share_within_target is None
                                                    else t.share_within_target * 100 for t in p.by_week])],
            unit="%", max_value=100, words=words),
    }


async def _programme(request: Request, page: Page) -> tuple[Programme, str | None, list[Msg]]:
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
    return page.render("programme.html", title=page._("Programme"), p=p, facility=facility, errors=errors,
                       tables=_tables(p, page.locale), charts=_charts(p, page.locale), args=args, target=TARGET_DAYS)


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab, CR first) gets a
    leading ``'``: facility names are written by facilities (OWASP "CSV injection"). Numbers pass."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


async def programme_csv(request: Request) -> Response:
    page = await Page.load(request)
    name = request.path_params["table"]
    p, facility, _ = await _programme(request, page)
    tables = _tables(p, page.locale)
    if name not in tables:
        return _not_found(page, N_("No such table here, or not one you may see."))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([csv_cell(c) for c in tables[name]["columns"]])
    writer.writerows([["" if cell is None else csv_cell(cell) for cell in row] for row in tables[name]["rows"]])
    filename = f"ltfu-{name}-{p.date_from.isoformat()}-{p.date_to.isoformat()}.csv"
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


def _review_routes() -> list:
    from ltfu.ui.review_pages import routes_review  # it builds on this module's Page

    return routes_review


routes = [
    Route("/ui", home, methods=["GET"]),
    Route("/ui/cases", case_list, methods=["GET"]),
    Route("/ui/language", language, methods=["GET"]),
    Route("/ui/cases/{case_id}", case_page, methods=["GET"]),
    Route("/ui/deliveries", deliveries, methods=["GET"]),
    Route("/ui/deliveries/retry", retry_facility, methods=["GET", "POST"]),
    Route("/ui/deliveries/{row_id:int}/retry", retry_one, methods=["GET", "POST"]),
    Route("/ui/programme", programme, methods=["GET"]),
    Route("/ui/programme/{table}.csv", programme_csv, methods=["GET"]),
    *[Route(path, handler, methods=methods) for path, handler, methods in _review_routes()],
    Mount("/ui/static", app=StaticFiles(directory=HERE / "static"), name="ui-static"),
]
