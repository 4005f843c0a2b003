"""Real FHIR client libraries against the running server: fhirpy (async) and fhirclient."""

from __future__ import annotations

import asyncio

from fhirclient import client as fc_client
from fhirclient.models.patient import Patient as FcPatient
from fhirpy import AsyncFHIRClient

from tests.conftest import ADMIN_PASSWORD, Api

MRN = "https://facility.example/mrn"


def test_fhirpy_create_get_or_create_search_read(server: Api) -> None:
    async def run() -> None:
        fhir = AsyncFHIRClient(server.url + "/fhir", authorization=_basic())
        pat = fhir.resource("Patient", identifier=[{"system": MRN, "value": "FP1"}],
                            name=[{"family": "Mutua", "given": ["Ken"]}], gender="male")
        await pat.save()
        assert pat.id and pat["meta"]["versionId"] == "1"
        same = await fhir.resources("Patient").search(identifier=f"{MRN}|FP1").get()
        assert same.id == pat.id
        got = await fhir.reference("Patient", pat.id).to_resource()
        assert got["name"][0]["family"] == "Mutua"
        assert await fhir.resources("Patient").search(identifier="FP1").count() == 1
        # conditional create the fhirpy way (POST /Patient?identifier=...)
        again = await fhir.resources("Patient").search(identifier=f"{MRN}|FP1").get_or_create(
            fhir.resource("Patient", identifier=[{"system": MRN, "value": "FP1"}]))
        assert again[0].id == pat.id and again[1] is False
        pat["gender"] = "other"
        await pat.save()
        await pat.refresh()
        assert pat["meta"]["versionId"] == "2"

    asyncio.run(run())


def test_fhirclient_parses_metadata_creates_and_reads(server: Api) -> None:
    smart = fc_client.FHIRClient(settings={"app_id": "ltfu-test", "api_base": server.url + "/fhir/"})
    smart.server.session.auth = ("admin", ADMIN_PASSWORD)
    assert smart.server.capabilityStatement.fhirVersion == "4.0.1"
    pat = FcPatient({"identifier": [{"system": MRN, "value": "FC1"}], "gender": "female",
                     "name": [{"family": "Njeri", "given": ["Ann"]}]})
    created = pat.create(smart.server)
    assert created["id"]
    read = FcPatient.read(created["id"], smart.server)
    assert read.name[0].family == "Njeri"
    found = list(FcPatient.where(struct={"identifier": f"{MRN}|FC1"}).perform_resources_iter(smart.server))
    assert [p.id for p in found] == [created["id"]]


def _basic() -> str:
    import base64

    return "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
