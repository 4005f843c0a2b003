"""The CHT emulator as an ASGI app: API routes, the ``/medic`` CouchDB proxy, the control API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .app_settings import Settings, load_app_settings
from .auth import Authenticator, UserCtx, is_online, require, require_admin, require_online
from .chw import CASE_PREFIX, ChwSimulation
from .config import ChtEmulatorConfig
from .contacts import Contacts
from .follow_up_form import FormError
from .http import (
    ApiError,
    CouchError,
    PublicError,
    couch_error,
    couch_response,
    error_response,
    json_response,
    not_logged_in,
    respond,
    server_error,
)
from .lineage import ancestor_ids, hydrate, hydrate_contact, minify
from .mango import find
from .outbound import Outbound, _version_tuple
from .records import add_error, local_zone, record_from_json
from .sentinel import Sentinel
from .store import EMULATOR, MEDIC, SENTINEL, USERS, Conflict, DocStore, format_seq, parse_seq, time_ordered_id

log = logging.getLogger("ltfu.emulators.cht")

JSON = "application/json"
Handler = Callable[[Request], Awaitable[Response]]


class Emulator:
    """The emulator's parts, shared by the routes (``app.state.emulator``)."""

    def __init__(self, config: ChtEmulatorConfig) -> None:
        self.config = config
        self.store = DocStore(config.db_path)
        self._settings = Settings(load_app_settings(config))
        self.zone = local_zone(config.timezone)
        self.auth = Authenticator(self.store, config.admin_username, config.admin_password)
        self.contacts = Contacts(self.store, self.settings, self.zone)
        self.outbound = Outbound(
            self.store, self.settings, cht_version=config.cht_version, timeout_s=config.outbound_timeout_s
        )
        self.sentinel = Sentinel(
            self.store,
            self.settings,
            self.outbound,
            delay_s=config.sentinel_delay_s,
            retry_interval_s=config.outbound_retry_interval_s,
            rng=random.Random(config.chw.seed + 1),
        )
        self.chw = ChwSimulation(self.store, self.settings, config.chw, self.zone)
        self.version = _version_tuple(config.cht_version)
        self.calls: Counter = Counter()
        self.fail: dict[str, dict[str, int]] = {}
        self.down_until: float | None = None
        self._change = asyncio.Event()
        self.store.on_change(lambda db, entry: self._change.set() if db == MEDIC else None)
        for key, secret in config.credentials.items():
            self.outbound.set_credential(key, secret)
        if config.mediator_password is not None:
            self.outbound.set_credential(config.mediator_credential_key, config.mediator_password)
        self._seed_build_docs()
        for user in config.users:
            if self.store.peek("_users", f"org.couchdb.user:{user['username']}") is None:
                self.contacts.create_user(dict(user))

    def _seed_build_docs(self) -> None:
        """The docs every real ``medic`` database starts with (a ``_changes`` reader sees them first):
        ``resources``, the design docs, ``service-worker-meta`` and the ``settings`` doc."""
        for doc_id in ("resources", "_design/medic", "_design/medic-admin", "_design/medic-client",
                       "service-worker-meta"):
            if self.store.entry(MEDIC, doc_id) is None:
                self.store.put(MEDIC, {"_id": doc_id})
        self.save_settings_doc()

    def save_settings_doc(self) -> None:
        current = self.store.get(MEDIC, "settings")
        body = {"_id": "settings", "settings": self._settings.raw}
        if current is None or current.get("settings") != body["settings"]:
            if current is not None:
                body["_rev"] = current["_rev"]
            self.store.put(MEDIC, body)

    def settings(self) -> Settings:
        return self._settings

    def reload_settings(self) -> None:
        self._settings = Settings(load_app_settings(self.config))
        self.save_settings_doc()

    async def start(self) -> None:
        self.sentinel.start()
        self.chw.start()

    async def stop(self) -> None:
        await self.chw.stop()
        await self.sentinel.stop()
        await self.outbound.close()
        self.store.close()

    async def wait_change(self, timeout: float) -> None:
        self._change.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._change.wait(), timeout)

    def stats(self) -> dict:
        by_kind: Counter = Counter()
        for doc in self.store.iter_docs(MEDIC):
            kind = doc.get("type")
            if kind == "data_record":
                kind = f"data_record:{doc.get('form')}"
            elif kind == "contact":
                kind = f"contact:{doc.get('contact_type')}"
            by_kind[str(kind)] += 1
        return {
            "version": self.config.cht_version,
            "docs": dict(sorted(by_kind.items())),
            "update_seq": self.store.update_seq(MEDIC),
            "calls": dict(self.calls),
            "outbound": {**self.outbound.stats.to_json(), "queue": len(self.outbound.queued())},
            "sentinel": {
                "processed": self.sentinel.processed,
                "pending": self.sentinel.pending(),
                "shortcodes": self.sentinel.shortcodes,
            },
            "chw": self.chw.summary(),
            "fail": self.fail,
            "down": self.is_down(),
        }

    def is_down(self) -> bool:
        if self.down_until is None:
            return False
        if self.down_until and time.time() >= self.down_until:
            self.down_until = None
            return False
        return True

    def take_failure(self, api: str) -> int | None:
        for key in (api, "any"):
            rule = self.fail.get(key)
            if rule and rule["count"] > 0:
                rule["count"] -= 1
                if rule["count"] == 0:
                    del self.fail[key]
                return rule["status"]
        return None


