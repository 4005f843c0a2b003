"""The two shapes of a CHT contact doc, and who of them is a patient (docs/cht-contract.md).

``POST /api/v1/people`` / ``/places`` and the webapp's built-in types store ``type: "person"`` (or the
place type); cht-datasource's ``POST /api/v1/person`` / ``/place`` (5.x) and configurable contact types
store ``type: "contact"`` with ``contact_type``. Everything that reads a CHT doc asks here.
"""

from __future__ import annotations

from typing import Any

#: contact types of cht-config/ that are people
PERSON_TYPES = frozenset({"person"})


def contact_type(doc: Any) -> str | None:
    """The contact type id of either shape (``None`` for anything that is not a contact doc)."""
    if not isinstance(doc, dict):
        return None
    value = doc.get("contact_type") if doc.get("type") == "contact" else doc.get("type")
    return value if isinstance(value, str) else None


def is_person(doc: Any) -> bool:
    return contact_type(doc) in PERSON_TYPES
