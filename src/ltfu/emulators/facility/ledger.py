"""What the facility saw of the mediator's notifications: per subscription event numbers (duplicates,
gaps, order), the latest version of every Task, outcomes, and how long each stage took.

Backport IG notifications carry ``event-number``s counted per subscription from 1, and
``events-since-subscription-start`` (all events so far, delivered or not). A receiver can tell:
- a **duplicate**: an event number it already has (a redelivery after a lost acknowledgement);
- a **gap**: event numbers skipped when a higher one arrives; and the counter tells how many
  events exist that have not arrived (yet): ``missing`` (zero once delivery has caught up);
- **out of order**: an event number lower than the highest seen that was not seen before (it
  fills a gap late).
HAPI-style deliveries (``PUT <endpoint>/Task/<id>``) carry no event numbers: for those only Task
versions can be compared (an older ``meta.versionId`` after a newer one is out of order).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

TERMINAL = ("completed", "failed", "cancelled", "rejected", "entered-in-error")


def sub_key(reference: str) -> str:
    """``https://m.example/fhir/Subscription/abc`` → ``Subscription/abc``."""
    tail = reference.rstrip("/").split("/")
    return "/".join(tail[-2:]) if len(tail) >= 2 else reference


def _code(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding") or []:
        if coding.get("code"):
            return str(coding["code"])
    return concept.get("text")


def outcome_of(task: dict[str, Any]) -> str | None:
    """The recorded outcome of a Task: the coded ``output`` of type outcome (local code preferred)."""
    for out in task.get("output") or []:
        kind = out.get("type") or {}
        if kind.get("text") != "outcome" and _code(kind) != "outcome":
            continue
        concept = out.get("valueCodeableConcept") or {}
        codings = concept.get("coding") or []
        local = [c for c in codings if "ltfu-outcome" in str(c.get("system", ""))]
        chosen = (local or codings or [{}])[0]
        return chosen.get("code") or concept.get("text")
    return None


@dataclass
class SubscriptionLog:
    key: str
    seen: set[int] = field(default_factory=set)
    highest: int = 0
    #: events-since-subscription-start as last announced by the mediator
    announced: int = 0
    received: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    handshakes: int = 0
    heartbeats: int = 0
    #: every gap noticed when a higher event number arrived: ``{"after", "missing": [first, last], "at"}``
    gaps: list[dict[str, Any]] = field(default_factory=list)
    status: str | None = None

    def missing(self) -> list[int]:
        """Event numbers the mediator counted that never arrived (up to the counter)."""
        top = max(self.highest, self.announced)
        return [n for n in range(1, top + 1) if n not in self.seen]

    def summary(self) -> dict[str, Any]:
        missing = self.missing()
        return {
            "subscription": self.key,
            "status": self.status,
            "events_received": self.received,
            "unique_events": len(self.seen),
            "highest_event": self.highest,
            "events_since_subscription_start": self.announced,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "gaps_seen": len(self.gaps),
            "gap_log": self.gaps[-20:],
            "missing": missing[:100],
            "missing_count": len(missing),
            "handshakes": self.handshakes,
            "heartbeats": self.heartbeats,
        }


@dataclass
class TaskView:
    id: str
    version: int
    resource: dict[str, Any]
    first_seen: float
    #: ``[{"status", "business_status", "version", "at"}]`` in arrival order, one per new version
    timeline: list[dict[str, Any]] = field(default_factory=list)
    encounters: set[str] = field(default_factory=set)


class Ledger:
    """Everything the receiver counts (one per emulator; the ASGI app feeds it)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.subscriptions: dict[str, SubscriptionLog] = {}
        self.tasks: dict[str, TaskView] = {}
        self.by_request: dict[str, str] = {}
        self.counters: Counter = Counter()
        #: ServiceRequest id → (request identifier value, time the list carrying it was accepted)
        self.requests: dict[str, tuple[str, float]] = {}
        self.bundle_ids: Counter = Counter()
        self.last_errors: list[str] = []

    # ------------------------------------------------------------------------------ intake

    def note_error(self, text: str) -> None:
        self.last_errors = [*self.last_errors[-19:], text]

    def _sub(self, key: str) -> SubscriptionLog:
        if key not in self.subscriptions:
            self.subscriptions[key] = SubscriptionLog(key)
        return self.subscriptions[key]

    def notification(self, bundle: dict[str, Any], now: float | None = None) -> dict[str, Any]:
        """Record a Backport IG notification Bundle; what it was (for the log)."""
        now = time.time() if now is None else now
        entries = bundle.get("entry") or []
        if bundle.get("resourceType") != "Bundle" or not entries:
            raise ValueError("not a notification Bundle (resourceType Bundle with entries)")
        params = (entries[0] or {}).get("resource") or {}
        if params.get("resourceType") != "Parameters":
            raise ValueError("the first entry of a notification must be a Parameters (subscription status)")
        values: dict[str, Any] = {}
        events: list[dict[str, Any]] = []
        for p in params.get("parameter") or []:
            name = p.get("name")
            if name == "notification-event":
                parts = {x.get("name"): x for x in p.get("part") or []}
                number = (parts.get("event-number") or {}).get("valueString")
                if number is None or not str(number).isdigit():
                    raise ValueError("notification-event without a numeric event-number")
                events.append(
                    {
                        "number": int(number),
                        "timestamp": (parts.get("timestamp") or {}).get("valueInstant"),
                        "focus": ((parts.get("focus") or {}).get("valueReference") or {}).get("reference"),
                    }
                )
            else:
                values[name] = next((v for k, v in p.items() if k.startswith("value")), None)
        subscription = (values.get("subscription") or {}).get("reference") if values.get("subscription") else None
        kind = values.get("type")
        if not subscription or not kind:
            raise ValueError("subscription status without subscription or type")
        log = self._sub(sub_key(subscription))
        log.status = values.get("status") or log.status
        self.bundle_ids[str(bundle.get("id"))] += 1
        self.counters[f"bundles_{kind}"] += 1
        if kind == "handshake":
            log.handshakes += 1
        elif kind == "heartbeat":
            log.heartbeats += 1
        for ev in events:
            self._event(log, ev["number"], now)
        total = values.get("events-since-subscription-start")
        if total is not None and str(total).isdigit():
            # events the mediator counted beyond the highest received are still owed (queued, or lost)
            log.announced = max(log.announced, int(total))
        for e in entries[1:]:
            resource = (e or {}).get("resource")
            if isinstance(resource, dict):
                self._resource(resource, now)
        return {"subscription": log.key, "type": kind, "events": [e["number"] for e in events]}

    def _event(self, log: SubscriptionLog, number: int, now: float) -> None:
        log.received += 1
        self.counters["events_received"] += 1
        if number in log.seen:
            log.duplicates += 1
            self.counters["duplicates"] += 1
            return
        if number < log.highest:
            log.out_of_order += 1
            self.counters["out_of_order"] += 1
        elif number > log.highest + 1:
            log.gaps.append(
                {"after": log.highest, "missing": [log.highest + 1, number - 1], "at": now}
            )
            self.counters["gaps"] += 1
        log.seen.add(number)
        log.highest = max(log.highest, number)

    def hapi_put(self, res_type: str, res_id: str, resource: dict[str, Any], now: float | None = None) -> None:
        """A HAPI-style ``PUT <endpoint>/<type>/<id>`` of the resource (no event numbers)."""
        now = time.time() if now is None else now
        self.counters["hapi_puts"] += 1
        if resource.get("resourceType") != res_type or str(resource.get("id", res_id)) != res_id:
            raise ValueError(f"body is not {res_type}/{res_id}")
        self._resource({**resource, "id": res_id}, now)

    def _resource(self, resource: dict[str, Any], now: float) -> None:
        rtype = resource.get("resourceType")
        if rtype == "Encounter":
            for ref in resource.get("basedOn") or []:
                task_id = self.by_request.get(str(ref.get("reference", "")).removeprefix("ServiceRequest/"))
                if task_id in self.tasks:
                    self.tasks[task_id].encounters.add(str(resource.get("id")))
            return
        if rtype != "Task" or not resource.get("id"):
            return
        tid = str(resource["id"])
        try:
            version = int((resource.get("meta") or {}).get("versionId") or 0)
        except (TypeError, ValueError):
            version = 0
        view = self.tasks.get(tid)
        if view is None:
            view = self.tasks[tid] = TaskView(tid, version, resource, now)
            focus = str((resource.get("focus") or {}).get("reference", ""))
            if focus.startswith("ServiceRequest/"):
                self.by_request[focus.removeprefix("ServiceRequest/")] = tid
        elif version and version < view.version:
            self.counters["stale_task_versions"] += 1
            return
        elif version and version == view.version and view.timeline:
            self.counters["repeated_task_versions"] += 1
            return
        view.version, view.resource = version, resource
        view.timeline.append(
            {
                "status": resource.get("status"),
                "business_status": _code(resource.get("businessStatus")),
                "version": version,
                "at": now,
            }
        )

    # ---------------------------------------------------------------------------- the view

    def request_sent(self, request_id: str, identifier: str, at: float) -> None:
        self.requests.setdefault(request_id, (identifier, at))

    def stage_latency(self) -> dict[str, dict[str, float]]:
        """Seconds from sending a request to the first notification of each Task status (median, p90)."""
        per_stage: dict[str, list[float]] = {}
        for view in self.tasks.values():
            sr = str((view.resource.get("focus") or {}).get("reference", "")).removeprefix("ServiceRequest/")
            sent = self.requests.get(sr)
            if sent is None:
                continue
            firsts: dict[str, float] = {}
            for step in view.timeline:
                firsts.setdefault(str(step["status"]), step["at"])
            for status, at in firsts.items():
                per_stage.setdefault(status, []).append(max(0.0, at - sent[1]))
        out = {}
        for status, values in per_stage.items():
            values.sort()
            out[status] = {
                "count": len(values),
                "median_s": round(statistics.median(values), 3),
                "p90_s": round(values[min(len(values) - 1, int(0.9 * len(values)))], 3),
            }
        return out

    def report(self) -> dict[str, Any]:
        statuses = Counter(str(v.resource.get("status")) for v in self.tasks.values())
        business = Counter(str(_code(v.resource.get("businessStatus"))) for v in self.tasks.values())
        outcomes = Counter(
            o for v in self.tasks.values() if (o := outcome_of(v.resource)) and v.resource.get("status") in TERMINAL
        )
        subs = [s.summary() for s in self.subscriptions.values()]
        return {
            "uptime_s": round(time.time() - self.started, 3),
            "notifications": dict(self.counters),
            "events_received": sum(s.received for s in self.subscriptions.values()),
            "unique_events": sum(len(s.seen) for s in self.subscriptions.values()),
            "duplicates": sum(s.duplicates for s in self.subscriptions.values()),
            "out_of_order": sum(s.out_of_order for s in self.subscriptions.values()),
            "gaps": sum(len(s.gaps) for s in self.subscriptions.values()),
            "missing_events": sum(len(s.missing()) for s in self.subscriptions.values()),
            "subscriptions": subs,
            "tasks": {
                "count": len(self.tasks),
                "by_status": dict(statuses),
                "by_business_status": dict(business),
                "terminal": sum(statuses[s] for s in TERMINAL),
            },
            "outcomes": dict(outcomes),
            "attempts": sum(len(v.encounters) for v in self.tasks.values()),
            "requests_sent": len(self.requests),
            "stage_latency": self.stage_latency(),
            "last_errors": self.last_errors,
        }

    def task_list(self) -> list[dict[str, Any]]:
        out = []
        for view in self.tasks.values():
            sr = str((view.resource.get("focus") or {}).get("reference", "")).removeprefix("ServiceRequest/")
            out.append(
                {
                    "id": view.id,
                    "request": sr,
                    "request_identifier": (self.requests.get(sr) or (None,))[0],
                    "status": view.resource.get("status"),
                    "business_status": _code(view.resource.get("businessStatus")),
                    "outcome": outcome_of(view.resource),
                    "version": view.version,
                    "attempts": len(view.encounters),
                    "timeline": view.timeline,
                }
            )
        return out
