"""Contract: every exchange recorded against a real CHT 5.2 (``../shared/reference/cht-recordings/``), replayed
against the CHT emulator on loopback, answers with the recorded status, body structure and headers.

The files are replayed in the order they were recorded, against one emulator running the configuration the
real CHT ran (ltfu's ``cht-config/app_settings`` as its settings readback shows it), with outbound pointed at
a local receiver that answers as the recording's receiver did. Sentinel runs between exchanges, except where
the recording shows a request that raced it. The only tolerated differences are in
``allowed_differences.py``, each with its reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ltfu.emulators.cht import ChtEmulatorConfig
from tests.contract.allowed_differences import ALLOWED, Allowed
from tests.contract.recordings import ORDER, REPO, Bindings, compare, load, recordings_dir
from tests.emulators.cht.emu_support import Running, free_port, serve

ADMIN = ("medic", "contract-admin-pass-1")
ACTORS = {
    "admin": ADMIN,
    "mediator": ("ltfu_mediator", "Mediator-Passw0rd-2026"),  # created in users.json, as recorded
    "chw": ("chw_nyalenda", "Chw-Passw0rd-2026"),
    "bad": ("ltfu_mediator", "not-the-password"),
}
#: who sent each request (the recordings redact Authorization; the notes say who it was)
AS: dict[tuple[str, int], str] = {
    **{("records.json", i): "mediator" for i in (4, 5, 6, 7, 8, 9, 10, 11, 15)},
    ("records.json", 12): "bad",
    ("records.json", 13): "bad",
    ("records.json", 19): "bad",
    ("records.json", 14): "chw",
    ("find.json", 0): "mediator",
    ("find.json", 5): "chw",
    ("changes.json", 1): "mediator",
    ("changes.json", 6): "chw",
    ("users.json", 13): "chw",
    ("users.json", 14): "mediator",
    ("outbound.json", 13): "chw",
    ("outbound.json", 18): "chw",
}
#: the same thing under another mask in an earlier file (masks are per file); found by name and lineage
ALIASES: dict[str, dict[str, tuple[str, str]]] = {
    "people.json": {
        "<id:1>": ("places.json", "<id:3>"),
        "<id:5>": ("places.json", "<id:2>"),
        "<id:6>": ("places.json", "<id:1>"),
        "<shortcode:3>": ("places.json", "<shortcode:1>"),
        "<shortcode:4>": ("places.json", "<shortcode:2>"),
        "<shortcode:5>": ("places.json", "<shortcode:3>"),
    },
    "users.json": {
        "<id:1>": ("places.json", "<id:3>"),
        "<id:3>": ("places.json", "<id:2>"),
        "<id:5>": ("places.json", "<id:1>"),
        "<shortcode:2>": ("places.json", "<shortcode:3>"),
        "<shortcode:3>": ("places.json", "<shortcode:2>"),
    },
    "records.json": {"<id:1>": ("people.json", "<id:2>"), "<shortcode:1>": ("people.json", "<shortcode:1>")},
    "find.json": {
        "<id:1>": ("people.json", "<id:2>"),
        "<id:2>": ("records.json", "<id:2>"),
        "<id:3>": ("records.json", "<id:3>"),
        "<id:4>": ("records.json", "<id:4>"),
        "<id:5>": ("records.json", "<id:6>"),
        "<id:6>": ("records.json", "<id:7>"),
    },
    "outbound.json": {
        "<id:1>": ("people.json", "<id:2>"),
        "<id:2>": ("places.json", "<id:3>"),
        "<id:3>": ("places.json", "<id:2>"),
        "<id:4>": ("places.json", "<id:1>"),
        "<id:5>": ("people.json", "<id:3>"),
        "<id:6>": ("people.json", "<id:4>"),
        "<id:7>": ("people.json", "<id:7>"),
        "<id:8>": ("users.json", "<id:2>"),
        "<id:9>": ("users.json", "<id:4>"),
    },
}
#: "One early GET raced sentinel (rev 1) and is labelled": sentinel stays behind that doc until then
RACED = {("places.json", 11): "<id:3>"}
HEADERS = ("content-type", "location", "set-cookie", "www-authenticate")
PUSH_HEADERS = ("authorization", "accept", "content-type", "accept-language", "sec-fetch-mode", "user-agent")


@dataclass
class Receiver:
    """The recording's outbound receiver: 200 ``{"ok":true}``, or 500 ``{"error":"boom"}`` while failing."""

    url: str = ""
    failing: bool = False
    pushes: list[dict] = field(default_factory=list)


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()

    async def handle(request: web.Request) -> web.Response:
        status, body = (500, {"error": "boom"}) if rec.failing else (200, {"ok": True})
        rec.pushes.append(
            {
                "path": request.path,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": json.loads(await request.read()),
                "status": status,
            }
        )
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rec.url = f"http://127.0.0.1:{port}"
    try:
        yield rec
    finally:
        await runner.cleanup()


