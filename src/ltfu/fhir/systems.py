"""Identifier systems and CodeSystem URLs, all under the configurable base (reference/fhir.md §1.3)."""

from __future__ import annotations

from dataclasses import dataclass

TASK_CODE_SYSTEM = "http://hl7.org/fhir/CodeSystem/task-code"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
POC_CHT_SYSTEM = "cht"  # the PoC's Patient/Encounter identifier system for CHT ids


@dataclass(frozen=True)
class Systems:
    base: str

    @property
    def cht_contact(self) -> str:
        return f"{self.base}/NamingSystem/cht-contact-id"

    @property
    def cht_patient_id(self) -> str:
        return f"{self.base}/NamingSystem/cht-patient-id"

    @property
    def cht_report(self) -> str:
        return f"{self.base}/NamingSystem/cht-report-id"

    @property
    def cht_observation(self) -> str:
        return f"{self.base}/NamingSystem/cht-observation-id"

    @property
    def task_id(self) -> str:
        return f"{self.base}/NamingSystem/task-id"

    @property
    def ltfu_request(self) -> str:
        return f"{self.base}/NamingSystem/ltfu-request"

    @property
    def outcome(self) -> str:
        return f"{self.base}/CodeSystem/ltfu-outcome"

    @property
    def method(self) -> str:
        return f"{self.base}/CodeSystem/ltfu-contact-method"

    @property
    def business_status(self) -> str:
        return f"{self.base}/CodeSystem/ltfu-task-business-status"

    @property
    def ltfu_code(self) -> str:
        return f"{self.base}/CodeSystem/ltfu"

    @property
    def topic(self) -> str:
        return f"{self.base}/SubscriptionTopic/ltfu-task-updated"
