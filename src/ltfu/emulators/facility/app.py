"""The facility emulator as an ASGI app: the notification receiver and the control API.

Receiver (what the mediator calls; the Endpoint's address is ``public_url + notify_path``):
- ``POST {notify_path}``: a Backport IG notification Bundle (``history``; handshake, heartbeat or
  event-notification) → 200 once recorded;
- ``PUT {notify_path}/{type}/{id}``: a HAPI-style delivery of the resource → 200.
Both answer 503 while the facility is "down", 401 without the Endpoint's ``Authorization`` header
or (with ``signing_secrets``) without a valid Standard Webhooks signature (``webhook-id``,
``webhook-timestamp`` within 5 minutes, ``webhook-signature: v1,<base64>``), 400 for a body that is
not a notification. A ``webhook-id`` seen before is not recorded again (answered 200).

Control (``/_facility``; for the demo, tests and people): ``GET info``, ``GET report``, ``GET tasks``,
``POST register``, ``POST lists``, ``POST down``, ``POST up``, ``POST recover``, ``POST reset``,
``POST signing-secret``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ltfu.emulators import population

from . import roster
from .config import FacilityEmulatorConfig
from .ledger import Ledger
from .upstream import Registration, Upstream, UpstreamError

log = logging.getLogger("ltfu.emulators.facility")
SKEW_S = 300.0  # Standard Webhooks: refuse timestamps more than 5 minutes away from our clock


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def fhir_ok(text: str = "received") -> Response:
    return Response(
        orjson.dumps({"resourceType": "OperationOutcome", "issue": [
            {"severity": "information", "code": "informational", "diagnostics": text}]}),
        media_type="application/fhir+json",
    )


def fhir_error(status: int, code: str, text: str) -> Response:
    return Response(
        orjson.dumps({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": code, "diagnostics": text}]}),
        status_code=status,
        media_type="application/fhir+json",
    )


class Facility:
    """The emulator's state, shared by the routes (``app.state.facility``)."""

    def __init__(self, config: FacilityEmulatorConfig) -> None:
        self.config = config
        self.zone = ZoneInfo(config.timezone)
        self.ledger = Ledger()
        self.upstream = Upstream(config)
        self.registration: Registration | None = None
        self.lists: dict[str, roster.DefaulterList] = {}
        #: the community the lists are drawn from (``population`` of ``POST /_facility/lists``), if any
        self.community: population.SeededCommunity | None = None
        self.down_until: float | None = None
        self.down_status = 503
        self.lock = asyncio.Lock()
        self.seen_ids: dict[str, float] = {}  # webhook-id → when first received

    # --------------------------------------------------------------------------- receiving

    @property
    def is_down(self) -> bool:
        if self.down_until is None:
            return False
        if time.monotonic() >= self.down_until:
            self.down_until = None
            return False
        return True

    def go_down(self, seconds: float | None, status: int = 503) -> None:
        self.down_until = time.monotonic() + (seconds if seconds is not None else 10 * 365 * 86400.0)
        self.down_status = status

    def check_request(self, request: Request, body: bytes) -> Response | None:
        """Down, auth header, signature: a refusal, or None when the notification may be read.

        A duplicate ``webhook-id`` (a replay, or our own answer lost on the way back) is refused
        as a new notification but answered 200, so that an honest retry is not turned into a failure."""
        if self.is_down:
            self.ledger.counters["refused_down"] += 1
            return fhir_error(self.down_status, "transient", "the facility system is down")
        expected = f"Bearer {self.config.callback_token}"
        if not hmac.compare_digest(request.headers.get("authorization", ""), expected):
            self.ledger.counters["unauthorized"] += 1
            return fhir_error(401, "login", "missing or wrong Authorization header")
        secrets = self.config.signing_secrets
        if not secrets:
            if self.config.require_signature:
                self.ledger.counters["no_secret_yet"] += 1
                return fhir_error(401, "security", "no signing secret configured yet")
            return None
        reason = self.verify_signature(request.headers, body)
        if reason is not None:
            self.ledger.counters[reason] += 1
            return fhir_error(401, "security", f"webhook signature refused: {reason}")
        msg_id = request.headers["webhook-id"]
        if msg_id in self.seen_ids:
            self.ledger.counters["replayed"] += 1
            return fhir_ok("duplicate webhook-id: already received, ignored")
        self.seen_ids[msg_id] = time.time()
        self._forget_old_ids()
        self.ledger.counters["signature_ok"] += 1
        return None

    def verify_signature(self, headers: Any, body: bytes) -> str | None:
        """None when one of our secrets signed id.timestamp.body within 5 minutes; else the reason."""
        if not all(headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature")):
            return "bad_signature"
        try:
            skew = abs(time.time() - float(headers["webhook-timestamp"]))
        except ValueError:
            return "bad_signature"
        if skew > SKEW_S:
            return "skewed"
        wanted = {k: headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
        for secret in self.config.signing_secrets:
            try:
                Webhook(secret).verify(body, wanted, json_parse=False)
                return None
            except (WebhookVerificationError, ValueError):
                continue
        return "bad_signature"

    def _forget_old_ids(self) -> None:
        """Ids older than the skew window cannot come back with a valid timestamp: forget them."""
        if len(self.seen_ids) % 1000:
            return
        horizon = time.time() - 2 * SKEW_S
        for k in [k for k, at in self.seen_ids.items() if at < horizon]:
            del self.seen_ids[k]

    # ---------------------------------------------------------------------------- sending

    def callback_url(self) -> str:
        base = self.config.public_url
        if not base:
            raise UpstreamError("register", None, "the callback address is unknown: set public_url")
        return base.rstrip("/") + self.config.notify_path

    async def register(self) -> Registration:
        async with self.lock:
            self.registration = await self.upstream.register(self.callback_url())
            return self.registration

    def today(self) -> date:
        return datetime.now(self.zone).date()

    def defaulter_list(self, day: date, count: int) -> roster.DefaulterList:
        """The day's list, grown to ``count`` patients if needed (same seed: same people)."""
        current = self.lists.get(day.isoformat())
        if current is None:
            current = self.lists[day.isoformat()] = roster.make_list(self.config, day, count, community=self.community)
        elif len(current.defaulters) < count:
            more = roster.make_list(self.config, day, count - len(current.defaulters), start=len(current.defaulters),
                                    community=self.community)
            current.defaulters.extend(more.defaulters)
        return current

    async def send_list(
        self, day: date, count: int, *, cht: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Build the day's first ``count`` defaulters, optionally create them in CHT, and send them."""
        if self.registration is None:
            await self.register()
        assert self.registration is not None
        full = self.defaulter_list(day, count)
        lst = roster.DefaulterList(day=full.day, list_id=full.list_id, defaulters=full.defaulters[:count])
        people = 0
        if cht is not None:
            c = self.config
            url = cht.get("url") or c.cht_url
            if not url:
                raise UpstreamError("CHT people", None, "no CHT url configured")
            people = await self.upstream.create_cht_people(
                lst,
                list(cht.get("places") or c.cht_places),
                url=url,
                username=cht.get("username") or c.cht_username,
                password=cht.get("password") or c.cht_password,
            )
        result = await self.upstream.send_list(lst, self.registration.organization_id, datetime.now(self.zone))
        for identifier, sr_id in result.requests.items():
            if sr_id:
                self.ledger.request_sent(sr_id, identifier, result.sent_at)
        self.ledger.counters["lists_sent"] += 1
        return {**result.as_dict(), "cht_people_created": people, "count": len(lst.defaulters)}

    async def recover(self) -> dict[str, Any]:
        """Fetch the events the counter says exist but never arrived (``$events``) and record them."""
        fetched = 0
        for key, sub in list(self.ledger.subscriptions.items()):
            missing = sub.missing()
            if not missing:
                continue
            bundle = await self.upstream.events(key.split("/", 1)[1], missing[0], missing[-1])
            before = len(sub.seen)
            # a query-event bundle has the same shape as a notification
            wanted = set(missing)
            self.ledger.notification(_only_events(bundle, wanted))
            fetched += len(sub.seen) - before
        self.ledger.counters["recovered_events"] += fetched
        return {"recovered": fetched}


def _only_events(bundle: dict[str, Any], wanted: set[int]) -> dict[str, Any]:
    """A copy of a ``$events`` Bundle keeping the notification-events numbered in ``wanted``."""
    entries = bundle.get("entry") or []
    params = dict(entries[0]["resource"])
    kept = []
    for p in params.get("parameter") or []:
        if p.get("name") == "notification-event":
            number = next((x.get("valueString") for x in p.get("part") or [] if x.get("name") == "event-number"), None)
            if number is None or int(number) not in wanted:
                continue
        kept.append(p)
    params["parameter"] = kept
    return {**bundle, "entry": [{**entries[0], "resource": params}, *entries[1:]]}


def _facility(request: Request) -> Facility:
    return request.app.state.facility


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


# ------------------------------------------------------------------------------- receiver


async def notify(request: Request) -> Response:
    fac = _facility(request)
    body = await request.body()
    refusal = fac.check_request(request, body)
    if refusal is not None:
        return refusal
    try:
        bundle = orjson.loads(body)
        if not isinstance(bundle, dict):
            raise ValueError("not a JSON object")
        seen = fac.ledger.notification(bundle)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        fac.ledger.counters["malformed"] += 1
        fac.ledger.note_error(f"malformed notification: {exc}")
        return fhir_error(400, "structure", f"not a notification Bundle: {exc}")
    log.debug("notification %s", seen)
    return fhir_ok()


async def notify_put(request: Request) -> Response:
    fac = _facility(request)
    body = await request.body()
    refusal = fac.check_request(request, body)
    if refusal is not None:
        return refusal
    try:
        resource = orjson.loads(body)
        if not isinstance(resource, dict):
            raise ValueError("not a JSON object")
        fac.ledger.hapi_put(request.path_params["type"], request.path_params["id"], resource)
    except (ValueError, TypeError) as exc:
        fac.ledger.counters["malformed"] += 1
        fac.ledger.note_error(f"malformed PUT: {exc}")
        return fhir_error(400, "structure", str(exc))
    return fhir_ok()


# -------------------------------------------------------------------------------- control


async def info(request: Request) -> Response:
    fac = _facility(request)
    c = fac.config
    return json_response({
        "facility": {"code": c.facility_code, "name": c.facility_name, "system": c.facility_identifier_system},
        "mediator": c.fhir_base if c.mediator_url else None,
        "callback": fac.callback_url() if c.public_url else None,
        "registration": fac.registration.as_dict() if fac.registration else None,
        "down": fac.is_down,
    })


async def report(request: Request) -> Response:
    fac = _facility(request)
    body = fac.ledger.report()
    body["down"] = fac.is_down
    body["registration"] = fac.registration.as_dict() if fac.registration else None
    return json_response(body)


async def task_list(request: Request) -> Response:
    return json_response(_facility(request).ledger.task_list())


async def register(request: Request) -> Response:
    fac = _facility(request)
    try:
        reg = await fac.register()
    except (UpstreamError, OSError, TimeoutError) as exc:
        fac.ledger.note_error(str(exc))
        return json_response({"error": "upstream", "reason": str(exc)}, 502)
    return json_response(reg.as_dict(), 201 if reg.created else 200)


async def lists(request: Request) -> Response:
    """``{"count"?, "day"? (YYYY-MM-DD), "cht"?: {"places", "url"?, "username"?, "password"?} | true,
    "population"?: {"seed", "persons"}}``: ``population`` draws the patients from that seeded community
    (:func:`ltfu.emulators.population.standard_hierarchy`, which the demo also loads into CHT)."""
    fac = _facility(request)
    body = await _json(request)
    if not isinstance(body, dict):
        return json_response({"error": "bad_request", "reason": "body must be a JSON object"}, 400)
    try:
        count = int(body.get("count", fac.config.patients))
        day = date.fromisoformat(body["day"]) if body.get("day") else fac.today()
    except (TypeError, ValueError) as exc:
        return json_response({"error": "bad_request", "reason": str(exc)}, 400)
    if not 0 < count <= 2000:
        return json_response({"error": "bad_request", "reason": "count must be 1..2000"}, 400)
    cht = body.get("cht")
    if cht is True:
        cht = {}
    if cht is not None and not isinstance(cht, dict):
        return json_response({"error": "bad_request", "reason": "cht must be an object or true"}, 400)
    pop = body.get("population")
    if pop is not None:
        try:
            seed, persons = int(pop["seed"]), int(pop["persons"])
        except (TypeError, KeyError, ValueError):
            return json_response({"error": "bad_request", "reason": "population must be {seed, persons}"}, 400)
        if not 0 < persons <= 100_000:
            return json_response({"error": "bad_request", "reason": "population persons must be 1..100000"}, 400)
        fac.community = population.standard_hierarchy(seed, persons, fac.config.facility_code)
        fac.lists.clear()
    try:
        result = await fac.send_list(day, count, cht=cht)
    except (UpstreamError, OSError, TimeoutError) as exc:
        fac.ledger.note_error(str(exc))
        return json_response({"error": "upstream", "reason": str(exc)}, 502)
    return json_response(result, 201)


async def down(request: Request) -> Response:
    fac = _facility(request)
    body = await _json(request)
    if not isinstance(body, dict):
        return json_response({"error": "bad_request", "reason": "body must be a JSON object"}, 400)
    seconds = body.get("seconds")
    status = int(body.get("status", 503))
    if seconds is not None and (not isinstance(seconds, int | float) or seconds <= 0):
        return json_response({"error": "bad_request", "reason": "seconds must be a positive number"}, 400)
    if not 400 <= status <= 599:
        return json_response({"error": "bad_request", "reason": "status must be 4xx or 5xx"}, 400)
    fac.go_down(seconds, status)
    return json_response({"down": True, "seconds": seconds, "status": status})


async def up(request: Request) -> Response:
    _facility(request).down_until = None
    return json_response({"down": False})


async def recover(request: Request) -> Response:
    fac = _facility(request)
    try:
        return json_response(await fac.recover())
    except (UpstreamError, OSError, TimeoutError) as exc:
        return json_response({"error": "upstream", "reason": str(exc)}, 502)


async def signing_secret(request: Request) -> Response:
    """``{"secret": "whsec_..."}``: the secret the mediator gave this facility (kept with the previous one)."""
    fac = _facility(request)
    body = await _json(request)
    secret = body.get("secret") if isinstance(body, dict) else None
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        return json_response({"error": "bad_request", "reason": "secret must be a whsec_ string"}, 400)
    fac.config.signing_secrets = [secret, *fac.config.signing_secrets][:2]
    return json_response({"secrets": len(fac.config.signing_secrets)})


async def reset(request: Request) -> Response:
    fac = _facility(request)
    fac.ledger = Ledger()
    return json_response({"reset": True})


def create_app(config: FacilityEmulatorConfig, *, on_startup: Any = None) -> Starlette:
    """The facility emulator. ``on_startup(facility)`` (a coroutine function) runs once the server
    listens (the CLI registers and sends a first list with it)."""
    facility = Facility(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = None
        if on_startup is not None:
            task = asyncio.create_task(on_startup(facility))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await facility.upstream.close()

    path = config.notify_path.rstrip("/") or "/notifications"
    routes = [
        Route(path, notify, methods=["POST"]),
        Route(path + "/{type}/{id}", notify_put, methods=["PUT"]),
    ]
    if config.control_api:
        routes += [
            Route("/_facility/info", info, methods=["GET"]),
            Route("/_facility/report", report, methods=["GET"]),
            Route("/_facility/tasks", task_list, methods=["GET"]),
            Route("/_facility/register", register, methods=["POST"]),
            Route("/_facility/lists", lists, methods=["POST"]),
            Route("/_facility/down", down, methods=["POST"]),
            Route("/_facility/up", up, methods=["POST"]),
            Route("/_facility/recover", recover, methods=["POST"]),
            Route("/_facility/reset", reset, methods=["POST"]),
            Route("/_facility/signing-secret", signing_secret, methods=["POST"]),
        ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.facility = facility
    return app
