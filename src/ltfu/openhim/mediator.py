"""Who this mediator is to OpenHIM core: urn, version, endpoints, default channels, config definitions.

Everything OpenHIM learns about ltfu at registration is built here and nowhere else. Core stores
``defaultChannelConfig`` but never installs it by itself; ``ltfu openhim setup`` (or the runtime, when
asked) does. Core ignores a re-registration whose version is not higher than the stored one, so the
version comes from the installed package: bump the package version to change endpoints, channels or
config definitions on a running OpenHIM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

from ltfu.settings import Settings

URN = "urn:mediator:ltfu"
NAME = "LTFU mediator"
DESCRIPTION = (
    "Closes the loss-to-follow-up loop between health facilities (FHIR R4) and community health workers (CHT)."
)

# Roles that clients get and channels allow (OpenHIM roles are plain strings on clients and channels).
FACILITY_ROLE = "ltfu-facility"
CHT_ROLE = "ltfu-cht"

# Channel names: unique in core, so they are part of our identity.
CHANNEL_MEDIATOR = "ltfu mediator (reference-compatible /mediator)"
CHANNEL_FHIR = "ltfu FHIR /fhir"
CHANNEL_CHT = "ltfu CHT inbound /cht"

_FHIR_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def package_version() -> str:
    """The installed ``ltfu`` version as OpenHIM wants it (semver)."""
    try:
        return semver_from_pep440(metadata.version("ltfu"))
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


_PEP440 = re.compile(
    r"^(?:\d+!)?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre>a|alpha|b|beta|rc|c|pre|preview)[-_.]?(?P<pre_n>\d*))?"
    r"(?:[-_.]?(?:post|rev|r)[-_.]?(?P<post>\d*))?"
    r"(?:[-_.]?dev[-_.]?(?P<dev>\d*))?"
    r"(?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?$",
    re.IGNORECASE,
)


def semver_from_pep440(version: str) -> str:
    """Map a PEP 440 version to a semver string that ``semver.valid`` accepts.

    ``1.2`` → ``1.2.0``; ``1.2.3rc1`` → ``1.2.3-rc.1``; ``1.2.3.dev4`` → ``1.2.3-dev.4``;
    ``1.2.3.post1`` → ``1.2.3-post.1``; ``1.2.3+abc.1`` → ``1.2.3+abc.1``.
    Semver orders pre-releases before the release, as PEP 440 does for rc/dev (post-releases sort before
    the release in semver: acceptable, they are rare and core only compares to decide on updates).
    """
    m = _PEP440.match(version.strip())
    if not m:
        raise ValueError(f"not a PEP 440 version: {version!r}")
    parts = [int(p) for p in m["release"].split(".")]
    parts = (parts + [0, 0, 0])[:3]
    out = ".".join(str(p) for p in parts)
    pre: list[str] = []
    if m["pre"]:
        label = {"a": "alpha", "b": "beta", "c": "rc", "pre": "rc", "preview": "rc"}.get(
            m["pre"].lower(), m["pre"].lower()
        )
        pre += [label, str(int(m["pre_n"] or 0))]
    if m["post"] is not None:
        pre += ["post", str(int(m["post"] or 0))]
    if m["dev"] is not None:
        pre += ["dev", str(int(m["dev"] or 0))]
    if pre:
        out += "-" + ".".join(pre)
    if m["local"]:
        out += "+" + re.sub(r"[-_]", ".", m["local"])
    return out


@dataclass(frozen=True)
class MediatorAddress:
    """Where core reaches the mediator (route host/port)."""

    host: str
    port: int
    secured: bool
    path: str


def mediator_address(settings: Settings) -> MediatorAddress:
    """From ``openhim_mediator_url``, else ``public_url``, else ``host``/``port``."""
    url = settings.openhim_mediator_url or settings.public_url
    if url:
        parts = urlsplit(url)
        secured = parts.scheme == "https"
        port = parts.port or (443 if secured else 80)
        return MediatorAddress(parts.hostname or "localhost", port, secured, parts.path or "/")
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "localhost"
    return MediatorAddress(host, settings.port, False, "/")


# --- configDefs: settings that may change at run time ---------------------------------------


@dataclass(frozen=True)
class ConfigParam:
    param: str  # the OpenHIM config key
    setting: str  # the Settings field it drives
    display_name: str
    description: str
    type: str  # string | password | number | bool | option
    values: tuple[str, ...] = ()

    def definition(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "param": self.param,
            "displayName": self.display_name,
            "description": self.description,
            "type": self.type,
        }
        if self.values:
            d["values"] = list(self.values)
        return d


CONFIG_PARAMS: tuple[ConfigParam, ...] = (
    ConfigParam(
        "chtUrl",
        "cht_url",
        "CHT URL",
        "Base URL of the CHT instance (empty: from the environment).",
        "string",
    ),
    ConfigParam("chtUsername", "cht_username", "CHT username", "CHT user that submits follow-up records.", "string"),
    ConfigParam(
        "chtPassword",
        "cht_password",
        "CHT password",
        "Password of the CHT user (empty: from the environment).",
        "password",
    ),
    ConfigParam("chtForm", "cht_form", "CHT follow-up form", "Form code of the follow-up request record.", "string"),
    ConfigParam(
        "chtCancelForm",
        "cht_cancel_form",
        "CHT cancel form",
        "Form code of the record that closes a follow-up.",
        "string",
    ),
    ConfigParam(
        "notifyMode",
        "notify_mode",
        "Notification mode",
        "backport: FHIR Subscriptions backport notifications; hapi: PUT of the resource (PoC).",
        "option",
        ("backport", "hapi"),
    ),
    ConfigParam("maxAttempts", "max_attempts", "CHW attempts", "Attempts after which not-located is final.", "number"),
    ConfigParam(
        "followUpWindowDays",
        "follow_up_window_days",
        "Follow-up window (days)",
        "A case without outcome after this many days expires.",
        "number",
    ),
    ConfigParam(
        "retryInitialSeconds",
        "retry_initial_s",
        "First retry delay (s)",
        "Delivery retry: first delay.",
        "number",
    ),
    ConfigParam(
        "retryMaxSeconds",
        "retry_max_s",
        "Longest retry delay (s)",
        "Delivery retry: cap of the exponential backoff.",
        "number",
    ),
    ConfigParam(
        "retryBudgetSeconds",
        "retry_budget_s",
        "Retry budget (s)",
        "Delivery retry: give up after this long.",
        "number",
    ),
    ConfigParam(
        "retryPermanent4xx",
        "retry_permanent_4xx",
        "Attempts on a permanent 4xx",
        "Attempts before a non-retryable 4xx is dead.",
        "number",
    ),
    ConfigParam(
        "envelope",
        "openhim_envelope",
        "OpenHIM response format",
        "auto: application/json+openhim when the request came through OpenHIM.",
        "option",
        ("auto", "always", "never"),
    ),
)

CONFIG_BY_PARAM = {p.param: p for p in CONFIG_PARAMS}


def config_defs() -> list[dict[str, Any]]:
    return [p.definition() for p in CONFIG_PARAMS]


def default_config(settings: Settings) -> dict[str, Any]:
    """Defaults registered with core: every param (so an upgrade never drops an operator's stored value).

    Secrets are never sent: a password default is ``""``, meaning "use the environment". Unset
    optional strings are ``""`` for the same reason (core rejects ``null`` for a string param).
    """
    out: dict[str, Any] = {}
    for p in CONFIG_PARAMS:
        value = getattr(settings, p.setting)
        if p.type == "password" or value is None:
            out[p.param] = ""
        elif p.type == "number":
            out[p.param] = value
        else:
            out[p.param] = str(value)
    return out


# --- endpoints and default channels ---------------------------------------------------------


def endpoints(settings: Settings) -> list[dict[str, Any]]:
    addr = mediator_address(settings)
    return [
        {
            "name": "ltfu",
            "host": addr.host,
            "port": addr.port,
            "path": addr.path,
            "primary": True,
            "secured": addr.secured,
            "type": "http",
        }
    ]


def _route(settings: Settings, name: str, path_transform: str | None = None) -> dict[str, Any]:
    addr = mediator_address(settings)
    route: dict[str, Any] = {
        "name": name,
        "type": "http",
        "host": addr.host,
        "port": addr.port,
        "primary": True,
        "secured": addr.secured,
        "status": "enabled",
    }
    if path_transform:
        route["pathTransform"] = path_transform
    return route


def default_channels(settings: Settings) -> list[dict[str, Any]]:
    """Channels routing to this mediator.

    - ``/mediator/...`` as the reference PoC's channel did: prefix stripped before it reaches us.
    - ``/fhir`` and ``/cht`` forwarded unchanged.
    Methods are always explicit: a channel with no methods never matches (core 7.0.1+).
    """
    base = {
        "type": "http",
        "authType": "private",
        "status": "enabled",
        "requestBody": True,
        "responseBody": True,
    }
    return [
        {
            **base,
            "name": CHANNEL_MEDIATOR,
            "description": "Reference-compatible LTFU API; the /mediator prefix is stripped.",
            "urlPattern": "^/mediator(/.*)?$",
            "methods": ["GET", "POST", "PUT", "DELETE"],
            "allow": [FACILITY_ROLE],
            "routes": [_route(settings, "ltfu", r"s/^\/mediator//")],
        },
        {
            **base,
            "name": CHANNEL_FHIR,
            "description": "FHIR R4 API of the LTFU mediator.",
            "urlPattern": "^/fhir(/.*)?$",
            "methods": list(_FHIR_METHODS),
            "allow": [FACILITY_ROLE],
            "routes": [_route(settings, "ltfu")],
        },
        {
            **base,
            "name": CHANNEL_CHT,
            "description": "Targets of CHT outbound push.",
            "urlPattern": "^/cht(/.*)?$",
            "methods": ["POST", "PUT"],
            "allow": [CHT_ROLE],
            "routes": [_route(settings, "ltfu")],
        },
    ]


def registration(settings: Settings) -> dict[str, Any]:
    """The body of ``POST /mediators``."""
    return {
        "urn": URN,
        "version": package_version(),
        "name": NAME,
        "description": DESCRIPTION,
        "endpoints": endpoints(settings),
        "defaultChannelConfig": default_channels(settings),
        "configDefs": config_defs(),
        "config": default_config(settings),
    }
