"""ltfu.fhir.validation: each bad resource gives the expected issue code at the expected FHIRPath."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from ltfu.fhir.outcome import FhirError
from ltfu.fhir.validation import MAX_ISSUES, SUPPORTED_TYPES, parse_json, validate

PATIENT = {
    "resourceType": "Patient",
    "identifier": [
        {"system": "https://facility.example.ke/fhir/NamingSystem/ccc-number", "value": "13939-01234"}
    ],
    "name": [{"family": "Otieno", "given": ["Akinyi"]}],
    "gender": "female",
    "birthDate": "1990-04-12",
}
SR = {
    "resourceType": "ServiceRequest",
    "status": "active",
    "intent": "order",
    "priority": "routine",
    "identifier": [
        {"system": "https://facility.example.ke/fhir/NamingSystem/ltfu-request", "value": "LTFU-2024-000123"}
    ],
    "code": {"coding": [{"system": "https://ltfu.example.org/fhir/CodeSystem/ltfu", "code": "ltfu-tracing"}]},
    "subject": {"reference": "Patient/pat-1"},
    "requester": {"reference": "Organization/org-kisumu-cch"},
    "authoredOn": "2024-05-02T08:00:00+03:00",
    "occurrencePeriod": {"start": "2024-05-02", "end": "2024-05-16"},
}
TASK = {
    "resourceType": "Task",
    "status": "requested",
    "intent": "order",
    "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
    "focus": {"reference": "ServiceRequest/sr-1"},
    "for": {"reference": "Patient/pat-1"},
    "authoredOn": "2024-05-02T08:00:05+03:00",
}
ENCOUNTER = {
    "resourceType": "Encounter",
    "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
    "subject": {"reference": "Patient/pat-1"},
    "basedOn": [{"reference": "ServiceRequest/sr-1"}],
}
SUBSCRIPTION = {
    "resourceType": "Subscription",
    "status": "requested",
    "reason": "LTFU task updates",
    "criteria": "Task?requester=Organization/org-1",
    "channel": {
        "type": "rest-hook",
        "endpoint": "https://emr.example.ke/hook",
        "payload": "application/fhir+json",
    },
}
BASES = {
    "Patient": PATIENT,
    "ServiceRequest": SR,
    "Task": TASK,
    "Encounter": ENCOUNTER,
    "Subscription": SUBSCRIPTION,
}


def with_(base: dict, **changes: Any) -> dict:
    """A deep copy of ``base`` with top-level ``changes`` (a value of ... deletes the key)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        key = key.rstrip("_")  # for_ -> for, class_ -> class
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def issues_of(resource: Any, expected_type: str | None = None) -> list[tuple[str, str]]:
    with pytest.raises(FhirError) as info:
        validate(resource, expected_type)
    assert info.value.status == 400
    return [(i.code, i.expression[0] if i.expression else "") for i in info.value.issues]


