"""delivery layer (see DESIGN.md §3)."""
