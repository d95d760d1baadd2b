"""Replies as server-side runs: the run itself (run.py), what it writes (writes.py), and
the process's registry of runs (registry.py)."""