# (case id, resource, expected (code, expression)) — the fhir.md §3.3 cases first.
BAD = [
    ("gender-bogus", with_(PATIENT, gender="bogus"), ("value", "Patient.gender")),
    ("task-status-bogus", with_(TASK, status="bogus"), ("value", "Task.status")),
    ("sr-status-bogus", with_(SR, status="bogus"), ("value", "ServiceRequest.status")),
    (
        "given-empty-array",
        with_(PATIENT, name=[{"family": "Otieno", "given": []}]),
        ("structure", "Patient.name[0].given"),
    ),
    ("gender-null", with_(PATIENT, gender=None), ("structure", "Patient.gender")),
    ("id-65-chars", with_(PATIENT, id="a" * 65), ("value", "Patient.id")),
    ("id-with-space", with_(PATIENT, id="a b"), ("value", "Patient.id")),
    ("gender-number", with_(PATIENT, gender=1), ("structure", "Patient.gender")),
    (
        "datetime-without-tz",
        with_(PATIENT, deceasedDateTime="2020-01-01T10:00:00"),
        ("value", "Patient.deceasedDateTime"),
    ),
    (
        "choice-exclusivity",
        with_(SR, occurrenceDateTime="2024-05-02"),
        ("structure", "ServiceRequest.occurrenceDateTime"),
    ),
    ("family-empty-string", with_(PATIENT, name=[{"family": ""}]), ("value", "Patient.name[0].family")),
    ("birthdate-month-13", with_(PATIENT, birthDate="2024-13-45"), ("value", "Patient.birthDate")),
    ("birthdate-us-format", with_(PATIENT, birthDate="01/02/2000"), ("value", "Patient.birthDate")),
    ("birthdate-feb-30", with_(PATIENT, birthDate="2020-02-30"), ("value", "Patient.birthDate")),
    ("sr-missing-status", with_(SR, status=...), ("required", "ServiceRequest.status")),
    ("sr-missing-intent", with_(SR, intent=...), ("required", "ServiceRequest.intent")),
    ("sr-missing-subject", with_(SR, subject=...), ("required", "ServiceRequest.subject")),
    ("unknown-element", with_(PATIENT, foo="bar"), ("structure", "Patient.foo")),
    (
        "unknown-element-nested",
        with_(PATIENT, name=[{"family": "O", "nickname": "x"}]),
        ("structure", "Patient.name[0].nickname"),
    ),
    # required bindings in nested datatypes and backbone elements
    ("sr-intent-bogus", with_(SR, intent="request"), ("value", "ServiceRequest.intent")),
    ("sr-priority-bogus", with_(SR, priority="high"), ("value", "ServiceRequest.priority")),
    ("task-intent-directive", with_(TASK, intent="directive"), ("value", "Task.intent")),
    ("task-priority-bogus", with_(TASK, priority="low"), ("value", "Task.priority")),
    ("encounter-status-bogus", with_(ENCOUNTER, status="done"), ("value", "Encounter.status")),
    (
        "encounter-statushistory",
        with_(ENCOUNTER, statusHistory=[{"status": "x", "period": {"start": "2024"}}]),
        ("value", "Encounter.statusHistory[0].status"),
    ),
    ("subscription-status", with_(SUBSCRIPTION, status="entered-in-error"), ("value", "Subscription.status")),
    (
        "subscription-channel-type",
        with_(SUBSCRIPTION, channel={"type": "webhook"}),
        ("value", "Subscription.channel.type"),
    ),
    (
        "identifier-use",
        with_(SR, identifier=[{"use": "primary", "value": "x"}]),
        ("value", "ServiceRequest.identifier[0].use"),
    ),
    (
        "reference-identifier-use",
        with_(PATIENT, managingOrganization={"identifier": {"use": "main", "value": "1"}}),
        ("value", "Patient.managingOrganization.identifier.use"),
    ),
    (
        "telecom-system",
        with_(PATIENT, telecom=[{"system": "mobile", "value": "+2547"}]),
        ("value", "Patient.telecom[0].system"),
    ),
    ("contact-gender", with_(PATIENT, contact=[{"gender": "F"}]), ("value", "Patient.contact[0].gender")),
    ("code-wrong-case", with_(PATIENT, gender="Female"), ("value", "Patient.gender")),
    (
        "narrative-status",
        with_(PATIENT, text={"status": "done", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}),
        ("value", "Patient.text.status"),
    ),
    # FHIR JSON rules the models do not apply
    ("boolean-as-string", with_(PATIENT, active="true"), ("structure", "Patient.active")),
    (
        "integer-as-string",
        with_(PATIENT, multipleBirthInteger="2"),
        ("structure", "Patient.multipleBirthInteger"),
    ),
    (
        "integer-as-bool",
        with_(PATIENT, multipleBirthInteger=True),
        ("structure", "Patient.multipleBirthInteger"),
    ),
    (
        "integer-with-fraction",
        with_(PATIENT, multipleBirthInteger=1.5),
        ("structure", "Patient.multipleBirthInteger"),
    ),
    ("object-as-json-string", with_(PATIENT, meta='{"versionId": "1"}'), ("structure", "Patient.meta")),
    ("encounter-class-string", with_(ENCOUNTER, class_="outpatient"), ("structure", "Encounter.class")),
    ("array-as-object", with_(PATIENT, name={"family": "Otieno"}), ("structure", "Patient.name")),
    ("null-in-complex-array", with_(PATIENT, identifier=[None]), ("structure", "Patient.identifier[0]")),
    (
        "null-in-primitive-array",
        with_(PATIENT, name=[{"given": ["A", None]}]),
        ("structure", "Patient.name[0].given[1]"),
    ),
    ("empty-object", with_(PATIENT, maritalStatus={}), ("structure", "Patient.maritalStatus")),
    ("empty-primitive-extension", with_(PATIENT, _gender={}), ("structure", "Patient.gender")),
    (
        "uri-with-space",
        with_(PATIENT, identifier=[{"system": "urn:my system", "value": "1"}]),
        ("value", "Patient.identifier[0].system"),
    ),
    (
        "div-not-xhtml",
        with_(PATIENT, text={"status": "generated", "div": "plain text"}),
        ("value", "Patient.text.div"),
    ),
    ("reference-number", with_(TASK, for_={"reference": 5}), ("structure", "Task.for.reference")),
    (
        "extension-without-url",
        with_(PATIENT, extension=[{"valueString": "x"}]),
        ("required", "Patient.extension[0].url"),
    ),
    (
        "task-input-without-value",
        with_(TASK, input=[{"type": {"text": "x"}}]),
        ("required", "Task.input[0].value"),
    ),
    (
        "decimal-as-string",
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "w"},
            "valueQuantity": {"value": "72.5"},
        },
        ("structure", "Observation.valueQuantity.value"),
    ),
    (
        "quantity-comparator",
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "w"},
            "valueQuantity": {"value": 1, "comparator": "=="},
        },
        ("value", "Observation.valueQuantity.comparator"),
    ),
    (
        "contained-r4b-only-type",
        with_(PATIENT, contained=[{"resourceType": "SubscriptionTopic", "id": "t"}]),
        ("not-supported", "Patient.contained[0].resourceType"),
    ),
    (
        "contained-r4-type-not-in-r4b",
        with_(PATIENT, contained=[{"resourceType": "MedicinalProduct", "id": "m"}]),
        ("not-supported", "Patient.contained[0].resourceType"),
    ),
    (
        "contained-without-type",
        with_(PATIENT, contained=[{"id": "x"}]),
        ("required", "Patient.contained[0].resourceType"),
    ),
    (
        "contained-unknown-element",
        with_(PATIENT, contained=[{"resourceType": "Medication", "id": "m", "foo": 1}]),
        ("structure", "Patient.contained[0].foo"),
    ),
    (
        "extension-deep-bad-code",
        with_(PATIENT, extension=[{"url": "http://x", "valueIdentifier": {"use": "main"}}]),
        ("value", "Patient.extension[0].valueIdentifier.use"),
    ),
    (
        "primitive-extension-bad",
        with_(TASK, _status={"extension": [{"url": 5}]}),
        ("structure", "Task.status.extension[0].url"),
    ),
]


