"""cht layer (see DESIGN.md §3)."""
