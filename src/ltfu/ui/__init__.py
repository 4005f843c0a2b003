"""The operator dashboard at ``/ui``: server-rendered pages over the case store (see docs/dashboard.md)."""
