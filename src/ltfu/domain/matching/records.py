"""What the matcher compares: a normalised person on either side, and what it concludes."""

from __future__ import annotations

from dataclasses import dataclass, field

from ltfu.domain.matching.normalise import BirthDate

# Identifier kinds whose value is unique to one person in the whole community: equal → strong evidence,
# different → a veto. Facility MRNs (``mrn:<system>``) agree strongly but never veto (EMRs have duplicates).
UNIQUE_KINDS = frozenset(
    {
        "cht_id",
        "patient_id",
        "upi",
        "national_id",
        "birth_certificate",
        "passport",
        "alien_card",
        "identification_number",
        "external_id",
    }
)


@dataclass(frozen=True)
class Person:
    """A normalised person: the incoming patient, or a CHT person from the index.

    ``identifiers`` maps a kind (``upi``, ``national_id``, ``mrn:<system>`` …) to a normalised value.
    ``household_phones`` are the phones this person shares with another member of the same household.
    """

    id: str | None = None
    given: tuple[str, ...] = ()
    family: tuple[str, ...] = ()
    sex: str | None = None  # "M" | "F"
    birth: BirthDate | None = None
    phones: tuple[str, ...] = ()
    identifiers: tuple[tuple[str, str], ...] = ()
    household_id: str | None = None
    household_phones: frozenset[str] = frozenset()
    chw_area_id: str | None = None
    unit_id: str | None = None
    unit_code: str | None = None
    facility_code: str | None = None
    flags: tuple[str, ...] = ()  # "dead", "muted": still matchable, shown to the reviewer
    name: str = ""  # as CHT shows it
    lineage: tuple[str, ...] = ()  # ancestor place ids, nearest first

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.given + self.family

    def identifier(self, kind: str) -> list[str]:
        return [v for k, v in self.identifiers if k == kind]


@dataclass(frozen=True)
class Place:
    """A CHT place (household, CHW area, community unit, facility …) as the index keeps it."""

    id: str
    contact_type: str
    name: str
    name_norm: str = ""
    code: str | None = None
    external_id: str | None = None
    link_facility_code: str | None = None
    lineage: tuple[str, ...] = ()

    @property
    def parent_id(self) -> str | None:
        return self.lineage[0] if self.lineage else None


@dataclass(frozen=True)
class FieldScore:
    """One field's comparison: its level (exact, close, disagree, missing …) and its log2 weight."""

    field: str
    level: str
    weight: float
    incoming: str = ""
    candidate: str = ""

    @property
    def verdict(self) -> str:
        """agree | partial | disagree | missing, for a reviewer."""
        if self.level in ("missing",):
            return "missing"
        if self.weight <= 0:
            return "disagree"
        return "agree" if self.level in ("exact", "agree", "day", "equal") else "partial"


@dataclass(frozen=True)
class Candidate:
    """A scored candidate. ``probability`` is the posterior of the Fellegi–Sunter weight; not a calibrated truth."""

    person: Person
    grade: str  # certain | probable | possible
    weight: float
    probability: float
    fields: tuple[FieldScore, ...]
    reasons: tuple[str, ...] = ()

    @property
    def person_id(self) -> str:
        return self.person.id or ""


@dataclass(frozen=True)
class MatchResult:
    """Candidates best first (certainly-not and below-threshold ones left out) and why."""

    candidates: tuple[Candidate, ...]
    reasons: tuple[str, ...] = ()  # e.g. "block-overflow", "cht-duplicate", "conflict"
    considered: int = 0
    vetoed: tuple[tuple[str, str], ...] = field(default=())  # (person id, veto reason)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    @property
    def decision(self) -> str:
        """``link`` (one certain candidate), ``review`` (candidates, none certain) or ``none``. No candidate
        from an overflowing block is ``review``, not ``none``: the persons the cap left unread may hold this
        patient, and ``none`` lets intake create a person in CHT (a duplicate of one it never saw)."""
        if not self.candidates:
            return "review" if "block-overflow" in self.reasons else "none"
        return "link" if self.candidates[0].grade == "certain" else "review"
