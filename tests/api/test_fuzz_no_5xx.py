"""Property: no request body, however malformed, gets a 5xx from any write route."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltfu.api.app import create_app
from ltfu.settings import Settings
from tests.conftest import ADMIN_PASSWORD
from tests.support.server import ServerThread

ROUTES = ["/fhir/Patient", "/fhir/ServiceRequest", "/fhir/Task", "/fhir", "/mediator/patient",
          "/mediator/organization", "/mediator/endpoint", "/mediator/encounter", "/fhir/Encounter"]
def _dumps(value: object) -> bytes:
    return json.dumps(value).encode()  # stdlib: also emits integers beyond 64 bits


TYPES = ["Patient", "ServiceRequest", "Task", "Encounter", "Bundle", "Organization", "Endpoint", "Observation"]

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


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), body=bodies)
def test_no_body_yields_5xx(base_url: str, route: str, body: bytes) -> None:
    r = requests.post(base_url + route, data=body, auth=("admin", ADMIN_PASSWORD),
                      headers={"Content-Type": "application/fhir+json"}, timeout=30)
    assert r.status_code < 500, (route, body[:200], r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert b"Traceback" not in r.content
