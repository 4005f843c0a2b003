"""OperationOutcome building and the error type every layer raises for a client's mistake."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ltfu.fhir.error_codes import coding

# FHIR issue-type code -> default HTTP status for errors raised with that code.
_DEFAULT_STATUS = {
    "invalid": 400,
    "structure": 400,
    "required": 400,
    "value": 400,
    "invariant": 422,
    "business-rule": 422,
    "security": 403,
    "login": 401,
    "forbidden": 403,
    "not-found": 404,
    "deleted": 410,
    "not-supported": 400,
    "conflict": 409,
    "duplicate": 409,
    "multiple-matches": 412,
    "too-long": 413,
    "processing": 422,
    "exception": 500,
    "transient": 503,
    "timeout": 504,
}


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: ``code`` is a FHIR issue-type, ``expression`` FHIRPath locations.

    ``kind`` is the ltfu error code (:mod:`ltfu.fhir.error_codes`) sent in ``details.coding`` for
    clients to translate; without one the issue type's default code is sent. Errors (not
    informational issues) carry it.
    """

    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()
    severity: str = "error"
    kind: str | None = None

    def to_fhir(self) -> dict[str, Any]:
        details: dict[str, Any] = {"text": self.diagnostics}
        if self.severity in ("error", "fatal"):
            details = {"coding": [coding(self.kind, self.code)], "text": self.diagnostics}
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "details": details,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            out["expression"] = list(self.expression)
        return out


@dataclass
class FhirError(Exception):
    """A failure to report to the client as an OperationOutcome with ``status``."""

    issues: list[Issue]
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.status:
            self.status = _DEFAULT_STATUS.get(self.issues[0].code, 400) if self.issues else 400
        Exception.__init__(self, self.message)

    @classmethod
    def of(cls, code: str, diagnostics: str, *expression: str, status: int = 0, kind: str | None = None) -> FhirError:
        return cls([Issue(code, diagnostics, tuple(expression), kind=kind)], status)

    @property
    def message(self) -> str:
        return "; ".join(i.diagnostics for i in self.issues)

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


def information(text: str) -> dict[str, Any]:
    """An all-is-well OperationOutcome (``Prefer: return=OperationOutcome``, batch entries)."""
    return operation_outcome([Issue("informational", text, severity="information")])
