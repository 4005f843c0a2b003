"""Outbound push as cht-core does it: relevance, mapping, credentials, hash dedupe, queue and retry.

* ``mark_for_outbound`` (API path for records, sentinel path for everything else) calls
  :meth:`Outbound.push` with the current doc: every relevant config is mapped and sent; a success
  appends ``{type:"outbound", name, timestamp, hash}`` to ``completed_tasks`` of the infodoc
  ``<id>-info`` in ``medic-sentinel``; an unchanged payload hash is not sent again.
* Any failure (non-success status, network error/timeout, mapping error, missing credentials) queues
  one ``task:outbound:<id>`` doc (only if none exists) which :meth:`Outbound.retry_queued` works on
  every ``outbound_retry_interval_s``, forever, with the latest revision of the doc.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ltfu.cht.outbound_mapping import (
    JsError,
    OutboundMappingError,
    is_relevant,
    js_json,
    map_outbound,
    payload_hash,
)

from .app_settings import Settings
from .lineage import hydrate
from .store import SENTINEL, VAULT, DocStore

log = logging.getLogger("ltfu.emulators.cht.outbound")


class OutboundError(Exception):
    pass


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def url_join(base: str, path: str) -> str:
    if not path:
        return base
    return base.rstrip("/") + "/" + path.lstrip("/")


@dataclass
class OutboundStats:
    pushed: Counter = field(default_factory=Counter)  # config key -> successful pushes
    skipped_duplicate: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    queued: int = 0
    retry_runs: int = 0
    relevance_errors: int = 0
    last_errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "pushed": dict(self.pushed),
            "skipped_duplicate": dict(self.skipped_duplicate),
            "failed": dict(self.failed),
            "queued": self.queued,
            "retry_runs": self.retry_runs,
            "relevance_errors": self.relevance_errors,
            "last_errors": self.last_errors[-10:],
        }


def credential_id(key: str) -> str:
    from urllib.parse import quote

    return "credential:" + quote(key, safe="")


class Outbound:
    def __init__(
        self,
        store: DocStore,
        settings: Callable[[], Settings],
        *,
        cht_version: str,
        timeout_s: float,
    ) -> None:
        self.store = store
        self.settings = settings
        self.cht_version = cht_version
        self.fetch_mode = _version_tuple(cht_version) >= (4, 17)
        self.timeout_s = timeout_s
        self.stats = OutboundStats()
        self._session: aiohttp.ClientSession | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    # --------------------------------------------------------------------------- credentials

    def set_credential(self, key: str, secret: str) -> None:
        self.store.upsert(VAULT, {"_id": credential_id(key), "password": secret})

    def credential(self, key: Any) -> str:
        doc = self.store.peek(VAULT, credential_id(str(key))) if key is not None else None
        if not doc or not doc.get("password"):
            raise OutboundError(
                f"Credentials for '{key}' have not been configured. See the Outbound documentation."
            )
        return doc["password"]

    # --------------------------------------------------------------------------------- sending

    def relevant_keys(self, hydrated: dict) -> list[str]:
        keys = []
        for key, conf in self.settings().outbound.items():
            if not isinstance(conf, dict):
                continue
            try:
                if is_relevant(hydrated, conf.get("relevant_to") or "false"):
                    keys.append(key)
            except JsError as exc:
                self.stats.relevance_errors += 1
                self._note(f"relevant_to of '{key}' threw on '{hydrated.get('_id')}': {exc}")
        return keys

    def _headers(self, conf: dict) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.fetch_mode:  # Node's fetch (undici) defaults, as cht-core 5.2's pushes arrived (recorded)
            headers.update({"accept-language": "*", "sec-fetch-mode": "cors", "user-agent": "node",
                            "accept-encoding": "gzip, deflate"})
        auth = (conf.get("destination") or {}).get("auth")
        if not auth:
            return headers
        if not isinstance(auth, dict) or not auth.get("type"):
            raise OutboundError("No auth.type, either declare the type or omit the auth property")
        kind = str(auth["type"]).lower()
        if kind == "basic":
            secret = self.credential(auth.get("password_key"))
            token = base64.b64encode(f"{auth.get('username')}:{secret}".encode()).decode()
            headers["authorization"] = f"Basic {token}"
        elif kind == "header":
            if str(auth.get("name", "")).lower() != "authorization":
                raise OutboundError(f"Unsupported header name '{auth.get('name')}'. Supported: authorization")
            headers["authorization"] = self.credential(auth.get("value_key"))
        else:
            raise OutboundError(f"Invalid auth type '{auth['type']}'. Supported: basic, header")
        return headers

    async def _send(self, payload: Any, conf: dict) -> None:
        dest = conf.get("destination") or {}
        url = url_join(str(dest.get("base_url", "")), str(dest.get("path", "")))
        headers = self._headers(conf)
        body = js_json(payload).encode("utf-8", "surrogatepass")
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with self._http().post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=self.fetch_mode
            ) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise OutboundError(f"request to {url} failed: {exc!r}") from exc
        ok = 200 <= status < 300 or (self.fetch_mode and 300 < status < 399)
        if not ok:
            raise OutboundError(f"server responded with {status}")

    def _info(self, doc_id: str) -> dict:
        info = self.store.get(SENTINEL, f"{doc_id}-info")
        if info is None:
            info = {
                "_id": f"{doc_id}-info",
                "type": "info",
                "doc_id": doc_id,
                "initial_replication_date": "unknown",
                "latest_replication_date": "unknown",
            }
        return info

    async def send_one(self, key: str, conf: dict, hydrated: dict, info: dict) -> bool:
        """outbound.send: ``True`` sent, ``False`` duplicate; raises on failure. Updates ``info``."""
        payload = map_outbound(hydrated, conf.get("mapping") or {}, key)
        digest = payload_hash(payload)
        last = None
        for task in info.get("completed_tasks") or []:
            if isinstance(task, dict) and task.get("type") == "outbound" and task.get("name") == key:
                last = task
        if last is not None and last.get("hash") == digest:
            self.stats.skipped_duplicate[key] += 1
            return False
        await self._send(payload, conf)
        info.setdefault("completed_tasks", []).append(
            {"type": "outbound", "name": key, "timestamp": int(time.time() * 1000), "hash": digest}
        )
        self.stats.pushed[key] += 1
        return True

    def _doc_lock(self, doc_id: str) -> asyncio.Lock:
        if len(self._locks) > 1000:
            for k in [k for k, v in self._locks.items() if not v.locked()]:
                del self._locks[k]
        return self._locks.setdefault(doc_id, asyncio.Lock())

    def _note(self, message: str) -> None:
        log.warning(message)
        self.stats.last_errors.append(message)
        del self.stats.last_errors[:-50]

    async def push(self, doc: dict, hydrated: dict | None = None) -> list[str]:
        """mark_for_outbound on ``doc`` (saved or not yet saved). Returns the keys that failed."""
        if not self.settings().outbound:
            return []
        hydrated = hydrated if hydrated is not None else hydrate(self.store, self.settings(), doc)
        keys = self.relevant_keys(hydrated)
        if not keys:
            return []
        doc_id = doc["_id"]
        failed: list[str] = []
        async with self._doc_lock(doc_id):
            info = self._info(doc_id)
            changed = False
            for key in keys:
                try:
                    changed |= await self.send_one(key, self.settings().outbound[key], hydrated, info)
                except (OutboundError, OutboundMappingError) as exc:
                    self.stats.failed[key] += 1
                    self._note(f"Failed to push {doc_id} to {key}: {exc}")
                    failed.append(key)
            if changed or self.store.peek(SENTINEL, info["_id"]) is None:
                self.store.upsert(SENTINEL, info)
            if failed and self.store.peek(SENTINEL, f"task:outbound:{doc_id}") is None:
                self.store.upsert(
                    SENTINEL,
                    {
                        "_id": f"task:outbound:{doc_id}",
                        "type": "task:outbound",
                        "created": int(time.time() * 1000),
                        "doc_id": doc_id,
                        "queue": failed,
                    },
                )
                self.stats.queued += 1
        return failed

    def queued(self) -> list[dict]:
        return [d for d in self.store.iter_docs(SENTINEL) if d.get("type") == "task:outbound"]

    async def retry_queued(self) -> None:
        """One run of sentinel's outbound schedule over every queued task."""
        self.stats.retry_runs += 1
        configs = self.settings().outbound
        for task in sorted(self.queued(), key=lambda t: t.get("created", 0)):
            task = dict(task)
            doc = self.store.get("medic", task.get("doc_id", ""))
            if doc is None:
                self.store.delete(SENTINEL, task["_id"])
                continue
            hydrated = hydrate(self.store, self.settings(), doc)
            queue = [k for k in task.get("queue") or [] if k in configs]
            async with self._doc_lock(doc["_id"]):
                info = self._info(doc["_id"])
                changed = False
                for key in list(queue):
                    try:
                        changed |= await self.send_one(key, configs[key], hydrated, info)
                    except (OutboundError, OutboundMappingError) as exc:
                        self.stats.failed[key] += 1
                        self._note(f"Retry of {doc['_id']} to {key} failed: {exc}")
                        continue
                    # cht-core removes the key with splice(key, 1) on a string key: the first element goes
                    queue.pop(0)
                if changed:
                    self.store.upsert(SENTINEL, info)
                if queue:
                    if queue != task.get("queue"):
                        task["queue"] = queue
                        self.store.upsert(SENTINEL, task)
                else:
                    self.store.delete(SENTINEL, task["_id"])
