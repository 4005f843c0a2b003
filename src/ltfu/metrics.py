"""Prometheus metrics: HTTP traffic (middleware), workflow gauges read from the database at scrape
time, and the counters the delivery worker and the CHT inbound routes increment.

Series (all prefixed ``ltfu_``):

- ``http_requests_total{method,route,status}`` and ``http_request_duration_seconds{method,route}``:
  ``route`` is the route *template* (``/fhir/{res_type}/{id}``), never the raw path, so ids do not
  explode the label space; requests that match no route are ``route="unmatched"``.
- ``cases{state}``: cases by Task status (database, at scrape).
- ``outbox_depth{destination,status}`` (pending | dead) and ``outbox_oldest_due_age_seconds{destination}``.
- ``delivery_attempts_total{destination,result}`` (ok | retry | dead), ``delivery_failures_total{destination,reason}``
  and ``delivery_latency_seconds{destination}``: :func:`observe_delivery`, called by the worker.
- ``cht_push_receipts_total{kind,result}``: :func:`count_cht_push`, called by the ``/cht/...`` routes.
- ``auth_failures_total{reason}`` (bad_credentials | throttled): :func:`count_auth_failure`, called by the
  authentication middleware.
- ``worker_up{worker}``, ``worker_last_beat_age_seconds{worker}``, ``worker_delivered``: this process's
  delivery worker and expiry sweeper (absent when the process runs no workers).

No label ever carries a patient, a case id or a facility name.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ltfu.api.auth import current_client
from ltfu.store import tallies
from ltfu.store.outbox import OutboxRepository

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

HTTP_REQUESTS = Counter(
    "ltfu_http_requests",
    "HTTP requests by route template and status code",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "ltfu_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

DELIVERY_ATTEMPTS = Counter(
    "ltfu_delivery_attempts",
    "Outbox delivery attempts by destination and result",
    ["destination", "result"],
    registry=REGISTRY,
)
DELIVERY_FAILURES = Counter(
    "ltfu_delivery_failures", "Failed outbox delivery attempts by reason", ["destination", "reason"], registry=REGISTRY
)
DELIVERY_LATENCY = Histogram(
    "ltfu_delivery_latency_seconds",
    "Latency of one delivery attempt",
    ["destination"],
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
CHT_PUSH_RECEIPTS = Counter(
    "ltfu_cht_push_receipts", "Documents received from CHT outbound push", ["kind", "result"], registry=REGISTRY
)
AUTH_FAILURES = Counter(
    "ltfu_auth_failures",
    "Refused logins: wrong name or password, or throttled by the backoff",
    ["reason"],
    registry=REGISTRY,
)

CASES = Gauge("ltfu_cases", "Follow-up cases by Task status", ["state"], registry=REGISTRY)
OUTBOX_DEPTH = Gauge("ltfu_outbox_depth", "Outbox rows not yet delivered", ["destination", "status"], registry=REGISTRY)
OUTBOX_OLDEST_DUE = Gauge(
    "ltfu_outbox_oldest_due_age_seconds",
    "How long the oldest due pending row has been waiting (0 when none is due)",
    ["destination"],
    registry=REGISTRY,
)
WORKER_UP = Gauge(
    "ltfu_worker_up", "1 when this process's background worker is running and beating", ["worker"], registry=REGISTRY
)
WORKER_BEAT_AGE = Gauge(
    "ltfu_worker_last_beat_age_seconds", "Seconds since the worker's loop last turned", ["worker"], registry=REGISTRY
)
WORKER_DELIVERED = Gauge(
    "ltfu_worker_delivered", "Messages this process's delivery worker delivered since start", registry=REGISTRY
)

DESTINATIONS = ("cht", "notify")
DELIVERY_RESULTS = ("ok", "retry", "dead")
FAILURE_REASONS = ("unreachable", "http_4xx", "http_5xx", "other")
AUTH_FAILURE_REASONS = ("bad_credentials", "throttled")
PUSH_KINDS = ("patient", "follow-up")
PUSH_RESULTS = ("recorded", "duplicate", "ignored", "rejected")
CASE_STATES = (
    "requested",
    "received",
    "accepted",
    "in-progress",
    "on-hold",
    "completed",
    "failed",
    "cancelled",
    "rejected",
)

# Every known label set exists from the start, so rate() works from the first failure on.
for _d in DESTINATIONS:
    for _r in DELIVERY_RESULTS:
        DELIVERY_ATTEMPTS.labels(_d, _r)
    for _f in FAILURE_REASONS:
        DELIVERY_FAILURES.labels(_d, _f)
    DELIVERY_LATENCY.labels(_d)
for _k in PUSH_KINDS:
    for _p in PUSH_RESULTS:
        CHT_PUSH_RECEIPTS.labels(_k, _p)
for _a in AUTH_FAILURE_REASONS:
    AUTH_FAILURES.labels(_a)


def observe_delivery(destination: str, result: str, status_code: int | None, latency_ms: int | None) -> None:
    """One delivery attempt finished: ``result`` is ok | retry | dead (as recorded in ``delivery_attempts``)."""
    DELIVERY_ATTEMPTS.labels(destination, result).inc()
    if latency_ms is not None:
        DELIVERY_LATENCY.labels(destination).observe(latency_ms / 1000)
    if result == "ok":
        return
    if status_code is None:
        reason = "unreachable"
    elif 400 <= status_code < 500:
        reason = "http_4xx"
    elif status_code >= 500:
        reason = "http_5xx"
    else:
        reason = "other"
    DELIVERY_FAILURES.labels(destination, reason).inc()


def count_cht_push(kind: str, result: str) -> None:
    """A CHT outbound push was handled: kind patient | follow-up;
    result recorded | duplicate | ignored | rejected | deleted."""
    CHT_PUSH_RECEIPTS.labels(kind, result).inc()


def count_auth_failure(reason: str) -> None:
    """A login was refused: reason bad_credentials | throttled."""
    AUTH_FAILURES.labels(reason).inc()


# --------------------------------------------------------------------------- HTTP middleware


def _template(routes: list[BaseRoute], scope: Scope, prefix: str = "") -> str | None:
    for route in routes:
        match, child = route.matches(scope)
        if match is not Match.FULL:
            continue
        if isinstance(route, Mount):
            inner = {**scope, **child}
            found = _template(route.routes, inner, prefix + route.path)
            return found if found is not None else prefix + route.path + "/{path}"
        if isinstance(route, Route):
            return prefix + route.path
        return prefix + getattr(route, "path", "")
    for route in routes:  # a route for the path, another method: still that route (405)
        match, _ = route.matches(scope)
        if match is Match.PARTIAL and isinstance(route, Route):
            return prefix + route.path
    return None


def routing_copy(scope: Scope) -> Scope:
    """What routing needs of a request, taken before routing rewrites ``path``/``root_path``."""
    return {
        "type": "http",
        "path": scope["path"],
        "root_path": scope.get("root_path", ""),
        "method": scope["method"],
        "headers": [],
        "query_string": b"",
    }


_TEMPLATE = "ltfu.route_template"  # the answer, kept in the request's scope: asked by several layers


def route_template(scope: Scope, original: Scope) -> str:
    """The template of the route ``original`` (the scope as it came in) matches, or ``unmatched``.

    Once routed, the scope names its route (``scope["route"]``, set by Starlette's router) and the mount
    prefix is what routing added to ``root_path``: no second walk through the routes. A request that
    matched no ``Route`` (a 404, a rewritten path) is matched again from the original scope.
    """
    found = scope.get(_TEMPLATE)
    if found is not None:
        return found
    route = scope.get("route")
    if type(route) is Route:
        prefix = scope.get("root_path", "")[len(original.get("root_path", "")) :]
        found = prefix + route.path
    else:
        routes = getattr(getattr(scope.get("app"), "router", None), "routes", None) or []
        found = _template(routes, original) or "unmatched"
    scope[_TEMPLATE] = found
    return found


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # (method, route, status) -> (counter, histogram)


def observe_request(scope: Scope, original: Scope, status: int, elapsed: float) -> None:
    """Count and time one answered request (``original``: the scope as it came in, see :func:`routing_copy`).

    The labelled children are kept: ``labels()`` validates and locks on every call, and the label sets are few
    (method x route template x status).
    """
    method = scope["method"] if scope["method"] in _METHODS else "OTHER"
    key = (method, route_template(scope, original), status)
    pair = _children.get(key)
    if pair is None:
        pair = _children[key] = (HTTP_REQUESTS.labels(method, key[1], str(status)), HTTP_LATENCY.labels(method, key[1]))
    pair[0].inc()
    pair[1].observe(elapsed)


class MetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status (pure ASGI).

    The API's own pipeline (:mod:`ltfu.api.asgi`) does this inline; this middleware is for other ASGI apps.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        original = routing_copy(scope)
        status = 500
        start = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            observe_request(scope, original, status, time.perf_counter() - start)


# --------------------------------------------------------------------------- scrape


def _age_seconds(instant: str | None, now: datetime) -> float:
    if not instant:
        return 0.0
    try:
        then = datetime.strptime(instant, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return max(0.0, (now - then).total_seconds())


async def refresh(app_state: Any) -> None:
    """Set the database and worker gauges from the current state (called on each scrape)."""
    async with app_state.db.read_transaction() as conn:  # one snapshot, and no write lock (SQLite)
        by_state = {state: n for (state,), n in tallies.summed(await tallies.read(conn, "cases"), 0)}
        depth = await OutboxRepository(conn, skip_locked=False).depth()
    CASES.clear()
    for state in sorted(set(CASE_STATES) | set(by_state)):
        CASES.labels(state).set(by_state.get(state, 0))
    now = datetime.now(UTC)
    OUTBOX_DEPTH.clear()
    OUTBOX_OLDEST_DUE.clear()
    for dest in DESTINATIONS:
        for status in ("pending", "dead"):
            OUTBOX_DEPTH.labels(dest, status).set(depth.get((dest, status), (0, None))[0])
        OUTBOX_OLDEST_DUE.labels(dest).set(_age_seconds(depth.get((dest, "pending"), (0, None))[1], now))
    for (dest, status), (count, _) in depth.items():
        if dest not in DESTINATIONS:
            OUTBOX_DEPTH.labels(dest, status).set(count)
    WORKER_UP.clear()
    WORKER_BEAT_AGE.clear()
    runtime = getattr(app_state, "runtime", None)
    if runtime is not None:
        alive = runtime.readiness().get("workers") == "running"
        mono = time.monotonic()
        for name, worker in (("delivery", runtime.worker), ("sweeper", runtime.sweeper)):
            WORKER_UP.labels(name).set(1 if alive else 0)
            WORKER_BEAT_AGE.labels(name).set(max(0.0, mono - worker.last_beat))
        WORKER_DELIVERED.set(runtime.worker.sent)


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text format. Admin clients only (the figures span every facility)."""
    if not current_client(request).is_admin:
        return Response("Only admin clients may read metrics\n", status_code=403, media_type="text/plain")
    await refresh(request.app.state)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


metrics_route = Route("/metrics", metrics, methods=["GET"])
