"""Fake upstream services used by tests and the benchmark."""
