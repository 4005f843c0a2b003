"""Where a CHT person sits: household → CHW area → community unit, resolved by ``contact_type``, not depth.

Kenya's eCHIS puts a sub-county and a county above the unit and the standard CHT hierarchy does not, so
the depth of a level differs between deployments (reference/matching.md §5). Depth is only the fallback
for places the index does not know yet: parent = household, parent² = CHW area, parent³ = unit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

LEVELS = ("household", "chw_area", "unit")

# contact_type → level. Standard CHT (clinic/health_center/district_hospital) and Kenya eCHIS types.
DEFAULT_PLACE_LEVELS: dict[str, str] = {
    "clinic": "household",
    "health_center": "chw_area",
    "district_hospital": "unit",
    "e_household": "household",
    "d_community_health_volunteer_area": "chw_area",
    "c_community_health_unit": "unit",
}


def resolve_levels(
    lineage: Sequence[str], types: Mapping[str, str], levels: Mapping[str, str] = DEFAULT_PLACE_LEVELS
) -> dict[str, str | None]:
    """``{"household": id|None, "chw_area": …, "unit": …}`` from the ancestor ids (nearest first)."""
    out: dict[str, str | None] = dict.fromkeys(LEVELS)
    known = False
    for place_id in lineage:
        level = levels.get(types.get(place_id, ""))
        if types.get(place_id):
            known = True
        if level and out[level] is None:
            out[level] = place_id
    if not known:
        for level, place_id in zip(LEVELS, lineage, strict=False):
            out[level] = place_id
    return out
