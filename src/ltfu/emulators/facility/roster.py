"""The facility's defaulter list: seeded patients and their follow-up requests, as FHIR.

A list is reproducible: the same seed, facility and day give the same patients, MRNs and request
identifiers, so re-sending a day's list is the idempotent replay a real EMR does after a timeout.
Names, phone numbers and CCC numbers look like those of a Kenyan HIV clinic (Kisumu County).
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from ltfu.emulators import population

from .config import FacilityEmulatorConfig

WHO_SYSTEM = "http://smart.who.int/hiv/CodeSystem/HIVConcepts"
CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"

FEMALE_FIRST = (
    "Mercy", "Faith", "Grace", "Esther", "Lilian", "Beatrice", "Caroline", "Purity", "Winnie", "Sharon", "Mary",
    "Jane", "Ruth", "Eunice", "Janet", "Dorcas", "Josephine", "Rose", "Agnes", "Florence", "Zawadi", "Neema",
    "Amina", "Halima", "Millicent", "Emmaculate", "Phanice", "Everlyne",
)
MALE_FIRST = (
    "Brian", "Kevin", "Dennis", "Collins", "Victor", "Samuel", "Peter", "Joseph", "Daniel", "George", "Evans",
    "John", "James", "Paul", "Stephen", "Moses", "Geoffrey", "Wilson", "Felix", "Erick", "Hassan", "Baraka",
    "Ibrahim", "Fredrick", "Vincent", "Maurice",
)
FEMALE_MIDDLE = (
    "Akinyi", "Atieno", "Achieng", "Awino", "Adhiambo", "Anyango", "Auma", "Wanjiru", "Wambui", "Njeri",
    "Wanjiku", "Nyambura", "Muthoni", "Chebet", "Cherono", "Jeptoo", "Nafula", "Nekesa", "Naliaka", "Mwikali",
    "Ndinda",
)
MALE_MIDDLE = (
    "Otieno", "Ochieng", "Odhiambo", "Onyango", "Omondi", "Okoth", "Ouma", "Kamau", "Mwangi", "Njoroge",
    "Kariuki", "Kiprono", "Kibet", "Kipchumba", "Wekesa", "Barasa", "Wafula", "Mutua", "Musyoka", "Kioko",
)
FAMILY = (
    "Otieno", "Ochieng", "Odhiambo", "Onyango", "Owino", "Okoth", "Ouma", "Oduor", "Opiyo", "Okello", "Kamau",
    "Mwangi", "Njoroge", "Kariuki", "Gitau", "Kimani", "Wekesa", "Barasa", "Wafula", "Simiyu", "Mutua",
    "Musyoka", "Kioko", "Mutiso", "Kiprotich", "Rotich", "Cheruiyot", "Koech", "Langat", "Juma", "Omar",
    "Nyaga", "Mugo", "Kirui",
)
# Kisumu County: sub-county and a village or estate in it
PLACES = (
    ("Kisumu Central", "Kondele"), ("Kisumu Central", "Nyalenda"), ("Kisumu Central", "Manyatta"),
    ("Kisumu East", "Kajulu"), ("Kisumu East", "Kolwa"), ("Kisumu West", "Kisian"), ("Kisumu West", "Otonglo"),
    ("Seme", "Kombewa"), ("Nyando", "Ahero"), ("Nyando", "Awasi"), ("Muhoroni", "Chemelil"),
    ("Nyakach", "Pap Onditi"),
)
# WHO SMART HIV reasons for follow-up (HIV.H.DE1), weighted as a clinic's list would be
REASONS = (
    ("HIV.H.DE2", "Missed care visit", 0.55),
    ("HIV.H.DE3", "Missed medication pickup", 0.30),
    ("HIV.H.DE5", "Incomplete visit", 0.08),
    ("HIV.H.DE4", "Did not initiate ART", 0.07),
)


@dataclass
class Defaulter:
    """One patient of the list and the request to follow them up."""

    index: int
    mrn: str
    given: list[str]
    family: str
    gender: str
    birth_date: str
    phone: str
    sub_county: str
    village: str
    missed_appointment: str
    reason_code: str
    reason_display: str
    priority: str
    request_id: str
    patient_urn: str
    request_urn: str
    #: the CHT person ``_id`` once the patient exists in CHT
    cht_id: str | None = None
    #: a list drawn from a community (:func:`community_patient`): the EMR's own record of the patient
    patient: dict[str, Any] | None = None
    #: the community-unit code the facility knows the patient lives in (``ServiceRequest.locationCode``)
    unit_code: str | None = None

    @property
    def name(self) -> str:
        return " ".join([*self.given, self.family])


@dataclass
class DefaulterList:
    day: str
    list_id: str
    defaulters: list[Defaulter] = field(default_factory=list)


def _permute(x: int, key: str) -> int:
    """A keyed permutation of 0..99999 (4-round Feistel on 18 bits, cycle-walking into range)."""
    while True:
        left, right = x >> 9, x & 0x1FF
        for r in range(4):
            digest = hashlib.blake2b(f"{key}:{r}:{right}".encode(), digest_size=2).digest()
            left, right = right, left ^ (int.from_bytes(digest, "big") & 0x1FF)
        x = (left << 9) | right
        if x < 100_000:
            return x


def ccc_serial(seed: int, day: date, index: int) -> int:
    """The 5-digit serial of a CCC number (after the facility's MFL code): scattered, and distinct for
    every (day, index < 1000) within 100 days."""
    return _permute((day.toordinal() % 100) * 1000 + index % 1000, f"ccc:{seed}")


def _phone(rng: random.Random) -> str:
    return "+2547" + rng.choice("01249") + "".join(rng.choice("0123456789") for _ in range(7))


#: a community-drawn list: the share of patients CHT knows, then of those it does not but whose unit is known;
#: the rest are relatives of a known household the facility cannot place (ambiguous: a person decides)
KNOWN_SHARE, PLACED_SHARE = 0.80, 0.15


def community_patient(
    config: FacilityEmulatorConfig, seeded: population.SeededCommunity, order: list[int], day: date, i: int, mrn: str
) -> tuple[dict[str, Any], str | None]:
    """The EMR's record of defaulter ``i``: a CHT person as the facility spelt it (own MRN, other spellings,
    swapped names, missing or approximate birth date, sometimes a UPI; never a CHT id), or someone CHT does not
    know, with the community-unit code when the facility has it. Returns (Patient, unit code)."""
    rng = random.Random(f"{config.seed}:{config.facility_code}:{day.isoformat()}:{i}:community")
    members = seeded.members()
    roll = rng.random()
    if roll < KNOWN_SHARE:
        member, hh = members[order[i % len(order)]]
        return population.facility_patient(rng, member, hh, mrn, config.mrn_system).patient, None
    seeded.community.rng = rng  # the stranger's names come from this defaulter's generator: reproducible
    if roll < KNOWN_SHARE + PLACED_SHARE:
        unit = rng.choice(seeded.units)
        return population.absent_patient(rng, seeded.community, None, mrn, config.mrn_system).patient, unit["code"]
    hh = rng.choice(seeded.households)
    return population.absent_patient(rng, seeded.community, hh, mrn, config.mrn_system).patient, None


def make_list(
    config: FacilityEmulatorConfig,
    day: date,
    count: int,
    *,
    start: int = 0,
    community: population.SeededCommunity | None = None,
) -> DefaulterList:
    """``count`` defaulters of ``day`` (indexes ``start``..): reproducible for seed, facility and day. With
    ``community`` the patients are drawn from it (:func:`community_patient`)."""
    list_id = f"{day.isoformat()}"
    out = DefaulterList(day=day.isoformat(), list_id=list_id)
    order: list[int] = []
    if community is not None:
        order = random.Random(f"{config.seed}:{config.facility_code}:{day.isoformat()}:order").sample(
            range(len(community.members())), len(community.members()))
    for i in range(start, start + count):
        rng = random.Random(f"{config.seed}:{config.facility_code}:{day.isoformat()}:{i}")
        gender = "female" if rng.random() < 0.62 else "male"  # women are most of Kenya's ART clients
        first, middle = (FEMALE_FIRST, FEMALE_MIDDLE) if gender == "female" else (MALE_FIRST, MALE_MIDDLE)
        given = [rng.choice(first)]
        if rng.random() < 0.7:
            given.append(rng.choice(middle))
        age = min(75, max(18, int(rng.gauss(36, 10))))
        birth = day - timedelta(days=age * 365 + rng.randint(0, 364))
        reason = rng.choices(REASONS, weights=[r[2] for r in REASONS])[0]
        missed_days = rng.randint(3, 90)
        sub_county, village = rng.choice(PLACES)
        serial = ccc_serial(config.seed, day, i)
        key = f"{config.facility_code}:{day.isoformat()}:{i}"
        out.defaulters.append(
            Defaulter(
                index=i,
                mrn=f"{config.facility_code}-{serial:05d}",
                given=given,
                family=rng.choice(FAMILY),
                gender=gender,
                birth_date=birth.isoformat(),
                phone=_phone(rng),
                sub_county=sub_county,
                village=village,
                missed_appointment=(day - timedelta(days=missed_days)).isoformat(),
                reason_code=reason[0],
                reason_display=reason[1],
                priority="urgent" if missed_days > 60 or rng.random() < 0.05 else "routine",
                request_id=f"LTFU-{day.strftime('%Y%m%d')}-{i + 1:04d}",
                patient_urn=f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'patient:' + key)}",
                request_urn=f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'request:' + key)}",
            )
        )
        if community is not None:
            _from_community(out.defaulters[-1], *community_patient(config, community, order, day, i,
                                                                    out.defaulters[-1].mrn))
    return out


def _from_community(d: Defaulter, patient: dict[str, Any], unit_code: str | None) -> None:
    name = patient["name"][0]
    d.patient, d.unit_code = patient, unit_code
    d.given, d.family, d.gender = list(name.get("given") or []), name.get("family") or "", patient["gender"]
    d.birth_date = patient.get("birthDate", "")
    d.phone = next((t["value"] for t in patient.get("telecom", [])), "")


# ------------------------------------------------------------------------------------ FHIR


def patient_resource(config: FacilityEmulatorConfig, d: Defaulter, org_id: str | None) -> dict[str, Any]:
    if d.patient is not None:
        patient = {**d.patient, "active": True}
        if org_id:
            patient["managingOrganization"] = {"reference": f"Organization/{org_id}"}
        return patient
    identifiers: list[dict[str, Any]] = [
        {
            "use": "official",
            "type": {"text": "CCC number"},
            "system": config.mrn_system,
            "value": d.mrn,
        }
    ]
    if d.cht_id:
        identifiers.append({"use": "secondary", "system": config.cht_contact_system, "value": d.cht_id})
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": identifiers,
        "active": True,
        "name": [{"use": "official", "text": d.name, "family": d.family, "given": d.given}],
        "telecom": [{"system": "phone", "value": d.phone, "use": "mobile"}],
        "gender": d.gender,
        "birthDate": d.birth_date,
        "address": [
            {
                "use": "home",
                "text": f"{d.village}, {d.sub_county}, Kisumu",
                "line": [d.village],
                "district": d.sub_county,
                "state": "Kisumu",
                "country": "KE",
            }
        ],
    }
    if org_id:
        patient["managingOrganization"] = {"reference": f"Organization/{org_id}"}
    return patient


def patient_if_none_exist(config: FacilityEmulatorConfig, d: Defaulter) -> str:
    """The Patient's ``ifNoneExist``: its CCC number or, once known, its CHT id (one search, OR-ed).

    The CHT person reaches the mediator by outbound push and becomes a Patient there before the
    list does; matching on the CHT id too makes the list's Patient that one instead of a twin."""
    tokens = [f"{config.mrn_system}|{d.mrn}"]
    if d.cht_id:
        tokens.append(f"{config.cht_contact_system}|{d.cht_id}")
    return "identifier=" + ",".join(quote(t, safe=":/|") for t in tokens)


