"""The facility's outgoing calls: the mediator's FHIR API (registration, the day's list, ``$events``)
and CHT's people API (the list's patients as CHT people)."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from . import roster
from .config import FacilityEmulatorConfig
from .roster import DefaulterList

FHIR_JSON = "application/fhir+json"


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class UpstreamError(Exception):
    """A call to the mediator or CHT did not succeed (status, body kept for the caller)."""

    def __init__(self, what: str, status: int | None, body: Any) -> None:
        super().__init__(f"{what}: {status} {str(body)[:500]}")
        self.what = what
        self.status = status
        self.body = body


@dataclass
class Registration:
    organization_id: str
    endpoint_id: str
    callback: str
    created: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "organization_id": self.organization_id,
            "endpoint_id": self.endpoint_id,
            "callback": self.callback,
            "created": self.created,
        }


@dataclass
class ListResult:
    """The mediator's answer to a list: per request its ServiceRequest id and entry status."""

    day: str
    status: int
    seconds: float
    sent_at: float
    requests: dict[str, str]  # request identifier value → ServiceRequest id
    patients_created: int
    patients_matched: int
    requests_created: int
    requests_existing: int

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class Upstream:
    def __init__(self, config: FacilityEmulatorConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout_s))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _fhir(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        if not self.config.mediator_url:
            raise UpstreamError("mediator", None, "no mediator_url configured")
        http = await self.session()
        hdrs = {"Accept": FHIR_JSON, "Authorization": basic(self.config.mediator_username,
                                                             self.config.mediator_password), **headers}
        data = None
        if body is not None:
            data = orjson.dumps(body)
            hdrs["Content-Type"] = FHIR_JSON
        async with http.request(method, self.config.fhir_base + path, data=data, headers=hdrs) as resp:
            raw = await resp.read()
            try:
                parsed = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                parsed = raw.decode(errors="replace")
            return resp.status, parsed

    # ------------------------------------------------------------------------ registration

    async def register(self, callback: str) -> Registration:
        """Endpoint (callback + header) and Organization (identifier, endpoint) at the mediator.

        Idempotent: an Organization with the facility's identifier is reused and its Endpoint
        updated to the current callback address and header."""
        c = self.config
        token = quote(f"{c.facility_identifier_system}|{c.facility_code}", safe=":/|")
        status, found = await self._fhir("GET", f"/Organization?identifier={token}")
        if status != 200:
            raise UpstreamError("search Organization", status, found)
        orgs = [e["resource"] for e in (found or {}).get("entry") or [] if e.get("resource")]
        endpoint = roster.endpoint_resource(c, callback)
        if orgs:
            org = orgs[0]
            refs = [str(e.get("reference", "")) for e in org.get("endpoint") or []]
            ref = next((r for r in refs if r.startswith("Endpoint/")), None)
            if ref:
                ep_id = ref.split("/", 1)[1]
                status, body = await self._fhir("PUT", f"/Endpoint/{ep_id}", {**endpoint, "id": ep_id})
                if status not in (200, 201):
                    raise UpstreamError("update Endpoint", status, body)
                return Registration(org["id"], ep_id, callback, created=False)
        status, ep = await self._fhir("POST", "/Endpoint", endpoint)
        if status not in (200, 201):
            raise UpstreamError("create Endpoint", status, ep)
        organization = roster.organization_resource(c, ep["id"])
        if orgs:
            org_id = orgs[0]["id"]
            status, body = await self._fhir("PUT", f"/Organization/{org_id}", {**organization, "id": org_id})
            if status not in (200, 201):
                raise UpstreamError("update Organization", status, body)
            return Registration(org_id, ep["id"], callback, created=False)
        status, org = await self._fhir("POST", "/Organization", organization)
        if status not in (200, 201):
            raise UpstreamError("create Organization", status, org)
        return Registration(org["id"], ep["id"], callback, created=True)

    # ---------------------------------------------------------------------------- the list

    async def send_list(self, lst: DefaulterList, org_id: str, authored_on: Any) -> ListResult:
        bundle = roster.transaction_bundle(self.config, lst, org_id, authored_on)
        sent_at = time.time()
        started = time.perf_counter()
        status, body = await self._fhir("POST", "/", bundle)
        seconds = time.perf_counter() - started
        if status != 200 or not isinstance(body, dict) or body.get("type") != "transaction-response":
            raise UpstreamError("transaction", status, body)
        entries = body.get("entry") or []
        if len(entries) != len(bundle["entry"]):
            raise UpstreamError("transaction", status, f"{len(entries)} response entries for {len(bundle['entry'])}")
        counts = {"Patient": [0, 0], "ServiceRequest": [0, 0]}
        requests: dict[str, str] = {}
        for sent, got in zip(bundle["entry"], entries, strict=True):
            rtype = sent["resource"]["resourceType"]
            response = got.get("response") or {}
            created = str(response.get("status", "")).startswith("201")
            counts[rtype][0 if created else 1] += 1
            if rtype == "ServiceRequest":
                location = str(response.get("location", ""))
                requests[sent["resource"]["identifier"][0]["value"]] = location.split("/")[1] if "/" in location else ""
        return ListResult(
            day=lst.day,
            status=status,
            seconds=round(seconds, 3),
            sent_at=sent_at,
            requests=requests,
            patients_created=counts["Patient"][0],
            patients_matched=counts["Patient"][1],
            requests_created=counts["ServiceRequest"][0],
            requests_existing=counts["ServiceRequest"][1],
        )

    async def events(self, subscription_id: str, since: int, until: int) -> dict[str, Any]:
        """``Subscription/<id>/$events`` (Backport IG): stored events in [since, until]."""
        status, body = await self._fhir(
            "GET", f"/Subscription/{subscription_id}/$events?eventsSinceNumber={since}&eventsUntilNumber={until}"
        )
        if status != 200 or not isinstance(body, dict):
            raise UpstreamError("$events", status, body)
        return body

    # -------------------------------------------------------------------------------- CHT

    async def create_cht_people(
        self, lst: DefaulterList, places: list[str], *, url: str, username: str, password: str
    ) -> int:
        """Register the list's patients in CHT (``POST /api/v1/people``), round robin over ``places``;
        each defaulter gets its CHT ``_id``. Patients that already have one are skipped."""
        if not places:
            raise UpstreamError("CHT people", None, "no CHT places (households) to create the patients in")
        http = await self.session()
        created = 0
        for n, d in enumerate(lst.defaulters):
            if d.cht_id:
                continue
            body = roster.cht_person(d, places[n % len(places)])
            async with http.post(
                url.rstrip("/") + "/api/v1/people",
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json", "Accept": "application/json",
                         "Authorization": basic(username, password)},
            ) as resp:
                raw = await resp.read()
                parsed = orjson.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode(errors="replace")
                if resp.status != 200 or not isinstance(parsed, dict) or not parsed.get("id"):
                    raise UpstreamError("CHT POST /api/v1/people", resp.status, parsed)
            d.cht_id = str(parsed["id"])
            created += 1
        return created
