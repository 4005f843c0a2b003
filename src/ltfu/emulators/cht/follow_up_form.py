"""The ``ltfu_follow_up`` app form of ``cht-config/`` as the emulated CHW fills it.

What a real CHT app saves for this form is fixed by three files of ``cht-config/``:
``tasks.js`` (the task action's ``modifyContent`` gives the form inputs), the XForm
``forms/app/ltfu_follow_up.xml`` built from ``xlsforms/app/ltfu_follow_up/*.csv`` (calculates,
questions, relevance, required, constraints) and ``forms/app/ltfu_follow_up.properties.json``
(``hidden_fields``). Enketo (cht-core 4.x) saves every value as a string, drops the questions that
are not relevant and keeps relevant, unanswered ones as ``""``; the reports cht-conf-test-harness
exports for the form (``tests/emulators/cht/fixtures/harness_reports.json``) show the result.

This module reproduces that: :func:`task_inputs` (modifyContent), :func:`follow_up_page`
(the questions with the XForm's relevance, required and constraint rules, and its display
calculates), :func:`report_fields` (the whole ``fields`` object).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, NamedTuple

# Choice names of xlsforms/app/ltfu_follow_up/choices.csv
CHOICES: dict[str, tuple[str, ...]] = {
    "method": ("phone", "sms", "home_visit"),
    "contacted": ("yes", "no"),
    "info_source": ("client", "treatment_provider", "family_partner", "other"),
    "outcome": (
        "returning_to_care",
        "already_returned",
        "refused",
        "not_located",
        "self_transferred",
        "hospitalized",
        "moved",
        "deceased",
    ),
    "refusal_reason": ("stigma", "side_effects", "feels_well", "faith_healing", "transport_cost", "other"),
    "death_place": ("home", "health_facility", "other", "unknown"),
    "not_located_reason": ("wrong_address", "phone_off", "not_home", "unknown"),
}
# tasks.js ROUTINE: how attempt n (1-based) is suggested; later attempts repeat the last entry
ROUTINE_METHODS = ("phone", "home_visit", "home_visit")
# hidden_fields of a saved report: ltfu_follow_up.properties.json's, then Enketo's meta
HIDDEN_FIELDS = ("request_doc_id", "meta")
# tasks.js WINDOW_DAYS
WINDOW_DAYS = 14


class Question(NamedTuple):
    """A question of the follow_up group, as its XForm ``bind`` says."""

    name: str
    #: relevant when the answer to question ``[0]`` equals ``[1]``; ``None`` = always relevant
    relevant_if: tuple[str, str] | None
    required: bool
    #: a CHOICES key, ``text``, or ``date`` with a constraint: ``date>=today`` / ``date<=today``
    kind: str


# The questions of the follow_up group, in form order (survey.csv).
QUESTIONS: tuple[Question, ...] = (
    Question("method", None, True, "method"),
    Question("contacted", None, True, "contacted"),
    Question("info_source", ("contacted", "yes"), True, "info_source"),
    Question("info_source_other", ("info_source", "other"), True, "text"),
    Question("outcome", None, True, "outcome"),
    Question("next_appointment_date", ("outcome", "returning_to_care"), True, "date>=today"),
    Question("refusal_reason", ("outcome", "refused"), True, "refusal_reason"),
    Question("transfer_facility", ("outcome", "self_transferred"), True, "text"),
    Question("moved_date", ("outcome", "moved"), False, "date<=today"),
    Question("new_area", ("outcome", "moved"), True, "text"),
    Question("death_date", ("outcome", "deceased"), False, "date<=today"),
    Question("death_place", ("outcome", "deceased"), False, "death_place"),
    Question("not_located_reason", ("outcome", "not_located"), True, "not_located_reason"),
    Question("notes", None, False, "text"),
)
QUESTION_NAMES = tuple(q.name for q in QUESTIONS)


class FormError(ValueError):
    """Answers the real form would not accept (Enketo blocks the submit)."""


def ms_to_local_date(value: Any, zone: tzinfo) -> str:
    """tasks.js ``isoDate``: a JSON-form date (ms since epoch) or date string as local ``YYYY-MM-DD``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, zone).date().isoformat()
    if isinstance(value, str) and value:
        try:
            if len(value) == 10:
                return date.fromisoformat(value).isoformat()
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(zone).date().isoformat()
        except ValueError:
            return ""
    return ""


