"""cht-core versions: what ltfu asks CHT for (``GET /api/info``, no auth) and which endpoints a version has.

``POST /api/v1/person`` with ``parent`` (cht-datasource) arrived in 5.2.0; ``POST /api/v1/people`` with
``place`` is served by 3.x–5.x (deprecated in 5.2), so anything older than 5.2 or unknown-but-parsed uses it
(reference/cht.md §0).
"""

from __future__ import annotations

import re

DATASOURCE_CREATE = (5, 2)

_VERSION = re.compile(r"^\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def parse_version(text: object) -> tuple[int, int, int] | None:
    """``"5.2.0"`` → ``(5, 2, 0)``; pre-release and build suffixes (``4.11.0-FR-x``) are ignored; junk → None."""
    if not isinstance(text, str):
        return None
    m = _VERSION.match(text)
    if m is None:
        return None
    major, minor, patch = (int(g) if g else 0 for g in m.groups())
    return major, minor, patch


def has_datasource_create(version: tuple[int, ...]) -> bool:
    """Whether this CHT creates persons through cht-datasource's ``POST /api/v1/person`` (5.2+)."""
    return version >= DATASOURCE_CREATE