# ------------------------------------------------------------------------------------------- helpers


def _emu(request: Request) -> Emulator:
    return request.app.state.emulator


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as exc:
        raise ApiError(500, "Server error") from exc


def _require_exact_json(request: Request) -> None:
    if request.headers.get("content-type") != JSON:
        raise ApiError(400, "Content-Type must be application/json")


def _authenticated(request: Request) -> UserCtx:
    user = _emu(request).auth.authenticate(request)
    if user is None:
        raise ApiError(401, "unauthorized")
    return user


def api(name: str, *, post_json: bool = False) -> Callable[[Handler], Handler]:
    """Wrap a CHT API handler: down/fail injection, errors rendered like ``serverUtils.error``."""

    def wrap(fn: Handler) -> Handler:
        async def handler(request: Request) -> Response:
            emu = _emu(request)
            emu.calls[name] += 1
            try:
                if post_json:
                    _require_exact_json(request)
                status = emu.take_failure(name)
                if status is not None:
                    return respond(
                        request,
                        status,
                        "Server error" if status >= 500 else "Injected failure",
                        "injected by /_emulator/fail" if status >= 500 else None,
                    )
                return await fn(request)
            except ApiError as err:
                if err.code == 401:
                    return not_logged_in(request, redirect_humans=emu.config.redirect_humans)
                return error_response(request, err)
            except CouchError as err:
                return couch_error(request, err)

        handler.__name__ = fn.__name__
        return handler

    return wrap


# ------------------------------------------------------------------------------------------- /api


async def api_info(request: Request) -> Response:
    return json_response({"version": _emu(request).config.cht_version})


@api("settings")
async def get_settings(request: Request) -> Response:
    _authenticated(request)
    return json_response(_emu(request).settings().raw)


@api("settings", post_json=True)
async def put_settings(request: Request) -> Response:
    emu = _emu(request)
    require_admin(_authenticated(request))
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "Request body is empty or Content-Type header was not set to application/json.")
    replace = request.query_params.get("replace") in ("1", "true")
    raw = body if replace else {**emu.settings().raw, **body}
    emu._settings = Settings(raw)
    emu.save_settings_doc()
    return json_response({"success": True, "updated": True})


@api("people", post_json=True)
async def create_people(request: Request) -> Response:
    emu = _emu(request)
    user = _authenticated(request)
    require(emu.settings(), user, "can_create_people")
    return json_response(emu.contacts.create_person(await _json_body(request)))


@api("places", post_json=True)
async def create_places(request: Request) -> Response:
    emu = _emu(request)
    user = _authenticated(request)
    require(emu.settings(), user, "can_create_places")
    return json_response(emu.contacts.create_place(await _json_body(request)))


def _require_version(request: Request, minimum: tuple[int, ...]) -> None:
    if _emu(request).version < minimum:
        raise ApiError(404, "Not Found")


@api("person")
async def get_person(request: Request) -> Response:
    emu = _emu(request)
    _require_version(request, (4, 9))
    user = _authenticated(request)
    require_online(emu.settings(), user)
    require(emu.settings(), user, "can_view_contacts")
    doc = emu.store.get(MEDIC, request.path_params["id"])
    if doc is None or not emu.settings().is_person(doc):
        raise ApiError(404, "Person not found")
    if request.query_params.get("with_lineage") == "true":
        doc = hydrate_contact(emu.store, doc)
    return json_response(doc)


