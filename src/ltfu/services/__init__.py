"""services layer (see DESIGN.md §3)."""
