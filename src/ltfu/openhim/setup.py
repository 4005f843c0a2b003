"""``ltfu openhim setup``: provision OpenHIM for ltfu, idempotently.

Reads what core has (``GET /metadata``), then:

1. registers the mediator (``POST /mediators``; a no-op for core unless the version is higher);
2. creates or updates, through ``POST /metadata`` (upsert by ``clientID``), the router clients of the
   facilities (role ``ltfu-facility``) and of CHT outbound push (role ``ltfu-cht``). A client whose
   stored hash already matches the given password is left alone;
3. installs the default channels that are missing (``POST /mediators/:urn/channels`` with their names:
   that call is not idempotent, hence the check first) and brings existing ones back in line when the
   fields ltfu depends on drifted (``POST /metadata``), keeping whatever else an operator changed
   (other routes, extra allowed roles, timeouts, ...).

``--dry-run`` only reads and prints the plan. Running it twice changes nothing the second time.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ltfu.openhim import mediator
from ltfu.openhim.auth import client_password_hash, new_client_salt
from ltfu.openhim.client import OpenHIMClient, OpenHIMError
from ltfu.settings import Settings

log = logging.getLogger(__name__)

ROUTE_NAME = "ltfu"
_ROUTE_FIELDS = ("type", "host", "port", "primary", "secured", "pathTransform", "path", "username", "password")
_ROUTE_FIELDS_ALWAYS = ("pathTransform", "path")  # compared even when we do not set them


@dataclass(frozen=True)
class ClientSpec:
    """A router client (caller of OpenHIM's ports 5000/5001) to provision."""

    client_id: str
    roles: tuple[str, ...]
    password: str | None = None
    name: str | None = None

    @classmethod
    def parse(cls, text: str, role: str) -> ClientSpec:
        """``ID``, ``ID:PASSWORD`` or ``ID:env:VARIABLE`` (password read from the environment)."""
        client_id, sep, secret = text.partition(":")
        client_id = client_id.strip()
        if not client_id:
            raise ValueError(f"empty client id in {text!r}")
        password: str | None = secret if sep else None
        if password is not None and password.startswith("env:"):
            var = password[4:]
            password = os.environ.get(var)
            if not password:
                raise ValueError(f"environment variable {var} (password of client {client_id}) is not set")
        return cls(client_id, (role,), password or None)


@dataclass
class Action:
    kind: str  # register | create-client | update-client | install-channel | update-channel | ok | warn
    target: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind:<16} {self.target}" + (f"  ({self.detail})" if self.detail else "")


@dataclass
class SetupPlan:
    registration: dict[str, Any]
    desired_channels: list[dict[str, Any]] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    clients: list[dict[str, Any]] = field(default_factory=list)  # docs for POST /metadata
    channel_updates: list[dict[str, Any]] = field(default_factory=list)  # docs for POST /metadata
    install: list[str] = field(default_factory=list)  # default channel names to install

    @property
    def changes(self) -> bool:
        return any(a.kind not in ("ok", "warn") for a in self.actions)


# --- diffing ------------------------------------------------------------------------------------


def _password_matches(existing: dict[str, Any], password: str) -> bool:
    stored = existing.get("passwordHash")
    if not stored:
        return False
    algorithm = (existing.get("passwordAlgorithm") or "").lower()
    if algorithm == "sha512":
        return client_password_hash(password, existing.get("passwordSalt") or "") == stored
    if stored.startswith("$2"):
        try:
            import bcrypt  # optional: only to recognise a bcrypt hash set through the console
        except ImportError:
            return False
        return bcrypt.checkpw(password.encode(), stored.encode())
    return False


def plan_client(spec: ClientSpec, existing: dict[str, Any] | None) -> tuple[Action, dict[str, Any] | None]:
    """What to do for one client; the document to upsert, or None when nothing changes."""
    if existing is None:
        doc: dict[str, Any] = {
            "clientID": spec.client_id,
            "name": spec.name or spec.client_id,
            "roles": list(spec.roles),
        }
        detail = "roles " + ", ".join(spec.roles)
        if spec.password:
            salt = new_client_salt()
            doc |= {
                "passwordAlgorithm": "sha512",
                "passwordSalt": salt,
                "passwordHash": client_password_hash(spec.password, salt),
            }
            detail += ", Basic password"
        else:
            detail += ", NO password: set one in the console or pass ID:PASSWORD"
        return Action("create-client", spec.client_id, detail), doc
    doc = copy.deepcopy(existing)
    why: list[str] = []
    roles = list(existing.get("roles") or [])
    missing_roles = [r for r in spec.roles if r not in roles]
    if missing_roles:
        doc["roles"] = roles + missing_roles
        why.append("add roles " + ", ".join(missing_roles))
    if spec.password and not _password_matches(existing, spec.password):
        salt = new_client_salt()
        doc |= {
            "passwordAlgorithm": "sha512",
            "passwordSalt": salt,
            "passwordHash": client_password_hash(spec.password, salt),
        }
        why.append("set password")
    if not why:
        return Action("ok", spec.client_id, "client up to date"), None
    return Action("update-client", spec.client_id, "; ".join(why)), doc


