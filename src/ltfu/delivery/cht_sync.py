"""Sync the person and place index from CHT's CouchDB ``_changes`` feed, incrementally from a stored seq.

Each page is indexed and its ``last_seq`` stored in one transaction, so a crash re-reads at most one page
(indexing is idempotent). Index writers serialise on a lock (services/cht_index.py).

A sync from ``0`` (the first one, or ``--full``) is *staged*: its pages go to a staging table (append-only,
no index to rewrite) with the feed's sequence under ``medic-staging``, and once the feed is read they are
merged into the index in key order in one transaction, with ``medic`` set to where the feed ended. A crash
or a restart resumes the staging from its sequence; pushes that arrive meanwhile go to the index at once
and win over the staged version of their person (services/cht_index.merge_staged). Until the merge the
index holds what it held before (and the places).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from urllib.parse import quote

from ltfu.cht.client import ChtClient
from ltfu.services.cht_index import changed_docs, index_docs, merge_staged
from ltfu.settings import Settings
from ltfu.store.cht_index import vacuum_analyze
from ltfu.store.db import Database
from ltfu.store.uow import unit_of_work

log = logging.getLogger("ltfu.cht_sync")
SEQ_NAME = "medic"
STAGE_NAME = "medic-staging"  # where a staged full build stopped reading the feed
ANALYZE_AFTER = 10_000  # persons indexed by one sync from which the planner's statistics are refreshed


class SyncError(Exception):
    pass


@dataclass
class SyncResult:
    pages: int = 0
    changes: int = 0
    persons: int = 0
    places: int = 0
    removed: int = 0
    seq: str = "0"
    merged: int | None = None  # a staged build: the persons merged into the index at its end
    merge_s: float = 0.0


class ChtSync:
    def __init__(self, db: Database, settings: Settings, client: ChtClient | None = None, *, page: int = 500) -> None:
        if client is None:
            if not settings.cht_url:
                raise SyncError("LTFU_CHT_URL is not set")
            client = ChtClient(
                settings.cht_url,
                settings.cht_username,
                settings.cht_password.get_secret_value() if settings.cht_password else None,
                verify_tls=settings.cht_verify_tls,
                timeout_s=settings.cht_timeout_s,
                max_concurrency=1,
                max_rate_per_s=settings.cht_max_rate_per_s,
            )
        self.db, self.settings, self.client, self.page = db, settings, client, page

    async def sync_once(self, *, full: bool = False) -> SyncResult:
        """Read the feed to its end (from ``0`` when ``full``), indexing every person and place; staged when
        it reads from ``0`` or resumes a staged build."""
        result = SyncResult()
        async with unit_of_work(self.db) as uow:
            staging = await uow.cht_index.sync_seq(STAGE_NAME)
            seq = await uow.cht_index.sync_seq(SEQ_NAME)
            if staging is None and (full or seq is None):
                await uow.cht_index.clear_stage()
                await uow.cht_index.set_sync_seq(STAGE_NAME, "0")
                staging = "0"
        stage = staging is not None
        result.seq = staging if staging is not None else (seq or "0")
        while True:
            path = f"/medic/_changes?include_docs=true&limit={self.page}&since={quote(result.seq, safe='')}"
            response = await self.client.request("GET", path)
            if response.status != 200 or not isinstance(response.body, dict):
                raise SyncError(f"CHT _changes answered {response.status}")
            rows = response.body.get("results") or []
            last = str(response.body.get("last_seq", result.seq))
            async with unit_of_work(self.db) as uow:
                stats = await index_docs(uow, changed_docs(rows), stage=stage)
                await uow.cht_index.set_sync_seq(STAGE_NAME if stage else SEQ_NAME, last)
            result.pages += 1
            result.changes += len(rows)
            result.persons += stats.persons
            result.places += stats.places
            result.removed += stats.removed
            result.seq = last
            if len(rows) < self.page:
                if stage:
                    start = time.perf_counter()
                    async with unit_of_work(self.db) as uow:
                        result.merged = await merge_staged(uow)
                        await uow.cht_index.set_sync_seq(SEQ_NAME, last)
                        await uow.cht_index.forget_sync_seq(STAGE_NAME)
                    result.merge_s = time.perf_counter() - start
                if result.persons >= ANALYZE_AFTER:
                    await vacuum_analyze(self.db)
                return result

    async def run(self, stop: asyncio.Event) -> None:
        """The background loop of ``ltfu serve``: a sync every ``cht_sync_interval_s``; failures logged, retried."""
        while not stop.is_set():
            try:
                result = await self.sync_once()
                if result.changes:
                    log.info(
                        "cht sync: %s changes, %s persons, %s places, seq %s",
                        result.changes,
                        result.persons,
                        result.places,
                        result.seq,
                    )
            except Exception as exc:  # noqa: BLE001 - CHT down or a bad page: try again next round
                log.warning("cht sync failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.cht_sync_interval_s)
