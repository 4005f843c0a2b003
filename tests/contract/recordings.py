"""The real CHT 5.2 recordings (``../shared/reference/cht-recordings/``) and how to compare against them.

A recorded value may be masked (README of the recordings): ``<id:N>``, ``<shortcode:N>`` and ``<seq:N>``
stand for one value each within a file (the same N is the same value, different Ns differ), ``<ts:ms>`` is
a number, ``<ts:iso>`` an ISO instant, ``N-<rev>`` a revision of generation N, ``<count>`` a number, and
``<hash>``/``<salt>``/``<derived_key>``/``<etag>``/``<len>`` are any string. :class:`Bindings` learns the
real values as the replay goes and :func:`compare` reports every difference as a path and a reason.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ORDER = ("places.json", "people.json", "users.json", "records.json", "find.json", "changes.json", "outbound.json")
RECORDED_RECEIVER = "http://127.0.0.1:8099"


def recordings_dir() -> Path:
    """Where the recordings are: ``$LTFU_CHT_RECORDINGS`` or ``../shared`` beside the clone. Missing
    recordings are an error (CI has ``../shared``), never a skip."""
    configured = os.environ.get("LTFU_CHT_RECORDINGS")
    path = Path(configured) if configured else REPO.parent / "shared" / "reference" / "cht-recordings"
    missing = [name for name in ORDER if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CHT recordings missing in {path}: {', '.join(missing)}. The contract suite replays them; put "
            "the shared folder beside the clone or set LTFU_CHT_RECORDINGS."
        )
    return path


def load(name: str, receiver_url: str | None = None) -> dict[str, Any]:
    text = (recordings_dir() / name).read_text()
    if receiver_url:
        text = text.replace(RECORDED_RECEIVER, receiver_url)
    return json.loads(text)


_TOKEN = re.compile(
    r"<(id|shortcode|seq):(\d+)>|<(ts:ms|ts:iso|ts:ms-string|count|hash|salt|derived_key|etag|len|"
    r"request-id|rev|cookie|redacted)>"
)
_ISO = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z"
_ANY = {
    "ts:iso": _ISO,
    "ts:ms-string": r"\d+",
    "rev": r"[0-9a-f]+",
    "hash": r".+",
    "salt": r".+",
    "derived_key": r".+",
    "etag": r".*",
    "len": r"\d+",
    "request-id": r".+",
    "cookie": r".+",
    "redacted": r".+",
    "count": r"\d+",
    "ts:ms": r"\d+",
}


@dataclass
class Bindings:
    """Masked placeholders of one file and the real values they stand for (a one-to-one map)."""

    file: str
    values: dict[str, Any] = field(default_factory=dict)
    times: dict[str, int] = field(default_factory=dict)  # <ts:ms> made up for a request, by JSON path

    def bind(self, token: str, value: Any) -> str | None:
        """Bind ``token``; a reason when it contradicts an earlier binding."""
        if token in self.values:
            if self.values[token] != value:
                return f"{token} was {self.values[token]!r} earlier in {self.file}, here {value!r}"
            return None
        if not token.startswith("<seq:"):
            for other, v in self.values.items():
                if v == value and other != token and not other.startswith("<seq:"):
                    return f"{token} and {other} are different values in {self.file}, both {value!r} here"
        self.values[token] = value
        return None

    def fill(self, value: Any, current_rev: Any = None, path: str = "$") -> Any:
        """A recorded request value with real values in place of the placeholders (new ones as needed; a
        time made up for a path is reused at that path, so a doc "saved again unchanged" is unchanged)."""
        if isinstance(value, dict):
            out = {k: self.fill(v, current_rev, f"{path}.{k}") for k, v in value.items()}
            if isinstance(out.get("_rev"), str) and "<rev>" in out["_rev"] and current_rev:
                out["_rev"] = current_rev(out.get("_id"))
            return out
        if isinstance(value, list):
            return [self.fill(v, current_rev, f"{path}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        if value == "<ts:ms>":
            return self.times.setdefault(path, int(time.time() * 1000))

        def one(m: re.Match[str]) -> str:
            if not m.group(1):
                return m.group(0)
            token = m.group(0)
            if token not in self.values:
                kind = m.group(1)
                if kind == "seq":
                    raise KeyError(f"{token} is used in a request of {self.file} before any answer showed it")
                self.values[token] = str(uuid.uuid4()) if kind == "id" else str(random.randrange(10000, 99999))
            return str(self.values[token])

        return _TOKEN.sub(one, value)


def _pattern(expected: str, b: Bindings) -> tuple[re.Pattern[str], list[str]]:
    parts, groups, pos = [], [], 0
    for m in _TOKEN.finditer(expected):
        parts.append(re.escape(expected[pos : m.start()]))
        if m.group(1):
            token = m.group(0)
            if token in b.values:
                parts.append(re.escape(str(b.values[token])))
            else:
                groups.append(token)
                parts.append(f"(?P<g{len(groups) - 1}>.+?)")
        else:
            parts.append(f"(?:{_ANY[m.group(3)]})")
        pos = m.end()
    parts.append(re.escape(expected[pos:]))
    return re.compile("".join(parts), re.S), groups


def compare(expected: Any, actual: Any, b: Bindings, path: str = "$") -> list[str]:
    """Every way ``actual`` departs from the recorded ``expected`` (empty: it matches)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {type(actual).__name__} {actual!r:.120}"]
        if "<trimmed>" in expected:  # the recorder cut the body down to the keys it kept (README)
            expected = {k: v for k, v in expected.items() if k != "<trimmed>"}
            actual = {k: v for k, v in actual.items() if k in expected}
        out = []
        for key in expected.keys() - actual.keys():
            out.append(f"{path}.{key}: missing (recorded {expected[key]!r:.80})")
        for key in actual.keys() - expected.keys():
            out.append(f"{path}.{key}: not in the recording (got {actual[key]!r:.80})")
        for key in expected.keys() & actual.keys():
            out += compare(expected[key], actual[key], b, f"{path}.{key}")
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path}: expected an array, got {actual!r:.120}"]
        if len(expected) != len(actual):
            return [f"{path}: {len(actual)} items where the recording has {len(expected)}: {actual!r:.300}"]
        pairs = enumerate(zip(expected, actual, strict=True))
        return [d for i, (e, a) in pairs for d in compare(e, a, b, f"{path}[{i}]")]
    if isinstance(expected, str) and _TOKEN.search(expected):
        return _compare_masked(expected, actual, b, path)
    if expected != actual or type(expected) is not type(actual):
        return [f"{path}: {actual!r:.120} where the recording has {expected!r:.120}"]
    return []


def _compare_masked(expected: str, actual: Any, b: Bindings, path: str) -> list[str]:
    whole = _TOKEN.fullmatch(expected)
    if whole and whole.group(3) in ("ts:ms", "count"):
        ok = isinstance(actual, int) and not isinstance(actual, bool)
        return [] if ok else [f"{path}: {actual!r} where the recording has a number ({expected})"]
    if whole and whole.group(1) == "seq":
        # pouchdb-server's integer sequences (README): CouchDB's are opaque strings; either is a sequence
        if not isinstance(actual, int | str) or isinstance(actual, bool):
            return [f"{path}: {actual!r} is not a sequence"]
        problem = b.bind(expected, actual)
        return [f"{path}: {problem}"] if problem else []
    if not isinstance(actual, str):
        return [f"{path}: {actual!r} where the recording has the string {expected!r}"]
    pattern, groups = _pattern(expected, b)
    m = pattern.fullmatch(actual)
    if not m:
        return [f"{path}: {actual!r:.120} does not match the recorded {expected!r:.120}"]
    out = []
    for i, token in enumerate(groups):
        problem = b.bind(token, m.group(f"g{i}"))
        if problem:
            out.append(f"{path}: {problem}")
    return out
