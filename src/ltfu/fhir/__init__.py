"""fhir layer (see DESIGN.md §3)."""
