"""Both CHT contact shapes are read alike, and only ISO dates go to CHT's JSON-form `date` fields
(anything else is stored as null without an error: recorded on cht-core 5.2)."""

from __future__ import annotations

import pytest

from ltfu.cht.contact_shapes import is_person
from ltfu.cht.inbound import parse_person
from ltfu.cht.records import follow_up_record
from ltfu.fhir.outcome import FhirError


@pytest.mark.parametrize(
    ("doc", "person"),
    [
        ({"type": "person"}, True),
        ({"type": "contact", "contact_type": "person"}, True),  # POST /api/v1/person (5.x)
        ({"type": "contact", "contact_type": "clinic"}, False),  # POST /api/v1/place (5.x)
        ({"type": "clinic"}, False),
        ({"type": "contact"}, False),
        (None, False),
    ],
)
def test_person_in_either_shape(doc: object, person: bool) -> None:
    assert is_person(doc) is person


def test_inbound_person_of_the_datasource_shape_is_read_and_a_place_is_refused() -> None:
    person = parse_person(
        {"_id": "p1", "type": "contact", "contact_type": "person", "name": "Datasource Person", "parent": {"_id": "h1"}}
    )
    assert (person.id, person.parent_id) == ("p1", "h1")
    with pytest.raises(FhirError):
        parse_person({"_id": "h1", "type": "contact", "contact_type": "clinic", "name": "A household"})


@pytest.mark.parametrize(
    ("start", "sent"),
    [
        ("2026-11-20", "2026-11-20"),
        ("2026-11-20T09:30:00+03:00", "2026-11-20"),
        ("2026-11", None),  # a FHIR partial date: CHT would store null
        ("2026", None),
        ("20-11-2026", None),
    ],
)
def test_only_iso_dates_are_sent(start: str, sent: str | None) -> None:
    record = follow_up_record(
        "interop_follow_up",
        case_id="c1",
        patient_uuid="p1",
        patient_shortcode=None,
        request={"occurrencePeriod": {"start": start}},
        organization=None,
        window_end="2026-12-15T23:59:59Z",
    )
    assert record.get("missed_appointment_date") == sent
    assert record["due_date"] == "2026-12-15"
