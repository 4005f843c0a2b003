"""CHT ids are checked and escaped before they become CHT paths (finding L4)."""

from __future__ import annotations

import pytest
from aiohttp import web

from ltfu.cht.client import ChtClient
from ltfu.cht.doc_ids import InvalidChtId, doc_path
from ltfu.cht.records import cht_contact_id
from ltfu.fhir.systems import Systems

HOSTILE = [
    "../_users/org.couchdb.user:admin",
    "_design/medic",
    "abc?include_docs=true",
    "a/b",
    "a#b",
    "",
    "a b",
    "%2e%2e",
    "x" * 300,
]


@pytest.mark.parametrize("doc_id", HOSTILE)
def test_hostile_ids_never_become_a_path(doc_id: str) -> None:
    with pytest.raises(InvalidChtId):
        doc_path(doc_id)


def test_real_ids_are_escaped() -> None:
    assert doc_path("3f0e3a4e-8a5b-4bb8-9d2c-1f8a3c7a0b11") == "/medic/3f0e3a4e-8a5b-4bb8-9d2c-1f8a3c7a0b11"
    assert doc_path("org.couchdb.user:chw1") == "/medic/org.couchdb.user%3Achw1"


def test_a_facility_written_contact_id_that_is_no_doc_id_is_ignored() -> None:
    systems = Systems("https://ltfu.example.org/fhir")
    patient = {"identifier": [{"system": systems.cht_contact, "value": "../_users/org.couchdb.user:admin"}]}
    assert cht_contact_id(patient, systems) is None
    patient["identifier"].append({"system": systems.cht_contact, "value": "person-123"})
    assert cht_contact_id(patient, systems) == "person-123"


async def test_the_client_requests_only_the_escaped_path() -> None:
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.json_response({"_id": "x", "type": "person"})

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = ChtClient(f"http://127.0.0.1:{port}", "u", "p")
    try:
        assert (await client.get_person("org.couchdb.user:chw1")).status == 200
        with pytest.raises(InvalidChtId):
            await client.get_doc("../_config?x=1")
    finally:
        await client.close()
        await runner.cleanup()
    assert seen == ["/medic/org.couchdb.user:chw1"]  # one segment (yarl sends ":" unescaped); nothing else sent
