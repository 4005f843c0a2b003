"""``transaction`` and ``batch`` Bundles (R4 http.html §3.1.0.11).

A transaction runs in one unit of work: ``urn:uuid`` fullUrls get ids before anything is written,
references to them (and conditional references ``Type?params``) are rewritten, entries run in the
order DELETE, POST, PUT, GET, and any failure rolls everything back. A batch runs each entry in a
savepoint and answers per entry, so one bad patient does not sink a 400-patient list.

A 10,000-defaulter list (20,000 entries) is one request that must neither hold the event loop (SQLite's
statements run on it: ``store/sqlite_inline.py``) nor the whole list's rows in memory at once: every
loop over the entries gives turns (``ltfu.turns``), the rows held by the unit of work's write buffer are
sent every ``FLUSH_EVERY`` entries (same transaction: all or nothing still), and each entry's resource is
let go of once it has run (the stored copy is what the response shows).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from ltfu.fhir.outcome import FhirError, Issue, information
from ltfu.fhir.rest import parse_etag
from ltfu.fhir.search_params import parse_search
from ltfu.fhir.validation import SUPPORTED_TYPES
from ltfu.services import policy
from ltfu.services import resources as ops
from ltfu.store.resources import Stored
from ltfu.store.uow import UnitOfWork
from ltfu.turns import long_work, turn

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
# Within the POSTs, what others point at goes first (a defaulter list may put each Patient after its request).
_CREATE_FIRST = {"Endpoint": 0, "Organization": 1, "Practitioner": 2, "Patient": 3, "Appointment": 4}
Token = tuple[str | None, str, bool]
FLUSH_EVERY = 500  # entries between two sends of the held rows (a bound on what a long list holds)
LONG_ENTRIES = 200  # a Bundle this long is long work (``ltfu.turns``): its turns give way to other requests
# A Bundle longer than this commits on its own (``UnitOfWork.alone``): the small requests that share the SQLite
# writer's COMMIT with others do not wait for a defaulter list to end.
ALONE_ENTRIES = 50


@dataclass
class EntryResult:
    status: str
    stored: Stored | None = None
    resource: dict[str, Any] | None = None  # GET results (a resource or a searchset Bundle)
    outcome: dict[str, Any] | None = None

    def to_fhir(self, include_resource: bool) -> dict[str, Any]:
        response: dict[str, Any] = {"status": self.status}
        entry: dict[str, Any] = {}
        if self.stored:
            r = self.stored.resource
            response["location"] = f"{r['resourceType']}/{r['id']}/_history/{self.stored.version_id}"
            response["etag"] = self.stored.etag
            response["lastModified"] = self.stored.last_updated
            if include_resource:
                entry["fullUrl"] = f"{r['resourceType']}/{r['id']}"
                entry["resource"] = r
        elif self.resource is not None and include_resource:
            entry["resource"] = self.resource
        if self.outcome:
            response["outcome"] = self.outcome
        entry["response"] = response
        return entry


Search = Callable[[UnitOfWork, str, list[tuple[str, str]]], Awaitable[dict[str, Any]]]


async def response_json(kind: str, results: list[EntryResult], include_resource: bool) -> bytes:
    """The ``<kind>-response`` Bundle as JSON, rendered entry by entry with turns: the answer to a
    20,000-entry list is tens of MB, and one ``orjson.dumps`` of it would hold the loop that long and
    a second copy of it as dicts. ``results`` is emptied as it goes (each stored copy let go of)."""
    parts = [b'{"resourceType":"Bundle","type":' + orjson.dumps(f"{kind}-response") + b',"entry":[']
    results.reverse()
    while results:
        await turn()
        parts.append(orjson.dumps(results.pop().to_fhir(include_resource)))
        parts.append(b",")
    if parts[-1] == b",":
        parts.pop()
    parts.append(b"]}")
    return b"".join(parts)


def _entries(bundle: dict[str, Any], max_entries: int) -> list[dict[str, Any]]:
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise FhirError.of("structure", "Bundle.entry must be an array", "Bundle.entry")
    if len(entries) > max_entries:
        raise FhirError.of("too-long", f"A Bundle may carry at most {max_entries} entries", "Bundle.entry",
                           status=413)
    if len(entries) >= LONG_ENTRIES:
        long_work()
    for i, e in enumerate(entries):
        req = e.get("request") if isinstance(e, dict) else None
        if not isinstance(req, dict) or not req.get("method") or not req.get("url"):
            raise FhirError.of("required", "Each entry needs request.method and request.url",
                               f"Bundle.entry[{i}].request")
        if req["method"] not in _ORDER:
            raise FhirError.of("not-supported", f"Unsupported method {req['method']!r}",
                               f"Bundle.entry[{i}].request.method")
    return entries


@lru_cache(maxsize=1024)  # a defaulter list names two URLs 20,000 times, and each is split in several passes
def _split_url(url: str) -> tuple[str, str | None, str | None]:
    """``Patient/1`` → (Patient, 1, None); ``Patient?identifier=x`` → (Patient, None, 'identifier=x')."""
    parts = urlsplit(url)
    path = parts.path.strip("/")
    segs = path.split("/") if path else []
    res_type = segs[0] if segs else ""
    res_id = segs[1] if len(segs) > 1 else None
    return res_type, res_id, parts.query or None


def _prefix(err: FhirError, index: int) -> FhirError:
    issues = [
        Issue(i.code, i.diagnostics,
              tuple(f"Bundle.entry[{index}].resource.{e.split('.', 1)[1]}" if "." in e
                    else f"Bundle.entry[{index}].resource" for e in i.expression) or
              (f"Bundle.entry[{index}]",), i.severity)
        for i in err.issues
    ]
    return FhirError(issues, err.status, err.headers)


def _rewrite(node: Any, mapping: dict[str, str]) -> None:
    """Every ``reference`` of ``node`` that ``mapping`` knows, rewritten in place (the entry's resource is ours)."""
    if type(node) is dict:
        for k, v in node.items():
            t = type(v)
            if t is str:
                if k == "reference" and v in mapping:
                    node[k] = mapping[v]
            elif t is dict or t is list:
                _rewrite(v, mapping)
    elif type(node) is list:
        for v in node:
            if type(v) is dict or type(v) is list:
                _rewrite(v, mapping)


def _conditional_refs(node: Any, found: set[str]) -> None:
    if type(node) is dict:
        for k, v in node.items():
            t = type(v)
            if t is str:
                if k == "reference" and "?" in v and not v.startswith("urn:"):
                    found.add(v)
            elif t is dict or t is list:
                _conditional_refs(v, found)
    elif type(node) is list:
        for v in node:
            if type(v) is dict or type(v) is list:
                _conditional_refs(v, found)


def _identifier_token(res_type: str, query: str) -> Token | None:
    """``identifier=system|value`` (the usual ``ifNoneExist`` of a defaulter list) as a token, else None."""
    try:
        q = parse_search(res_type, parse_qsl(query.lstrip("?"), keep_blank_values=True), strict=True)
    except FhirError:
        return None  # the entry's own look-up reports it precisely
    if len(q.criteria) != 1 or q.includes or q.revincludes:
        return None
    c = q.criteria[0]
    if c.param != "identifier" or c.kind != "token" or c.modifier or len(c.values) != 1 or c.values[0][1] is None:
        return None
    return c.values[0]


async def _conditional_creates(uow: UnitOfWork, entries: list[dict[str, Any]]) -> dict[int, list[str]]:
    """The matches of every simple ``ifNoneExist`` at once, under the identity locks of all of them.

    Entries whose condition is met by nothing, and by no other entry of this Bundle, need no second
    look-up when they are created (their locks are held to commit): the others are looked up again."""
    keys: list[str] = []
    tokens: dict[int, tuple[str, Token]] = {}
    for i, e in enumerate(entries):
        await turn()
        req = e["request"]
        if req["method"] != "POST" or not req.get("ifNoneExist"):
            continue
        if isinstance(e.get("resource"), dict):  # held to commit: no twin created meanwhile elsewhere
            keys.extend(ops.identity_keys(e["resource"]))
        res_type = _split_url(req["url"])[0]
        token = _identifier_token(res_type, req["ifNoneExist"])
        if token is not None:
            tokens[i] = (res_type, token)
    await uow.lock(keys)
    found: dict[int, list[str]] = {}
    for res_type in {t for t, _ in tokens.values()}:
        mine = {i: tok for i, (t, tok) in tokens.items() if t == res_type}
        ids = await uow.resources.find_ids_by_tokens(res_type, "identifier", list(mine.values()))
        # Only what the policy lets this actor match (another facility's Patient is as if absent).
        ids = {tok: await policy.conditional_matches(uow, res_type, ids[tok]) if ids[tok] else []
               for tok in set(mine.values())}
        await uow.resources.prime(res_type, [x for tok in mine.values() for x in ids[tok][:1]])
        found.update((i, ids[tok]) for i, tok in mine.items())
    return found


async def _checked(entries: list[dict[str, Any]], found: dict[int, list[str]]) -> set[int]:
    """Entries of ``found`` with no match whose condition no other entry of the Bundle shares."""
    conditions: dict[tuple[str, str], int] = {}
    for e in entries:
        await turn()
        req = e["request"]
        if req["method"] == "POST" and req.get("ifNoneExist"):
            key = (_split_url(req["url"])[0], req["ifNoneExist"])
            conditions[key] = conditions.get(key, 0) + 1
    return {i for i, ids in found.items() if not ids and conditions[
        (_split_url(entries[i]["request"]["url"])[0], entries[i]["request"]["ifNoneExist"])] == 1}


async def _prefetch(uow: UnitOfWork, entries: list[dict[str, Any]], skip: set[int]) -> None:
    """Let each type's hook look up at once what its many creates will need."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for i, e in enumerate(entries):
        await turn()
        if i not in skip and e["request"]["method"] == "POST" and isinstance(e.get("resource"), dict):
            by_type.setdefault(_split_url(e["request"]["url"])[0], []).append(e["resource"])
    for res_type, resources in by_type.items():
        hook = ops.HOOKS.get(res_type)
        if hook and hook.prefetch:
            await hook.prefetch(uow, resources)


async def transaction(uow: UnitOfWork, bundle: dict[str, Any], search: Search) -> list[EntryResult]:
    entries = _entries(bundle, uow.settings.bundle_max_entries)
    if len(entries) > ALONE_ENTRIES:
        await uow.alone()
    mapping: dict[str, str] = {}
    preassigned: dict[int, str] = {}
    existing: dict[int, Stored] = {}
    seen_full: set[str] = set()
    batched = await _conditional_creates(uow, entries)
    checked = await _checked(entries, batched)
    for i, e in enumerate(entries):
        await turn()
        req = e["request"]
        full = e.get("fullUrl")
        if full:
            if full in seen_full:
                raise FhirError.of("duplicate", f"fullUrl {full} appears twice", f"Bundle.entry[{i}].fullUrl")
            seen_full.add(full)
        if req["method"] != "POST":
            if full and req["method"] == "PUT":
                res_type, res_id, _ = _split_url(req["url"])
                if res_id:
                    mapping[full] = f"{res_type}/{res_id}"
            continue
        res_type, _, _ = _split_url(req["url"])
        if req.get("ifNoneExist"):
            if i in batched:
                found = [{"id": x} for x in batched[i]]
            else:
                try:
                    found = await ops.find_by_query(uow, res_type, req["ifNoneExist"])
                except FhirError as err:
                    raise _prefix(err, i) from None
            if len(found) > 1:
                raise FhirError.of("multiple-matches", f"ifNoneExist matched several {res_type}",
                                   f"Bundle.entry[{i}].request.ifNoneExist", status=412)
            if found:
                existing[i] = await uow.resources.read(res_type, found[0]["id"])
                if full:
                    mapping[full] = f"{res_type}/{found[0]['id']}"
                continue
        preassigned[i] = str(uuid.uuid4())
        if full:
            mapping[full] = f"{res_type}/{preassigned[i]}"
    # Conditional references (legal only in transactions) must each resolve to exactly one resource.
    conditional: set[str] = set()
    for e in entries:
        await turn()
        _conditional_refs(e.get("resource"), conditional)
    for ref in conditional:
        res_type, _, query = _split_url(ref)
        found = await ops.find_by_query(uow, res_type, query or "")
        if len(found) != 1:
            raise FhirError.of("not-found" if not found else "multiple-matches",
                               f"Conditional reference {ref} matched {len(found)} resources", status=412
                               if found else 404)
        mapping[ref] = f"{res_type}/{found[0]['id']}"

    results: dict[int, EntryResult] = {}
    def rank(i: int) -> tuple[int, int]:
        req = entries[i]["request"]
        return _ORDER[req["method"]], _CREATE_FIRST.get(_split_url(req["url"])[0], 9) if req["method"] == "POST" else 0

    order = sorted(range(len(entries)), key=rank)
    await _prefetch(uow, entries, set(existing))
    for done, i in enumerate(order, 1):
        await turn()  # other requests are served meanwhile
        e = entries[i]
        if i in existing:
            results[i] = EntryResult("200 OK", existing[i])
            continue
        resource = e.pop("resource", None)  # let go of once stored: the stored copy is what the response shows
        _rewrite(resource, mapping)
        try:
            req = e["request"] if i not in checked else {k: v for k, v in e["request"].items() if k != "ifNoneExist"}
            results[i] = await _run_entry(uow, req, resource, preassigned.get(i), search)
        except FhirError as err:
            raise _prefix(err, i) from None
        if done % FLUSH_EVERY == 0:
            await uow.flush()
    return [results[i] for i in range(len(entries))]


async def batch(uow: UnitOfWork, bundle: dict[str, Any], search: Search) -> list[EntryResult]:
    entries = _entries(bundle, uow.settings.bundle_max_entries)
    if len(entries) > ALONE_ENTRIES:
        await uow.alone()
    results: list[EntryResult] = []
    for e in entries:
        try:
            async with uow.savepoint():
                results.append(await _run_entry(uow, e["request"], e.get("resource"), None, search))
        except FhirError as err:
            results.append(EntryResult(f"{err.status}", outcome=err.outcome()))
    return results


async def _run_entry(
    uow: UnitOfWork, req: dict[str, Any], resource: Any, new_id: str | None, search: Search
) -> EntryResult:
    method = req["method"]
    res_type, res_id, query = _split_url(req["url"])
    if res_type not in SUPPORTED_TYPES:
        raise FhirError.of("not-supported", f"Resource type {res_type!r} is not supported here", status=404)
    if method == "POST":
        if resource is None:
            raise FhirError.of("required", "A POST entry needs a resource")
        res = await ops.create(uow, resource, res_type=res_type, if_none_exist=req.get("ifNoneExist"),
                               res_id=new_id)
        return EntryResult("201 Created" if res.created else "200 OK", res.stored)
    if method in ("PUT", "PATCH"):
        if method == "PATCH":
            raise FhirError.of("not-supported", "PATCH is not supported inside Bundles")
        if res_id:
            res = await ops.update(uow, res_type, res_id, resource,
                                   if_match=parse_etag(req.get("ifMatch")))
        elif query:
            res = await ops.conditional_update(uow, res_type, query, resource)
        else:
            raise FhirError.of("invalid", "A PUT entry needs Type/id or Type?search in request.url")
        return EntryResult("201 Created" if res.created else "200 OK", res.stored)
    if method == "DELETE":
        policy.authorize_delete(uow.actor)
        if not res_id:
            found = await ops.find_by_query(uow, res_type, query or "")
            if len(found) > 1:
                raise FhirError.of("multiple-matches", "Conditional delete matched several resources", status=412)
            res_id = found[0]["id"] if found else None
        if res_id:
            await ops.delete(uow, res_type, res_id)
        return EntryResult("204 No Content", outcome=information("Deleted"))
    # GET / HEAD
    if res_id:
        await policy.require_visible(uow, res_type, res_id)
        return EntryResult("200 OK", await uow.resources.read(res_type, res_id))
    params = parse_qsl(query or "", keep_blank_values=True)
    parse_search(res_type, params)  # validate early for a precise error
    return EntryResult("200 OK", resource=await search(uow, res_type, params))

