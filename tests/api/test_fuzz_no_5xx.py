"""Property: no request body, Bundle or search, however malformed, gets a 5xx from any route.

The suite runs a few hundred examples (``LTFU_FUZZ_EXAMPLES`` per test, default 100); ``make fuzz``
runs 5,000 per test, 20,000 generated requests in all."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltfu.api import cht_routes, mediator_routes
from ltfu.api.app import create_app
from ltfu.settings import Settings
from tests.conftest import ADMIN_PASSWORD
from tests.support.server import ServerThread

EXAMPLES = int(os.environ.get("LTFU_FUZZ_EXAMPLES", "100"))
TYPES = ["Patient", "ServiceRequest", "Task", "Encounter", "Bundle", "Organization", "Endpoint", "Observation",
         "Subscription"]
# Every write route: the PoC ones (with and without /mediator), CHT inbound, FHIR create/update/$validate/base.
POST_ROUTES = sorted(
    {r.path for r in [*mediator_routes.routes, *cht_routes.routes] if "POST" in (r.methods or ())}
    | {"/fhir", "/fhir/", *(f"/fhir/{t}" for t in TYPES), *(f"/fhir/{t}/$validate" for t in TYPES)}
)
PUT_ROUTES = [*(f"/fhir/{t}/fuzz-1" for t in TYPES), *(f"/fhir/{t}?identifier=fuzz" for t in TYPES)]
SEARCH_NAMES = ["identifier", "subject", "patient", "status", "requester", "based-on", "focus", "owner",
                "_lastUpdated", "_include", "_revinclude", "_count", "_summary", "_elements", "_sort", "_id",
                "code", "date", "name", "birthdate", "gender", "_offset", "_format", "criteria", "organization"]


def _dumps(value: object) -> bytes:
    return json.dumps(value).encode()  # stdlib: also emits integers beyond 64 bits


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
fhirish = st.fixed_dictionaries(
    {"resourceType": st.sampled_from(TYPES)},
    optional={
        "id": st.text(max_size=70), "status": st.text(max_size=12), "intent": st.text(max_size=8),
        "gender": json_values, "birthDate": st.text(max_size=12), "identifier": json_values,
        "subject": json_values, "entry": json_values, "type": json_values, "name": json_values,
        "meta": json_values, "class": json_values, "for": json_values, "endpoint": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(_dumps),
    fhirish.map(_dumps),
)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    app = create_app(Settings(database_url=f"sqlite:///{tmp / 'f.db'}", admin_password=ADMIN_PASSWORD,
                              workers=False))
    with ServerThread(app) as srv:
        yield srv.url


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(POST_ROUTES), body=bodies)
def test_no_body_yields_5xx(base_url: str, route: str, body: bytes) -> None:
    r = requests.post(base_url + route, data=body, auth=("admin", ADMIN_PASSWORD),
                      headers={"Content-Type": "application/fhir+json"}, timeout=30)
    assert r.status_code < 500, (route, body[:200], r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert b"Traceback" not in r.content


def _check(r: requests.Response, what: object) -> None:
    assert r.status_code < 500, (what, r.status_code, r.text[:300])
    assert not 300 <= r.status_code < 400, (what, r.status_code)  # never a redirect
    if r.status_code >= 400:
        assert b"Traceback" not in r.content


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(PUT_ROUTES), body=bodies)
def test_no_update_body_yields_5xx(base_url: str, route: str, body: bytes) -> None:
    r = requests.put(base_url + route, data=body, auth=("admin", ADMIN_PASSWORD),
                     headers={"Content-Type": "application/fhir+json"}, timeout=30)
    _check(r, (route, body[:200]))


methods = st.sampled_from(["POST", "PUT", "GET", "DELETE", "PATCH", "HEAD"]) | json_values
request_parts = st.fixed_dictionaries(
    {},
    optional={"method": methods, "url": st.sampled_from(["Patient", "Patient/x", "Patient?identifier=a|b",
                                                         "Organization", "Task/1", "", "?", "Nope/1"]) | json_values,
              "ifNoneExist": st.text(max_size=30) | json_values, "ifMatch": st.text(max_size=10) | json_values},
)
entries = st.fixed_dictionaries(
    {},
    optional={"fullUrl": st.sampled_from(["urn:uuid:0c3ff4d6-4ad1-4a88-9b4a-5a1e0b6b7a01", "Patient/1"])
              | json_values, "resource": fhirish | json_values, "request": request_parts | json_values},
)
bundles = st.fixed_dictionaries(
    {"resourceType": st.just("Bundle"), "type": st.sampled_from(["transaction", "batch"]) | json_values},
    optional={"entry": st.lists(entries | json_values, max_size=4) | json_values},
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(["/fhir", "/fhir/"]), bundle=bundles)
def test_no_bundle_yields_5xx(base_url: str, route: str, bundle: dict[str, object]) -> None:
    r = requests.post(base_url + route, data=_dumps(bundle), auth=("admin", ADMIN_PASSWORD),
                      headers={"Content-Type": "application/fhir+json"}, timeout=30)
    _check(r, (route, bundle))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(res_type=st.sampled_from(TYPES), post=st.booleans(),
       params=st.lists(st.tuples(st.sampled_from(SEARCH_NAMES) | st.text(max_size=12),
                                 st.text(max_size=30) | st.sampled_from(["gt2020", "x|y", "Patient/1", "-1",
                                                                         "99999999999999999999", "Task:focus"])),
                       max_size=4))
def test_no_search_yields_5xx(base_url: str, res_type: str, post: bool, params: list[tuple[str, str]]) -> None:
    auth = ("admin", ADMIN_PASSWORD)
    if post:
        r = requests.post(f"{base_url}/fhir/{res_type}/_search", data=params, auth=auth, timeout=30)
    else:
        r = requests.get(f"{base_url}/fhir/{res_type}", params=params, auth=auth, timeout=30)
    _check(r, (res_type, post, params))
