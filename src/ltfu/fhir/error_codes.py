"""The ltfu error CodeSystem: a stable code for each kind of error, so a client can translate it.

Every OperationOutcome issue we send carries ``details.coding = [{system: ERROR_SYSTEM, code,
display}]`` beside the English ``details.text``/``diagnostics`` (operators' language, kept as it
is). The code is the one the raising site names (``Issue(kind=...)``), else the default for the
issue's FHIR type. The system is the same for every deployment (unlike the identifier systems under
``LTFU_BASE_URL``), so one translation table serves every ltfu server. docs/translations.md lists it.
"""

from __future__ import annotations

ERROR_SYSTEM = "urn:ltfu:CodeSystem:error"

# code -> English display
ERROR_CODES: dict[str, str] = {
    # the body
    "invalid-json": "The request body is not valid JSON",
    "not-json-object": "A FHIR resource must be a JSON object",
    "resource-type-missing": "The resource has no resourceType",
    "wrong-resource-type": "The resource is not of the type the request expects",
    "unsupported-resource-type": "This resource type is not supported",
    "invalid-resource": "The resource is not valid",
    "missing-element": "A required element is missing",
    "body-too-large": "The request body is too large",
    "unsupported-media-type": "The request body's media type is not supported",
    # searches and references
    "invalid-search": "A search parameter is not valid",
    "not-found": "The resource is not known here",
    "ambiguous-match": "More than one resource matches",
    "unknown-reference": "A referenced resource is not known here",
    # rules of the workflow
    "version-conflict": "The resource has changed since the version given in If-Match",
    "duplicate-request": "A request with this identifier is already known",
    "illegal-transition": "The Task cannot change to that status",
    "rule-violated": "The request breaks a rule of the workflow",
    "not-supported": "This operation is not supported",
    # who may do what
    "authentication-required": "Authentication is required",
    "forbidden": "This client may not do that",
    # ours
    "internal-error": "Internal error",
    "unavailable": "The service is unavailable for now",
    "invalid": "The request is not valid",
}

# FHIR issue type -> our code, for issues raised without a kind of their own.
BY_ISSUE_TYPE: dict[str, str] = {
    "structure": "invalid-resource",
    "required": "missing-element",
    "value": "invalid-resource",
    "invariant": "rule-violated",
    "business-rule": "rule-violated",
    "processing": "rule-violated",
    "security": "forbidden",
    "login": "authentication-required",
    "forbidden": "forbidden",
    "not-found": "not-found",
    "deleted": "not-found",
    "not-supported": "not-supported",
    "conflict": "rule-violated",
    "duplicate": "duplicate-request",
    "multiple-matches": "ambiguous-match",
    "too-long": "body-too-large",
    "exception": "internal-error",
    "transient": "unavailable",
    "timeout": "unavailable",
    "invalid": "invalid",
}


def coding(kind: str | None, issue_type: str) -> dict[str, str]:
    """The ``details.coding`` entry of an issue."""
    code = kind if kind in ERROR_CODES else BY_ISSUE_TYPE.get(issue_type, "invalid")
    return {"system": ERROR_SYSTEM, "code": code, "display": ERROR_CODES[code]}