@pytest.mark.parametrize(("resource", "expected"), [pytest.param(r, e, id=i) for i, r, e in BAD])
def test_bad_resource_gives_exactly_its_issue(resource: dict, expected: tuple[str, str]) -> None:
    assert issues_of(resource) == [expected]


@pytest.mark.parametrize("name", sorted(BASES))
def test_good_resources_are_returned_unchanged(name: str) -> None:
    resource = copy.deepcopy(BASES[name])
    assert validate(resource, name) is resource
    assert resource == BASES[name]


@pytest.mark.parametrize(
    "resource",
    [
        # null placeholders that align a primitive array with its _array are legal FHIR JSON
        with_(
            PATIENT,
            name=[
                {
                    "given": [None, "Grace"],
                    "_given": [{"extension": [{"url": "http://x", "valueString": "Akinyi"}]}, None],
                }
            ],
        ),
        # a required primitive may carry only an extension (data-absent-reason)
        with_(
            TASK,
            status=...,
            _status={
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                        "valueCode": "unknown",
                    }
                ]
            },
        ),
        # fhir.resources refuses _valueString inside an extension; R4 allows it
        with_(
            PATIENT,
            extension=[
                {
                    "url": "http://x",
                    "valueString": "a",
                    "_valueString": {"extension": [{"url": "http://y", "valueCode": "b"}]},
                }
            ],
        ),
        with_(PATIENT, id="a" * 64, multipleBirthInteger=2, deceasedBoolean=False),
        with_(PATIENT, contained=[{"resourceType": "Medication", "id": "m", "status": "active"}]),
    ],
    ids=["aligned-nulls", "status-extension-only", "extension-_valueString", "id-64-chars", "contained"],
)
def test_legal_edge_cases_pass(resource: dict) -> None:
    assert validate(resource) is resource


