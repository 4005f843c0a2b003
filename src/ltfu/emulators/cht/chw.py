"""Simulated community health workers acting on follow-up records.

For each follow-up record (records-API form in ``request_forms``) that reaches a CHW — an offline
user whose facility is an ancestor of the patient — the CHW submits the ``ltfu_follow_up`` app form
after a delay, as the real app would save it (XForm report: string values, ``contact`` = the CHW,
``inputs`` from the task, top-level calculates). An attempt before the last one may be unsuccessful
(``not_located``); the next attempt follows after ``retry_delay_s``. A cancel record (same
``case_ref``) closes the follow-up. Outcomes are drawn from ``outcome_mix`` with a generator seeded
by ``seed`` and the case, so a run is reproducible whatever the order of events.

State lives in the store (``_emulator`` database): a restarted emulator carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from . import follow_up_form as form
from .app_settings import Settings
from .auth import ONLINE_ROLE
from .config import ChwSimConfig
from .lineage import ancestor_ids, minify, resolve_contact
from .store import EMULATOR, MEDIC, USERS, DocStore, Entry

log = logging.getLogger("ltfu.emulators.cht.chw")

SEQ_DOC = "chw-sim"
CASE_PREFIX = "chw-case:"
CANCEL_PREFIX = "chw-cancel:"

FORM_XML_SHA256 = hashlib.sha256(b"ltfu_follow_up emulated form").hexdigest()

INFO_SOURCE_BY_OUTCOME = {
    "returning_to_care": "client",
    "already_returned": "treatment_provider",
    "refused": "client",
    "self_transferred": "treatment_provider",
    "hospitalized": "family_partner",
    "moved": "family_partner",
    "deceased": "family_partner",
    "not_located": "family_partner",
}
OTHER_SOURCES = ("Neighbour", "Village elder", "Landlord", "Community health assistant")
FACILITIES = ("Kisumu County Referral Hospital", "Ahero Sub-County Hospital", "Lumumba Health Centre")
AREAS = ("Nairobi", "Mombasa", "Eldoret", "Nakuru", "Kakamega")
NOTES = {
    "returning_to_care": ("Will come on clinic day", "Needs transport money, referred to social worker"),
    "already_returned": ("Collected drugs at the facility last week",),
    "refused": ("Says he feels well", "Family does not know the status"),
    "not_located": ("Tried the phone number on file", "Neighbours say the family left"),
    "self_transferred": ("Shows a transfer letter",),
    "hospitalized": ("Admitted at the county hospital",),
    "moved": ("Moved for work",),
    "deceased": ("Family informed the CHW",),
}


class ChwSimulation:
    def __init__(
        self, store: DocStore, settings: Callable[[], Settings], config: ChwSimConfig, zone: tzinfo = UTC
    ) -> None:
        self.store = store
        self.zone = zone
        self.settings = settings
        self.config = config
        self.paused = not config.enabled
        self.stats: Counter = Counter()
        self.outcomes: Counter = Counter()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        store.on_change(self._on_change)

    def _on_change(self, db: str, entry: Entry) -> None:
        if db == MEDIC:
            self._wake.set()

    # ------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cht-chw-sim")
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                self.scan_changes()
                delay = 0.5 if self.paused else self.fire_due()
            except Exception:
                log.exception("CHW simulation step failed")
                delay = 1.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, min(delay, 1.0)))

    # ----------------------------------------------------------------------------------- state

    @property
    def seq(self) -> int:
        meta = self.store.peek(EMULATOR, SEQ_DOC)
        return int(meta.get("seq", 0)) if meta else 0

    def cases(self) -> list[dict]:
        return [d for d in self.store.iter_docs(EMULATOR) if d["_id"].startswith(CASE_PREFIX)]

    def open_cases(self) -> list[dict]:
        return [d for d in self.cases() if d.get("state") == "open"]

    def summary(self) -> dict:
        states = Counter(d.get("state") for d in self.cases())
        return {
            "paused": self.paused,
            "cases": dict(states),
            "reports": self.stats["reports"],
            "outcomes": dict(self.outcomes),
            "unassignable": self.stats["unassignable"],
            "no_chw": self.stats["no_chw"],
            "cancelled": self.stats["cancelled"],
        }

    def _rng(self, case_ref: str, attempt: int) -> random.Random:
        return random.Random(f"{self.config.seed}:{case_ref}:{attempt}")

    # ---------------------------------------------------------------------------------- intake

    def scan_changes(self) -> None:
        seq = self.seq
        changes = self.store.changes(MEDIC, seq)
        if not changes:
            return
        for entry in changes:
            if entry.deleted:
                continue
            doc = entry.body
            if doc.get("type") != "data_record" or not isinstance(doc.get("fields"), dict):
                continue
            if doc.get("form") in self.config.request_forms:
                self._on_request(doc)
            elif doc.get("form") in self.config.cancel_forms:
                self._on_cancel(doc)
        self.store.upsert(EMULATOR, {"_id": SEQ_DOC, "seq": changes[-1].seq})

    def find_chw(self, patient: dict) -> dict | None:
        """The nearest offline user above the patient (the CHW of the area), as user-settings."""
        settings = self.settings()
        ancestors = ancestor_ids(self.store, patient)
        best: tuple[int, str, dict] | None = None
        for doc in self.store.iter_docs(MEDIC):
            if doc.get("type") != "user-settings" or not doc.get("contact_id"):
                continue
            user = self.store.peek(USERS, doc["_id"]) or {}
            roles = user.get("roles") or doc.get("roles") or []
            if ONLINE_ROLE in roles:
                continue
            if settings.raw.get("roles") and not any(settings.is_offline_role(r) for r in roles):
                continue
            facilities = doc.get("facility_id")
            facilities = facilities if isinstance(facilities, list) else [facilities]
            for f in facilities:
                if f in ancestors:
                    rank = ancestors.index(f)
                    if best is None or (rank, doc["_id"]) < (best[0], best[1]):
                        best = (rank, doc["_id"], doc)
        return best[2] if best else None

    def _on_request(self, record: dict) -> None:
        case_id = CASE_PREFIX + record["_id"]
        if self.store.peek(EMULATOR, case_id) is not None:
            return
        fields = record["fields"]
        case_ref = str(fields.get("case_ref") or record["_id"])
        settings = self.settings()
        patient = resolve_contact(
            self.store, settings, fields.get("patient_id") or fields.get("patient_uuid")
        )
        case: dict[str, Any] = {
            "_id": case_id,
            "record_id": record["_id"],
            "case_ref": case_ref,
            "attempt": 0,
            "reports": [],
        }
        if record.get("errors"):
            case["errors"] = record["errors"]
        if patient is None or not settings.is_person(patient):
            case["state"] = "unassignable"
            self.stats["unassignable"] += 1
        else:
            case["patient_uuid"] = patient["_id"]
            chw = self.find_chw(patient)
            if chw is None:
                case["state"] = "no_chw"
                self.stats["no_chw"] += 1
            elif self.store.peek(EMULATOR, CANCEL_PREFIX + case_ref) is not None:
                case["state"] = "cancelled"
                self.stats["cancelled"] += 1
            else:
                case["state"] = "open"
                case["user"] = chw["name"] if chw.get("name") else chw["_id"].split(":", 1)[-1]
                case["chw_contact_id"] = chw["contact_id"]
                case["due"] = time.time() + self._delay(self.config.first_delay_s, case_ref, 1)
        self.store.upsert(EMULATOR, case)

    def _on_cancel(self, record: dict) -> None:
        case_ref = record["fields"].get("case_ref")
        if not case_ref:
            return
        hit = False
        for case in self.cases():
            if case.get("case_ref") == case_ref and case.get("state") == "open":
                case = dict(case, state="cancelled", cancel_record=record["_id"])
                case.pop("due", None)
                self.store.upsert(EMULATOR, case)
                self.stats["cancelled"] += 1
                hit = True
        if not hit:
            self.store.upsert(EMULATOR, {"_id": CANCEL_PREFIX + str(case_ref), "record_id": record["_id"]})

    def _delay(self, base: float, case_ref: str, attempt: int) -> float:
        return base + self._rng(case_ref, attempt).uniform(0, self.config.jitter_s)

    # ----------------------------------------------------------------------------------- acting

    def fire_due(self) -> float:
        """Submit every due report; seconds until the next one is due."""
        now = time.time()
        next_due = 1.0
        for case in self.open_cases():
            due = float(case.get("due", 0))
            if due <= now:
                self.submit(case)
            else:
                next_due = min(next_due, due - now)
        return next_due

    def choose(self, case_ref: str, attempt: int) -> str:
        rng = self._rng(case_ref, attempt)
        if attempt < self.config.max_attempts and rng.random() < self.config.unsuccessful_rate:
            return "not_located"
        mix = {k: v for k, v in self.config.outcome_mix.items() if v > 0} or {"returning_to_care": 1.0}
        return rng.choices(list(mix), weights=list(mix.values()))[0]

    def submit(
        self,
        case: dict,
        outcome: str | None = None,
        method: str | None = None,
        answers: dict[str, Any] | None = None,
    ) -> dict | None:
        """The CHW fills the follow-up form for the next attempt of ``case``; returns the saved report.
        ``answers`` (the form's follow_up questions) replace the simulated answers; a
        :class:`.follow_up_form.FormError` is raised before anything is saved if the form would refuse them."""
        record = self.store.peek(MEDIC, case["record_id"])
        patient = self.store.peek(MEDIC, case.get("patient_uuid", ""))
        chw = self.store.peek(MEDIC, case.get("chw_contact_id", ""))
        if record is None or patient is None or chw is None:
            self.store.upsert(EMULATOR, dict(case, state="unassignable"))
            return None
        attempt = int(case.get("attempt", 0)) + 1
        if answers is not None:
            outcome = str(answers.get("outcome") or "")
        outcome = outcome or self.choose(case["case_ref"], attempt)
        report = self.build_report(record, patient, chw, attempt, outcome, method, answers=answers)
        self.store.put(MEDIC, report)
        self.stats["reports"] += 1
        self.outcomes[outcome] += 1
        case = dict(case, attempt=attempt, reports=[*case.get("reports", []), report["_id"]])
        if outcome != "not_located" or attempt >= self.config.max_attempts:
            case["state"] = "resolved"
            case.pop("due", None)
        else:
            case["due"] = time.time() + self._delay(self.config.retry_delay_s, case["case_ref"], attempt + 1)
        self.store.upsert(EMULATOR, case)
        return report

    def build_report(
        self,
        record: dict,
        patient: dict,
        chw: dict,
        attempt: int,
        outcome: str,
        method: str | None = None,
        *,
        answers: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> dict:
        """The doc the CHT app saves when the CHW submits ``ltfu_follow_up`` from the task of ``attempt``
        (see :mod:`.follow_up_form`). ``answers`` (the follow_up questions) replace the simulated ones;
        :class:`.follow_up_form.FormError` if the form would not accept them."""
        now = now or datetime.now(self.zone)
        today = now.astimezone(self.zone).date()
        inputs = form.task_inputs(record, patient, attempt, self.zone, self.config.window_days)
        if answers is None:
            rng = self._rng(inputs["task_case_ref"] or record["_id"], attempt * 1000 + 7)
            answers = self.simulated_answers(outcome, method or self._method(inputs, rng), rng, today)
        follow_up = form.follow_up_page(answers, inputs, inputs["task_case_ref"], today)
        now_ms = int(now.timestamp() * 1000)
        return {
            "_id": str(uuid.uuid4()),
            "type": "data_record",
            "form": self.config.report_form,
            "content_type": "xml",
            "from": str(chw.get("phone") or ""),
            "contact": minify(chw),
            "form_version": {"time": 1732000000000, "sha256": FORM_XML_SHA256},
            "hidden_fields": list(form.HIDDEN_FIELDS),
            "fields": form.report_fields(inputs, follow_up),
            "reported_date": now_ms,
            "geolocation_log": [{"timestamp": now_ms, "recording": {"code": 1, "message": "denied"}}],
            "geolocation": {"code": 1, "message": "User denied Geolocation"},
        }

    @staticmethod
    def _method(inputs: dict, rng: random.Random) -> str:
        """The CHW follows the task's suggestion; some first attempts are an SMS instead of a call."""
        method = inputs["suggested_method"]
        return "sms" if method == "phone" and rng.random() < 0.15 else method

    @staticmethod
    def simulated_answers(outcome: str, method: str, rng: random.Random, today: date) -> dict[str, str]:
        """A CHW's answers to the follow_up questions for ``outcome`` (only what the form asks)."""
        # not located: usually nobody was reached; sometimes a relative who does not know where they are
        contacted = "no" if outcome == "not_located" and rng.random() < 0.8 else "yes"
        answers: dict[str, str] = {"method": method, "contacted": contacted}
        if contacted == "yes":
            source = "other" if rng.random() < 0.1 else INFO_SOURCE_BY_OUTCOME.get(outcome, "family_partner")
            answers["info_source"] = source
            if source == "other":
                answers["info_source_other"] = rng.choice(OTHER_SOURCES)
        answers["outcome"] = outcome
        if outcome == "returning_to_care":
            answers["next_appointment_date"] = (today + timedelta(days=rng.randint(1, 14))).isoformat()
        elif outcome == "refused":
            answers["refusal_reason"] = rng.choice(form.CHOICES["refusal_reason"])
        elif outcome == "self_transferred":
            answers["transfer_facility"] = rng.choice(FACILITIES)
        elif outcome == "moved":
            if rng.random() < 0.8:
                answers["moved_date"] = (today - timedelta(days=rng.randint(10, 90))).isoformat()
            answers["new_area"] = rng.choice(AREAS)
        elif outcome == "deceased":
            if rng.random() < 0.8:
                answers["death_date"] = (today - timedelta(days=rng.randint(5, 120))).isoformat()
            if rng.random() < 0.8:
                answers["death_place"] = rng.choice(form.CHOICES["death_place"])
        elif outcome == "not_located":
            answers["not_located_reason"] = rng.choice(form.CHOICES["not_located_reason"])
        if rng.random() < 0.4:
            answers["notes"] = rng.choice(NOTES.get(outcome, ("Visited",)))
        return answers
