"""Retention: N days after a case closes, the personal health information around it is removed.

Per case, in one transaction: the attempts (Encounters and Observations based on the request) are
removed with their history; the ServiceRequest and Task are cut down to their workflow fields
(status, codes, references; no notes, reasons or outputs) with no earlier version kept; the
Patient is anonymised unless another case still needs it (one open, or closed too recently);
delivered and dead outbox rows (their payloads are snapshots with PHI), their attempts and the
Subscription events of the case are deleted. The ``cases`` row stays (ids, states and dates: the
dashboard's figures) and records ``purged_at``. Inbound receipts stay too (ids and hashes only), so
a report CHT sends again is recognised, not recreated. A case with a delivery still pending waits
for the next run. The run is logged with counts only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from ltfu.store.db import Database
from ltfu.store.resources import now_instant
from ltfu.store.retention import DueCase
from ltfu.store.uow import UnitOfWork, unit_of_work

log = logging.getLogger("ltfu.retention")

REDACTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "REDACTED",
    "display": "redacted",
}
KEEP = {
    "ServiceRequest": (
        "identifier",
        "basedOn",
        "replaces",
        "requisition",
        "status",
        "intent",
        "category",
        "priority",
        "code",
        "subject",
        "authoredOn",
        "requester",
    ),
    "Task": (
        "identifier",
        "basedOn",
        "groupIdentifier",
        "partOf",
        "status",
        "statusReason",
        "businessStatus",
        "intent",
        "priority",
        "code",
        "focus",
        "for",
        "authoredOn",
        "lastModified",
        "requester",
        "owner",
        "executionPeriod",
    ),
    "Patient": (),
}


@dataclass
class PurgeReport:
    """What a run removed (or, dry, would remove): counts only, never an id or a value."""

    cases: int = 0
    patients_anonymised: int = 0
    resources_removed: int = 0
    versions_removed: int = 0
    deliveries_removed: int = 0
    delivery_attempts_removed: int = 0
    events_removed: int = 0

    def add(self, other: PurgeReport) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def summary(self) -> str:
        return ", ".join(f"{f.name.replace('_', ' ')} {getattr(self, f.name)}" for f in fields(self))


def cutoff_for(days: int, now: datetime | None = None) -> str:
    return ((now or datetime.now(UTC)) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _redacted(resource: dict[str, Any]) -> dict[str, Any]:
    kept = {k: resource[k] for k in KEEP[resource["resourceType"]] if k in resource}
    if resource["resourceType"] == "Patient":
        kept["active"] = False
    return {**kept, "meta": {"security": [REDACTED]}}


def _is_redacted(resource: dict[str, Any]) -> bool:
    return REDACTED in ((resource.get("meta") or {}).get("security") or [])


async def purge_case(uow: UnitOfWork, case: DueCase, cutoff: str, anonymised: set[str]) -> PurgeReport | None:
    """Remove the PHI of one due case (None when another process purged it first or it is no longer due).
    ``anonymised`` carries the patients this run already anonymised."""
    await uow.lock([f"retention:{case.case_id}"])
    repo = uow.retention
    if not await repo.still_due(case.case_id, cutoff):
        return None
    report = PurgeReport(cases=1)
    when = now_instant()
    for res_type in ("Observation", "Encounter"):
        removed, versions = await repo.remove(res_type, await repo.based_on(res_type, case.case_id))
        report.resources_removed += removed
        report.versions_removed += versions
    targets = [("ServiceRequest", case.case_id), ("Task", case.task_id)]
    if case.patient_id not in anonymised and not await repo.patient_needed(case.patient_id, case.case_id, cutoff):
        targets.append(("Patient", case.patient_id))
    for res_type, res_id in targets:
        current = await repo.current(res_type, res_id)
        if current is None or _is_redacted(current):
            continue
        report.versions_removed += await repo.replace(res_type, res_id, _redacted(current), when)
        if res_type == "Patient":
            report.patients_anonymised += 1
            anonymised.add(res_id)
    report.deliveries_removed, report.delivery_attempts_removed = await repo.drop_deliveries(case.case_id)
    report.events_removed = await repo.drop_events(case.case_id)
    await repo.mark_purged(case.case_id, when)
    return report


class _DryRun(Exception):
    def __init__(self, report: PurgeReport | None) -> None:
        self.report = report


async def purge(db: Database, days: int, *, dry_run: bool = False, now: datetime | None = None) -> PurgeReport:
    """Purge every case closed more than ``days`` ago, one transaction per case (a dry run rolls each back)."""
    cutoff = cutoff_for(days, now)
    async with db.connect() as conn:
        due = await UnitOfWork(conn, db).retention.due_cases(cutoff)
    total = PurgeReport()
    anonymised: set[str] = set()
    for case in due:
        try:
            async with unit_of_work(db) as uow:
                report = await purge_case(uow, case, cutoff, anonymised)
                if dry_run:
                    raise _DryRun(report)
        except _DryRun as rolled_back:
            report = rolled_back.report
        if report is not None:
            total.add(report)
    log.info(
        "retention %s (closed more than %d days ago): %s", "dry run" if dry_run else "purge", days, total.summary()
    )
    return total