def test_all_problems_are_reported_together() -> None:
    resource = with_(
        PATIENT, id="a b", gender="x", birthDate="12/12/2000", foo=1, active="yes", name=[{"given": []}]
    )
    found = issues_of(resource)
    assert set(found) >= {
        ("value", "Patient.id"),
        ("value", "Patient.gender"),
        ("value", "Patient.birthDate"),
        ("structure", "Patient.foo"),
        ("structure", "Patient.active"),
        ("structure", "Patient.name[0].given"),
    }
    assert len(found) == len(set(found)), "one issue per problem"


def test_issue_count_is_capped() -> None:
    resource = with_(PATIENT, identifier=[{"use": "bad"}] * (MAX_ISSUES + 20))
    with pytest.raises(FhirError) as info:
        validate(resource)
    assert len(info.value.issues) == MAX_ISSUES + 1
    assert "20 more" in info.value.issues[-1].diagnostics


def test_diagnostics_do_not_echo_values() -> None:
    secret = "Wanjiru-0722-555-123"
    resource = with_(
        PATIENT,
        birthDate=secret,
        name=[{"family": secret, "given": [secret, 7]}],
        telecom=[{"system": "phone", "value": secret, "use": 3}],
        id=secret + " x",
    )
    with pytest.raises(FhirError) as info:
        validate(resource)
    text = orjson.dumps(info.value.outcome()).decode()
    assert secret not in text
    assert "Wanjiru" not in text


def test_bad_code_is_named_in_diagnostics() -> None:
    with pytest.raises(FhirError) as info:
        validate(with_(PATIENT, gender="bogus"))
    (issue,) = info.value.issues
    assert "'bogus'" in issue.diagnostics and "female" in issue.diagnostics


@pytest.mark.parametrize(
    ("resource", "expected_type", "expected"),
    [
        ([], None, ("structure", "")),
        ("Patient", None, ("structure", "")),
        ({}, None, ("required", "resourceType")),
        ({"resourceType": 5}, None, ("structure", "resourceType")),
        ({"resourceType": "Medication"}, None, ("not-supported", "resourceType")),
        ({"resourceType": "SubscriptionTopic"}, None, ("not-supported", "resourceType")),
        ({"resourceType": "OperationOutcome"}, None, ("not-supported", "resourceType")),
        (PATIENT, "Task", ("invalid", "resourceType")),
        ({"resourceType": "Bundle", "type": "batch"}, "Patient", ("invalid", "resourceType")),
    ],
)
def test_resource_type_checks(resource: Any, expected_type: str | None, expected: tuple[str, str]) -> None:
    assert issues_of(resource, expected_type) == [expected]


def test_supported_types() -> None:
    assert {
        "Organization",
        "Endpoint",
        "Patient",
        "Practitioner",
        "ServiceRequest",
        "Task",
        "Encounter",
        "Observation",
        "Subscription",
        "Appointment",
    } == SUPPORTED_TYPES
    assert "Bundle" not in SUPPORTED_TYPES


# --- Bundles -----------------------------------------------------------------------------------------
def _bundle(*resources: dict, type_: str = "transaction") -> dict:
    return {
        "resourceType": "Bundle",
        "type": type_,
        "entry": [
            {
                "fullUrl": f"urn:uuid:00000000-0000-4000-8000-00000000000{i}",
                "resource": r,
                "request": {"method": "POST", "url": r["resourceType"]},
            }
            for i, r in enumerate(resources)
        ],
    }


