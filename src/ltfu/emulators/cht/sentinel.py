"""Sentinel: follows the ``medic`` changes feed and runs the async transitions we emulate.

* ``generate_shortcode_on_contacts`` (or the deprecated ``generate_patient_id_on_people``): a contact
  without ``patient_id`` (person) / ``place_id`` (place) gets a shortcode in a new revision.
* ``mark_for_outbound``: outbound push of the hydrated doc (after the shortcode, so the first push of a
  new person already carries ``patient_id``). Re-runs on every revision; the payload hash dedupes.
* The outbound retry schedule runs every ``outbound_retry_interval_s``.
* Infodocs ``<id>-info`` in ``medic-sentinel`` as 5.2 writes them: created by sentinel with
  ``"unknown"`` replication dates (ISO dates when the doc was written through ``/medic``),
  ``transitions`` ({} until a transition changes the doc), ``completed_tasks`` from outbound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

from .app_settings import Settings
from .lineage import hydrate
from .outbound import Outbound
from .store import MEDIC, SENTINEL, Conflict, DocStore, Entry

log = logging.getLogger("ltfu.emulators.cht.sentinel")

SEQ_DOC = "_local/sentinel-meta-data"
BUILD_DOCS = ("resources", "service-worker-meta", "settings")
SHORTCODE_LENGTH_DOC = "shortcode-id-length"
MIN_SHORTCODE_LENGTH = 5
MAX_SHORTCODE_LENGTH = 13


def iso_now() -> str:
    """``new Date().toISOString()``."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def add_check_digit(digits: str) -> str:
    """Weights ``len .. 2`` from the left, sum mod 11, 10 -> 0."""
    offset = len(digits) + 1
    total = sum(int(d) * (offset - i) for i, d in enumerate(digits))
    result = total % 11
    return digits + str(0 if result == 10 else result)


def is_valid_shortcode(code: str) -> bool:
    return code.isdigit() and len(code) >= 2 and add_check_digit(code[:-1]) == code


class Sentinel:
    def __init__(
        self,
        store: DocStore,
        settings: Callable[[], Settings],
        outbound: Outbound,
        *,
        delay_s: float,
        retry_interval_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.outbound = outbound
        self.delay_s = delay_s
        self.retry_interval_s = retry_interval_s
        self.rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.processed = 0
        self.shortcodes = 0
        store.on_change(self._on_change)

    def _on_change(self, db: str, entry: Entry) -> None:
        if db == MEDIC:
            self._wake.set()

    @property
    def seq(self) -> int:
        meta = self.store.peek(SENTINEL, SEQ_DOC)
        return int(meta.get("processed_seq", 0)) if meta else 0

    def pending(self) -> int:
        return len(self.store.changes(MEDIC, self.seq))

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._follow(), name="cht-sentinel"),
            asyncio.create_task(self._retry_schedule(), name="cht-outbound-retry"),
        ]
        self._wake.set()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    async def _follow(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            try:
                await self.process_pending()
            except Exception:  # keep following; a bad doc must not stop the feed
                log.exception("sentinel failed")
                await asyncio.sleep(1)
                self._wake.set()

    async def process_pending(self, stop_before: str | None = None) -> None:
        """Work through the feed (``stop_before``: stay behind that doc's first change, as a sentinel that
        lags does; replays of recorded races use it)."""
        for entry in self.store.changes(MEDIC, self.seq):
            if entry.id == stop_before:
                return
            if not entry.deleted:
                await self.process(entry.id)
            self.store.upsert(SENTINEL, {"_id": SEQ_DOC, "processed_seq": entry.seq})

    async def _retry_schedule(self) -> None:
        while True:
            await asyncio.sleep(self.retry_interval_s)
            try:
                await self.outbound.retry_queued()
            except Exception:
                log.exception("outbound retry failed")

    # ---------------------------------------------------------------------------------- infodocs

    def record_write(self, doc_id: str) -> None:
        """The api's infodoc bookkeeping for a doc written through ``/medic`` (replication dates)."""
        if doc_id.startswith(("_design/", "_local/")):
            return
        info = self.store.get(SENTINEL, f"{doc_id}-info")
        now = iso_now()
        if info is None:
            info = {"_id": f"{doc_id}-info", "type": "info", "doc_id": doc_id, "initial_replication_date": now}
        elif info.get("initial_replication_date") in (None, "unknown"):
            info["initial_replication_date"] = now
        info["latest_replication_date"] = now
        self.store.upsert(SENTINEL, info)

    def _info_for_transitions(self, doc_id: str) -> dict:
        info = self.store.get(SENTINEL, f"{doc_id}-info")
        if info is None:
            info = {
                "_id": f"{doc_id}-info",
                "type": "info",
                "doc_id": doc_id,
                "initial_replication_date": "unknown",
                "latest_replication_date": "unknown",
                "transitions": {},
            }
            self.store.upsert(SENTINEL, info)
        elif "transitions" not in info:
            info["transitions"] = {}
            self.store.upsert(SENTINEL, info)
        return info

    # ---------------------------------------------------------------------------------- transitions

    async def process(self, doc_id: str) -> None:
        if doc_id.startswith(("_design/", "_local/")) or doc_id.endswith("-info"):
            return
        entry = self.store.entry(MEDIC, doc_id)
        doc = self.store.get(MEDIC, doc_id)
        if doc is None or entry is None or doc_id in BUILD_DOCS or doc.get("type") in ("user-settings",):
            return
        self._info_for_transitions(doc_id)
        settings = self.settings()
        self.processed += 1
        changed = False
        if (
            settings.transition_enabled("generate_shortcode_on_contacts")
            or settings.transition_enabled("generate_patient_id_on_people")
        ) and settings.is_contact(doc):
            key = "patient_id" if settings.is_person(doc) else "place_id"
            if not doc.get(key):
                doc[key] = self.new_shortcode()
                changed = True
                self.shortcodes += 1
        if settings.transition_enabled("mark_for_outbound") and settings.outbound:
            await self.outbound.push(doc, hydrate(self.store, settings, doc))
        if changed:
            try:
                self.store.put(MEDIC, doc)
            except Conflict:
                log.info("sentinel lost a race on %s; the next change processes it", doc_id)
                return
            info = self._info_for_transitions(doc_id)
            info["transitions"]["generate_shortcode_on_contacts"] = {
                "last_rev": entry.rev,
                "seq": entry.seq,
                "ok": True,
                "run_date": iso_now(),
            }
            self.store.upsert(SENTINEL, info)

    def _code_taken(self, code: str) -> bool:
        return any(code in (d.get("patient_id"), d.get("place_id")) for d in self.store.iter_docs(MEDIC))

    def new_shortcode(self) -> str:
        meta = self.store.peek(SENTINEL, SHORTCODE_LENGTH_DOC) or {}
        length = int(meta.get("current_length", MIN_SHORTCODE_LENGTH))
        while True:
            for _ in range(5):
                digits = "".join(str(self.rng.randrange(10)) for _ in range(length - 1))
                code = add_check_digit(digits)
                if not self._code_taken(code):
                    return code
            if length >= MAX_SHORTCODE_LENGTH:
                raise RuntimeError("no free shortcode")
            length += 1
            self.store.upsert(
                SENTINEL,
                {"_id": SHORTCODE_LENGTH_DOC, "current_length": length, "updated": int(time.time() * 1000)},
            )