@api("place")
async def get_place(request: Request) -> Response:
    emu = _emu(request)
    _require_version(request, (4, 10))
    user = _authenticated(request)
    require_online(emu.settings(), user)
    require(emu.settings(), user, "can_view_contacts")
    doc = emu.store.get(MEDIC, request.path_params["id"])
    if doc is None or not emu.settings().is_place(doc):
        raise ApiError(404, "Place not found")
    if request.query_params.get("with_lineage") == "true":
        doc = hydrate_contact(emu.store, doc)
    return json_response(doc)


@api("users", post_json=True)
async def create_users_v1(request: Request) -> Response:
    emu = _emu(request)
    user = _authenticated(request)
    require(emu.settings(), user, "can_edit", "can_create_users")
    body = await _json_body(request)
    if isinstance(body, list):
        return json_response([_create_user_or_error(emu, u) for u in body])
    return json_response(emu.contacts.create_user(body))


def _create_user_or_error(emu: Emulator, data: Any) -> dict:
    try:
        return emu.contacts.create_user(data)
    except ApiError as err:
        return {"error": err.message}


@api("users", post_json=True)
async def create_users_v2(request: Request) -> Response:
    emu = _emu(request)
    user = _authenticated(request)
    require(emu.settings(), user, "can_edit", "can_create_users")
    body = await _json_body(request)
    if isinstance(body, list):  # 5.2 echoes the shape of the body: an array for an array
        return json_response([_create_user_or_error(emu, u) for u in body])
    return json_response(emu.contacts.create_user(body))


@api("users")
async def list_users(request: Request) -> Response:
    emu = _emu(request)
    user = _authenticated(request)
    require(emu.settings(), user, "can_view_users")
    return json_response(emu.contacts.list_users())


@api("users")
async def list_users_v2(request: Request) -> Response:
    emu = _emu(request)
    user = _authenticated(request)
    require(emu.settings(), user, "can_view_users")
    q = request.query_params
    return json_response(emu.contacts.list_users_v2(q.get("facility_id"), q.get("contact_id")))


@api("users")
async def get_user_v2(request: Request) -> Response:
    emu = _emu(request)
    user = _authenticated(request)
    name = request.path_params["username"]
    if user.name != name:
        require(emu.settings(), user, "can_view_users")
    doc = emu.store.peek(USERS, f"org.couchdb.user:{name}")
    if doc is None:
        raise ApiError(404, "Failed to find user.")
    return json_response(emu.contacts.user_v2(doc))


@api("users")
async def users_info(request: Request) -> Response:
    """``GET /api/v1/users-info``: how many docs the (offline) user would replicate."""
    emu = _emu(request)
    user = _authenticated(request)
    total = sum(1 for d in emu.store.iter_docs(MEDIC) if _can_read(emu, user, d))
    return json_response({"total_docs": total, "warn_docs": total, "warn": False, "limit": 10000})


@api("person", post_json=True)
async def create_person_v1(request: Request) -> Response:
    emu = _emu(request)
    _require_version(request, (5, 2))
    user = _authenticated(request)
    require_online(emu.settings(), user)
    require(emu.settings(), user, "can_create_people")
    return json_response(emu.contacts.create_datasource_contact(await _json_body(request), person=True))


@api("place", post_json=True)
async def create_place_v1(request: Request) -> Response:
    emu = _emu(request)
    _require_version(request, (5, 2))
    user = _authenticated(request)
    require_online(emu.settings(), user)
    require(emu.settings(), user, "can_create_places")
    return json_response(emu.contacts.create_datasource_contact(await _json_body(request), person=False))


@api("person")
async def list_persons(request: Request) -> Response:
    return _list_contacts(request, person=True)


@api("place")
async def list_places(request: Request) -> Response:
    return _list_contacts(request, person=False)


def _list_contacts(request: Request, *, person: bool) -> Response:
    emu = _emu(request)
    _require_version(request, (4, 12))
    user = _authenticated(request)
    require_online(emu.settings(), user)
    require(emu.settings(), user, "can_view_contacts")
    q = request.query_params
    return json_response(emu.contacts.list_contacts(q.get("type"), q.get("limit"), q.get("cursor"), person=person))


