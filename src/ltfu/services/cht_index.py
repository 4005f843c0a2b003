"""Keep the CHT person and place index current: from outbound push, and from CHT's ``_changes`` feed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ltfu.cht.people_index import contact_kind, lineage_of, person_of, place_of
from ltfu.domain.matching import index_keys
from ltfu.domain.matching.lineage import DEFAULT_PLACE_LEVELS, resolve_levels
from ltfu.domain.matching.records import Person, Place
from ltfu.services.cht_gone import persons_gone
from ltfu.settings import Settings
from ltfu.store.uow import UnitOfWork


@dataclass
class IndexStats:
    persons: int = 0
    places: int = 0
    removed: int = 0
    ignored: int = 0
    reopened: int = 0  # open cases sent back to review because their CHT person was deleted


def place_levels(settings: Settings) -> dict[str, str]:
    return {**DEFAULT_PLACE_LEVELS, **settings.cht_place_levels}


async def place_with_lineage(
    uow: UnitOfWork, person: Person, known: dict[str, Place] | None = None, levels: dict[str, str] | None = None
) -> Person:
    """The person with household, CHW area, unit (by contact type) and the unit's codes."""
    places = known if known is not None else {}
    missing = [i for i in person.lineage if i not in places]
    if missing and known is None:
        places = await uow.cht_index.places(missing)
    return _placed(person, places, levels or place_levels(uow.settings))


def _placed(person: Person, places: dict[str, Place], levels: dict[str, str]) -> Person:
    return replace(person, **_placement(person.lineage, places, levels))


def _placement(lineage: tuple[str, ...], places: dict[str, Place], levels: dict[str, str]) -> dict[str, str | None]:
    """The ``Person`` fields of where a lineage sits: household, CHW area, unit (by contact type), unit codes."""
    types = {pid: places[pid].contact_type for pid in lineage if pid in places}
    found = resolve_levels(lineage, types, levels)
    unit = places.get(found["unit"] or "")
    return {
        "household_id": found["household"],
        "chw_area_id": found["chw_area"],
        "unit_id": found["unit"],
        "unit_code": unit.code if unit else None,
        "facility_code": unit.link_facility_code if unit else None,
    }


async def index_docs(uow: UnitOfWork, docs: Sequence[dict[str, Any]], *, stage: bool = False) -> IndexStats:
    """Index a batch of CHT docs (persons and places; ``_deleted`` ones removed; anything else ignored).

    Writers of the index (outbound push, the sync, intake) serialise on one lock (PostgreSQL): each replaces
    a person's rows (delete + insert), which two concurrent transactions would otherwise both do.

    ``stage``: a page of a first full build (:func:`merge_staged`): the persons go to the staging table;
    places and deletions go to the index at once (a deletion is staged too, so that an earlier staged
    version of the person is not merged)."""
    await uow.lock(["cht-index"])
    settings = uow.settings
    stats = IndexStats()
    places: list[Place] = []
    people: list[tuple[dict[str, Any], tuple[str, ...]]] = []  # person docs with their lineage
    gone: list[str] = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("_deleted") and isinstance(doc.get("_id"), str):
            gone.append(doc["_id"])
            continue
        kind = contact_kind(doc, settings.cht_person_types)
        if kind == "place":
            places.append(place_of(doc))
        elif kind == "person":
            people.append((doc, lineage_of(doc)))
        else:
            stats.ignored += 1
    if gone:
        stats.removed = await uow.cht_index.remove_persons(gone)
        await uow.cht_index.remove_places(gone)
    await uow.cht_index.put_places(places)
    known = {p.id: p for p in places}
    wanted = {i for _, lineage in people for i in lineage} - set(known)
    if wanted:
        known.update(await uow.cht_index.places(wanted))
    levels = place_levels(settings)
    region = settings.match_default_region
    where: dict[tuple[str, ...], dict[str, str | None]] = {}  # a household's members share their lineage
    placed = []
    for doc, lineage in people:
        if (placement := where.get(lineage)) is None:
            placement = where[lineage] = _placement(lineage, known, levels)
        placed.append(person_of(doc, region, lineage, **placement))
    if stage:
        await uow.cht_index.stage_persons([(p, index_keys(p)) for p in placed], gone)
    else:
        await uow.cht_index.put_persons([(p, index_keys(p)) for p in placed])
    stats.persons, stats.places = len(placed), len(places)
    if gone:  # a linked person deleted or merged away in CHT: its open cases go back to review
        stats.reopened = await persons_gone(uow, gone)
    return stats


async def index_person_doc(uow: UnitOfWork, doc: dict[str, Any]) -> None:
    """One person from outbound push. A push carries the fields its outbound mapping names, often fewer than
    the doc (no ``upi``, no lineage): what it lacks is kept from the index (the sync reads whole docs)."""
    await uow.lock(["cht-index"])
    if contact_kind(doc, uow.settings.cht_person_types) != "person":
        await index_docs(uow, [doc])
        return
    new = person_of(doc, uow.settings.match_default_region)
    old = await uow.cht_index.person(new.id or "")
    placed = await place_with_lineage(uow, _pushed_over(new, old) if old is not None else new)
    await uow.cht_index.put_persons([(placed, index_keys(placed))])


def _pushed_over(new: Person, old: Person) -> Person:
    """A pushed person over the version known before: what the push carries wins, the rest is kept."""
    kinds = {k for k, _ in new.identifiers}
    return replace(
        new,
        identifiers=new.identifiers + tuple(i for i in old.identifiers if i[0] not in kinds),
        lineage=new.lineage or old.lineage,
        phones=new.phones or old.phones,
        birth=new.birth or old.birth,
        sex=new.sex or old.sex,
        given=new.given or old.given,
        family=new.family if new.given else old.family,
        flags=new.flags or old.flags,
    )


async def merge_staged(uow: UnitOfWork) -> int:
    """End a staged full build: the staged persons into the index, in one transaction (the caller's).

    A person the index already holds was written by a push (during the build, or before it): when that
    write is later than the staging, the push wins and the staged doc (a whole doc, where a push carries the
    fields its mapping names) fills what it lacks; when earlier, the staged version replaces it, and a staged
    deletion removes it. Returns the persons merged."""
    await uow.lock(["cht-index"])
    put: list[Person] = []
    removed: list[str] = []
    for staged, staged_at, indexed, indexed_at in await uow.cht_index.staged_over_indexed():
        if indexed_at > staged_at:
            if staged is not None:
                put.append(await place_with_lineage(uow, _pushed_over(indexed, staged)))
        elif staged is None:
            removed.append(indexed.id or "")
        else:
            put.append(staged)
    if removed:
        await uow.cht_index.remove_persons(removed)
        await persons_gone(uow, removed)
    for i in range(0, len(put), 500):
        await uow.cht_index.put_persons([(p, index_keys(p)) for p in put[i : i + 500]])
    return len(put) + await uow.cht_index.merge_stage()


def changed_docs(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The docs of a ``_changes?include_docs=true`` page (deletions as ``{_id, _deleted}``)."""
    out: list[dict[str, Any]] = []
    for change in results:
        if not isinstance(change, dict) or not isinstance(change.get("id"), str):
            continue
        if change.get("deleted"):
            out.append({"_id": change["id"], "_deleted": True})
        elif isinstance(change.get("doc"), dict):
            out.append(change["doc"])
    return out
