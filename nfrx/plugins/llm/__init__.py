"""nfrx."""