@api("records")
async def create_record(request: Request) -> Response:
    emu = _emu(request)
    user = _authenticated(request)
    require(emu.settings(), user, "can_create_records")
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        body = await _json_body(request)
        record = record_from_json(body, emu.settings(), emu.zone)
    elif ctype == "application/x-www-form-urlencoded":
        form = await request.form()
        if "from" not in form:
            raise PublicError("Missing required value: from")
        if "message" not in form:
            raise PublicError("Missing required field: message")
        record = {
            "type": "data_record",
            "from": form["from"],
            "errors": [],
            "tasks": [],
            "fields": {},
            "reported_date": int(time.time() * 1000),
            "sms_message": {"type": "sms_message", "message": form["message"], "from": form["from"]},
        }
    else:
        raise ApiError(500, "Server error")  # Error('Content type not supported.') has no public message
    record["_id"] = time_ordered_id()
    await _api_transitions(emu, record)
    entry = emu.store.put(MEDIC, record)
    return json_response({"success": True, "id": entry.id})


async def _api_transitions(emu: Emulator, record: dict) -> None:
    """The transitions the API runs before saving a record: update_clinics, mark_for_outbound."""
    settings = emu.settings()
    definition = settings.forms.get(record.get("form") or "") or {}
    if settings.transition_enabled("update_clinics") and not definition.get("public_form"):
        contact = None
        if record.get("from"):
            for doc in emu.store.iter_docs(MEDIC):
                if settings.is_person(doc) and doc.get("phone") == record["from"]:
                    contact = doc
                    break
        if contact is not None:
            record["contact"] = minify(contact)
        else:
            add_error(record, "sys.facility_not_found")
    if settings.transition_enabled("mark_for_outbound") and settings.outbound:
        await emu.outbound.push(record, hydrate(emu.store, settings, record))


@api("credentials")
async def put_credentials(request: Request) -> Response:
    emu = _emu(request)
    require_admin(_authenticated(request))
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    # express's text parser reads text/plain only: a JSON-labelled body is no body (recorded 400)
    secret = (await request.body()).decode("utf-8", "replace") if ctype == "text/plain" else ""
    if not secret:
        raise ApiError(400, "Missing required request body")
    emu.outbound.set_credential(unquote(request.path_params["key"]), secret)
    return json_response({"ok": True})


async def login_page(request: Request) -> Response:
    return PlainTextResponse("CHT emulator: log in with HTTP Basic auth.")


# ------------------------------------------------------------------------------------------ /medic


def _can_read(emu: Emulator, user: UserCtx, doc: dict) -> bool:
    if is_online(emu.settings(), user):
        return True
    if doc["_id"] == f"org.couchdb.user:{user.name}":
        return True
    facilities = set(user.facility_ids())
    scope = {doc["_id"], *ancestor_ids(emu.store, doc)}
    if isinstance(doc.get("fields"), dict):
        hydrated = hydrate(emu.store, emu.settings(), doc)
        for key in ("patient", "place"):
            if isinstance(hydrated.get(key), dict):
                scope |= {hydrated[key]["_id"], *ancestor_ids(emu.store, hydrated[key])}
        if isinstance(doc.get("contact"), dict):
            scope |= {doc["contact"].get("_id"), *ancestor_ids(emu.store, doc["contact"])}
    return bool(facilities & scope)


def _medic_user(request: Request, *permissions: str) -> UserCtx:
    emu = _emu(request)
    user = _authenticated(request)
    if permissions:
        require(emu.settings(), user, *permissions)
    return user


async def medic_slash(request: Request) -> Response:
    """``GET /medic``: the api itself redirects to ``/medic/`` (before any auth), empty body."""
    return Response(b"", 302, headers={"location": "/medic/", "vary": "Accept"})


@api("medic")
async def medic_info(request: Request) -> Response:
    emu = _emu(request)
    _medic_user(request)
    return couch_response(
        request,
        {
            "db_name": "medic",
            "doc_count": emu.store.doc_count(MEDIC),
            "update_seq": format_seq(emu.store.update_seq(MEDIC)),
            "instance_start_time": "0",
        },
    )


