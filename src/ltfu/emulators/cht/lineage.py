"""Contact lineage: minify for storage, hydrate for reading and for outbound push."""

from __future__ import annotations

import copy
from typing import Any

from .app_settings import Settings
from .store import MEDIC, DocStore

MAX_DEPTH = 20


def minify(doc: Any) -> Any:
    """``{_id, parent: {_id, parent: ...}}`` of a (hydrated or minified) contact."""
    if not isinstance(doc, dict) or not doc.get("_id"):
        return doc
    out: dict[str, Any] = {"_id": doc["_id"]}
    parent = doc.get("parent")
    if isinstance(parent, dict) and parent.get("_id"):
        out["parent"] = minify(parent)
    return out


def ancestor_ids(store: DocStore, doc: dict) -> list[str]:
    """Ids of the parents of ``doc``, nearest first (read from the stored docs)."""
    ids: list[str] = []
    parent = doc.get("parent")
    seen: set[str] = set()
    while isinstance(parent, dict) and parent.get("_id") and len(ids) < MAX_DEPTH:
        pid = parent["_id"]
        if pid in seen:
            break
        seen.add(pid)
        ids.append(pid)
        stored = store.peek(MEDIC, pid)
        parent = stored.get("parent") if stored else parent.get("parent")
    return ids


def _hydrate_parents(store: DocStore, minified: Any, depth: int = 0) -> Any:
    if not isinstance(minified, dict) or not minified.get("_id") or depth > MAX_DEPTH:
        return minified
    stored = store.get(MEDIC, minified["_id"])
    if stored is None:
        return minified
    if isinstance(stored.get("parent"), dict):
        stored["parent"] = _hydrate_parents(store, stored["parent"], depth + 1)
    if isinstance(stored.get("contact"), dict) and stored["contact"].get("_id"):
        contact = store.get(MEDIC, stored["contact"]["_id"])
        if contact is not None:
            stored["contact"] = contact
    return stored


def hydrate_contact(store: DocStore, doc: dict) -> dict:
    """A contact with its parents (and their primary contacts) as full docs."""
    out = copy.deepcopy(doc)
    if isinstance(out.get("parent"), dict):
        out["parent"] = _hydrate_parents(store, out["parent"])
    if isinstance(out.get("contact"), dict) and out["contact"].get("_id"):
        contact = store.get(MEDIC, out["contact"]["_id"])
        if contact is not None:
            out["contact"] = contact
    return out


def find_by_shortcode(store: DocStore, settings: Settings, code: str) -> dict | None:
    for d in store.iter_docs(MEDIC):
        if (d.get("patient_id") == code or d.get("place_id") == code) and settings.is_contact(d):
            return d
    return None


def resolve_contact(store: DocStore, settings: Settings, ref: Any) -> dict | None:
    """A contact by ``_id`` or shortcode (as ``contacts_by_reference``)."""
    if not isinstance(ref, str) or not ref:
        return None
    doc = store.peek(MEDIC, ref)
    if doc is not None and settings.is_contact(doc):
        return doc
    return find_by_shortcode(store, settings, ref)


def hydrate(store: DocStore, settings: Settings, doc: dict) -> dict:
    """The doc as cht-core's lineage hydration gives it to transitions (and outbound push)."""
    if settings.is_contact(doc):
        return hydrate_contact(store, doc)
    out = copy.deepcopy(doc)
    if isinstance(out.get("contact"), dict) and out["contact"].get("_id"):
        out["contact"] = _hydrate_parents(store, out["contact"])
    fields = out.get("fields") if isinstance(out.get("fields"), dict) else {}
    patient_ref = fields.get("patient_id") or fields.get("patient_uuid") or out.get("patient_id")
    patient = resolve_contact(store, settings, patient_ref)
    if patient is not None:
        out["patient"] = hydrate_contact(store, patient)
    place_ref = fields.get("place_id") or out.get("place_id")
    place = resolve_contact(store, settings, place_ref)
    if place is not None:
        out["place"] = hydrate_contact(store, place)
    return out
