"""emulators layer (see DESIGN.md §3)."""