@api("medic")
async def medic_get(request: Request) -> Response:
    emu = _emu(request)
    user = _medic_user(request)
    doc_id = request.path_params["id"]
    entry = emu.store.entry(MEDIC, doc_id)
    if entry is None:
        raise CouchError(404, "not_found", "missing")
    if entry.deleted:
        raise CouchError(404, "not_found", "deleted")
    rev = request.query_params.get("rev")
    if rev and rev != entry.rev:
        raise CouchError(404, "not_found", "missing")
    if not _can_read(emu, user, entry.body):
        raise CouchError(403, "forbidden", "Insufficient privileges")
    resp = couch_response(request, entry.body)
    resp.headers["etag"] = f'"{entry.rev}"'
    return resp


def _save(emu: Emulator, doc: dict) -> dict:
    try:
        entry = emu.store.put(MEDIC, doc)
    except Conflict as exc:
        raise CouchError(409, "conflict", "Document update conflict.") from exc
    emu.sentinel.record_write(entry.id)
    return {"ok": True, "id": entry.id, "rev": entry.rev}


@api("medic")
async def medic_put(request: Request) -> Response:
    emu = _emu(request)
    _medic_user(request, "can_edit")
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise CouchError(400, "bad_request", "Document must be a JSON object")
    body["_id"] = request.path_params["id"]
    if request.query_params.get("rev"):
        body["_rev"] = request.query_params["rev"]
    result = _save(emu, body)
    return couch_response(request, result, 201)


@api("medic")
async def medic_post(request: Request) -> Response:
    emu = _emu(request)
    _medic_user(request, "can_edit")
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise CouchError(400, "bad_request", "Document must be a JSON object")
    return couch_response(request, _save(emu, body), 201)


@api("medic")
async def medic_delete(request: Request) -> Response:
    emu = _emu(request)
    _medic_user(request, "can_edit")
    rev = request.query_params.get("rev")
    if not rev:
        raise CouchError(409, "conflict", "Document update conflict.")
    doc = {"_id": request.path_params["id"], "_rev": rev, "_deleted": True}
    return couch_response(request, _save(emu, doc), 200)


@api("medic")
async def medic_find(request: Request) -> Response:
    emu = _emu(request)
    user = _medic_user(request)
    if not is_online(emu.settings(), user):
        raise ApiError(403, "forbidden", "Offline users are not allowed access to this endpoint")
    query = await _json_body(request)
    result = find(emu.store.sorted_ids(MEDIC), lambda i: emu.store.peek(MEDIC, i), query)
    return couch_response(request, result)


@api("medic")
async def medic_bulk_docs(request: Request) -> Response:
    emu = _emu(request)
    _medic_user(request, "can_edit")
    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("docs"), list):
        raise CouchError(400, "bad_request", "POST body must include `docs` parameter.")
    new_edits = body.get("new_edits", True) is not False
    results = []
    for doc in body["docs"]:
        if not isinstance(doc, dict):
            results.append({"error": "bad_request", "reason": "Document must be a JSON object"})
            continue
        try:
            entry = emu.store.put(MEDIC, doc, new_edits=new_edits)
            emu.sentinel.record_write(entry.id)
            if new_edits:
                results.append({"ok": True, "id": entry.id, "rev": entry.rev})
        except Conflict:
            results.append({"id": doc.get("_id"), "error": "conflict", "reason": "Document update conflict."})
    return couch_response(request, results, 201)


@api("medic")
async def medic_all_docs(request: Request) -> Response:
    emu = _emu(request)
    user = _medic_user(request)
    require_online(emu.settings(), user)
    params = dict(request.query_params)
    keys = None
    if request.method == "POST":
        body = await _json_body(request) or {}
        keys = body.get("keys")
        params.update({k: orjson.dumps(v).decode() for k, v in body.items() if k != "keys"})
    include_docs = params.get("include_docs") == "true"
    if keys is None and "keys" in params:
        keys = orjson.loads(params["keys"])
    rows = []
    ids = keys if keys is not None else emu.store.sorted_ids(MEDIC)
    for doc_id in ids:
        entry = emu.store.entry(MEDIC, doc_id)
        if entry is None or (entry.deleted and keys is None):
            rows.append({"key": doc_id, "error": "not_found"})
            continue
        row: dict[str, Any] = {"id": doc_id, "key": doc_id, "value": {"rev": entry.rev}}
        if entry.deleted:
            row["value"]["deleted"] = True
            row["doc"] = None
        elif include_docs:
            row["doc"] = entry.body
        rows.append(row)
    limit = int(params.get("limit", len(rows)))
    return couch_response(
        request, {"total_rows": emu.store.doc_count(MEDIC), "offset": 0, "rows": rows[:limit]}
    )


