"""Basic-auth users: the CouchDB server admin plus ``_users`` docs created by the users API."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass, field

from starlette.requests import Request

from .app_settings import Settings
from .http import ApiError
from .store import MEDIC, USERS, DocStore

PBKDF2_ITERATIONS = 1000  # what CouchDB used for years; keeps Basic auth cheap per request
ONLINE_ROLE = "mm-online"


@dataclass
class UserCtx:
    name: str
    roles: list[str]
    is_admin: bool = False
    facility_id: str | list[str] | None = None
    contact_id: str | None = None
    extra: dict = field(default_factory=dict)

    def facility_ids(self) -> list[str]:
        f = self.facility_id
        if isinstance(f, list):
            return [x for x in f if isinstance(x, str)]
        return [f] if isinstance(f, str) and f else []


def hash_password(password: str, salt: str | None = None) -> dict:
    salt = salt or binascii.hexlify(os.urandom(16)).decode()
    key = hashlib.pbkdf2_hmac("sha1", password.encode(), salt.encode(), PBKDF2_ITERATIONS, 20)
    return {
        "password_scheme": "pbkdf2",
        "iterations": PBKDF2_ITERATIONS,
        "salt": salt,
        "derived_key": key.hex(),
    }


def check_password(user_doc: dict, password: str) -> bool:
    salt = user_doc.get("salt")
    derived = user_doc.get("derived_key")
    if not isinstance(salt, str) or not isinstance(derived, str):
        return False
    iterations = int(user_doc.get("iterations") or PBKDF2_ITERATIONS)
    key = hashlib.pbkdf2_hmac("sha1", password.encode(), salt.encode(), iterations, 20)
    return hmac.compare_digest(key.hex(), derived)


def basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=False).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None


class Authenticator:
    def __init__(self, store: DocStore, admin_username: str, admin_password: str) -> None:
        self.store = store
        self.admin_username = admin_username
        self.admin_password = admin_password
        self._verified: dict[tuple[str, str], str] = {}  # (name, password) -> _users rev

    def authenticate(self, request: Request) -> UserCtx | None:
        creds = basic_credentials(request)
        if creds is None:
            return None
        name, password = creds
        if name == self.admin_username and hmac.compare_digest(password, self.admin_password):
            return UserCtx(name=name, roles=["_admin"], is_admin=True)
        entry = self.store.entry(USERS, f"org.couchdb.user:{name}")
        if entry is None or entry.deleted:
            return None
        if self._verified.get((name, password)) != entry.rev:
            if not check_password(entry.body, password):
                return None
            self._verified[(name, password)] = entry.rev
        settings = self.store.peek(MEDIC, f"org.couchdb.user:{name}") or {}
        return UserCtx(
            name=name,
            roles=list(entry.body.get("roles") or []),
            facility_id=settings.get("facility_id", entry.body.get("facility_id")),
            contact_id=settings.get("contact_id", entry.body.get("contact_id")),
        )


def is_online(settings: Settings, user: UserCtx) -> bool:
    if user.is_admin or ONLINE_ROLE in user.roles:
        return True
    return not any(settings.is_offline_role(r) for r in user.roles)


def require(settings: Settings, user: UserCtx, *permissions: str) -> None:
    """``auth.check``: 403 ``Insufficient privileges`` unless the user has every permission."""
    if user.is_admin:
        return
    for p in permissions:
        if not settings.role_has_permission(user.roles, p):
            raise ApiError(403, "Insufficient privileges")


def require_online(settings: Settings, user: UserCtx) -> None:
    if not is_online(settings, user):
        raise ApiError(403, "Insufficient privileges")


def require_admin(user: UserCtx) -> None:
    if not user.is_admin:
        raise ApiError(403, "Insufficient privileges")
