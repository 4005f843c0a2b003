"""OpenHIM password and token recipes (API users and router clients).

- API user, legacy token scheme: ``passwordhash = sha512(salt + password)``;
  ``auth-token = sha512(passwordhash + auth-salt + auth-ts)``; ``auth-ts`` in JavaScript
  ``toISOString()`` form (``2024-05-01T10:20:30.123Z``), within ±10 s of core's clock.
- Router client (Basic on ports 5000/5001): ``sha512(password + salt)`` — the reverse order.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import UTC, datetime


def sha512_hex(text: str) -> str:
    return hashlib.sha512(text.encode("utf-8")).hexdigest()


def user_password_hash(salt: str, password: str) -> str:
    """Stored hash of an API user (token passport in 7.2+, User document before)."""
    return sha512_hex(salt + password)


def client_password_hash(password: str, salt: str) -> str:
    """Stored hash of a router client (``passwordAlgorithm: sha512``)."""
    return sha512_hex(password + salt)


def new_client_salt() -> str:
    """16 random bytes as hex, like the console does."""
    return secrets.token_hex(16)


def js_iso(dt: datetime) -> str:
    """``Date.prototype.toISOString()``: UTC, milliseconds, ``Z``."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def parse_js_iso(text: str) -> datetime:
    """Parse the ``ts`` core returns from ``GET /authenticate/:email`` (an ISO string with ``Z``)."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


def token_headers(email: str, password: str, salt: str, ts: str, request_salt: str | None = None) -> dict[str, str]:
    """The four ``auth-*`` headers of the legacy token scheme.

    ``salt`` is the user's stored salt (from ``GET /authenticate/:email``); ``request_salt`` is the value of
    the ``auth-salt`` header, which core hashes but never compares with anything: any non-empty string
    works. We send the stored salt, as the Java engine and utils 0.2 do.
    """
    request_salt = request_salt or salt
    passhash = user_password_hash(salt, password)
    return {
        "auth-username": email,
        "auth-ts": ts,
        "auth-salt": request_salt,
        "auth-token": sha512_hex(passhash + request_salt + ts),
    }


def basic_header(username: str, password: str) -> dict[str, str]:
    raw = f"{username}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