@api("medic")
async def medic_changes(request: Request) -> Response:
    emu = _emu(request)
    user = _medic_user(request)
    if not is_online(emu.settings(), user):
        return _offline_changes(request, emu, user)
    params = dict(request.query_params)
    if request.method == "POST":
        body = await _json_body(request) or {}
        if isinstance(body, dict) and "doc_ids" in body:
            params["doc_ids"] = orjson.dumps(body["doc_ids"]).decode()
    since_raw = params.get("since", "0")
    since = emu.store.update_seq(MEDIC) if since_raw == "now" else parse_seq(since_raw)
    limit = int(params["limit"]) if params.get("limit") else None
    include_docs = params.get("include_docs") == "true"
    doc_ids = set(orjson.loads(params["doc_ids"])) if params.get("doc_ids") else None

    def collect() -> list:
        entries = emu.store.changes(MEDIC, since)
        if doc_ids is not None:
            entries = [e for e in entries if e.id in doc_ids]
        return entries[:limit] if limit is not None else entries

    entries = collect()
    if not entries and params.get("feed") == "longpoll":
        timeout = min(float(params.get("timeout", 60000)) / 1000, 300.0)
        deadline = time.monotonic() + timeout
        while not entries and time.monotonic() < deadline:
            await emu.wait_change(deadline - time.monotonic())
            entries = collect()
    results = []
    for e in entries:
        row: dict[str, Any] = {"seq": format_seq(e.seq), "id": e.id, "changes": [{"rev": e.rev}]}
        if e.deleted:
            row["deleted"] = True
        if include_docs:
            row["doc"] = e.body
        results.append(row)
    last = entries[-1].seq if entries else since
    pending = len(emu.store.changes(MEDIC, last))
    return couch_response(request, {"results": results, "last_seq": format_seq(last), "pending": pending})


ALWAYS_REPLICATED = ("_design/medic-client", "service-worker-meta", "settings")


def _offline_changes(request: Request, emu: Emulator, user: UserCtx) -> Response:
    """An offline user's ``_changes``: the api filters the feed to what the user may replicate (the
    client ddoc, ``service-worker-meta``, ``settings``, the user's own docs, their area) and answers
    every such change since ``since`` (the recorded ``limit=2`` returned four)."""
    since = parse_seq(request.query_params.get("since", "0"))
    include_docs = request.query_params.get("include_docs") == "true"
    results = []
    last = since
    for e in emu.store.changes(MEDIC, since):
        if e.deleted or not (e.id in ALWAYS_REPLICATED or _can_read(emu, user, e.body)):
            continue
        row: dict[str, Any] = {"id": e.id, "changes": [{"rev": e.rev}], "seq": format_seq(e.seq)}
        if include_docs:
            row["doc"] = e.body
        results.append(row)
        last = e.seq
    return json_response({"results": results, "last_seq": format_seq(last)})


# --------------------------------------------------------------------------- /medic-sentinel, /_users


def _admin_db_get(db: str) -> Handler:
    @api(db)
    async def handler(request: Request) -> Response:
        emu = _emu(request)
        require_admin(_authenticated(request))
        doc_id = request.path_params["id"]
        if doc_id == "_all_docs":
            return couch_response(request, _all_docs_range(emu, db, request))
        entry = emu.store.entry(db, doc_id)
        if entry is None:
            raise CouchError(404, "not_found", "missing")
        if entry.deleted:
            raise CouchError(404, "not_found", "deleted")
        return couch_response(request, entry.body)

    return handler


def _all_docs_range(emu: Emulator, db: str, request: Request) -> dict:
    q = request.query_params
    start = orjson.loads(q["startkey"]) if q.get("startkey") else None
    end = orjson.loads(q["endkey"]) if q.get("endkey") else None
    rows = []
    for doc_id in emu.store.sorted_ids(db):
        if (start is not None and doc_id < start) or (end is not None and doc_id > end):
            continue
        entry = emu.store.entry(db, doc_id)
        if entry is None or entry.deleted:
            continue
        row: dict[str, Any] = {"id": doc_id, "key": doc_id, "value": {"rev": entry.rev}}
        if q.get("include_docs") == "true":
            row["doc"] = entry.body
        rows.append(row)
    return {"total_rows": emu.store.doc_count(db), "offset": 0, "rows": rows}


