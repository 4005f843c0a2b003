"""OpenHIM's own hash fixtures (shared/reference/openhim.md §6) reproduced by ltfu.openhim.auth."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ltfu.openhim.auth import (
    basic_header,
    client_password_hash,
    js_iso,
    parse_js_iso,
    token_headers,
    user_password_hash,
)
from ltfu.openhim.mediator import semver_from_pep440

USER_FIXTURES = [
    # (salt, password, stored hash) — core@v8.5.0 test/utils.js
    (
        "22a61686-66f6-483c-a524-185aac251fb0",
        "password",
        "669c981d4edccb5ed61f4d77f9fcc4bf594443e2740feb1a23f133bdaf80aae41804d10aa2ce254cfb6aca7c497d1a717f2dd9a794"
        "134217219d8755a84b6b4e",
    ),
    # root token passport — core src/server.js
    (
        "d9bcb40e-ae65-478f-962e-5e5e5e7d0a01",
        "openhim-password",
        "943a856bba65aad6c639d5c8d4a11fc8bb7fe9de62ae307aec8cf6ae6c1faab722127964c71db4bdd2ea2cdf60c6e4094dcad54d"
        "4522ab2839b65ae98100d0fb",
    ),
    # token passport — openhim-mediator-utils tests/openhim-import.json
    (
        "c5f2a9fd7907e1a1c6658841426e6f5d",
        "instant101",
        "c5e14f0062bfac45bf20f0fcf0403e758a2233756e40e7b328e1f10dfef3d8ba57c2bf230ee9fd627956fbb4e57fab7e32efe108"
        "db76d515f1f61f6b853ffba3",
    ),
]


@pytest.mark.parametrize(("salt", "password", "expected"), USER_FIXTURES)
def test_user_password_hash_matches_core_fixtures(salt: str, password: str, expected: str) -> None:
    assert user_password_hash(salt, password) == expected


def test_user_hash_order_matters() -> None:
    salt, password, expected = USER_FIXTURES[0]
    assert user_password_hash(password, salt) != expected


def test_client_password_hash_matches_core_fixture() -> None:
    # core test/unit/basicAuthenticationTest.js: clients hash password + salt (reverse of users)
    expected = (
        "28dce3506eca8bb3d9d5a9390135236e8746f15ca2d8c86b8d8e653da954e9e3632bf9d85484ee6e9b28a3ada30eec89add42012"
        "b185bd9a4a36a07ce08ce2ea"
    )
    assert client_password_hash("password", "1234567890") == expected
    assert client_password_hash("1234567890", "password") != expected


@pytest.mark.parametrize(
    ("password", "stored"),
    [
        ("openhim-password", "$2a$10$qvja1lAaItmcZolkoKCPn.9EXY2b8s9dTlUFx36Q7ey0rieXXnxVC"),
        ("password", "$2a$10$w8GyqInkl72LMIQNpMM/fenF6VsVukyya.c6fh/GRtrKq05C2.Zgy"),
    ],
)
def test_bcrypt_fixtures_verify(password: str, stored: str) -> None:
    """The local passport / bcrypt client fixtures, as the fake (and setup's hash check) verify them."""
    bcrypt = pytest.importorskip("bcrypt")
    assert bcrypt.checkpw(password.encode(), stored.encode())
    assert not bcrypt.checkpw(b"wrong", stored.encode())


def test_token_headers_for_fixed_salt_and_ts() -> None:
    salt, password, passhash = USER_FIXTURES[1]
    ts = "2024-05-01T10:20:30.123Z"
    request_salt = "842cd4a0-1a91-45a7-bf76-c292cb36b2e8"  # core test/utils.js getAuthDetails
    h = token_headers("root@openhim.org", password, salt, ts, request_salt=request_salt)
    assert h["auth-username"] == "root@openhim.org"
    assert h["auth-ts"] == ts
    assert h["auth-salt"] == request_salt
    # token = sha512(passwordhash + auth-salt + auth-ts), from the fixture's stored hash
    assert h["auth-token"] == hashlib.sha512((passhash + request_salt + ts).encode()).hexdigest()
    assert set(h) == {"auth-username", "auth-ts", "auth-salt", "auth-token"}
    assert token_headers("root@openhim.org", password, salt, ts)["auth-salt"] == salt


def test_js_iso_is_the_javascript_form() -> None:
    dt = datetime(2024, 5, 1, 12, 20, 30, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert js_iso(dt) == "2024-05-01T10:20:30.123Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", js_iso(datetime.now(UTC)))
    assert parse_js_iso("2024-05-01T10:20:30.123Z") == datetime(2024, 5, 1, 10, 20, 30, 123000, tzinfo=UTC)


def test_basic_header() -> None:
    assert basic_header("root@openhim.org", "openhim-password") == {
        "Authorization": "Basic cm9vdEBvcGVuaGltLm9yZzpvcGVuaGltLXBhc3N3b3Jk"
    }


@pytest.mark.parametrize(
    ("pep440", "semver"),
    [
        ("0.1.0", "0.1.0"),
        ("1.2", "1.2.0"),
        ("1.2.3rc1", "1.2.3-rc.1"),
        ("1.2.3.dev4", "1.2.3-dev.4"),
        ("2.0.0b2", "2.0.0-beta.2"),
        ("1.2.3+abc.1", "1.2.3+abc.1"),
    ],
)
def test_semver_from_pep440(pep440: str, semver: str) -> None:
    assert semver_from_pep440(pep440) == semver
    # the fake's semver check is the same regex core's semver package documents
    from openhim_fake import semver_valid

    assert semver_valid(semver)
