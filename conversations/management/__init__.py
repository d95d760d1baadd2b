"""chatsite's management commands."""
