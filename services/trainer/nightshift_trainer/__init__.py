"""nightshift trainer service."""