def recorded_settings(receiver_url: str) -> dict[str, Any]:
    """What the real CHT ran: ltfu's base settings with the keys its settings readback shows."""
    readback = load("records.json", receiver_url)["exchanges"][3]["response"]["body"]
    settings = json.loads((REPO / "cht-config" / "app_settings" / "base_settings.json").read_text())
    return {**settings, **readback}


@dataclass
class Replay:
    run: Running
    rec: Receiver
    settings: dict[str, Any]
    bindings: dict[str, Bindings] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)
    used: set[Allowed] = field(default_factory=set)
    replayed: int = 0
    push_cursor: int = 0

    async def settle(self, file: str = "", index: int = -1) -> None:
        sentinel = self.run.emu.sentinel
        held = [self.bindings[file].values.get(token) for (f, i), token in RACED.items() if f == file and index <= i]
        hold = next((h for h in held if h), None)
        for _ in range(20):
            if not sentinel.pending():
                return
            await sentinel.process_pending(stop_before=hold)
            if hold:
                return

    def note(self, file: str, index: int, path: str, diffs: list[str]) -> None:
        for d in diffs:
            allowed = next((a for a in ALLOWED if a.covers(file, index, path, d)), None)
            if allowed is None:
                self.differences.append(f"{file}[{index}] {path}: {d}")
            else:
                self.used.add(allowed)

    def current_rev(self, doc_id: Any) -> str:
        entry = self.run.emu.store.entry("medic", str(doc_id))
        assert entry is not None, f"no doc {doc_id} to save again"
        return entry.rev

    async def send(self, file: str, index: int, request: dict, b: Bindings) -> tuple[int, Any, Any]:
        path = b.fill(request["path"])
        headers = {k: v for k, v in (request.get("headers") or {}).items() if k.lower() != "authorization"}
        if "Authorization" in (request.get("headers") or {}):
            user, password = ACTORS[AS.get((file, index), "admin")]
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        body = request.get("body")
        if isinstance(body, str) and body.startswith("<ltfu cht-config app_settings"):
            data: bytes | None = json.dumps(self.settings).encode()
        elif isinstance(body, str):
            data = body.encode()
        elif body is None:
            data = None
        else:
            data = json.dumps(b.fill(body, self.current_rev)).encode()
        async with self.run.http.request(
            request["method"], self.run.url + path, data=data, headers=headers, allow_redirects=False
        ) as resp:
            raw = await resp.read()
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                parsed = raw.decode()
            return resp.status, parsed, resp.headers

    async def exchange(self, file: str, index: int, ex: dict, b: Bindings) -> None:
        await self.settle(file, index)
        path = ex["request"]["path"]
        if (file, index) == ("changes.json", 4):  # "a record was POSTed to /api/v2/records 1.5 s into the wait"
            feed = asyncio.create_task(self.send(file, index, ex["request"], b))
            await asyncio.sleep(0.5)
            await self.send(
                "changes.json",
                -1,
                {
                    "method": "POST",
                    "path": "/api/v2/records",
                    "headers": {"Accept": "application/json", "Content-Type": "application/json", "Authorization": "x"},
                    "body": {
                        "_meta": {"form": "INTEROP_FOLLOW_UP"},
                        "patient_uuid": "lp-patient",
                        "case_ref": "sr-longpoll",
                    },
                },
                b,
            )
            status, body, headers = await feed
        else:
            status, body, headers = await self.send(file, index, ex["request"], b)
        want = ex["response"]
        diffs = [] if status == want["status"] else [f"status {status} where the recording has {want['status']}"]
        diffs += compare(want["body"], body, b)
        recorded = {k.lower(): v for k, v in (want.get("headers") or {}).items()}
        for name in HEADERS:
            if name in recorded:
                got = headers.get(name)
                diffs += (
                    [f"header {d}" for d in compare(recorded[name], got, b, name)]
                    if got is not None
                    else [f"header {name}: absent where the recording has {recorded[name]!r}"]
                )
            elif name in headers and name != "content-type":
                diffs.append(f"header {name}: {headers[name]!r} not in the recording")
        if re.search(r"\bAccept\b", recorded.get("vary", "").replace("Accept-Encoding", "")) and not re.search(
            r"\bAccept\b", (headers.get("vary") or "").replace("Accept-Encoding", "")
        ):
            diffs.append(f"header vary: {headers.get('vary')!r} does not name Accept")
        self.note(file, index, path, diffs)
        self.replayed += 1

    async def push(self, file: str, index: int, ex: dict, b: Bindings) -> None:
        await self.settle()
        for _ in range(100):
            if len(self.rec.pushes) > self.push_cursor:
                break
            await asyncio.sleep(0.05)
        else:
            self.note(file, index, ex["request"]["path"], ["no push arrived where the recording has one"])
            return
        got = self.rec.pushes[self.push_cursor]
        self.push_cursor += 1
        want = ex["request"]
        diffs = [] if got["path"] == want["path"] else [f"pushed to {got['path']}"]
        diffs += compare(want["body"], got["body"], b)
        for name in PUSH_HEADERS:
            if name in want["headers"]:
                diffs += [f"push header {d}" for d in compare(want["headers"][name], got["headers"].get(name), b, name)]
        if got["status"] != ex["response"]["status"]:
            diffs.append(f"receiver answered {got['status']}: the replay's receiver mode is off")
        self.note(file, index, want["path"], diffs)
        self.replayed += 1

    async def section(self, file: str, index: int, ex: dict, state: dict) -> None:
        """A step of outbound.json: check the pushes of the step before, set the receiver for this one."""
        await self.settle()
        if state.get("step") is not None:
            got = len(self.rec.pushes) - state["since"]
            if got != state["expected"]:
                self.differences.append(
                    f"{file}: step {state['step']!r} got {got} pushes, the recording {state['expected']}"
                )
        note = ex["note"]
        expected = int(re.search(r"receiver got (\d+) request", note).group(1))
        if index == 0:  # the pushes of the earlier files
            if len(self.rec.pushes) != expected:
                self.differences.append(
                    f"{file}: {len(self.rec.pushes)} pushes while places/people/users were "
                    f"replayed, the recording {expected}"
                )
            return
        state.update(step=note, since=len(self.rec.pushes), expected=expected)
        if "answers 500" in note:
            self.rec.failing = True
        elif self.rec.failing:
            self.rec.failing = False
            if "scheduled retry" in note:  # sentinel's 5-minute outbound schedule, run now
                await self.run.emu.outbound.retry_queued()

    async def replay(self, file: str) -> int:
        data = load(file, self.rec.url)
        b = self.bindings[file] = Bindings(file)
        for token, (other, theirs) in ALIASES.get(file, {}).items():
            assert theirs in self.bindings[other].values, f"{other} never showed {theirs}"
            b.values[token] = self.bindings[other].values[theirs]
        state: dict = {}
        entries = data["exchanges"]
        for index, ex in enumerate(entries):
            kind = ex.get("kind")
            if kind == "section":
                await self.section(file, index, ex, state)
            elif kind == "outbound_push_received":
                await self.push(file, index, ex, b)
            elif kind != "sentinel_log":  # log lines: what sentinel wrote, not an exchange
                await self.exchange(file, index, ex, b)
        if state.get("step") is not None:
            await self.section(file, len(entries), {"note": "end: receiver got 0 request(s)"}, state)
        return len(entries)