def test_bundle_of_supported_types_validates() -> None:
    bundle = _bundle(
        PATIENT, with_(SR, subject={"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"})
    )
    assert validate(bundle, "Bundle") is bundle


@pytest.mark.parametrize(
    ("bundle", "expected"),
    [
        (_bundle(with_(PATIENT, gender="x")), ("value", "Bundle.entry[0].resource.gender")),
        (_bundle(PATIENT, with_(SR, status=...)), ("required", "Bundle.entry[1].resource.status")),
        (
            _bundle(PATIENT, {"resourceType": "Medication"}),
            ("not-supported", "Bundle.entry[1].resource.resourceType"),
        ),
        (
            _bundle(PATIENT, {"resourceType": "Bundle", "type": "batch"}),
            ("not-supported", "Bundle.entry[1].resource.resourceType"),
        ),
        (_bundle(PATIENT, type_="bogus"), ("value", "Bundle.type")),
        (
            {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [{"request": {"method": "FETCH", "url": "Patient"}}],
            },
            ("value", "Bundle.entry[0].request.method"),
        ),
        ({"resourceType": "Bundle", "type": "batch", "entry": []}, ("structure", "Bundle.entry")),
        (
            {"resourceType": "Bundle", "entry": [{"request": {"method": "GET", "url": "Patient"}}]},
            ("required", "Bundle.type"),
        ),
    ],
)
def test_bad_bundles(bundle: dict, expected: tuple[str, str]) -> None:
    assert expected in issues_of(bundle, "Bundle")


def test_bundle_response_outcome_may_be_any_resource() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [
            {
                "response": {
                    "status": "400",
                    "outcome": {
                        "resourceType": "OperationOutcome",
                        "issue": [{"severity": "error", "code": "invalid"}],
                    },
                }
            }
        ],
    }
    assert validate(bundle, "Bundle") is bundle


def test_bundle_only_when_asked_for() -> None:
    assert issues_of(_bundle(PATIENT)) == [("not-supported", "resourceType")]


# --- parse_json ----------------------------------------------------------------------------------------
def test_parse_json_ok() -> None:
    assert parse_json(b'{"resourceType": "Patient"}') == {"resourceType": "Patient"}
    assert parse_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}  # a UTF-8 BOM is tolerated


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "empty"),
        (b'{"resourceType": "Patient",}', "trailing comma"),
        (b'{"resourceType": "Patient"', "end of data"),
        (b'{"a": NaN}', "JSON"),
        (b'{"family": "\xff\xfe"}', "UTF-8"),
        (b'"\\ud800"', "surrogate"),
        (b'{"a": 1} {"b": 2}', "after document"),
        (b"[" * 2000 + b"]" * 2000, "depth"),
    ],
)
def test_parse_json_errors(body: bytes, words: str) -> None:
    with pytest.raises(FhirError) as info:
        parse_json(body)
    (issue,) = info.value.issues
    assert info.value.status == 400 and issue.code == "structure"
    assert words.lower() in issue.diagnostics.lower()


def test_bad_json_message_names_the_position() -> None:
    with pytest.raises(FhirError) as info:
        parse_json(b'{\n  "resourceType": "Patient",\n  "gender": female\n}')
    assert "line 3" in info.value.issues[0].diagnostics


@pytest.mark.parametrize("value", ["{", "}", "{expr}", "}}{0}{"])
def test_client_braces_in_codes_are_reported_verbatim(value: str) -> None:
    """A code holding format braces is an ordinary bad code (it once crashed the message formatting)."""
    with pytest.raises(FhirError) as err:
        validate({"resourceType": "ServiceRequest", "status": value, "intent": "order",
                  "subject": {"reference": "Patient/1"}})
    (issue,) = err.value.issues
    assert issue.code == "value" and issue.expression == ("ServiceRequest.status",)
    assert issue.diagnostics.startswith(f"'{value}' is not a valid code for ServiceRequest.status")
