"""Point the CHT configuration's outbound push at a mediator.

`cht-config/app_settings/base_settings.json` ships outbound entries (`ltfu_patient` →
`/cht/patient`, `ltfu_follow_up` → `/cht/follow-up`) whose destination is a placeholder.
`build_app_settings` writes the deployment's mediator base URL and the CHT credential key (the
key under which the mediator's password is stored with `PUT /api/v1/credentials/<key>`) into
every outbound destination, in `app_settings/base_settings.json` and, when it exists, in the
compiled `app_settings.json`. Everything else in the settings is left as it is.

With a calendar (`bikram-sambat` for Nepal) the forms' date questions get that calendar's picker
(:mod:`ltfu.cht.form_calendar`). Without a mediator URL and key the outbound push is left as it is.

Backs `ltfu cht-config build [--mediator-url URL --credential-key KEY] [--calendar C] [--out DIR]`.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from ltfu.cht.form_calendar import CALENDARS, CalendarError, apply_calendar

BASE_SETTINGS = Path("app_settings") / "base_settings.json"
COMPILED_SETTINGS = Path("app_settings.json")
CREDENTIAL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Not copied to --out: installed packages and build leftovers.
_SKIP_ON_COPY = shutil.ignore_patterns("node_modules", "*.xml.swp", ".git")


class ConfigBuildError(ValueError):
    """The arguments or the configuration project are not usable."""


def normalise_mediator_url(url: str) -> str:
    """The mediator base URL as CHT should join it with `/cht/...`: http(s), a host, no slash at the end."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigBuildError(f"mediator URL must be http(s)://host[:port][/prefix], got {url!r}")
    if parts.query or parts.fragment:
        raise ConfigBuildError(f"mediator URL must not have a query or fragment, got {url!r}")
    if parts.username or parts.password:
        raise ConfigBuildError("put no credentials in the mediator URL: CHT reads them from its credential store")
    return url.strip().rstrip("/")


def apply_outbound_destination(settings: dict, mediator_url: str, credential_key: str, username: str = "cht") -> dict:
    """Set base URL and basic-auth credentials of every outbound entry of an app_settings dict (in place)."""
    outbound = settings.get("outbound")
    if not isinstance(outbound, dict) or not outbound:
        raise ConfigBuildError("app_settings has no outbound section")
    for name, entry in outbound.items():
        destination = entry.get("destination")
        if not isinstance(destination, dict) or not destination.get("path"):
            raise ConfigBuildError(f"outbound entry {name!r} has no destination path")
        destination["base_url"] = mediator_url
        destination["auth"] = {"type": "basic", "username": username, "password_key": credential_key}
    settings.setdefault("transitions", {})["mark_for_outbound"] = True
    return settings


def _rewrite(path: Path, mediator_url: str, credential_key: str, username: str) -> None:
    settings = json.loads(path.read_text(encoding="utf-8"))
    apply_outbound_destination(settings, mediator_url, credential_key, username)
    path.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build_app_settings(
    config_dir: Path,
    mediator_url: str | None,
    credential_key: str | None,
    *,
    username: str = "cht",
    out_dir: Path | None = None,
    calendar: str | None = None,
) -> Path:
    """Write the outbound destinations of the cht-conf project at ``config_dir``.

    With ``out_dir`` the project is first copied there (without ``node_modules``) and only the
    copy is changed. Returns the written ``app_settings/base_settings.json``; the compiled
    ``app_settings.json`` beside it is updated too when present (else run
    ``cht compile-app-settings`` in the project). ``calendar`` (one of ``CALENDARS``) sets the
    picker of the forms' date questions; None leaves the forms as they are.
    """
    config_dir = Path(config_dir)
    if not (config_dir / BASE_SETTINGS).is_file():
        raise ConfigBuildError(f"{config_dir} is not a cht-conf project (no {BASE_SETTINGS})")
    if (mediator_url is None) != (credential_key is None):
        raise ConfigBuildError("give both the mediator URL and the credential key, or neither")
    if mediator_url is None and calendar is None:
        raise ConfigBuildError("nothing to build: give the mediator URL and credential key, or a calendar")
    if calendar is not None and calendar not in CALENDARS:
        raise ConfigBuildError(f"calendar must be one of {', '.join(CALENDARS)}, got {calendar!r}")
    url = None if mediator_url is None or credential_key is None else _checked(mediator_url, credential_key, username)

    target = config_dir
    if out_dir is not None:
        target = Path(out_dir)
        if target.resolve() != config_dir.resolve():
            shutil.copytree(config_dir, target, ignore=_SKIP_ON_COPY, dirs_exist_ok=True)

    if url is not None and credential_key is not None:
        _rewrite(target / BASE_SETTINGS, url, credential_key, username)
        if (target / COMPILED_SETTINGS).is_file():
            _rewrite(target / COMPILED_SETTINGS, url, credential_key, username)
    if calendar is not None:
        try:
            apply_calendar(target, calendar)
        except CalendarError as exc:
            raise ConfigBuildError(str(exc)) from None
    return target / BASE_SETTINGS


def _checked(mediator_url: str, credential_key: str, username: str) -> str:
    url = normalise_mediator_url(mediator_url)
    if not CREDENTIAL_KEY.match(credential_key):
        raise ConfigBuildError(
            f"credential key must be 1-128 of A-Z a-z 0-9 . _ - (starting alphanumeric), got {credential_key!r}"
        )
    if not username or ":" in username:
        raise ConfigBuildError("username must be non-empty and contain no ':'")
    return url
