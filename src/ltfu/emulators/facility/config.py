"""Configuration of the facility emulator (plain dataclass: the CLI, the demo and tests build it)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FacilityEmulatorConfig:
    """A facility EMR that sends defaulter lists to the mediator and receives its notifications."""

    #: the mediator (its FHIR API is ``mediator_url + fhir_path``); ``None`` = receive only
    mediator_url: str | None = None
    fhir_path: str = "/fhir"
    #: HTTP Basic credentials of an ltfu client (a facility client or an admin)
    mediator_username: str = "admin"
    mediator_password: str = ""
    #: where the mediator reaches this emulator (callback address = ``public_url + notify_path``);
    #: ``None`` = ``http://<host>:<port>`` of the server
    public_url: str | None = None
    notify_path: str = "/notifications"
    #: the Endpoint's header is ``Authorization: Bearer <callback_token>``; notifications without it get 401
    callback_token: str = "facility-callback-token"
    #: the subscription's Standard Webhooks signing secrets (``whsec_...``, from ``ltfu clients secret ORG``
    #: or the admin API; also settable at ``POST /_facility/signing-secret``). With one, a notification
    #: without a valid ``webhook-signature``, more than 5 minutes off or with a seen ``webhook-id`` is refused.
    signing_secrets: list[str] = field(default_factory=list)
    #: refuse every notification (401) while no signing secret is known yet
    require_signature: bool = False

    # --- the facility
    facility_code: str = "13023"
    facility_name: str = "Kisumu County Referral Hospital"
    #: system of the Organization identifier (a national facility registry such as Kenya's MFL)
    facility_identifier_system: str = "https://mfl.example.ke/facility-code"
    #: the facility's own URI space: ``<facility_base>/NamingSystem/{ccc-number,ltfu-request,defaulter-list}``
    facility_base: str = "https://emr.kisumu-crh.example.ke/fhir"
    #: the mediator's ``LTFU_BASE_URL`` (systems of the CHT contact identifier and the ltfu CodeSystems)
    ltfu_base_url: str = "https://ltfu.example.org/fhir"

    # --- the defaulter lists
    seed: int = 2024
    #: patients per list when a request does not say
    patients: int = 20
    #: days the CHT follow-up may take (``ServiceRequest.occurrencePeriod.end`` = list day + this)
    window_days: int = 14
    #: IANA zone of the facility's clock (list day, ``authoredOn``)
    timezone: str = "Africa/Nairobi"

    # --- CHT (to create the list's patients as CHT people, as a CHW would have registered them)
    cht_url: str | None = None
    cht_username: str = "medic"
    cht_password: str = "password"
    #: CHT places (households) the patients are created in, round robin
    cht_places: list[str] = field(default_factory=list)

    #: seconds of one HTTP call to the mediator or CHT
    timeout_s: float = 60.0
    #: serve ``/_facility/*`` (control and report)
    control_api: bool = True

    @property
    def fhir_base(self) -> str:
        if not self.mediator_url:
            raise ValueError("no mediator_url configured")
        return self.mediator_url.rstrip("/") + self.fhir_path

    @property
    def mrn_system(self) -> str:
        return f"{self.facility_base}/NamingSystem/ccc-number"

    @property
    def request_system(self) -> str:
        return f"{self.facility_base}/NamingSystem/ltfu-request"

    @property
    def list_system(self) -> str:
        return f"{self.facility_base}/NamingSystem/defaulter-list"

    @property
    def cht_contact_system(self) -> str:
        return f"{self.ltfu_base_url}/NamingSystem/cht-contact-id"