def window_end(record: dict, zone: tzinfo, window_days: int = WINDOW_DAYS) -> str:
    """tasks.js ``windowEnd`` as the task input ``due_date``: the record's ``due_date``, else
    ``window_days`` after the day of the request."""
    due = ms_to_local_date((record.get("fields") or {}).get("due_date"), zone)
    if due:
        return due
    reported = record.get("reported_date")
    if not isinstance(reported, int | float):
        return ""
    start = datetime.fromtimestamp(reported / 1000, zone).date()
    return (start + timedelta(days=window_days)).isoformat()


def suggested_method(attempt: int) -> str:
    return ROUTINE_METHODS[min(max(attempt, 1), len(ROUTINE_METHODS)) - 1]


def task_inputs(record: dict, patient: dict, attempt: int, zone: tzinfo, window_days: int = WINDOW_DAYS) -> dict:
    """``fields.inputs`` of a report opened from the task of ``attempt`` (1-based) for the request
    ``record``: the task action's content (``modifyContent``), ``source: task`` with the record as
    ``source_id``, and the patient (the task's contact) as ``contact``."""
    rf = record.get("fields") or {}
    return {
        "meta": {"location": {"lat": "", "long": "", "error": "", "message": ""}},
        "source": "task",
        "source_id": str(record["_id"]),
        "task_case_ref": str(rf.get("case_ref") or ""),
        "request_id": str(rf.get("request_id") or ""),
        "reason": str(rf.get("reason") or ""),
        "reason_text": str(rf.get("reason_text") or ""),
        "missed_appointment_date": ms_to_local_date(rf.get("missed_appointment_date"), zone),
        "facility_name": str(rf.get("facility_name") or ""),
        "due_date": window_end(record, zone, window_days),
        "task_attempt_no": str(attempt),
        "suggested_method": suggested_method(attempt),
        "contact": {
            "_id": str(patient["_id"]),
            "name": str(patient.get("name") or ""),
            "patient_id": str(patient.get("patient_id") or ""),
            "phone": str(patient.get("phone") or ""),
        },
    }


def _check(name: str, kind: str, value: str, answers: dict, today: date) -> None:
    if kind in CHOICES:
        if value not in CHOICES[kind]:
            raise FormError(f"{name}: {value!r} is not one of {', '.join(CHOICES[kind])}")
        if name == "outcome" and answers.get("contacted") != "yes" and value != "not_located":
            raise FormError("outcome: only not_located can be chosen when nobody was reached")
    elif kind.startswith("date"):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise FormError(f"{name}: {value!r} is not a date (YYYY-MM-DD)") from None
        if kind == "date>=today" and day < today:
            raise FormError(f"{name}: the appointment cannot be in the past")
        if kind == "date<=today" and day > today:
            raise FormError(f"{name}: the date cannot be in the future")


def follow_up_page(answers: dict[str, Any], inputs: dict, case_ref: str, today: date) -> dict[str, str]:
    """The ``follow_up`` group as Enketo saves it for ``answers``: the display calculates first, then
    every relevant question (unanswered optional ones as ``""``); answers to questions that are not
    relevant are dropped. Raises :class:`FormError` where Enketo would refuse to submit."""
    unknown = set(answers) - set(QUESTION_NAMES)
    if unknown:
        raise FormError(f"not questions of the form: {', '.join(sorted(unknown))}")
    given = {k: "" if v is None else str(v) for k, v in answers.items()}
    page: dict[str, str] = {
        "n_case": "",
        "case_ref_display": case_ref or "-",
        "reason_display": inputs["reason_text"] or inputs["reason"] or "-",
        "missed_display": inputs["missed_appointment_date"] or "-",
        "attempt_display": inputs["task_attempt_no"] or "-",
    }
    for name, relevant_if, required, kind in QUESTIONS:
        if relevant_if is not None and page.get(relevant_if[0]) != relevant_if[1]:
            continue
        value = given.get(name, "")
        if value == "":
            if required:
                raise FormError(f"{name}: this field is required")
        else:
            _check(name, kind, value, page, today)
        page[name] = value
    return page


def report_fields(inputs: dict, follow_up: dict[str, str], instance_id: str | None = None) -> dict:
    """``fields`` of the saved report: inputs, the top-level calculates, the follow_up page, meta."""
    contact = inputs["contact"]
    return {
        "inputs": inputs,
        "patient_uuid": contact["_id"],
        "patient_id": contact["patient_id"],
        "patient_name": contact["name"],
        # coalesce(../inputs/task_case_ref, contact-summary ltfu_case_ref): opened from the task
        "case_ref": inputs["task_case_ref"],
        "request_doc_id": inputs["source_id"],
        "attempt_no": inputs["task_attempt_no"],
        "follow_up": follow_up,
        "meta": {"instanceID": instance_id or f"uuid:{uuid.uuid4()}", "deprecatedID": ""},
    }
