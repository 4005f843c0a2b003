"""Pure rules of the LTFU workflow: no I/O, no imports of other ltfu layers (DESIGN §3)."""
