"""`grace pack` and `grace inspect` (filled in by the foundation work)."""
