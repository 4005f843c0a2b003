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
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

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

NOT_LOCATED_REASONS = ("wrong_address", "phone_off", "not_home", "unknown")
REFUSAL_REASONS = ("stigma", "side_effects", "feels_well", "faith_healing", "transport_cost", "other")
FACILITIES = ("Kisumu County Referral Hospital", "Ahero Sub-County Hospital", "Lumumba Health Centre")
AREAS = ("Nairobi", "Mombasa", "Eldoret", "Nakuru", "Kakamega")


def _ms_to_date(v: Any, zone: tzinfo) -> str:
    """A JSON-form date (ms) as the device shows it: ``YYYY-MM-DD`` in local time."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return datetime.fromtimestamp(v / 1000, zone).date().isoformat()
    return v if isinstance(v, str) else ""


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

    def submit(self, case: dict, outcome: str | None = None, method: str | None = None) -> dict | None:
        """The CHW fills the follow-up form for the next attempt of ``case``; returns the saved report."""
        record = self.store.peek(MEDIC, case["record_id"])
        patient = self.store.peek(MEDIC, case.get("patient_uuid", ""))
        chw = self.store.peek(MEDIC, case.get("chw_contact_id", ""))
        if record is None or patient is None or chw is None:
            self.store.upsert(EMULATOR, dict(case, state="unassignable"))
            return None
        attempt = int(case.get("attempt", 0)) + 1
        outcome = outcome or self.choose(case["case_ref"], attempt)
        report = self.build_report(record, patient, chw, attempt, outcome, method)
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
        self, record: dict, patient: dict, chw: dict, attempt: int, outcome: str, method: str | None = None
    ) -> dict:
        """The doc the CHT app saves for the ``ltfu_follow_up`` form (all field values strings)."""
        rf = record.get("fields") or {}
        case_ref = str(rf.get("case_ref") or record["_id"])
        rng = self._rng(case_ref, attempt * 1000 + 7)
        today = datetime.now(self.zone).date()
        if method is None:
            method = "phone" if attempt == 1 else "home_visit"
            if attempt == 1 and rng.random() < 0.15:
                method = "sms"
        located = outcome != "not_located"
        info_source = {
            "returning_to_care": "client",
            "already_returned": "treatment_provider",
            "refused": "client",
            "self_transferred": "treatment_provider",
            "hospitalized": "family_partner",
            "moved": "family_partner",
            "deceased": "family_partner",
        }.get(outcome, "")
        follow_up = {
            "method": method,
            "contacted": "yes" if located else "no",
            "info_source": info_source,
            "info_source_other": "",
            "outcome": outcome,
            "next_appointment_date": "",
            "referral_given": "",
            "refusal_reason": "",
            "refusal_reason_other": "",
            "transfer_facility": "",
            "moved_date": "",
            "new_area": "",
            "death_date": "",
            "death_place": "",
            "not_located_reason": "",
        }
        if outcome == "returning_to_care":
            follow_up["next_appointment_date"] = (today + timedelta(days=rng.randint(1, 14))).isoformat()
            follow_up["referral_given"] = rng.choice(("yes", "no"))
        elif outcome == "refused":
            follow_up["refusal_reason"] = rng.choice(REFUSAL_REASONS)
            if follow_up["refusal_reason"] == "other":
                follow_up["refusal_reason_other"] = "Busy with work"
        elif outcome == "self_transferred":
            follow_up["transfer_facility"] = rng.choice(FACILITIES)
        elif outcome == "moved":
            follow_up["moved_date"] = (today - timedelta(days=rng.randint(10, 90))).isoformat()
            follow_up["new_area"] = rng.choice(AREAS)
        elif outcome == "deceased":
            follow_up["death_date"] = (today - timedelta(days=rng.randint(5, 120))).isoformat()
            follow_up["death_place"] = rng.choice(("home", "health_facility", "other"))
        elif outcome == "not_located":
            follow_up["not_located_reason"] = rng.choice(NOT_LOCATED_REASONS)
        patient_code = str(patient.get("patient_id") or rf.get("patient_id") or "")
        now_ms = int(time.time() * 1000)
        return {
            "_id": str(uuid.uuid4()),
            "type": "data_record",
            "form": self.config.report_form,
            "content_type": "xml",
            "from": str(chw.get("phone") or ""),
            "contact": minify(chw),
            "form_version": {"time": 1732000000000, "sha256": FORM_XML_SHA256},
            "hidden_fields": ["meta"],
            "fields": {
                "inputs": {
                    "meta": {"location": {"lat": "", "long": "", "error": "", "message": ""}},
                    "source": "task",
                    "source_id": record["_id"],
                    "case_ref": case_ref,
                    "reason": str(rf.get("reason") or ""),
                    "missed_appointment_date": _ms_to_date(rf.get("missed_appointment_date"), self.zone),
                    "facility_name": str(rf.get("facility_name") or ""),
                    "attempt_no": str(attempt),
                    "contact": {
                        "_id": patient["_id"],
                        "name": str(patient.get("name") or ""),
                        "patient_id": patient_code,
                        "phone": str(patient.get("phone") or ""),
                    },
                },
                "patient_uuid": patient["_id"],
                "patient_id": patient_code,
                "case_ref": case_ref,
                "source_id": record["_id"],
                "follow_up": follow_up,
                "barriers": "",
                "notes": "" if located else "Tried the phone number on file",
                "meta": {"instanceID": f"uuid:{uuid.uuid4()}"},
            },
            "reported_date": now_ms,
            "geolocation_log": [{"timestamp": now_ms, "recording": {"code": 1, "message": "denied"}}],
            "geolocation": {"code": 1, "message": "User denied Geolocation"},
        }
