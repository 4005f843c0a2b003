"""Loading app_settings and reading what the emulator needs from them (forms, contact types, roles)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from ltfu.cht.config_build import apply_outbound_destination, normalise_mediator_url

from .config import ChtEmulatorConfig

# contact-types-utils' hard-coded hierarchy, used when app_settings declare no contact_types
HARDCODED_TYPES: list[dict[str, Any]] = [
    {"id": "district_hospital", "parents": []},
    {"id": "health_center", "parents": ["district_hospital"]},
    {"id": "clinic", "parents": ["health_center"]},
    {"id": "person", "parents": ["district_hospital", "health_center", "clinic"], "person": True},
]


def _read(path: Path) -> dict:
    return orjson.loads(path.read_bytes())


def load_app_settings(config: ChtEmulatorConfig) -> dict:
    """Read app_settings from a compiled file, a cht-conf project or its ``app_settings`` folder."""
    settings: dict = {}
    path = config.app_settings_path
    if path is not None:
        path = Path(path)
        if path.is_file():
            settings = _read(path)
        else:
            folder = path / "app_settings" if (path / "app_settings").is_dir() else path
            compiled = path / "app_settings.json"
            if (folder / "base_settings.json").is_file():
                settings = _read(folder / "base_settings.json")
                if (folder / "forms.json").is_file():
                    settings["forms"] = _read(folder / "forms.json")
                if (folder / "schedules.json").is_file():
                    settings["schedules"] = _read(folder / "schedules.json")
            elif compiled.is_file():
                settings = _read(compiled)
            else:
                raise FileNotFoundError(f"no app_settings in {path}")
    if config.forms_path is not None:
        settings.setdefault("forms", {}).update(_read(Path(config.forms_path)))
    if config.mediator_url is not None:
        apply_outbound_destination(
            settings,
            normalise_mediator_url(config.mediator_url),
            config.mediator_credential_key,
            config.mediator_username,
        )
    return settings


class Settings:
    """A view of the current app_settings (replaced as a whole when the settings change)."""

    def __init__(self, raw: dict) -> None:
        self.raw = raw
        types = raw.get("contact_types") or HARDCODED_TYPES
        self.contact_types: dict[str, dict] = {t["id"]: t for t in types if isinstance(t, dict) and "id" in t}

    @property
    def forms(self) -> dict:
        return self.raw.get("forms") or {}

    @property
    def outbound(self) -> dict:
        return self.raw.get("outbound") or {}

    def transition_enabled(self, name: str) -> bool:
        conf = (self.raw.get("transitions") or {}).get(name)
        if isinstance(conf, dict):
            return not conf.get("disable")
        return bool(conf)

    # ------------------------------------------------------------------------------ contact types

    @staticmethod
    def type_id(doc: Any) -> str | None:
        if not isinstance(doc, dict):
            return None
        return doc.get("contact_type") if doc.get("type") == "contact" else doc.get("type")

    def contact_type(self, doc: Any) -> dict | None:
        tid = self.type_id(doc)
        return self.contact_types.get(tid) if isinstance(tid, str) else None

    def is_contact(self, doc: Any) -> bool:
        return self.contact_type(doc) is not None

    def is_person(self, doc: Any) -> bool:
        t = self.contact_type(doc)
        return bool(t and (t.get("person") or t["id"] == "person"))

    def is_place(self, doc: Any) -> bool:
        t = self.contact_type(doc)
        return bool(t and not (t.get("person") or t["id"] == "person"))

    def default_person_type(self) -> str | None:
        return "person" if "person" in self.contact_types else None

    # ---------------------------------------------------------------------------------- roles

    def is_offline_role(self, role: str) -> bool:
        conf = (self.raw.get("roles") or {}).get(role)
        return bool(isinstance(conf, dict) and conf.get("offline"))

    def role_has_permission(self, roles: list[str], permission: str) -> bool:
        permissions = self.raw.get("permissions")
        if not isinstance(permissions, dict):
            return True  # no permissions configured: every authenticated user may do everything
        allowed = permissions.get(permission) or []
        return any(r in allowed for r in roles)