def _route_drift(want: dict[str, Any], have: dict[str, Any] | None) -> list[str]:
    if have is None:
        return ["route missing"]
    drift = []
    for key in _ROUTE_FIELDS:
        if key not in want and key not in _ROUTE_FIELDS_ALWAYS:
            continue  # e.g. route credentials an operator set and we were not asked to manage
        w, h = want.get(key), have.get(key)
        if key == "port" and h is not None:
            h = int(h)
        if key in ("secured", "primary"):
            w, h = bool(w), bool(h)
        if w != h and not (w is None and h in (None, "")):
            shown = ("***", "***") if key == "password" else (h, w)
            drift.append(f"route {key} {shown[0]!r} → {shown[1]!r}")
    if have.get("status", "enabled") != "enabled":
        drift.append("route disabled → enabled")
    return drift


def plan_channel(want: dict[str, Any], existing: dict[str, Any] | None) -> tuple[Action, dict[str, Any] | None]:
    """What to do for one default channel; the merged document to upsert, or None."""
    name = want["name"]
    if existing is None:
        return Action("install-channel", name, want["urlPattern"]), None
    doc = copy.deepcopy(existing)
    why: list[str] = []
    if existing.get("urlPattern") != want["urlPattern"]:
        why.append(f"urlPattern {existing.get('urlPattern')!r} → {want['urlPattern']!r}")
        doc["urlPattern"] = want["urlPattern"]
    methods = list(existing.get("methods") or [])
    missing_methods = [m for m in want["methods"] if m not in methods]
    if missing_methods:
        why.append("add methods " + ", ".join(missing_methods))
        doc["methods"] = methods + missing_methods
    allow = list(existing.get("allow") or [])
    missing_allow = [r for r in want["allow"] if r not in allow]
    if missing_allow and existing.get("authType", "private") != "public":
        why.append("allow " + ", ".join(missing_allow))
        doc["allow"] = allow + missing_allow
    if existing.get("status", "enabled") == "deleted":
        why.append("deleted → enabled")
        doc["status"] = "enabled"
    routes = list(doc.get("routes") or [])
    want_route = want["routes"][0]
    idx = next((i for i, r in enumerate(routes) if r.get("name") == want_route["name"]), None)
    drift = _route_drift(want_route, routes[idx] if idx is not None else None)
    if drift:
        why += drift
        merged = {**(routes[idx] if idx is not None else {}), **want_route}
        if "pathTransform" not in want_route:
            merged.pop("pathTransform", None)
        if idx is None:
            for r in routes:  # exactly one enabled primary route is allowed
                if r.get("primary"):
                    r["primary"] = False
            routes.append(merged)
        else:
            routes[idx] = merged
        doc["routes"] = routes
    if not why:
        detail = "channel up to date"
        if existing.get("status") == "disabled":
            return Action("warn", name, "channel is disabled in OpenHIM (left as is)"), None
        return Action("ok", name, detail), None
    return Action("update-channel", name, "; ".join(why)), doc


def _semver_order(a: str, b: str) -> int:
    """-1, 0, 1 like semver's compare (numeric core, then a pre-release sorts before the release)."""

    def key(v: str) -> tuple:
        v = v.split("+", 1)[0]
        core, _, pre = v.partition("-")
        nums = tuple(int(x) if x.isdigit() else 0 for x in core.split("."))
        pre_key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")) if pre else ()
        return nums, (0, pre_key) if pre else (1, ())

    ka, kb = key(a), key(b)
    return (ka > kb) - (ka < kb)