async def test_every_recorded_exchange_replays_against_the_emulator(tmp_path: Path) -> None:
    assert recordings_dir().is_dir()  # missing recordings fail here, loudly
    async with receiver() as rec:
        settings = recorded_settings(rec.url)
        path = tmp_path / "app_settings.json"
        path.write_text(json.dumps(settings))
        config = ChtEmulatorConfig(
            app_settings_path=path,
            cht_version="5.2.0",
            admin_username=ADMIN[0],
            admin_password=ADMIN[1],
            credentials={"ltfu-mediator": "s3cret-mediator"},
            sentinel_delay_s=3600.0,
            outbound_retry_interval_s=3600.0,
            timezone="UTC",
        )
        config.chw.enabled = False
        async with serve(config) as run:
            replay = Replay(run, rec, settings)
            total = 0
            for file in ORDER:
                total += await replay.replay(file)
    assert total == 123, "the recordings hold 123 entries"
    assert not replay.differences, "the emulator departs from the real CHT:\n" + "\n".join(replay.differences)
    stale = [f"{a.file} {a.exchanges}: {a.reason}" for a in ALLOWED if a not in replay.used and not a.by_chance]
    assert not stale, "allowed differences that no longer occur (remove them):\n" + "\n".join(stale)


def test_missing_recordings_fail_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LTFU_CHT_RECORDINGS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="CHT recordings missing"):
        recordings_dir()
