"""Benchmarks: what chatsite adds to the model's own latency, and how far one worker goes.

``make bench`` (``python -m bench.run``) starts everything on loopback and prints the
table; see docs/benchmarks.md. Figures are printed, never asserted.
"""