def service_request_resource(
    config: FacilityEmulatorConfig, d: Defaulter, lst: DefaulterList, org_id: str, authored_on: datetime
) -> dict[str, Any]:
    day = date.fromisoformat(lst.day)
    return {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": config.request_system, "value": d.request_id}],
        "requisition": {"system": config.list_system, "value": lst.list_id},
        "status": "active",
        "intent": "order",
        "priority": d.priority,
        "code": {
            "coding": [{"system": f"{config.ltfu_base_url}/CodeSystem/ltfu", "code": "ltfu-tracing"}],
            "text": "Community follow-up of a patient lost to follow-up",
        },
        "subject": {"reference": d.patient_urn},
        "requester": {"reference": f"Organization/{org_id}"},
        "authoredOn": authored_on.isoformat(timespec="seconds"),
        # the missed appointment opens the period; the follow-up window closes it
        "occurrencePeriod": {
            "start": d.missed_appointment,
            "end": (day + timedelta(days=config.window_days)).isoformat(),
        },
        "performerType": {"text": "Community health worker"},
        "reasonCode": [
            {"coding": [{"system": WHO_SYSTEM, "code": d.reason_code, "display": d.reason_display}],
             "text": d.reason_display}
        ],
        "note": [{"text": f"Missed appointment on {d.missed_appointment}; last known phone {d.phone}"}],
        **({"locationCode": [{"coding": [{"system": f"{config.ltfu_base_url}/CodeSystem/cht-community-unit",
                                          "code": d.unit_code}]}]} if d.unit_code else {}),
    }


