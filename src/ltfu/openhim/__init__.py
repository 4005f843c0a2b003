"""openhim layer (see DESIGN.md §3)."""
