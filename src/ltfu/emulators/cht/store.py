"""A small CouchDB-like document store: several databases, revisions, conflicts, a changes feed.

The latest revision of every doc is kept in memory; with a file path every write goes through to
SQLite (WAL) at once, so a restarted emulator finds all its docs, sequences and queues again.
"""

from __future__ import annotations

import copy
import itertools
import os
import sqlite3
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

MEDIC = "medic"
SENTINEL = "medic-sentinel"
VAULT = "medic-vault"
USERS = "_users"
EMULATOR = "_emulator"  # the emulator's own state (CHW simulation); not a CHT database


class Conflict(Exception):
    """``409 {"error":"conflict","reason":"Document update conflict."}``."""


@dataclass
class Entry:
    id: str
    rev: str
    seq: int
    deleted: bool
    body: dict


def new_id() -> str:
    """CouchDB's POST id as CHT's ``uuid.v4()`` gives it (contacts, users' contacts, docs)."""
    return str(uuid.uuid4())


_ORDER = itertools.count()


def time_ordered_id() -> str:
    """A record id as ``/api/v2/records`` makes them in 5.x (recorded ``01a230ad-3f71-7003-…``):
    UUIDv7-like, the millisecond clock first and a counter after it, so ids sort by creation."""
    ms = time.time_ns() // 1_000_000
    counter = next(_ORDER) & 0xFFF
    rand = int.from_bytes(os.urandom(8), "big") & (2**62 - 1)
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    return str(uuid.UUID(int=value))


def rev_number(rev: str | None) -> int:
    if not rev:
        return 0
    head, _, _ = rev.partition("-")
    return int(head) if head.isdigit() else 0


def format_seq(seq: int) -> str:
    return f"{seq}-emu"


def parse_seq(since: Any) -> int:
    if since is None:
        return 0
    text = str(since).strip('"')
    head = text.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


class DocStore:
    def __init__(self, path: Path | str | None = None) -> None:
        self._dbs: dict[str, OrderedDict[str, Entry]] = {}
        self._seqs: dict[str, int] = {}
        self._listeners: list[Callable[[str, Entry], None]] = []
        self._conn: sqlite3.Connection | None = None
        if path is not None and str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS docs (db TEXT NOT NULL, id TEXT NOT NULL, rev TEXT NOT NULL,"
                " seq INTEGER NOT NULL, deleted INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (db, id))"
            )
            self._load()

    def _load(self) -> None:
        assert self._conn is not None
        rows = self._conn.execute("SELECT db, id, rev, seq, deleted, body FROM docs ORDER BY db, seq")
        for db, doc_id, rev, seq, deleted, body in rows:
            self._db(db)[doc_id] = Entry(doc_id, rev, seq, bool(deleted), orjson.loads(body))
            self._seqs[db] = max(self._seqs.get(db, 0), seq)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def on_change(self, listener: Callable[[str, Entry], None]) -> None:
        self._listeners.append(listener)

    def _db(self, db: str) -> OrderedDict[str, Entry]:
        return self._dbs.setdefault(db, OrderedDict())

    # -------------------------------------------------------------------------------------- reads

    def get(self, db: str, doc_id: str) -> dict | None:
        """A copy of the current revision, or ``None`` when missing or deleted."""
        e = self._db(db).get(doc_id)
        if e is None or e.deleted:
            return None
        return copy.deepcopy(e.body)

    def entry(self, db: str, doc_id: str) -> Entry | None:
        return self._db(db).get(doc_id)

    def peek(self, db: str, doc_id: str) -> dict | None:
        """The current revision without copying (do not modify)."""
        e = self._db(db).get(doc_id)
        return None if e is None or e.deleted else e.body

    def iter_docs(self, db: str) -> Iterator[dict]:
        """Live docs, unordered, not copied (do not modify)."""
        for e in list(self._db(db).values()):
            if not e.deleted:
                yield e.body

    def sorted_ids(self, db: str) -> list[str]:
        return sorted(k for k, e in self._db(db).items() if not e.deleted)

    def doc_count(self, db: str) -> int:
        return sum(1 for e in self._db(db).values() if not e.deleted)

    def update_seq(self, db: str) -> int:
        return self._seqs.get(db, 0)

    def changes(self, db: str, since: int, limit: int | None = None) -> list[Entry]:
        out: list[Entry] = []
        for e in reversed(self._db(db).values()):
            if e.seq <= since:
                break
            out.append(e)
        out.reverse()
        return out[:limit] if limit is not None else out

    # ------------------------------------------------------------------------------------- writes

    def put(self, db: str, doc: dict, *, new_edits: bool = True) -> Entry:
        """Save ``doc`` (its ``_id`` set or generated). Raises :class:`Conflict` on a stale ``_rev``."""
        doc = copy.deepcopy(doc)
        doc_id = doc.get("_id") or new_id()
        doc["_id"] = doc_id
        current = self._db(db).get(doc_id)
        given = doc.get("_rev")
        if new_edits:
            if current is None:
                if given:
                    raise Conflict(doc_id)
                number = 0
            elif current.deleted:
                if given and given != current.rev:
                    raise Conflict(doc_id)
                number = rev_number(current.rev)
            else:
                if given != current.rev:
                    raise Conflict(doc_id)
                number = rev_number(current.rev)
            rev = f"{number + 1}-{uuid.uuid4().hex}"
        else:
            rev = given or f"1-{uuid.uuid4().hex}"
            if current is not None and rev_number(current.rev) > rev_number(rev):
                return current  # the stored revision wins
        deleted = bool(doc.get("_deleted"))
        doc["_rev"] = rev
        if deleted:
            doc = {"_id": doc_id, "_rev": rev, "_deleted": True}
        return self._write(db, doc_id, rev, deleted, doc)

    def _write(self, db: str, doc_id: str, rev: str, deleted: bool, body: dict) -> Entry:
        seq = self._seqs.get(db, 0) + 1
        self._seqs[db] = seq
        entry = Entry(doc_id, rev, seq, deleted, body)
        table = self._db(db)
        table.pop(doc_id, None)
        table[doc_id] = entry
        if self._conn is not None:
            self._conn.execute(
                "INSERT OR REPLACE INTO docs (db, id, rev, seq, deleted, body) VALUES (?, ?, ?, ?, ?, ?)",
                (db, doc_id, rev, seq, int(deleted), orjson.dumps(body)),
            )
        for listener in self._listeners:
            listener(db, entry)
        return entry

    def delete(self, db: str, doc_id: str) -> None:
        """Remove a doc outright (housekeeping of emulator-internal docs)."""
        cur = self._db(db).get(doc_id)
        if cur is not None and not cur.deleted:
            self.put(db, {"_id": doc_id, "_rev": cur.rev, "_deleted": True})

    def upsert(self, db: str, doc: dict) -> Entry:
        """Save over whatever revision is current (internal writers: sentinel, vault, simulation)."""
        cur = self._db(db).get(doc["_id"])
        doc = dict(doc)
        if cur is not None:
            doc["_rev"] = cur.rev
        else:
            doc.pop("_rev", None)
        return self.put(db, doc)