# ------------------------------------------------------------------------------------- /_emulator


def control(fn: Handler) -> Handler:
    async def handler(request: Request) -> Response:
        emu = _emu(request)
        if not emu.config.control_api:
            return json_response({"error": "not_found"}, 404)
        user = emu.auth.authenticate(request)
        if user is None:
            return not_logged_in(request, redirect_humans=False)
        if not user.is_admin:
            return json_response({"error": "forbidden", "reason": "admin only"}, 403)
        try:
            return await fn(request)
        except (ValueError, KeyError, TypeError) as exc:
            return json_response({"error": "bad_request", "reason": str(exc)}, 400)

    handler.__name__ = fn.__name__
    return handler


async def _body_dict(request: Request) -> dict:
    raw = await request.body()
    body = orjson.loads(raw) if raw else {}
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


@control
async def emu_stats(request: Request) -> Response:
    return json_response(_emu(request).stats())


@control
async def emu_chw_pause(request: Request) -> Response:
    _emu(request).chw.pause()
    return json_response({"ok": True, "paused": True})


@control
async def emu_chw_resume(request: Request) -> Response:
    _emu(request).chw.resume()
    return json_response({"ok": True, "paused": False})


@control
async def emu_chw_cases(request: Request) -> Response:
    return json_response(_emu(request).chw.cases())


@control
async def emu_chw_submit(request: Request) -> Response:
    emu = _emu(request)
    body = await _body_dict(request)
    emu.chw.scan_changes()
    case = None
    if body.get("record_id"):
        case = emu.store.peek(EMULATOR, CASE_PREFIX + body["record_id"])
    elif body.get("case_ref"):
        case = next((c for c in emu.chw.cases() if c.get("case_ref") == body["case_ref"]), None)
    if case is None or case.get("state") != "open":
        return json_response({"error": "not_found", "reason": "no open follow-up for that record/case"}, 404)
    answers = body.get("answers")
    if answers is not None and not isinstance(answers, dict):
        return json_response({"error": "bad_request", "reason": "answers must be an object"}, 400)
    try:
        report = emu.chw.submit(case, outcome=body.get("outcome"), method=body.get("method"), answers=answers)
    except FormError as exc:
        return json_response({"error": "bad_request", "reason": str(exc)}, 400)
    return json_response(report, 201)


@control
async def emu_fail(request: Request) -> Response:
    emu = _emu(request)
    body = await _body_dict(request)
    api_name = request.path_params["api"]
    count = int(body.get("count", 1))
    status = int(body.get("status", 500))
    if count <= 0:
        emu.fail.pop(api_name, None)
    else:
        emu.fail[api_name] = {"count": count, "status": status}
    return json_response({"ok": True, "fail": emu.fail})


@control
async def emu_down(request: Request) -> Response:
    emu = _emu(request)
    body = await _body_dict(request)
    seconds = float(body.get("seconds", 0))
    emu.down_until = time.time() + seconds if seconds > 0 else 0.0
    return json_response({"ok": True, "down": True, "seconds": seconds or None})


@control
async def emu_up(request: Request) -> Response:
    _emu(request).down_until = None
    return json_response({"ok": True, "down": False})


@control
async def emu_outbound_retry(request: Request) -> Response:
    emu = _emu(request)
    await emu.outbound.retry_queued()
    return json_response({"ok": True, "queue": emu.outbound.queued(), "stats": emu.outbound.stats.to_json()})


@control
async def emu_outbound_queue(request: Request) -> Response:
    return json_response(_emu(request).outbound.queued())


@control
async def emu_sentinel_flush(request: Request) -> Response:
    emu = _emu(request)
    await emu.sentinel.process_pending()
    emu.chw.scan_changes()
    return json_response({"ok": True, "processed": emu.sentinel.processed})


@control
async def emu_reload(request: Request) -> Response:
    _emu(request).reload_settings()
    return json_response({"ok": True})


@control
async def emu_infodoc(request: Request) -> Response:
    doc = _emu(request).store.get(SENTINEL, f"{request.path_params['id']}-info")
    return json_response(doc or {"error": "not_found"}, 200 if doc else 404)


