"""Fast seeding for the growth benchmarks: replicate what the service wrote for a few cases, many times.

A benchmark first lets the real service write a *template* (cases through HTTP or the services layer, their
deliveries, CHW reports...), then :func:`replicate` copies every row the template added — resources, history,
search index rows, cases, outbox and delivery rows, events, receipts, reviews — ``copies`` times straight
into the tables, with fresh ids and shifted timestamps. The copies are therefore exactly what the service
writes (same columns, same JSON, same index rows), only many more of them, in minutes instead of hours.
Rows of the setup (facilities, endpoints, subscriptions, clients) are not copied; ids they own are kept.

Only the seeding takes this path; what is then measured goes through the real HTTP app.

* ids: every UUID (``8-4-4-4-12``) or 32-hex id the template introduced gets the copy number as its first
  eight hex digits; extra patterns (e.g. ``MRN-\\d+``) get ``-c<copy>`` appended.
* timestamps (ISO-8601 with a time) move back by a per-copy offset in ``[0, spread_days)``, so every
  interval within a case (request → CHT → attempt → close) stays as the service made it.
* integer keys (history ``seq``, outbox ids and the columns that point at them, event numbers) are moved
  past everything stored, copy after copy.

SQLite is written through ``sqlite3`` (``executemany``), PostgreSQL with ``COPY`` (asyncpg).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import make_url

from ltfu.store.schema import metadata

# Tables whose rows belong to one case (or one of its resources); in insert order.
CLONED = ("resource_history", "resources", "search_index", "resource_owners", "cases", "outbox",
          "delivery_attempts", "inbound_receipts", "subscription_events", "cht_persons", "cht_person_keys",
          "match_reviews", "match_decisions")
# Integer columns that are keys of a sequence (or point at one): family name per (table, column).
FAMILIES = {("resource_history", "seq"): "seq", ("resources", "seq"): "seq", ("outbox", "id"): "outbox",
            ("delivery_attempts", "outbox_id"): "outbox", ("subscription_events", "outbox_id"): "outbox",
            ("delivery_attempts", "id"): "attempt", ("match_decisions", "id"): "decision",
            ("subscription_events", "event_number"): "event"}
# What the copies counted: the subscriptions' event counters (updated with each batch).
COUNTERS = ("UPDATE subscription_counters SET events_since_start = COALESCE((SELECT MAX(event_number) "
            "FROM subscription_events e WHERE e.subscription_id = subscription_counters.subscription_id), "
            "events_since_start)")
SERIALS = (("resource_history", "seq"), ("outbox", "id"), ("delivery_attempts", "id"), ("match_decisions", "id"))
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])"
EVENT_KEY = re.compile(r"(event:.*:)(\d+)")  # services/notifications.py: event:<subscription>:<number>
TS = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})"


def _columns(table: str) -> list[str]:
    return [c.name for c in metadata.tables[table].columns]


def _pk(table: str) -> list[str]:
    t = metadata.tables[table]
    return [c.name for c in t.primary_key.columns] or [c.name for c in t.columns]


class Store:
    """Plain-driver access to the benchmark database (``sqlite:///...`` or ``postgresql://...``)."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.sqlite = self.url.get_backend_name() == "sqlite"
        self._pg: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lite: sqlite3.Connection | None = None

    def __enter__(self) -> Store:
        if self.sqlite:
            self._lite = sqlite3.connect(self.url.database or "", timeout=120, isolation_level=None)
            self._lite.execute("PRAGMA busy_timeout=120000")
        else:
            import asyncpg

            self._loop = asyncio.new_event_loop()
            u = self.url
            self._pg = self._loop.run_until_complete(asyncpg.connect(
                host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username, password=u.password,
                database=u.database))
        return self

    def __exit__(self, *_: Any) -> None:
        if self._lite:
            self._lite.close()
        if self._pg is not None and self._loop is not None:
            self._loop.run_until_complete(self._pg.close())
            self._loop.close()

    def _run(self, coro: Any) -> Any:
        assert self._loop is not None
        return self._loop.run_until_complete(coro)

    @contextlib.contextmanager
    def one_snapshot(self) -> Iterator[None]:
        """The reads inside see one state of the store: a server still writing cannot slip a row in between
        two tables (a current version whose history row was read before it was written)."""
        if self._lite:
            self._lite.execute("BEGIN")
            try:
                yield
            finally:
                self._lite.execute("COMMIT")
            return
        tr = self._pg.transaction(isolation="repeatable_read", readonly=True)
        self._run(tr.start())
        try:
            yield
        finally:
            self._run(tr.commit())

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        cols = ", ".join(f'"{c}"' for c in _columns(table))
        if self._lite:
            return list(self._lite.execute(f'SELECT {cols} FROM "{table}"'))
        return [tuple(r) for r in self._run(self._pg.fetch(f'SELECT {cols} FROM "{table}"'))]

    def rows_sql(self, sql: str) -> list[tuple[Any, ...]]:
        if self._lite:
            return list(self._lite.execute(sql))
        return [tuple(r) for r in self._run(self._pg.fetch(sql))]

    def execute(self, sql: str) -> None:
        if self._lite:
            self._lite.execute(sql)
        else:
            self._run(self._pg.execute(sql))

    def write(self, build: Callable[[dict[str, int]], dict[str, list[tuple[Any, ...]]]]) -> None:
        """In one transaction that keeps the server's writes out: the largest integer keys stored now,
        ``build(tops)`` → rows per table, inserted (and on PostgreSQL the sequences moved past them)."""
        if self._lite:
            self._lite.execute("BEGIN IMMEDIATE")
            try:
                tops = _tops([(f, self._lite.execute(q).fetchone()[0]) for f, q in _TOP_SQL if "last_value" not in q])
                for table, rows in build(tops).items():
                    cols = _columns(table)
                    self._lite.executemany(
                        f'INSERT INTO "{table}" ({", ".join(cols)}) VALUES ({", ".join("?" * len(cols))})', rows)
                self._lite.execute(COUNTERS)
            except BaseException:
                self._lite.execute("ROLLBACK")
                raise
            self._lite.execute("COMMIT")
            return

        async def copy() -> None:
            async with self._pg.transaction():
                locked = ", ".join([*(t for t, _ in SERIALS), "subscription_counters", "subscription_events"])
                await self._pg.execute(f"LOCK TABLE {locked} IN EXCLUSIVE MODE")
                tops = _tops([(f, await self._pg.fetchval(q)) for f, q in _TOP_SQL])
                for table, rows in build(tops).items():
                    if rows:
                        await self._pg.copy_records_to_table(table, records=rows, columns=_columns(table))
                for t, c in SERIALS:
                    await self._pg.execute(f"SELECT setval('{_seq(t, c)}', (SELECT MAX({c}) FROM {t}))")
                await self._pg.execute(COUNTERS)

        import asyncpg

        for attempt in range(5):  # the server's transactions lock the same tables one by one: a deadlock may end ours
            try:
                self._run(copy())
                return
            except asyncpg.DeadlockDetectedError:
                if attempt == 4:
                    raise
                time.sleep(1)


def _seq(table: str, col: str) -> str:
    return f"{table}_{col}_seq"


@dataclass
class Snapshot:
    """Primary keys of the cloned tables and every id-like token in the store, before the template."""

    keys: dict[str, set[tuple[Any, ...]]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)


def _tokens(values: Iterable[Any], pattern: re.Pattern[str]) -> Iterator[str]:
    for v in values:
        if isinstance(v, str):
            yield from pattern.findall(v)


def snapshot(store: Store) -> Snapshot:
    ids = re.compile(UUID)
    snap = Snapshot()
    with store.one_snapshot():
        for table in metadata.tables:
            rows = store.rows(table)
            for r in rows:
                snap.tokens.update(_tokens(r, ids))
            if table in CLONED:
                idx = [_columns(table).index(c) for c in _pk(table)]
                snap.keys[table] = {tuple(r[i] for i in idx) for r in rows}
    return snap


@dataclass
class Template:
    rows: dict[str, list[list[Any]]]  # per table: per row, per column a literal or a list from re.split
    ints: dict[str, tuple[int, int]]  # family -> (min, max) over the template
    cases: int

    def copy(self, j: int, mapping: dict[str, str], tops: dict[str, int]) -> dict[str, list[tuple[Any, ...]]]:
        """Copy ``j`` of this call: its integer keys come after ``tops`` (the largest stored per family)."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table, rows in self.rows.items():
            fams = [FAMILIES.get((table, c)) for c in _columns(table)]
            made = []
            for row in rows:
                vals = []
                for v, fam in zip(row, fams, strict=True):
                    if isinstance(v, tuple):  # an event number inside a string (outbox dedupe key)
                        lo, hi = self.ints["event"]
                        v = f"{v[0]}{tops['event'] + j * (hi - lo + 1) + (v[1] - lo) + 1}"
                    elif isinstance(v, list):
                        v = "".join(p if i % 2 == 0 else mapping.get(p, p) for i, p in enumerate(v))
                    elif fam is not None and v is not None:
                        lo, hi = self.ints[fam]
                        v = tops[fam] + j * (hi - lo + 1) + (v - lo) + 1
                    vals.append(v)
                made.append(tuple(vals))
            out[table] = made
        return out


def capture(store: Store, before: Snapshot, extra: Sequence[str] = ()) -> Template:
    """The rows the template added since ``before``, split around the tokens a copy replaces."""
    splitter = re.compile("(" + "|".join([UUID, TS, *extra]) + ")")
    ids = re.compile(UUID)
    rows: dict[str, list[list[Any]]] = {}
    ints: dict[str, list[int]] = {}
    with store.one_snapshot():
        stored = {table: store.rows(table) for table in CLONED}
    for table in CLONED:
        cols = _columns(table)
        idx = [cols.index(c) for c in _pk(table)]
        added = [r for r in stored[table] if tuple(r[i] for i in idx) not in before.keys.get(table, set())]
        rows[table] = []
        new_ids = [i for i, c in enumerate(cols) if c in ("res_id", "case_id", "person_id", "review_id")][:1]
        for r in added:
            found = set(_tokens(r, ids))
            if not found - before.tokens or any(r[i] in before.tokens for i in new_ids):
                continue  # a row of the setup's own resources (e.g. a history row of the Organization)
            out: list[Any] = []
            for c, v in zip(cols, r, strict=True):
                fam = FAMILIES.get((table, c))
                if fam and v is not None:
                    ints.setdefault(fam, []).append(v)
                event = EVENT_KEY.fullmatch(v) if isinstance(v, str) and c == "dedupe_key" else None
                if event:
                    out.append((event.group(1), int(event.group(2))))
                elif isinstance(v, str):
                    parts = splitter.split(v)
                    out.append(parts if len(parts) > 1 else v)
                else:
                    out.append(v)
            rows[table].append(out)
    return Template(rows, {f: (min(v), max(v)) for f, v in ints.items()}, len(rows["cases"]))


# the keys' own columns (indexed), the current versions' history numbers (unique, indexed: no larger than the
# history's unless a history row went) and the event counters; the other columns pointing at them are no larger
_TOP_SQL = [(FAMILIES[(t, c)], f'SELECT MAX("{c}") FROM "{t}"') for t, c in (*SERIALS, ("resources", "seq"))]
_TOP_SQL += [("event", "SELECT MAX(events_since_start) FROM subscription_counters")]
_TOP_SQL += [(FAMILIES[(t, c)], f"SELECT last_value FROM {_seq(t, c)}") for t, c in SERIALS]  # PostgreSQL only


def _tops(values: list[tuple[str, Any]]) -> dict[str, int]:
    """The largest stored value of each integer family (or of its sequence, which may be ahead)."""
    tops: dict[str, int] = {}
    for fam, value in values:
        tops[fam] = max(tops.get(fam, 0), int(value or 0))
    return tops


def _mapper(template: Template, before: Snapshot, extra: Sequence[str]) -> Callable[[int, timedelta], dict[str, str]]:
    ids = re.compile(UUID)
    ts = re.compile(TS)
    extras = [re.compile(p) for p in extra]
    found: set[str] = set()
    for rows in template.rows.values():
        for row in rows:
            for v in row:
                if isinstance(v, list):
                    found.update(v[1::2])
    id_tokens = sorted(t for t in found if ids.fullmatch(t) and t not in before.tokens)
    ts_tokens = [(t, datetime.fromisoformat(t.replace("Z", "+00:00"))) for t in sorted(found) if ts.fullmatch(t)]
    extra_tokens = sorted(t for t in found if any(p.fullmatch(t) for p in extras))

    def stamp(original: str, d: datetime) -> str:
        head = d.strftime("%Y-%m-%dT%H:%M:%S")
        frac = re.search(r"\.(\d+)", original)
        tz = "Z" if original.endswith("Z") else original[-6:]
        return head + ("." + f"{d.microsecond:06d}"[: len(frac.group(1))] if frac else "") + tz

    def mapping(k: int, shift: timedelta) -> dict[str, str]:
        head = f"{k:08x}"
        m = {t: head + t[8:] for t in id_tokens}
        m.update((t, stamp(t, d - shift)) for t, d in ts_tokens)
        m.update((t, f"{t}-c{k}") for t in extra_tokens)
        return m

    return mapping


def replicate(url: str, template: Template, before: Snapshot, copies: int, *, spread_days: float = 365,
              extra: Sequence[str] = (), batch_cases: int = 5000, progress: bool = True,
              first_copy: int = 0, step_days: float | None = None) -> float:
    """Insert copies ``first_copy`` .. ``first_copy + copies - 1`` of the template; returns the seconds taken.

    Copy ``k`` moves back in time by ``(k + 1) * step_days`` when given, else by a spread offset below
    ``spread_days`` (the same period, denser)."""
    t0 = time.perf_counter()
    mapping = _mapper(template, before, extra)
    per_batch = max(1, batch_cases // max(1, template.cases))
    spread = spread_days * 86400
    with Store(url) as store:
        if store.sqlite:
            store.execute("PRAGMA synchronous=OFF")
        done, copies = first_copy, first_copy + copies
        while done < copies:
            chunk = range(done, min(copies, done + per_batch))

            def build(tops: dict[str, int], chunk: range = chunk) -> dict[str, list[tuple[Any, ...]]]:
                batch: dict[str, list[tuple[Any, ...]]] = {t: [] for t in CLONED}
                for j, k in enumerate(chunk):
                    if step_days is not None:
                        shift = timedelta(days=(k + 1) * step_days)
                    else:
                        shift = timedelta(seconds=(k * 7919.123) % spread) if spread else timedelta(0)
                    for table, rows in template.copy(j, mapping(k + 1, shift), tops).items():
                        batch[table].extend(rows)
                return batch

            store.write(build)
            done = chunk.stop
            if progress:
                n = (done - first_copy) * template.cases
                print(f"  seeded {n} cases ({time.perf_counter() - t0:.0f}s)", flush=True)
    return time.perf_counter() - t0


def analyze(url: str) -> None:
    """What autovacuum (PostgreSQL) or ``PRAGMA optimize`` (SQLite) would have done by now."""
    with Store(url) as store:
        store.execute("ANALYZE")