def transaction_bundle(
    config: FacilityEmulatorConfig, lst: DefaulterList, org_id: str, authored_on: datetime
) -> dict[str, Any]:
    """The day's list as one FHIR transaction: per patient a conditional Patient create and its request."""
    entries: list[dict[str, Any]] = []
    for d in lst.defaulters:
        entries.append(
            {
                "fullUrl": d.patient_urn,
                "resource": patient_resource(config, d, org_id),
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": patient_if_none_exist(config, d)},
            }
        )
        entries.append(
            {
                "fullUrl": d.request_urn,
                "resource": service_request_resource(config, d, lst, org_id, authored_on),
                "request": {
                    "method": "POST",
                    "url": "ServiceRequest",
                    "ifNoneExist": "identifier=" + quote(f"{config.request_system}|{d.request_id}", safe=":/|"),
                },
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def endpoint_resource(config: FacilityEmulatorConfig, address: str) -> dict[str, Any]:
    return {
        "resourceType": "Endpoint",
        "status": "active",
        "name": f"{config.facility_name} LTFU notifications",
        "connectionType": {"system": CONNECTION_TYPE, "code": "hl7-fhir-rest"},
        "payloadType": [{"coding": [{"system": RESOURCE_TYPES, "code": "Task"}], "text": "Task"}],
        "payloadMimeType": ["application/fhir+json"],
        "address": address,
        "header": [f"Authorization: Bearer {config.callback_token}"],
    }


def organization_resource(config: FacilityEmulatorConfig, endpoint_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "identifier": [{"system": config.facility_identifier_system, "value": config.facility_code}],
        "active": True,
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"}]}],
        "name": config.facility_name,
        "endpoint": [{"reference": f"Endpoint/{endpoint_id}"}],
    }


def cht_person(d: Defaulter, place_id: str) -> dict[str, Any]:
    """The body of ``POST /api/v1/people`` that registers the patient in CHT."""
    return {
        "name": d.name,
        "type": "person",
        "role": "patient",
        "sex": d.gender,
        "date_of_birth": d.birth_date,
        "phone": d.phone,
        "place": place_id,
    }