# ------------------------------------------------------------------------------------------ the app


class DownMiddleware:
    """``/_emulator/down``: everything but the control API answers 503 until ``/_emulator/up``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_emulator"):
            emu: Emulator = scope["app"].state.emulator if "app" in scope else None
            if emu is not None and emu.is_down():
                resp = Response("Service Unavailable", 503, media_type="text/plain")
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _unhandled(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return server_error(request)


def create_app(config: ChtEmulatorConfig) -> Starlette:
    emulator = Emulator(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await emulator.start()
        try:
            yield
        finally:
            await emulator.stop()

    routes = [
        Route("/api/info", api_info, methods=["GET"]),
        Route("/api/v1/settings", get_settings, methods=["GET"]),
        Route("/api/v1/settings", put_settings, methods=["PUT"]),
        Route("/api/v1/people", create_people, methods=["POST"]),
        Route("/api/v1/places", create_places, methods=["POST"]),
        Route("/api/v1/person", create_person_v1, methods=["POST"]),
        Route("/api/v1/place", create_place_v1, methods=["POST"]),
        Route("/api/v1/person", list_persons, methods=["GET"]),
        Route("/api/v1/place", list_places, methods=["GET"]),
        Route("/api/v1/person/{id}", get_person, methods=["GET"]),
        Route("/api/v1/place/{id}", get_place, methods=["GET"]),
        Route("/api/v1/users", create_users_v1, methods=["POST"]),
        Route("/api/v2/users", create_users_v2, methods=["POST"]),
        Route("/api/v2/users", list_users_v2, methods=["GET"]),
        Route("/api/v2/users/{username}", get_user_v2, methods=["GET"]),
        Route("/api/v1/users", list_users, methods=["GET"]),
        Route("/api/v1/users-info", users_info, methods=["GET"]),
        Route("/api/v1/records", create_record, methods=["POST"]),
        Route("/api/v2/records", create_record, methods=["POST"]),
        Route("/api/v1/credentials/{key}", put_credentials, methods=["PUT"]),
        Route("/medic/login", login_page, methods=["GET"]),
        Route("/medic", medic_slash, methods=["GET"]),
        Route("/medic/", medic_info, methods=["GET"]),
        Route("/medic", medic_post, methods=["POST"]),
        Route("/medic/_find", medic_find, methods=["POST"]),
        Route("/medic/_bulk_docs", medic_bulk_docs, methods=["POST"]),
        Route("/medic/_all_docs", medic_all_docs, methods=["GET", "POST"]),
        Route("/medic/_changes", medic_changes, methods=["GET", "POST"]),
        Route("/medic/{id:path}", medic_get, methods=["GET"]),
        Route("/medic/{id:path}", medic_put, methods=["PUT"]),
        Route("/medic/{id:path}", medic_delete, methods=["DELETE"]),
        Route("/medic-sentinel/{id:path}", _admin_db_get(SENTINEL), methods=["GET"]),
        Route("/_users/{id:path}", _admin_db_get(USERS), methods=["GET"]),
        Route("/_emulator/stats", emu_stats, methods=["GET"]),
        Route("/_emulator/chw/pause", emu_chw_pause, methods=["POST"]),
        Route("/_emulator/chw/resume", emu_chw_resume, methods=["POST"]),
        Route("/_emulator/chw/cases", emu_chw_cases, methods=["GET"]),
        Route("/_emulator/chw/submit", emu_chw_submit, methods=["POST"]),
        Route("/_emulator/fail/{api}", emu_fail, methods=["POST"]),
        Route("/_emulator/down", emu_down, methods=["POST"]),
        Route("/_emulator/up", emu_up, methods=["POST"]),
        Route("/_emulator/outbound/retry", emu_outbound_retry, methods=["POST"]),
        Route("/_emulator/outbound/queue", emu_outbound_queue, methods=["GET"]),
        Route("/_emulator/outbound/info/{id}", emu_infodoc, methods=["GET"]),
        Route("/_emulator/sentinel/flush", emu_sentinel_flush, methods=["POST"]),
        Route("/_emulator/reload", emu_reload, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={Exception: _unhandled})
    app.state.emulator = emulator
    app.add_middleware(DownMiddleware)
    return app
