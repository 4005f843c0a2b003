"""An OpenHIM core fake, written from core's documented behaviour (shared/reference/openhim.md).

Two ASGI apps share one state: the management API (core's port 8080) and the router (port 5001).
It is deliberately independent of ``ltfu.openhim``: it computes every hash itself, so a mistake in our
client cannot be mirrored by the fake. The official Node library ``openhim-mediator-utils`` is run
against it (test_openhim_node.py) to keep it honest.

Flavours:
- ``"7.0"``: API auth types ``["token"]`` (Basic off), password hashes on the user, v7 endpoint schema.
- ``"7.1"``: ``["basic", "token"]``; Basic is tried first and a Basic failure is final.
- ``"8"``: 7.2+/8.x: passports (``token``: sha512, ``local``: bcrypt); any ``auth-*`` header means token
  only; ``Authorization`` containing ``Basic`` means Basic; a user created with a plain password has no
  token passport (``GET /authenticate`` → 404); v8 endpoint schema (``type`` http|kafka).

What is modelled: the ±window on ``auth-ts``; admin-only endpoints (403); mediator registration
validation, version rules and config merge; heartbeat replies (empty / ``OK`` / config JSON);
``PUT /mediators/:urn/config``; default channel install (500 on duplicates); channel validation;
``/metadata`` upsert with per-item status; client Basic auth on the router (``sha512(password+salt)``);
channel matching (unanchored regex on the path, explicit methods, priority); ``pathTransform``;
forwarded headers; ``application/json+openhim`` handling and what core stores of it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

try:  # bcrypt backs "local" passports and bcrypt client hashes; without it a PBKDF2 stand-in is used
    import bcrypt
except ImportError:  # pragma: no cover - depends on the environment
    bcrypt = None

ROOT_EMAIL = "root@openhim.org"  # core's default root user
ROOT_PASSWORD = "openhim-password"
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
TX_STATUSES = {"Processing", "Failed", "Completed", "Successful", "Completed with error(s)", "Pending Async"}
CONFIG_TYPES = {"string", "bigstring", "bool", "number", "option", "map", "struct", "password"}
MASK = "**********"


def sha512(text: str) -> str:
    return hashlib.sha512(text.encode("utf-8")).hexdigest()


def object_id() -> str:
    return secrets.token_hex(12)


def js_iso(dt: datetime) -> str:
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def js_date_parse(text: str) -> datetime | None:
    """Roughly JavaScript ``Date.parse``: ISO with zone, or a zone-less date-time read as local time."""
    s = text.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # JS reads a zone-less date-time as the server's local time
    return dt


# --- semver (the subset core's ``semver`` package decides on) -------------------------------------

_SEMVER = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


def semver_valid(v: Any) -> bool:
    return isinstance(v, str) and _SEMVER.match(v.strip()) is not None


def _semver_key(v: str) -> tuple:
    m = _SEMVER.match(v.strip())
    assert m
    core = tuple(int(m.group(i)) for i in (1, 2, 3))
    pre = m.group(4)
    if pre is None:
        return core + ((1,),)
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return core + ((0, ids),)


def semver_gt(a: str, b: str) -> bool:
    ka, kb = _semver_key(a), _semver_key(b)
    if ka[:3] != kb[:3]:
        return ka[:3] > kb[:3]
    pa, pb = ka[3], kb[3]
    if pa[0] != pb[0]:
        return pa[0] > pb[0]
    if pa[0] == 1:
        return False
    return pa[1] > pb[1]


# --- state ---------------------------------------------------------------------------------------


@dataclass
class User:
    email: str
    groups: list[str]
    provider: str | None = None  # 8.x: "token" makes Basic use the token passport
    token_salt: str | None = None  # ≤7.1: on the user; 8.x: token passport
    token_hash: str | None = None
    local_hash: str | None = None  # 8.x local passport (bcrypt)


def _local_hash(password: str) -> str:
    if bcrypt is not None:
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    salt = secrets.token_hex(8)
    return "pbkdf2$" + salt + "$" + hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 1000).hex()


def _local_check(password: str, stored: str) -> bool:
    if stored.startswith("pbkdf2$"):
        _, salt, digest = stored.split("$")
        return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 1000).hex() == digest
    if bcrypt is None:
        raise RuntimeError("bcrypt hash stored but the bcrypt package is not installed")
    return bcrypt.checkpw(password.encode(), stored.encode())


class ValidationFailed(Exception):
    pass


@dataclass
class FakeOpenHIM:
    flavour: str = "8"
    auth_window_s: float = 10.0
    clock_skew_s: float = 0.0  # core's clock minus the real clock
    auth_types: list[str] | None = None
    users: dict[str, User] = field(default_factory=dict)
    mediators: dict[str, dict[str, Any]] = field(default_factory=dict)
    channels: list[dict[str, Any]] = field(default_factory=list)
    clients: list[dict[str, Any]] = field(default_factory=list)
    transactions: list[dict[str, Any]] = field(default_factory=list)
    api_log: list[dict[str, Any]] = field(default_factory=list)  # one entry per API request
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.flavour not in ("7.0", "7.1", "8"):
            raise ValueError(self.flavour)
        if self.auth_types is None:
            self.auth_types = {
                "7.0": ["token"],
                "7.1": ["basic", "token"],
                "8": ["basic", "local", "token", "openid"],
            }[self.flavour]
        self.api_app = Starlette(routes=self._api_routes())
        self.router_app = Starlette(routes=[Route("/{path:path}", self._route, methods=list(ALL_METHODS))])

    # -- clock and users --------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.clock_skew_s)

    def add_user(
        self,
        email: str,
        password: str,
        *,
        groups: tuple[str, ...] = ("admin",),
        token_passport: bool = True,
        local_passport: bool = True,
        salt: str | None = None,
    ) -> User:
        """≤7.1: sha512 on the user (always "token-capable"). 8.x: passports as asked.

        ``token_passport=False`` on 8.x models a user created with a plain password (``POST /users``):
        only Basic/local works and ``GET /authenticate/:email`` is 404.
        """
        user = User(email.lower(), list(groups))
        if self.flavour != "8" or token_passport:
            user.token_salt = salt or secrets.token_hex(16)
            user.token_hash = sha512(user.token_salt + password)
        if self.flavour == "8" and local_passport:
            user.local_hash = _local_hash(password)
        if self.flavour == "8" and token_passport and not local_passport:
            user.provider = "token"
        self.users[user.email] = user
        return user

    def add_client(self, client_id: str, password: str, roles: list[str], name: str | None = None) -> dict:
        salt = secrets.token_hex(16)
        doc = {
            "_id": object_id(),
            "clientID": client_id,
            "name": name or client_id,
            "roles": roles,
            "passwordAlgorithm": "sha512",
            "passwordSalt": salt,
            "passwordHash": sha512(password + salt),  # clients: password first, then salt
        }
        self.clients.append(doc)
        return doc

    def mediator_config_modified(self, urn: str, config: dict[str, Any]) -> None:
        """What the console does on save (``PUT /mediators/:urn/config``), without HTTP."""
        m = self.mediators[urn]
        m["config"] = copy.deepcopy(config)
        m["_configModifiedTS"] = self.now()

    # -- API authentication -------------------------------------------------------------------

    def _authenticate(self, request: Request) -> tuple[User | None, str]:
        h = request.headers
        token_fields = {k: h.get(k, "") for k in ("auth-username", "auth-ts", "auth-salt", "auth-token")}
        has_token_header = any(k.startswith("auth-") for k in h)
        authz = h.get("authorization", "")
        types = self.auth_types or []
        if self.flavour == "8":
            if has_token_header:
                return (self._check_token(token_fields) if "token" in types else None), "token"
            if "Basic" in authz and "basic" in types:
                return self._check_basic(authz), "basic"
            return None, "none"
        if "basic" in types and authz.lower().startswith("basic "):
            return self._check_basic(authz), "basic"  # ≤7.1: a Basic failure does not fall back
        if "token" in types:
            return self._check_token(token_fields), "token"
        return None, "none"

    def _check_token(self, f: dict[str, str]) -> User | None:
        if not all(f.values()):
            return None
        ts = js_date_parse(f["auth-ts"])
        if ts is None or abs((self.now() - ts).total_seconds()) > self.auth_window_s:
            return None
        user = self.users.get(f["auth-username"].lower())
        if user is None or user.token_hash is None:
            return None
        if sha512(user.token_hash + f["auth-salt"] + f["auth-ts"]) != f["auth-token"]:
            return None
        return user

    def _check_basic(self, authz: str) -> User | None:
        try:
            email, _, password = base64.b64decode(authz.split(" ", 1)[1]).decode().partition(":")
        except Exception:
            return None
        if self.flavour == "8":
            user = self.users.get(email) if email == email.lower() else None  # exact lookup in 8.x
            if user is None:
                return None
            if user.provider == "token":
                ok = user.token_hash is not None and sha512(user.token_salt + password) == user.token_hash
            else:
                ok = user.local_hash is not None and _local_check(password, user.local_hash)
            return user if ok else None
        user = self.users.get(email.lower())
        if user is None or user.token_hash is None:
            return None
        return user if sha512(user.token_salt + password) == user.token_hash else None

    def _api(self, handler: Any, *, public: bool = False, admin: bool = True) -> Any:
        async def endpoint(request: Request) -> Response:
            entry = {
                "method": request.method,
                "path": request.url.path,
                "basic": "authorization" in request.headers,
                "token": any(k.startswith("auth-") for k in request.headers),
            }
            self.api_log.append(entry)
            if not public:
                user, scheme = self._authenticate(request)
                entry["scheme"] = scheme
                if user is None:
                    entry["status"] = 401
                    return Response(status_code=401)
                if admin and "admin" not in user.groups:
                    entry["status"] = 403
                    return PlainTextResponse(f"User {user.email} is not an admin, API access denied.", 403)
                request.state.user = user
            resp = await handler(request)
            entry["status"] = resp.status_code
            return resp

        return endpoint

    def _api_routes(self) -> list[Route]:
        a = self._api
        return [
            Route("/authenticate/{email:path}", a(self._authenticate_salt, public=True), methods=["GET"]),
            Route("/heartbeat", a(self._core_heartbeat, public=True), methods=["GET"]),
            Route("/about", a(self._about, admin=False), methods=["GET"]),
            Route("/mediators", a(self._mediators_get), methods=["GET"]),
            Route("/mediators", a(self._mediators_post), methods=["POST"]),
            Route("/mediators/{urn}/heartbeat", a(self._mediator_heartbeat), methods=["POST"]),
            Route("/mediators/{urn}/config", a(self._mediator_config), methods=["PUT"]),
            Route("/mediators/{urn}/channels", a(self._mediator_channels), methods=["POST"]),
            Route("/mediators/{urn}", a(self._mediator_get), methods=["GET"]),
            Route("/mediators/{urn}", a(self._mediator_delete), methods=["DELETE"]),
            Route("/channels", a(self._channels_get), methods=["GET"]),
            Route("/channels", a(self._channels_post), methods=["POST"]),
            Route("/clients", a(self._clients_get), methods=["GET"]),
            Route("/metadata", a(self._metadata_get), methods=["GET"]),
            Route("/metadata", a(self._metadata_post), methods=["POST"]),
            Route("/transactions", a(self._transactions_get), methods=["GET"]),
        ]

    # -- API handlers ------------------------------------------------------------------------

    async def _authenticate_salt(self, request: Request) -> Response:
        email = unquote(request.path_params["email"]).lower()
        user = self.users.get(email)
        if user is None or user.token_salt is None:
            return PlainTextResponse(f"Could not find token passport for user {email}", 404)
        return JSONResponse({"salt": user.token_salt, "ts": js_iso(self.now())})

    async def _core_heartbeat(self, request: Request) -> Response:
        now = self.now()
        mediators = {}
        for urn, m in self.mediators.items():
            last = m.get("_lastHeartbeat")
            up = last is not None and (now - last).total_seconds() <= 60
            mediators[urn] = m.get("_uptime") if up else None
        return JSONResponse({"master": time.monotonic() - self.started, "mediators": mediators, "now": js_iso(now)})

    async def _about(self, request: Request) -> Response:
        version = {"7.0": "7.0.2", "7.1": "7.1.0", "8": "8.5.0"}[self.flavour]
        return JSONResponse({"currentCoreVersion": version, "serverTimezone": "UTC"})

    async def _body(self, request: Request) -> Any:
        raw = await request.body()
        if not raw:
            return {}  # koa-bodyparser's default
        return json.loads(raw)

    def _public_mediator(self, m: dict[str, Any], mask: bool) -> dict[str, Any]:
        out = {k: v for k, v in copy.deepcopy(m).items() if not isinstance(v, datetime)}
        if mask and out.get("config"):
            for d in out.get("configDefs") or []:
                if d.get("type") == "password" and out["config"].get(d["param"]):
                    out["config"][d["param"]] = MASK
        return out

    async def _mediators_get(self, request: Request) -> Response:
        return JSONResponse([self._public_mediator(m, mask=False) for m in self.mediators.values()])

    async def _mediator_get(self, request: Request) -> Response:
        m = self.mediators.get(unquote(request.path_params["urn"]))
        if m is None:
            return Response(status_code=404)
        return JSONResponse(self._public_mediator(m, mask=True))

    async def _mediator_delete(self, request: Request) -> Response:
        urn = unquote(request.path_params["urn"])
        self.mediators.pop(urn, None)
        return PlainTextResponse(f"Mediator with urn {urn} has been successfully removed")

    def _validate_config_defs(self, defs: Any) -> None:
        for d in defs:
            if not isinstance(d, dict) or not d.get("param"):
                raise ValidationFailed("configDefs.0.param: Path `param` is required.")
            if d.get("type") not in CONFIG_TYPES:
                raise ValidationFailed(f"configDefs.type: `{d.get('type')}` is not a valid enum value for path `type`.")
            if d["type"] == "struct":
                if not d.get("template"):
                    raise ValidationFailed(f"Must specify a template for struct param '{d['param']}'")
                for t in d["template"]:
                    if not t.get("param") or not t.get("type"):
                        raise ValidationFailed(f"Must specify field 'param' and 'type' in template of '{d['param']}'")
                    if t["type"] == "struct":
                        raise ValidationFailed(f"May not recursively specify 'struct' (param '{d['param']}')")
            if d["type"] == "option" and (not isinstance(d.get("values"), list) or not d["values"]):
                raise ValidationFailed(f"Must specify a values array for option param '{d['param']}'")

    def _validate_field(self, param: str, d: dict[str, Any], v: Any) -> None:
        t = d["type"]
        if t in ("string", "bigstring", "password") and not isinstance(v, str):
            raise ValidationFailed(f"Expected config param {param} to be a string.")
        if t == "number" and (not isinstance(v, int | float) or isinstance(v, bool)):
            raise ValidationFailed(f"Expected config param {param} to be a number.")
        if t == "bool" and not isinstance(v, bool):
            raise ValidationFailed(f"Expected config param {param} to be a boolean.")
        if t == "option" and v not in d["values"]:
            raise ValidationFailed(f"Expected config param {param} to be one of {','.join(d['values'])}")
        if t == "map" and (not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values())):
            raise ValidationFailed(f"Expected config param {param} to be an object of strings.")
        if t == "struct":
            if not isinstance(v, dict):
                raise ValidationFailed(f"Expected config param {param} to be an object.")
            allowed = {tp["param"] for tp in d["template"]}
            for k in v:
                if k not in allowed:
                    raise ValidationFailed(f"Field {k} is not defined in template definition for config param {param}.")

    def _validate_config(self, defs: list[dict[str, Any]], config: dict[str, Any]) -> None:
        for param, value in config.items():
            matching = [d for d in defs if d.get("param") == param]
            if not matching:
                raise ValidationFailed(f"No config definition found for parameter {param}")
            for d in matching:
                if d.get("array"):
                    if not isinstance(value, list):
                        raise ValidationFailed(f"Expected config param {param} to be an array of type {d['type']}")
                    for i, item in enumerate(value):
                        self._validate_field(f"{param}[{i}]", d, item)
                else:
                    self._validate_field(param, d, value)

    def _validate_mediator_schema(self, m: dict[str, Any]) -> None:
        """Mongoose validation of a new mediator document (core@v7/v8 ``src/model/mediators.js``)."""
        if not m.get("name"):
            raise ValidationFailed("name: Path `name` is required.")
        types = {"http", "tcp", "mllp"} if self.flavour != "8" else {"http", "kafka"}
        for i, e in enumerate(m.get("endpoints") or []):
            if not e.get("name"):
                raise ValidationFailed(f"endpoints.{i}.name: Path `name` is required.")
            if self.flavour != "8":
                for key in ("host", "port"):
                    if e.get(key) in (None, ""):
                        raise ValidationFailed(f"endpoints.{i}.{key}: Path `{key}` is required.")
            if e.get("type", "http") not in types:
                raise ValidationFailed(f"endpoints.{i}.type: `{e.get('type')}` is not a valid enum value.")
            if "port" in e and e["port"] not in (None, ""):
                try:
                    int(e["port"])
                except (TypeError, ValueError):
                    raise ValidationFailed(f"endpoints.{i}.port: Cast to Number failed") from None
        for i, c in enumerate(m.get("defaultChannelConfig") or []):
            for key in ("name", "urlPattern"):
                if not c.get(key):
                    raise ValidationFailed(f"defaultChannelConfig.{i}.{key}: Path `{key}` is required.")

    async def _mediators_post(self, request: Request) -> Response:
        m = await self._body(request)
        try:
            if not isinstance(m, dict):
                raise ValidationFailed("body must be an object")
            for core_owned in ("_configModifiedTS", "_uptime", "_lastHeartbeat"):
                m.pop(core_owned, None)
            if not m.get("urn"):
                raise ValidationFailed("URN is required")
            if not semver_valid(m.get("version")):
                raise ValidationFailed("Version is required. Must be in SemVer form x.y.z")
            if m.get("configDefs"):
                self._validate_config_defs(m["configDefs"])
                if m.get("config") is not None:
                    self._validate_config(m["configDefs"], m["config"])
            existing = self.mediators.get(m["urn"])
            if existing is not None:
                if semver_gt(m["version"], existing["version"]):
                    if m.get("config") is not None and existing.get("config") is not None:
                        for param in list(m["config"]):
                            if existing["config"].get(param) is not None:
                                m["config"][param] = existing["config"][param]
                    existing.update(m)  # $set of every top-level field sent, no schema validation
            else:
                if not m.get("endpoints"):
                    raise ValidationFailed("At least 1 endpoint is required")
                self._validate_mediator_schema(m)
                m["_id"] = object_id()
                self.mediators[m["urn"]] = m
        except ValidationFailed as exc:
            return PlainTextResponse(f"Could not add Mediator via the API: ValidationError: {exc}", 400)
        return Response(status_code=201)

    async def _mediator_heartbeat(self, request: Request) -> Response:
        m = self.mediators.get(unquote(request.path_params["urn"]))
        if m is None:
            return Response(status_code=404)
        beat = await self._body(request)
        if not isinstance(beat, dict) or beat.get("uptime") is None:
            return Response(status_code=400)
        modified, last = m.get("_configModifiedTS"), m.get("_lastHeartbeat")
        send_config = (modified is not None and (last is None or modified > last)) or beat.get("config") is True
        m["_lastHeartbeat"] = self.now()
        m["_uptime"] = beat["uptime"]
        if not send_config:
            return PlainTextResponse("")
        if m.get("config") is None:
            return PlainTextResponse("OK")  # Koa's default body for 200 without one (issue #548)
        return JSONResponse(m["config"])

    async def _mediator_config(self, request: Request) -> Response:
        m = self.mediators.get(unquote(request.path_params["urn"]))
        if m is None:
            return PlainTextResponse("No mediator found for this urn.", 404)
        config = await self._body(request)
        for d in m.get("configDefs") or []:  # masked passwords are restored from the stored values
            if d.get("type") == "password" and config.get(d["param"]) == MASK and m.get("config"):
                config[d["param"]] = m["config"].get(d["param"])
        try:
            self._validate_config(m.get("configDefs") or [], config)
        except ValidationFailed as exc:
            return PlainTextResponse(str(exc), 400)
        self.mediator_config_modified(m["urn"], config)
        return Response(status_code=200)

    async def _mediator_channels(self, request: Request) -> Response:
        m = self.mediators.get(unquote(request.path_params["urn"]))
        if m is None:
            return PlainTextResponse("No mediator found for this urn.", 404)
        names = await self._body(request)
        defaults = m.get("defaultChannelConfig") or []
        if isinstance(names, list) and len(names) == 0:
            chosen = defaults
        elif isinstance(names, list):
            chosen = [c for c in defaults if c["name"] in names]
            if len(chosen) < len(names):
                return PlainTextResponse(
                    "Could not load mediator default channel config, one or more channels in the request body "
                    f"not found in the mediator config (urn: {m['urn']})",
                    400,
                )
        else:
            chosen = []  # no body: koa-bodyparser gives {} and nothing is installed
        for c in chosen:
            if any(ch["name"] == c["name"] for ch in self.channels):
                return PlainTextResponse(
                    "Could not load mediator default channel config (urn: "
                    f"{m['urn']}): MongoError: E11000 duplicate key error index: name_1 dup key",
                    500,
                )
            doc = copy.deepcopy(c)
            doc["_id"] = object_id()
            doc.setdefault("status", "enabled")
            doc.setdefault("type", "http")
            doc["updatedBy"] = {"name": request.state.user.email}
            self.channels.append(doc)
        return Response(status_code=201)

    def validate_channel(self, ch: dict[str, Any]) -> None:
        for key in ("name", "urlPattern"):
            if not ch.get(key):
                raise ValidationFailed(f"{key}: Path `{key}` is required.")
        methods = ch.get("methods") or []
        if len(set(methods)) != len(methods):
            raise ValidationFailed("Channel methods can't be repeated")
        if any(mm not in ALL_METHODS for mm in methods):
            raise ValidationFailed("methods: not a valid enum value")
        routes = ch.get("routes") or []
        for i, r in enumerate(routes):
            if not r.get("name"):
                raise ValidationFailed(f"routes.{i}.name: Path `name` is required.")
            if self.flavour != "8" or r.get("type", "http") == "http":
                for key in ("host", "port"):
                    if r.get(key) in (None, ""):
                        raise ValidationFailed(f"routes.{i}.{key}: Path `{key}` is required.")
            if r.get("path") and r.get("pathTransform"):
                raise ValidationFailed("Cannot define both 'path' and 'pathTransform' on a route")
        if ch.get("type", "http") == "http" and routes:
            primaries = [r for r in routes if r.get("primary") and r.get("status", "enabled") == "enabled"]
            if len(primaries) != 1:
                raise ValidationFailed("Channel must have exactly one enabled primary route")

    async def _channels_get(self, request: Request) -> Response:
        return JSONResponse(copy.deepcopy(self.channels))

    async def _channels_post(self, request: Request) -> Response:
        ch = await self._body(request)
        try:
            self.validate_channel(ch)
            if any(c["name"] == ch["name"] for c in self.channels):
                raise ValidationFailed("E11000 duplicate key error: name")
        except ValidationFailed as exc:
            return PlainTextResponse(f"Could not add channel via the API: {exc}", 400)
        ch["_id"] = object_id()
        self.channels.append(ch)
        return PlainTextResponse("Channel successfully created", 201)

    async def _clients_get(self, request: Request) -> Response:
        return JSONResponse([{k: v for k, v in c.items() if k != "passwordHash"} for c in self.clients])

    @staticmethod
    def _strip_ids(doc: Any) -> Any:
        if isinstance(doc, dict):
            return {k: FakeOpenHIM._strip_ids(v) for k, v in doc.items() if k not in ("_id", "__v")}
        if isinstance(doc, list):
            return [FakeOpenHIM._strip_ids(v) for v in doc]
        return doc

    async def _metadata_get(self, request: Request) -> Response:
        export = {
            "Channels": self._strip_ids(self.channels),
            "Clients": self._strip_ids(self.clients),
            "Mediators": [self._strip_ids(self._public_mediator(m, mask=False)) for m in self.mediators.values()],
            "Users": [{"email": u.email, "groups": u.groups} for u in self.users.values()],
            "ContactGroups": [],
        }
        return JSONResponse([export])

    async def _metadata_post(self, request: Request) -> Response:
        body = await self._body(request)
        keys = {
            "Channels": "name",
            "Clients": "clientID",
            "Mediators": "urn",
            "Users": "email",
            "ContactGroups": "groups",
        }
        results = []
        for collection, docs in body.items():
            for doc in docs:
                uid = doc.get(keys.get(collection, ""), None) if isinstance(doc, dict) else None
                try:
                    if collection not in keys:
                        raise ValidationFailed("Invalid Collection in Import Object")
                    status = self._upsert(collection, keys[collection], doc)
                    results.append({"model": collection, "record": doc, "status": status, "message": "", "uid": uid})
                except ValidationFailed as exc:
                    results.append(
                        {"model": collection, "record": doc, "status": "Error", "message": str(exc), "uid": uid}
                    )
        return JSONResponse(results, status_code=201)

    def _upsert(self, collection: str, key: str, doc: dict[str, Any]) -> str:
        doc = {k: v for k, v in copy.deepcopy(doc).items() if k not in ("_id", "__v")}
        if collection == "Channels":
            store = self.channels
        elif collection == "Clients":
            store = self.clients
            if (
                not doc.get("clientID")
                or not doc.get("name")
                and not any(c["clientID"] == doc.get("clientID") for c in self.clients)
            ):
                raise ValidationFailed("Client validation failed: clientID and name are required")
        elif collection == "Mediators":
            existing = self.mediators.get(doc.get("urn"))
            if existing:
                existing.update(doc)
                return "Updated"
            doc["_id"] = object_id()
            self.mediators[doc["urn"]] = doc
            return "Inserted"
        else:
            return "Inserted"  # users and contact groups are not modelled further
        for existing in store:
            if existing.get(key) == doc.get(key):
                existing.update(doc)  # findByIdAndUpdate: $set of the given fields, no validation
                return "Updated"
        if collection == "Channels":
            self.validate_channel(doc)
        doc["_id"] = object_id()
        store.append(doc)
        return "Inserted"

    async def _transactions_get(self, request: Request) -> Response:
        return JSONResponse(json.loads(json.dumps(self.transactions, default=str)))

    # -- router ------------------------------------------------------------------------------

    def _client_from(self, authz: str) -> dict[str, Any] | None:
        if not authz.startswith("Basic "):
            return None
        try:
            client_id, _, password = base64.b64decode(authz[6:]).decode().partition(":")
        except Exception:
            return None
        client = next((c for c in self.clients if c.get("clientID") == client_id), None)
        if client is None or not client.get("passwordHash"):
            return None
        algorithm = (client.get("passwordAlgorithm") or "").lower()
        if algorithm in ("sha512", "sha256", "sha1", "md5"):
            digest = hashlib.new(algorithm, (password + (client.get("passwordSalt") or "")).encode()).hexdigest()
            return client if digest == client["passwordHash"] else None
        return client if _local_check(password, client["passwordHash"]) else None

    def match_channel(self, path: str, method: str) -> dict[str, Any] | None:
        candidates = [
            c
            for c in self.channels
            if c.get("status", "enabled") == "enabled"
            and c.get("type", "http") == "http"
            and re.search(c["urlPattern"], path)
            and method in (c.get("methods") or [])
        ]
        candidates.sort(key=lambda c: (c.get("priority") is None, c.get("priority") or 0))
        return candidates[0] if candidates else None

    @staticmethod
    def transform_path(path: str, expression: str) -> str:
        """core ``transformPath``: ``s/from/to[/g]``, ``\\/`` escapes a slash, first match unless ``g``."""
        parts = expression.replace("\\/", "\x00").split("/")
        source = parts[1].replace("\x00", "/")
        target = (parts[2] if len(parts) > 2 else "").replace("\x00", "/")
        count = 0 if len(parts) > 3 and parts[3] == "g" else 1
        # JS regexes and Python's agree on what ltfu and the tests use; "$&"-style targets are not modelled
        return re.sub(source, lambda _m: target, path, count=count)

    async def _route(self, request: Request) -> Response:
        path, method = request.url.path, request.method
        client = self._client_from(request.headers.get("authorization", ""))
        channel = self.match_channel(path, method)
        if channel is None:
            return PlainTextResponse("Not Found", 404)
        allowed = channel.get("authType") == "public" or (
            client is not None
            and (
                client["clientID"] in (channel.get("allow") or [])
                or set(client.get("roles") or []) & set(channel.get("allow") or [])
            )
        )
        if not allowed:
            return Response(status_code=401, headers={"WWW-Authenticate": "Basic"})
        tx_id = object_id()
        body = await request.body() if method in ("POST", "PUT", "PATCH") else b""
        tx: dict[str, Any] = {
            "_id": tx_id,
            "clientID": client["clientID"] if client else None,
            "channelName": channel["name"],
            "request": {
                "path": path,
                "querystring": request.url.query,
                "method": method,
                "headers": dict(request.headers),
                "body": body.decode("utf-8", "replace"),
                "timestamp": js_iso(self.now()),
            },
            "status": "Processing",
            "autoRetry": False,
        }
        self.transactions.append(tx)
        route = next(r for r in channel["routes"] if r.get("primary") and r.get("status", "enabled") == "enabled")
        if route.get("path"):
            dest = route["path"]
        elif route.get("pathTransform"):
            dest = self.transform_path(path, route["pathTransform"])
        else:
            dest = path
        if request.url.query:
            dest += "?" + request.url.query
        headers = {k: v for k, v in request.headers.items() if k not in ("host", "content-length")}
        if not route.get("forwardAuthHeader"):
            headers.pop("authorization", None)
        peer = request.client.host if request.client else "127.0.0.1"
        headers["X-OpenHIM-TransactionID"] = tx_id
        headers["X-Forwarded-For"] = (
            f"{headers.pop('x-forwarded-for')}, {peer}" if "x-forwarded-for" in headers else peer
        )
        headers["X-Forwarded-Host"] = request.headers.get("host", "")
        if client:
            headers["X-OpenHIM-ClientID"] = client["clientID"]
        if route.get("username") and route.get("password"):
            headers["authorization"] = (
                "Basic " + base64.b64encode(f"{route['username']}:{route['password']}".encode()).decode()
            )
        scheme = "https" if route.get("secured") else "http"
        url = f"{scheme}://{route['host']}:{route['port']}{dest}"
        sent_at = js_iso(self.now())
        core_orch = {
            "name": route["name"],
            "request": {
                "host": route["host"],
                "port": route["port"],
                "path": dest,
                "method": method,
                "headers": headers,
                "timestamp": sent_at,
            },
        }
        timeout = aiohttp.ClientTimeout(total=(channel.get("timeout") or 60000) / 1000)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, auto_decompress=True) as s,
                s.request(method, url, headers=headers, data=body if body else None, allow_redirects=False) as resp,
            ):
                raw = await resp.read()
                status, resp_headers = resp.status, {k.lower(): v for k, v in resp.headers.items()}
        except Exception as exc:  # transport failure: 500 to the client, queued for auto-retry
            return self._fail(tx, core_orch, f"{type(exc).__name__}: {exc}")
        core_orch["response"] = {"status": status, "headers": resp_headers, "timestamp": js_iso(self.now())}
        if "application/json+openhim" not in resp_headers.get("content-type", ""):
            tx["response"] = {"status": status, "headers": resp_headers, "body": raw.decode("utf-8", "replace")}
            tx["orchestrations"] = [core_orch]
            tx["status"] = self._computed_status(status)
            out = Response(raw, status_code=status)
            for k, v in resp_headers.items():
                if k not in ("content-length", "content-encoding", "transfer-encoding"):
                    out.headers[k] = v
            out.headers["X-OpenHIM-TransactionID"] = tx_id
            return out
        try:
            doc = json.loads(raw)
            inner = doc["response"]
            inner_status = int(inner["status"]) if not isinstance(inner["status"], bool) else None
            if inner_status is None:
                raise ValueError("response.status is not an integer")
        except Exception as exc:
            return self._fail(tx, core_orch, f"invalid mediator response: {exc}")
        return self._mediator_response(tx, core_orch, doc, inner, inner_status)

    def _fail(self, tx: dict[str, Any], core_orch: dict[str, Any], message: str) -> Response:
        core_orch.setdefault("error", {"message": message})
        tx.update(
            response={"status": 500, "body": "An internal server error occurred"},
            error={"message": message},
            autoRetry=True,
            status="Failed",
            orchestrations=[core_orch],
        )
        return PlainTextResponse("An internal server error occurred", 500)

    @staticmethod
    def _computed_status(status: int) -> str:
        if status >= 500:
            return "Failed"
        if 200 <= status < 300:
            return "Successful"
        return "Completed"

    @staticmethod
    def store_problems(doc: dict[str, Any]) -> list[str]:
        """What would break core's message store (``messageStore.storeResponse``) or its schema."""
        problems = []
        inner = doc.get("response") or {}
        if "body" in inner and not isinstance(inner["body"], str):
            problems.append("response.body is not a string")
        cookies = (inner.get("headers") or {}).get("set-cookie")
        if cookies is not None and not (isinstance(cookies, list) and all(isinstance(c, str) for c in cookies)):
            problems.append("set-cookie is not a string array")
        for i, o in enumerate(doc.get("orchestrations") or []):
            if not o.get("name"):
                problems.append(f"orchestrations[{i}].name missing")
            req = o.get("request")
            if req is not None:
                if not req.get("timestamp"):
                    problems.append(f"orchestrations[{i}].request.timestamp missing")
                if "body" in req and not isinstance(req["body"], str):
                    problems.append(f"orchestrations[{i}].request.body is not a string")
                for name in req.get("headers") or {}:
                    if "." in name or name.startswith("$"):
                        problems.append(f"orchestrations[{i}].request.headers has key {name!r}")
            res = o.get("response")
            if res is not None and "body" in res and not isinstance(res["body"], str):
                problems.append(f"orchestrations[{i}].response.body is not a string")
        props = doc.get("properties")
        if props is not None and not (isinstance(props, dict) and all(isinstance(v, str) for v in props.values())):
            problems.append("properties are not a flat string map")
        if "status" in doc and doc["status"] not in TX_STATUSES:
            problems.append(f"status {doc['status']!r} is not a transaction status")
        return problems

    def _mediator_response(
        self, tx: dict[str, Any], core_orch: dict[str, Any], doc: dict[str, Any], inner: dict[str, Any], status: int
    ) -> Response:
        tx["mediatorURN"] = doc.get("x-mediator-urn")
        tx["response"] = {
            "status": status,
            "headers": inner.get("headers"),
            "body": inner.get("body"),
            "timestamp": inner.get("timestamp"),
        }
        tx["properties"] = doc.get("properties")
        tx["orchestrations"] = list(doc.get("orchestrations") or []) + [core_orch]
        if doc.get("error") is not None:
            tx["autoRetry"] = True
            tx["error"] = doc["error"]
        tx["status"] = doc.get("status") or self._computed_status(status)
        tx["storeProblems"] = self.store_problems(doc)
        body = inner.get("body")
        out = Response(body if isinstance(body, str) else str(body), status_code=status)
        headers = inner.get("headers")
        for k, v in (headers or {}).items():
            lk = k.lower()
            if lk in ("content-length", "content-encoding", "transfer-encoding"):
                continue
            if lk == "set-cookie" and isinstance(v, list):
                for c in v:
                    out.headers.append("set-cookie", c)
            else:
                out.headers[k] = str(v)
        if headers is not None:
            out.headers["X-OpenHIM-TransactionID"] = tx["_id"]
        return out
