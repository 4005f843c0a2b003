"""Who is acting, and which parts of the API each role may enter (pure rules; the policy applies them).

Roles: ``admin`` (everything), ``facility`` (one Organization's data), ``cht`` (CHT's outbound push:
``/cht`` only), ``gateway`` (OpenHIM's route credentials: acts for the OpenHIM client it names, never by
itself), ``matcher`` (the matching review; no data API yet). ``system`` is ltfu itself (workers, CLI).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["admin", "facility", "cht", "gateway", "matcher", "system"]
ROLES: tuple[str, ...] = ("admin", "facility", "cht", "gateway", "matcher")
Area = Literal["fhir", "mediator", "cht", "ui", "admin", "open"]

# admin keeps /cht so an operator can replay a CHT payload by hand (and the workflow tests post as admin).
_AREAS: dict[str, frozenset[str]] = {
    "fhir": frozenset({"admin", "facility"}),
    "mediator": frozenset({"admin", "facility"}),
    "cht": frozenset({"cht", "admin"}),
    "ui": frozenset({"admin", "facility"}),
    "admin": frozenset({"admin"}),
}


@dataclass(frozen=True)
class Actor:
    role: str
    organization_id: str | None = None
    name: str = ""

    @property
    def facility(self) -> str | None:
        """The Organization whose data bounds this actor; None: unbounded (admin, ltfu itself, CHT's push).

        A facility without an Organization, and any role not listed, sees nothing (``-`` matches no id).
        """
        if self.role in ("admin", "system", "cht"):
            return None
        return (self.organization_id or "-") if self.role == "facility" else "-"

    @property
    def is_admin(self) -> bool:
        return self.role in ("admin", "system")

    def may_enter(self, area: Area) -> bool:
        return area == "open" or self.role in _AREAS.get(area, frozenset())


SYSTEM = Actor("system", name="ltfu")


def area_of(path: str) -> Area:
    """The part of the API a request path belongs to (the PoC routes also without ``/mediator``)."""
    first = "/" + path.lstrip("/").split("/", 1)[0]
    if path.rstrip("/") in ("/mediator/encounter", "/encounter"):
        return "cht"  # the PoC's CHT visit report (CHT outbound push), not a facility's route
    if first == "/fhir":
        return "fhir"
    if first == "/cht":
        return "cht"
    if first == "/ui":
        return "ui"
    if first in ("/admin", "/metrics"):
        return "admin"
    if first in ("/mediator", "/endpoint", "/organization", "/patient", "/service-request", "/encounter", "/"):
        return "mediator"
    return "open"
