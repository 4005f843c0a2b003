"""CHT document ids, checked before they become part of a CHT URL (finding L4).

An id may come from a facility (a Patient identifier) or from CHT itself; the mediator fetches
``/medic/<id>`` with its own credentials, so ``../``, ``?`` or ``#`` in an id would reach other
CHT paths.
"""

from __future__ import annotations

import re
from urllib.parse import quote

# CHT document ids are UUIDs or readable keys (``org.couchdb.user:x``); never a path, query or CouchDB
# special document (``_design/...``). Ids from facilities or from CHT are checked before use.
_DOC_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,199}")


class InvalidChtId(ValueError):
    """Not a CHT document id: refused before it becomes part of a CHT URL."""


def is_doc_id(value: str) -> bool:
    return _DOC_ID.fullmatch(value) is not None


def doc_path(doc_id: str) -> str:
    """``/medic/<id>``, the id checked and percent-escaped (no ``../``, ``?`` or ``#`` reaches CHT)."""
    if not is_doc_id(doc_id):
        raise InvalidChtId("not a CHT document id")
    return "/medic/" + quote(doc_id, safe="")
