"""A small CHT on loopback that is slow and loses answers: the CHT side of the crash tests.

It speaks the few CHT calls the submitter makes, with the shapes of reference/cht.md §2 and of the
recordings in reference/cht-recordings (records.json, find.json): ``GET /medic/<id>`` (persons and
stored records), ``POST /api/v2/records`` (JSON form → ``{"success": true, "id"}``, form upper-cased)
and ``POST /medic/_find`` (implicit ``$eq`` on dotted fields, ``limit``). Every answer comes after a
random 0-300 ms; a records POST sometimes stores the record and then drops the connection without
answering, as a CHT whose reply is lost on the way would.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.server import free_port


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client killed mid-request resets its connection: expected here, not worth a traceback."""


class FlakyCht:
    def __init__(self, *, drop_after_store: float = 0.15, max_delay_s: float = 0.3, seed: int = 12) -> None:
        self.persons: dict[str, dict[str, Any]] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.drop_after_store = drop_after_store
        self.max_delay_s = max_delay_s
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.posts_in_flight: Counter[str] = Counter()  # record POSTs CHT holds, per CHT user (per process)
        self.dropped = 0
        self.log: list[tuple[float, str, str, Any, str]] = []  # stored records: when, user, form, case, id
        self.not_found: list[str] = []  # paths answered 404 (none expected: every person is known)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = _QuietServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FlakyCht:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_person(self, name: str) -> str:
        pid = str(uuid.uuid4())
        self.persons[pid] = {"_id": pid, "_rev": "1-a", "type": "person", "name": name, "patient_id": None}
        return pid

    def count(self, form: str) -> Counter[str]:
        """Stored records of ``form`` per ``fields.case_ref``."""
        with self.lock:
            return Counter(r["fields"].get("case_ref") for r in self.records.values() if r["form"] == form)

    def _pause(self) -> None:
        with self.lock:
            delay = self.random.uniform(0, self.max_delay_s)
        time.sleep(delay)

    def _store(self, body: dict[str, Any]) -> str:
        meta = body.get("_meta") or {}
        record_id = str(uuid.uuid4())
        fields = {k.lower(): v for k, v in body.items() if k != "_meta"}
        with self.lock:
            self.records[record_id] = {
                "_id": record_id,
                "_rev": "1-r",
                "type": "data_record",
                "form": str(meta.get("form", "")).upper(),
                "errors": [],
                "tasks": [],
                "fields": fields,
                "reported_date": int(time.time() * 1000),
            }
        return record_id

    def _find(self, body: dict[str, Any]) -> dict[str, Any]:
        selector, limit = body.get("selector") or {}, int(body.get("limit", 25))

        def value(doc: dict[str, Any], path: str) -> Any:
            for part in path.split("."):
                doc = doc.get(part) if isinstance(doc, dict) else None  # type: ignore[assignment]
            return doc

        with self.lock:
            docs = [d for d in self.records.values() if all(value(d, k) == v for k, v in selector.items())]
        return {"docs": docs[:limit], "warning": "No matching index found, create an index to optimize query time."}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        cht = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                return

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the mediator was killed while we were answering
                    self.close_connection = True

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"null")

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                cht._pause()
                doc_id = self.path.removeprefix("/medic/")
                with cht.lock:
                    doc = cht.persons.get(doc_id) or cht.records.get(doc_id)
                if doc is None:
                    with cht.lock:
                        cht.not_found.append(self.path)
                    self._answer(404, {"error": "not_found", "reason": "missing"})
                else:
                    self._answer(200, doc)

            def do_POST(self) -> None:  # noqa: N802
                body = self._body()
                if self.path == "/medic/_find":
                    cht._pause()
                    self._answer(200, cht._find(body))
                    return
                if self.path != "/api/v2/records":
                    self._answer(404, {"error": "not_found"})
                    return
                user = base64.b64decode(self.headers.get("Authorization", "")[6:] or b"").decode().split(":")[0]
                with cht.lock:
                    cht.posts_in_flight[user] += 1
                try:
                    cht._pause()
                    record_id = cht._store(body)
                    with cht.lock:
                        cht.log.append((time.time(), user, str((body.get("_meta") or {}).get("form")),
                                        body.get("case_ref"), record_id))
                    cht._pause()
                    with cht.lock:
                        drop = cht.random.random() < cht.drop_after_store
                        cht.dropped += drop
                    if drop:  # stored, but the answer never leaves
                        self.close_connection = True
                        return
                    self._answer(200, {"success": True, "id": record_id})
                finally:
                    with cht.lock:
                        cht.posts_in_flight[user] -= 1

        return Handler