def desired_channels(settings: Settings, route_auth: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """The default channels, with the credentials core must send to the mediator when given.

    Route credentials are set here rather than in ``defaultChannelConfig``: core shows the registration
    unmasked to every admin (``GET /mediators``), a channel only to those who may see channels.
    """
    channels = mediator.default_channels(settings)
    if route_auth:
        for channel in channels:
            for route in channel["routes"]:
                route["username"], route["password"] = route_auth
    return channels


async def plan_setup(
    client: OpenHIMClient,
    settings: Settings,
    clients: list[ClientSpec],
    route_auth: tuple[str, str] | None = None,
) -> SetupPlan:
    """Read core's state and work out what ``apply_setup`` would change. Read-only.

    ``route_auth``: ``(username, password)`` that core sends to the mediator (route Basic auth).
    """
    current = await client.get_metadata()
    registration = mediator.registration(settings)
    plan = SetupPlan(registration, desired_channels(settings, route_auth))
    stored = next((m for m in current.get("Mediators") or [] if m.get("urn") == mediator.URN), None)
    ours = registration["version"]
    if stored is None:
        plan.actions.append(Action("register", mediator.URN, f"new, version {ours}"))
    else:
        theirs = str(stored.get("version"))
        order = _semver_order(ours, theirs)
        if order > 0:
            plan.actions.append(Action("register", mediator.URN, f"update {theirs} → {ours}"))
        elif order == 0:
            plan.actions.append(Action("ok", mediator.URN, f"registered, version {ours}"))
        else:
            plan.actions.append(
                Action("warn", mediator.URN, f"core has version {theirs} > {ours}: our registration is ignored")
            )
    by_id = {c.get("clientID"): c for c in current.get("Clients") or []}
    for spec in clients:
        action, doc = plan_client(spec, by_id.get(spec.client_id))
        plan.actions.append(action)
        if doc is not None:
            plan.clients.append(doc)
    by_name = {c.get("name"): c for c in current.get("Channels") or []}
    for want in plan.desired_channels:
        action, doc = plan_channel(want, by_name.get(want["name"]))
        plan.actions.append(action)
        if action.kind == "install-channel":
            plan.install.append(want["name"])
        elif doc is not None:
            plan.channel_updates.append(doc)
    return plan


class SetupError(Exception):
    pass


async def apply_setup(client: OpenHIMClient, plan: SetupPlan) -> list[str]:
    """Carry out a plan. Returns human-readable results; raises ``SetupError`` if core refused an item."""
    results: list[str] = []
    await client.register(plan.registration)
    results.append(f"registered {plan.registration['urn']} {plan.registration['version']}")
    docs: dict[str, list[dict[str, Any]]] = {}
    if plan.clients:
        docs["Clients"] = plan.clients
    if plan.channel_updates:
        docs["Channels"] = plan.channel_updates
    errors: list[str] = []
    if docs:
        for item in await client.post_metadata(docs):
            line = f"{item.get('model')} {item.get('uid')}: {item.get('status')}"
            if item.get("status") == "Error":
                errors.append(f"{line} {item.get('message')}")
            results.append(line)
    if plan.install:
        await client.install_channels(plan.registration["urn"], plan.install)
        results.append("installed channels: " + ", ".join(plan.install))
        # Core installs the defaultChannelConfig it stored, which is that of the highest version ever
        # registered: bring the new channels in line with ours if they differ.
        current = await client.get_metadata()
        by_name = {c.get("name"): c for c in current.get("Channels") or []}
        fixes = []
        for want in plan.desired_channels:
            if want["name"] in plan.install:
                action, doc = plan_channel(want, by_name.get(want["name"]))
                if doc is not None:
                    fixes.append(doc)
                elif action.kind == "install-channel":
                    errors.append(f"channel {want['name']} still missing after install")
        if fixes:
            for item in await client.post_metadata({"Channels": fixes}):
                line = f"{item.get('model')} {item.get('uid')}: {item.get('status')} (aligned after install)"
                if item.get("status") == "Error":
                    errors.append(f"{line} {item.get('message')}")
                results.append(line)
    if errors:
        raise SetupError("; ".join(errors))
    return results


async def install_missing_default_channels(client: OpenHIMClient, settings: Settings) -> list[str]:
    """Install the default channels core does not have yet (by name). Returns the names installed."""
    have = {c.get("name") for c in await client.channels()}
    missing = [c["name"] for c in mediator.default_channels(settings) if c["name"] not in have]
    if not missing:
        return []
    try:
        await client.install_channels(mediator.URN, missing)
    except OpenHIMError as exc:
        if exc.status == 500:  # another replica won the race (duplicate name): check again
            have = {c.get("name") for c in await client.channels()}
            if all(name in have for name in missing):
                return []
        raise
    return missing
